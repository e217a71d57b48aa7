"""The run as one typed record (record.py): every flag is one option of one section with one role,
the lists that used to be kept by hand follow from the roles, and the runs of the previous
version keep their names and resume."""

import ast
import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

import cli
import main
from experiments.runs import identity, resolve
from pruning import CRITERIA, GlobalMagnitude
from pruning.options import Bounded, option
from record import Role, RunRecord, fixed_keys, identity_defaults, key_of, keys_with, specs
from tests.support.runs import assert_one_error_line

ROOT = Path(__file__).resolve().parents[1]
# written by the version before the record (5c95b00): `main.py -d digits -m lenet300 -e 2
# --limit_batches 1 --prune_freq 1 --noise --comment previous --num_workers 0`
PREVIOUS_RUN = ROOT / "tests" / "data" / "previous_run"
PREVIOUS_COMMAND = "-d digits -m lenet300 -e 2 --limit_batches 1 --prune_freq 1 --noise"

# run directories the launcher named before the record, by their sweep commands
NAMED_BEFORE = {
    "-m vgg19 -d cifar10 -bs 128 -lr 0.1 --opt sgd --momentum 0.9 --reg_type wdecay --lambda 5e-4 "
    "--use_scheduler --milestones 150 250 --seed 0 --logdir vgg19_cifar10 -e 350 "
    "--prune_criterion flipout --flipout_p 2 --prune_rate 0.5 --noise --noise_scale_factor 1 "
    "--prune_freq 32 --comment 'flipout seed 0'": "flipout_seed_0-cca5f0ba1a",
    "-m resnet18 -d cifar10 -bs 128 -lr 0.1 --opt sgd --momentum 0.9 --reg_type wdecay "
    "--lambda 5e-4 --use_scheduler --milestones 150 250 -e 350 --seed 2 --logdir "
    "resnet18_cifar10_sweep --prune_freq 50 --prune_criterion global_magnitude --prune_rate 0.5 "
    "--comment 'global magnitude freq 50 seed 2'": "global_magnitude_freq_50_seed_2-939a94df51",
    "-m lenet300 -d digits -e 20 -bs 128 -lr 0.05 --opt sgd --momentum 0.9 --reg_type wdecay "
    "--lambda 5e-4 --seed 0 --num_workers 0 --quiet --logdir baselines --prune_criterion grasp "
    "--init_sparsity 0.984375 --comment 'grasp seed 0'": "grasp_seed_0-fca0060b4c",
    "-m lenet300 -d digits -e 6 -lr 0.05 --seed 0 --num_workers 0 --quiet --logdir smoke "
    "--prune_criterion snip --snip_sparsity 0.9 --comment 'snip seed 0'": "snip_seed_0-7163a66905",
}


def test_every_flag_is_one_option_of_the_record_with_its_default():
    parser = cli.build_parser()
    flags = {key_of(a.dest): a for a in parser._actions if a.option_strings}
    flags.pop("help")
    assert set(flags) == set(specs())
    for key, spec in specs().items():
        assert flags[key].default == spec.default, key
    assert cli.parse_args([]).options() == RunRecord().options()


def test_the_roles_give_the_lists_once_kept_by_hand():
    assert set(fixed_keys()) == {
        "model", "model_kwargs", "dataset", "prune_criterion", "prune_include", "prune_exclude",
    }  # fmt: skip
    assert set(keys_with(Role.NEUTRAL)) == {
        "seed", "test_batch_size", "save_model", "log_mechanism", "amp", "channels_last",
    }  # fmt: skip
    assert {"device", "num_workers", "data_dir", "resume", "plugins"} <= set(
        keys_with(Role.MACHINE)
    )
    assert set(keys_with(Role.NAMING)) == {"comment", "logdir", "run_dir"}
    # the options a sparsity curve varies are declared so by the criteria and schedules
    assert {"prune_freq", "prune_rate", "snip_sparsity", "target_sparsity"} <= set(
        keys_with(Role.LEVEL)
    )
    assert set(identity_defaults()) == set(keys_with(Role.RECIPE, Role.LEVEL, Role.NEUTRAL))


@pytest.mark.parametrize("command", sorted(NAMED_BEFORE))
def test_sweep_runs_keep_the_names_the_previous_version_gave_them(command, tmp_path):
    assert resolve(shlex.split(command), tmp_path).run_dir.name == NAMED_BEFORE[command]


def previous_run(tmp_path) -> Path:
    run_dir = tmp_path / "previous-c18ca5ce6d"
    shutil.copytree(PREVIOUS_RUN, run_dir)
    return run_dir


def test_a_run_of_the_previous_version_keeps_its_identity_and_resumes(tmp_path, capsys):
    config = json.loads((PREVIOUS_RUN / "config.json").read_text())
    assert identity(config) == "c18ca5ce6d"
    run_dir = previous_run(tmp_path)
    record = cli.parse_args(["--resume", str(run_dir)])
    options = record.options()
    # read back as it was written, but for what this resume sets; an option added since (such as
    # --plugins) is at its default, which does nothing
    assert options.pop("resume") == str(run_dir) and options.pop("run_dir") is None
    assert {key: options[key] for key in options if key in config} == {
        key: config[key] for key in options if key in config
    }
    defaults = RunRecord().options()
    assert {key: options[key] for key in options if key not in config} == {
        key: defaults[key] for key in options if key not in config
    }
    # its own command with --run_dir is the same run; another learning rate is another run
    argv = [*shlex.split(PREVIOUS_COMMAND), "--comment", "previous", "--num_workers", "0"]
    assert cli.parse_args([*argv, "--run_dir", str(run_dir)]).run.resume == str(run_dir)
    assert main.main([*argv, "-lr", "0.5", "--run_dir", str(run_dir)]) == 2
    assert_one_error_line(capsys, "--lr 0.5 (the run has 0.1)")
    # it stopped before a checkpoint this version could use: the resume trains it afresh
    assert main.main(["--resume", str(run_dir), "--quiet"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2


@dataclass
class Lowest(GlobalMagnitude):
    """A criterion registered after every module was imported, as a plugin's is."""

    power: float = option("lowest_power", Bounded(float, above=0), 1.0, "score |w|^power")


def test_an_option_of_a_criterion_registered_later_is_part_of_the_identity(monkeypatch, tmp_path):
    monkeypatch.setitem(CRITERIA, "lowest", Lowest)
    runs = [
        resolve(["--prune_criterion", "lowest", "--lowest_power", power], tmp_path)
        for power in ("1", "3")
    ]
    assert runs[0].run_id != runs[1].run_id
    assert runs[1].options["lowest_power"] == 3.0


@pytest.mark.parametrize(
    "argv",
    [[], ["--prune_exclude", "3", "1", "3"],
     ["-m", "timm:resnet18", "--model_kwargs", "b=2", "a=1"],
     ["--lambda", "1e-3", "--nm", "2:4", "--noise"],
     ["--prune_criterion", "snip", "--snip_sparsity", "0.9", "--data_on_device"]],
)  # fmt: skip
def test_config_json_reads_back_to_the_same_record_without_a_command_line(argv):
    record = cli.parse_args(argv)
    again = cli.record_from_config(cli.build_parser(), json.loads(json.dumps(record.options())))
    assert again == record


def test_argparse_stops_at_the_command_line():
    """Past cli.py the run is its record: main.py, the loop, the record and the launcher's runs
    never import argparse."""
    for name in ("main.py", "record.py", "training.py", "experiments/runs.py"):
        tree = ast.parse((ROOT / name).read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "argparse" not in imported, name
