"""The launcher (python -m experiments) and the report (python -m experiments.report) safe by
default: the arguments after `--` never make two runs of a sweep one run unnoticed, nor leave a
failed run directory per run for a mistake they all share (a device, data or --init_from the runs
could not start with); no flag of several values of any tool is silently replaced when given
twice; neither tool blocks on a FIFO or reads a device where a run's file should be, takes numbers
no run writes (an accuracy of 150, -5 epochs) for a completed run's, or writes over a file it did
not make. Each case ends in one line and its documented exit code (experiments/__main__.py,
experiments/report.py) and leaves what was there as it was.

Everything runs in this process on fake runs and summaries the tests write: no run is trained.
What could block is run under a deadline, so that a regression fails its test instead of hanging
the suite."""

import argparse
import importlib
import json
import math
import os
import re
import shlex
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import cli
from experiments import plots, report
from experiments.files import png_texts
from experiments.first_steps import check_first_steps
from experiments.runs import resolve_all
from experiments.sweeps import SWEEPS
from models import build_model
from tests.support.deadline import deadline
from tests.support.hostile import write_gadget
from tests.support.launcher import in_process, slurm_commands
from utils.errors import UserError

SECONDS = 30  # far more than any case takes; only a blocked read reaches it


def snapshot(root: Path) -> dict[str, object]:
    """Every path under `root` with its bytes, or, for what is no regular file (never opened
    here either), its type, and a link's target."""
    seen = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            seen[str(path.relative_to(root))] = f"-> {os.readlink(path)}"
        elif stat.S_ISREG(mode):
            seen[str(path.relative_to(root))] = path.read_bytes()
        else:
            seen[str(path.relative_to(root))] = stat.S_IFMT(mode)
    return seen


def make(path: Path, kind: str) -> None:
    """Something other than a regular file at `path`: a FIFO, a device (a link to /dev/zero,
    which a reader would read for ever), a directory or a socket."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    else:
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(path))


# -- the launcher: mistakes in the arguments after `--` ------------------------------------------


def smoke_runs(cwd: Path) -> list[Path]:
    """The run directories of the smoke sweep launched in `cwd` at its default seed."""
    return [run.run_dir for run in resolve_all(SWEEPS["smoke"].commands([0]), cwd / "runs")]


def nothing(cwd: Path, monkeypatch) -> None:
    pass


def another_sweeps_launch(cwd: Path, monkeypatch) -> None:
    """runs/smoke records a launch of digits_demo (both given --logdir smoke, say), and holds a
    user's own file named like the launcher's write probe."""
    (cwd / "runs" / "smoke").mkdir(parents=True)
    record = {"sweep": "digits_demo", "seeds": [0], "overrides": ["--logdir", "smoke"]}
    (cwd / "runs" / "smoke" / "launch.json").write_text(json.dumps(record))
    (cwd / "runs" / "smoke" / ".writable").write_text("a user's notes")


def two_visible_gpus(cwd: Path, monkeypatch) -> None:
    monkeypatch.setattr("experiments.local.visible_gpus", lambda: ["0", "1"])


def a_fifo_launch_record(cwd: Path, monkeypatch) -> None:
    make(cwd / "runs" / "smoke" / "launch.json", "fifo")


def weights_of(name: str, path: Path) -> None:
    """A state dict of the built-in network `name` for digits' images, at `path`."""
    torch.save(build_model(name, num_classes=10, in_channels=1).state_dict(), path)


def a_hostile_pickle(cwd: Path, monkeypatch) -> None:
    """evil.pt, whose unpickling would create `ran` (which the snapshot would show)."""
    write_gadget(cwd / "evil.pt", "exec", cwd / "ran")


def weights_of_lenet5(cwd: Path, monkeypatch) -> None:
    weights_of("lenet5", cwd / "lenet5.pt")


def weights_with_masks(cwd: Path, monkeypatch) -> None:
    """masked.pt, a pruned lenet300 for digits as model.pt holds one: half of 1.weight pruned."""
    spec = {"name": "lenet300", "num_classes": 10, "in_channels": 1, "image_size": 32}
    state = build_model(**spec).state_dict()
    mask = torch.ones_like(state["1.weight"], dtype=torch.bool)
    mask[:, ::2] = False
    torch.save({"spec": spec, "state_dict": state, "masks": {"1.weight": mask}}, cwd / "masked.pt")


def a_fifo_of_weights(cwd: Path, monkeypatch) -> None:
    make(cwd / "fifo.pt", "fifo")


def no_host_answers(cwd: Path, monkeypatch) -> None:
    """Names do not resolve, as offline, and no proxy is set."""

    def unknown(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    monkeypatch.setattr("urllib.request.getproxies", dict)


def a_file_where_the_data_would_go(cwd: Path, monkeypatch) -> None:
    (cwd / "notes.txt").write_text("a user's notes")
    no_host_answers(cwd, monkeypatch)  # never asked: the folder cannot be made first


def a_slurm_cluster_and_a_file_for_its_logs(cwd: Path, monkeypatch) -> None:
    """Slurm's commands, answering for one partition of one node that fits a task, and a user's
    file where the sweep's Slurm logs would go."""
    slurm_commands(cwd, monkeypatch, cpus=8, memory_mb=16000)
    (cwd / "runs" / "smoke").mkdir(parents=True)
    (cwd / "runs" / "smoke" / ".slurm").write_text("a user's file")


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    line: str  # a regular expression the one line on stderr matches in full
    setup: Callable = nothing


ONE_RUN = (
    r"error: -- --prune_criterion flipout makes two runs of the sweep one: the commands with "
    r"--comment 'global magnitude seed 0' and --comment 'random seed 0' differ in "
    r"--prune_criterion, which it sets alike for both \(the same training twice, counted twice "
    r"in the report\); leave --prune_criterion out of the arguments after --"
)
NO_GPU = (
    r"error: --device cuda was requested but no CUDA GPU is available; every run would fail on "
    r"it as it starts, so none is"
)
SEEDS = (
    r"--seed is the launcher's, not for after --: the seeds come from --seeds \(give --seeds 5 "
    r"before the --\)"
)
EVERY_RUN = r"; every run would fail on it as it starts, so none is"
CIFAR_MISSING = (
    r"CIFAR-10 is missing data_batch_1, .*, test_batch in \S+/data/cifar-10-batches-py\. "
)

CASES = [
    Case("--seed after --", ("run", "smoke", "--seeds", "0", "1", "--", "--seed", "5"),
         rf"error: -- --seed 5: {SEEDS}"),
    Case("--seed=N after --, dry run", ("run", "smoke", "--dry-run", "--", "--seed=5"),
         rf"error: -- --seed=5: {SEEDS}"),
    Case("--seed abbreviated after --, status", ("status", "smoke", "--", "-e", "1", "--see", "5"),
         rf"error: -- -e 1 --see 5: {SEEDS}"),
    Case("--run_dir after --", ("run", "smoke", "--", "--run_dir", "mine"),
         r"error: -- --run_dir mine: --run_dir is the launcher's, not for after --: each run's "
         r"directory is named after "
         r"its options, under runs/<logdir> \(move them with --logdir\)"),
    Case("--resume after --", ("run", "smoke", "--dry-run", "--", "--resume", "runs/x"),
         r"error: -- --resume runs/x: --resume is the launcher's, not for after --: a launch "
         r"resumes the runs that "
         r"stopped by itself"),
    Case("an argument that makes two runs one", ("run", "smoke", "--", "--prune_criterion",
         "flipout"), ONE_RUN),
    Case("an argument that makes two runs one, dry run", ("run", "smoke", "--dry-run", "--",
         "--prune_criterion", "flipout"), ONE_RUN),
    Case("a key given twice to --model_kwargs after --", ("run", "digits_zoo", "--seeds", "0",
         "--", "--model_kwargs", "depth=2", "depth=3"),
         r"error: -- --model_kwargs depth=2 depth=3: argument --model_kwargs: depth is given .*"),
    Case("a device no run has", ("run", "smoke", "--", "--device", "cuda"), NO_GPU),
    Case("a device no run has, dry run", ("run", "smoke", "--dry-run", "--", "--device", "cuda"),
         NO_GPU),
    Case("a GPU beyond what each Slurm task has, dry run", ("run", "smoke", "--dry-run",
         "--executor", "slurm", "--gpus_per_task", "0", "--", "--device", "cuda"),
         r"error: --device cuda: each Slurm task has 0 GPUs \(--gpus_per_task\); every run would "
         r"fail on it as it starts, so none is"),
    Case("a GPU beyond each run's own with --gpus, dry run", ("run", "smoke", "--dry-run",
         "--gpus", "1", "--", "--device", "cuda:1"),
         r"error: --device cuda:1: with --gpus each run sees one GPU, its own, as cuda:0; every "
         r"run would fail on it as it starts, so none is", two_visible_gpus),
    Case("an --init_from that is not there", ("run", "smoke", "--", "--init_from", "gone.pt"),
         r"error: --init_from gone\.pt: no such file or directory; every run would fail on it as "
         r"it starts, so none is"),
    Case("an --init_from that would run code", ("run", "smoke", "--", "--init_from", "evil.pt"),
         rf"error: --init_from evil\.pt: .+{EVERY_RUN}", a_hostile_pickle),
    Case("an --init_from that would run code, dry run", ("run", "smoke", "--dry-run", "--",
         "--init_from", "evil.pt"), rf"error: --init_from evil\.pt: .+{EVERY_RUN}",
         a_hostile_pickle),
    Case("an --init_from of another network", ("run", "smoke", "--", "--init_from", "lenet5.pt"),
         rf"error: --init_from lenet5\.pt: its weights are for another network.*: missing .+"
         rf"{EVERY_RUN}", weights_of_lenet5),
    Case("an --init_from whose masks prune what the runs keep dense", ("run", "smoke", "--",
         "--init_from", "masked.pt", "--prune_exclude", "1"),
         rf"error: --init_from masked\.pt: its masks prune 1\.weight, which this run keeps dense "
         rf"by --prune_exclude 1: .+{EVERY_RUN}", weights_with_masks),
    Case("an --init_from that is a FIFO", ("run", "smoke", "--", "--init_from", "fifo.pt"),
         rf"error: --init_from fifo\.pt: .*a FIFO.*{EVERY_RUN}", a_fifo_of_weights),
    Case("data missing with --no_download", ("run", "smoke", "--", "-d", "cifar10",
         "--no_download"), rf"error: {CIFAR_MISSING}.+ into \S+/data/{EVERY_RUN}"),
    Case("data missing, its host not found", ("run", "smoke", "--dry-run", "--", "-d", "cifar10"),
         rf"error: {CIFAR_MISSING}.+ The runs would download it, but www\.cs\.toronto\.edu "
         rf"cannot be found from here \(Name or service not known\){EVERY_RUN}",
         no_host_answers),
    Case("data missing where a file is in the way", ("run", "smoke", "--", "-d", "mnist",
         "--data_dir", "notes.txt/data"),
         rf"error: MNIST file .+ The runs would download it, but \S+/notes\.txt is a file, not a "
         rf"directory{EVERY_RUN}", a_file_where_the_data_would_go),
    Case("data that is never downloaded, missing", ("run", "smoke", "--", "-d", "imagenette"),
         rf"error: Imagenette is missing: no folder \S+/data/imagenette2/train\. .+{EVERY_RUN}"),
    Case("the sweep's own data missing", ("run", "densenet121_imagenette", "--seeds", "0"),
         rf"error: Imagenette is missing: no folder \S+/data/imagenette2/train\. .+{EVERY_RUN}"),
    Case("a validation split larger than the data", ("run", "smoke", "--", "--val",
         "--val_size", "5000"),
         rf"error: --val_size must be between 1 and 1436 \(the training set has 1437 images\), "
         rf"got 5000{EVERY_RUN}"),
    Case("an sbatch option given twice, two ways", ("run", "smoke", "--executor", "slurm",
         "--sbatch", "qos=high", "--sbatch=--qos=low"),
         r"error: argument --sbatch: qos is given twice, as high and low: give it once"),
    Case("a launch record of another sweep where the runs go", ("run", "smoke", "--", "-e", "1"),
         r"error: runs/smoke/launch\.json records a launch of digits_demo: smoke's runs would "
         r"share its directory and its report; it is left as it is \(keep them apart with -- "
         r"--logdir NAME\)", another_sweeps_launch),
    Case("a launch record that is a FIFO", ("status", "smoke"),
         r"error: runs/smoke/launch\.json is unreadable: a FIFO, not a file; it is left as it is",
         a_fifo_launch_record),
    Case("a file where the Slurm logs go", ("run", "smoke", "--executor", "slurm",
         "--gpus_per_task", "0"),
         r"error: runs/smoke/\.slurm is a file, not the folder of Slurm's logs; it is left as it "
         r"is", a_slurm_cluster_and_a_file_for_its_logs),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_launch_refused_is_one_line_exit_2_and_writes_nothing(
    case, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # on any machine
    case.setup(tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    with deadline(SECONDS, case.name):
        code, out, err = in_process(capsys, *case.argv)
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(case.line, lines[0]), err
    assert "Traceback" not in out + err and not out
    # not a run directory, not even the folder the runs would have gone to
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "argv",
    [
        ("--", "--device", "cpu"),
        ("--gpus", "1", "--", "--device", "cuda:0"),
        ("--executor", "slurm", "--", "--device", "cuda"),  # a task's GPU, not this machine's
    ],
)
def test_a_device_every_run_will_have_is_let_through(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    two_visible_gpus(tmp_path, monkeypatch)
    code, out, err = in_process(capsys, "run", "smoke", "--dry-run", *argv)
    assert code == 0 and len(out.splitlines()) == 4, err


def a_host_that_answers(cwd: Path, monkeypatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [])


def lenet300_weights(cwd: Path, monkeypatch) -> None:
    weights_of("lenet300", cwd / "lenet300.pt")


def timm_names_taken(cwd: Path, monkeypatch) -> None:
    """The names of timm's models taken as they are: looking them up imports timm, which is not
    what is tested (a launch without arguments after -- builds no network)."""
    monkeypatch.setattr(cli, "check_model_name", lambda name: name)


LET_THROUGH = [
    ("smoke", (), nothing),
    ("digits_demo", (), nothing),
    ("digits_zoo", (), timm_names_taken),
    # shown also where the sweep's own data is not: its launch is refused, not its commands
    ("densenet121_imagenette", (), nothing),
    ("smoke", ("--", "--init_from", "lenet300.pt"), lenet300_weights),
    ("smoke", ("--", "--init_from", "masked.pt"), weights_with_masks),
    ("smoke", ("--", "-e", "2", "--val"), nothing),
    # missing, downloaded by each run: nothing made here, not even the data's folder
    ("smoke", ("--", "-d", "cifar10"), a_host_that_answers),
]


@pytest.mark.parametrize(
    ("sweep", "argv", "setup"), LET_THROUGH, ids=[" ".join([s, *a]) for s, a, _ in LET_THROUGH]
)
def test_a_launch_every_run_can_start_is_let_through(
    sweep, argv, setup, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    code, out, err = in_process(capsys, "run", sweep, "--seeds", "0", "--dry-run", *argv)
    assert code == 0 and not err, err
    assert len(out.splitlines()) == len(SWEEPS[sweep].commands([0]))
    assert snapshot(tmp_path) == before


def test_a_mistake_that_some_runs_share_is_refused_naming_them(tmp_path, monkeypatch):
    """Weights that fit one network of a launch and not the other: the launch stops, naming
    the runs that would fail."""
    monkeypatch.chdir(tmp_path)
    weights_of("lenet5", tmp_path / "lenet5.pt")
    common = ["-d", "digits", "-e", "1", "--quiet"]
    commands = [["-m", "lenet5", *common], ["-m", "lenet300", *common]]
    extra = ["--init_from", "lenet5.pt"]
    runs = resolve_all(commands, tmp_path / "runs", extra)
    where = argparse.Namespace(executor="local", gpus=None, dry_run=False)
    with pytest.raises(UserError) as refused:
        check_first_steps(runs, where, extra)
    assert re.fullmatch(
        r"--init_from lenet5\.pt: its weights are for another network.+; the run with --model "
        r"lenet300 would fail on it as it starts, so none is",
        str(refused.value),
    ), refused.value
    check_first_steps(runs[:1], where, extra)  # the run it fits
    assert not (tmp_path / "runs").exists()


def test_model_kwargs_after_the_sweeps_own_add_to_them(tmp_path, monkeypatch, capsys):
    """digits_zoo gives its ViT --model_kwargs of its own: those after -- add to them, never
    replace them (a full-width ViT trained where a small one was asked for). The names of timm's
    models are taken as they are, and their networks not built at launch: both import timm,
    which is not what is tested."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "check_model_name", lambda name: name)
    monkeypatch.setattr("experiments.first_steps.check_network", lambda run, splits: None)
    argv = ["run", "digits_zoo", "--seeds", "0", "--dry-run", "--", "--model_kwargs"]
    code, out, err = in_process(capsys, *argv, "drop_rate=0.1")
    assert code == 0, err
    for command in out.splitlines():
        words = shlex.split(command)[2:]
        parsed = cli.parse_args(words[: words.index("--run_dir")])
        given = dict(pair.split("=") for pair in parsed.model.model_kwargs)
        assert given["drop_rate"] == "0.1"
        if "vit" in parsed.model.model:
            assert (given["patch_size"], given["depth"], given["embed_dim"]) == ("4", "4", "64")
    capsys.readouterr()  # what the parses above warned about
    # the same key with another value than the sweep's: one line naming the flag and the key
    code, out, err = in_process(capsys, *argv, "depth=2")
    assert code == 2 and not out
    (line,) = err.strip().splitlines()
    assert line.startswith(
        "error: -- --model_kwargs depth=2, after the sweep's own arguments: argument "
        "--model_kwargs: depth is given twice"
    ), line


def test_two_commands_of_a_sweep_that_are_one_run_are_refused_naming_both(tmp_path):
    command = SWEEPS["smoke"].commands([0])[0]
    renamed = [*command, "--comment", "another name"]  # the same training, another directory
    with pytest.raises(UserError) as refused:
        resolve_all([command, renamed], tmp_path)
    assert str(refused.value) == (
        "two commands of the sweep are one run: --comment 'flipout seed 0' and --comment "
        "'another name'"
    )


# -- every tool: a flag of several values given twice --------------------------------------------

# each tool's command line, by the module whose main(argv) parses it
TOOLS = ["main", "experiments.__main__", "experiments.report", "bench.__main__", "models.__main__",
         "export.formats", "export.inspect"]  # fmt: skip


class Parsed(Exception):
    """What stands for parsing: the parser is what a test looks at."""


def parsers_of(module: str, monkeypatch) -> list[argparse.ArgumentParser]:
    """The parser a tool's main builds (some build it inside main), with its subcommands'."""
    built = []

    def record(parser, *args, **kwargs):
        built.append(parser)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", record)
    with pytest.raises(Parsed):
        importlib.import_module(module).main([])
    parsers = [built[0]]
    for parser in parsers:  # grows as subcommands are found
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += action.choices.values()
    return parsers


def several_values(action: argparse.Action) -> bool:
    """Whether a flag stores a list, or may be given again to add to it (--sbatch)."""
    repeated = isinstance(action, argparse._AppendAction | argparse._ExtendAction)
    nargs = action.nargs
    return repeated or nargs in ("+", "*") or (isinstance(nargs, int) and nargs > 0)


def test_every_flag_of_several_values_of_every_tool_adds_up_or_refuses_a_second_time(
    monkeypatch,
):
    flags = {}
    for module in TOOLS:
        for parser in parsers_of(module, monkeypatch):
            for action in parser._actions:
                if several_values(action):
                    flags[f"{module} {action.option_strings or action.dest}"] = action
    named = {action.dest for action in flags.values()}
    assert named >= {"seeds", "sbatch", "sections", "epoch_networks", "model_kwargs"}
    last_wins = [flag for flag, action in flags.items()
                 if not isinstance(action, cli.SEVERAL_VALUES)]  # fmt: skip
    assert not last_wins


def bench_parser() -> argparse.ArgumentParser:
    return importlib.import_module("bench.__main__").build_parser()


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["--sections", "step", "--sections", "prune", "step"], "sections", ["step", "prune"]),
        (["--epoch_networks", "vgg19", "--epoch_networks", "resnet18"], "epoch_networks",
         ["vgg19", "resnet18"]),
        ([], "epoch_networks", ["vgg19", "resnet18", "densenet121"]),
    ],
)  # fmt: skip
def test_benchs_flags_of_several_values_add_up(argv, dest, value):
    assert getattr(bench_parser().parse_args(argv), dest) == value


def test_sbatch_options_given_again_add_up_each_key_once():
    parser = importlib.import_module("experiments.__main__").build_parser()
    given = ["--sbatch", "qos=high", "--sbatch=--mail-type=END", "--sbatch", "qos=high"]
    args = parser.parse_args(["run", "smoke", "--executor", "slurm", *given])
    options = importlib.import_module("experiments.__main__").slurm_options(args)
    assert options.extra == {"qos": "high", "mail-type": "END"}


SEEDS_TWICE = [
    (("run", "smoke", "--dry-run", "--seeds", "0", "--seeds", "1"), [0, 1]),
    (("run", "smoke", "--seeds", "2", "0", "--dry-run", "--seeds", "0", "1"), [2, 0, 1]),
    (("status", "smoke", "--seeds", "0", "--seeds", "1"), [0, 1]),
]


@pytest.mark.parametrize(("argv", "seeds"), SEEDS_TWICE, ids=[" ".join(a) for a, _ in SEEDS_TWICE])
def test_seeds_given_twice_add_up(argv, seeds, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = in_process(capsys, *argv)
    assert code == 0 and not err, err
    runs = resolve_all(SWEEPS["smoke"].commands(seeds), tmp_path / "runs")
    for run in runs:
        assert f"runs/smoke/{run.name}" in out
    assert out.count("runs/smoke/") == len(runs) == 4 * len(seeds)


# -- the launcher: a run directory that holds a FIFO or a device ---------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
@pytest.mark.parametrize(
    "name", ["summary.json", "config.json", "metrics.jsonl", "output.log", ".lock", "slurm.json"]
)
def test_a_run_file_that_is_no_file_makes_the_run_damaged_never_opened(
    name, kind, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    run_dirs = smoke_runs(tmp_path)
    for run_dir in run_dirs:
        make(run_dir / name, kind)
    what = {"fifo": "a FIFO", "device": "a character device", "directory": "a directory"}[kind]
    damage = f"{name} is {what}, not a file"
    before = snapshot(tmp_path)
    with deadline(SECONDS, f"status with {name} {what}"):
        code, out, err = in_process(capsys, "status", "smoke")
    assert code == 0 and "Traceback" not in err, err
    assert out.count("damaged       0/6    runs/smoke/") == 4 and out.count(damage) == 4, out
    with deadline(SECONDS, f"run with {name} {what}"):
        code, out, err = in_process(capsys, "run", "smoke")
    assert code == 2 and "Traceback" not in out + err, out + err
    assert out.count(f"refuse (damaged: {damage}; left as is)") == 4, out
    refusals = [line for line in err.splitlines() if line.startswith("error: ")]
    assert refusals == [
        f"error: {run_dir.relative_to(tmp_path)} is damaged: {damage}; it is left as it is: "
        "repair it, or delete it to run it afresh"
        for run_dir in run_dirs
    ]
    after = snapshot(tmp_path)  # the launch is remembered before its plan: nothing else is new
    assert {key: after[key] for key in before} == before
    assert set(after) - set(before) == {"runs/smoke/launch.json"}


DONE = {"status": "completed", "epochs": 6, "epochs_completed": 6, "final_sparsity": 0.9}


def first_smoke_run(cwd: Path, monkeypatch) -> Path:
    """The smoke sweep's first run directory, with its own config.json and nothing else."""
    monkeypatch.chdir(cwd)
    run_dir = smoke_runs(cwd)[0]
    run_dir.mkdir(parents=True)
    command = SWEEPS["smoke"].commands([0])[0]
    (run_dir / "config.json").write_text(json.dumps(cli.parse_args(command).options()))
    return run_dir


def status_line(capsys, run_dir: Path) -> str:
    """What `status smoke` says of one run."""
    code, out, err = in_process(capsys, "status", "smoke")
    assert code == 0 and not err, err
    return next(line for line in out.splitlines() if run_dir.name in line)


def test_status_shows_no_accuracy_that_is_not_one(tmp_path, monkeypatch, capsys):
    """A completed run whose summary.json holds an accuracy of another type: its line, without
    the accuracy, instead of a traceback."""
    run_dir = first_smoke_run(tmp_path, monkeypatch)
    for accuracy in ["87", 150, None]:
        (run_dir / "summary.json").write_text(json.dumps({**DONE, "final_test_acc": accuracy}))
        assert status_line(capsys, run_dir) == f"completed     6/6    runs/smoke/{run_dir.name}"


@pytest.mark.parametrize(
    "epochs",
    [{"epochs": -5, "epochs_completed": -5}, {"epochs_completed": 5}, {"epochs_completed": "6"},
     {"epochs": 6.0, "epochs_completed": 6.0}, {"epochs_completed": None}],
    ids=["-5 of -5", "5 of 6", "a string", "fractions", "none recorded"],
)  # fmt: skip
def test_a_completed_summary_of_epochs_no_run_has_is_not_taken_as_done(
    epochs, tmp_path, monkeypatch, capsys
):
    """Its run is not skipped as completed: a launch resumes it, and main.py, finding every
    epoch trained, writes its summary again."""
    run_dir = first_smoke_run(tmp_path, monkeypatch)
    summary = {**DONE, "final_test_acc": 87.0, **epochs}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert status_line(capsys, run_dir) == f"stopped       0/6    runs/smoke/{run_dir.name}"


# -- the report: what it refuses to table ---------------------------------------------------------


def write_summary(folder: Path, **fields) -> None:
    """A completed FlipOut run on vgg19/cifar10 at 90% sparsity in `folder`, with `fields` in
    place of its own."""
    summary = {
        "model": "vgg19", "dataset": "cifar10", "prune_criterion": "flipout", "seed": 0,
        "epochs": 3, "epochs_completed": 3, "status": "completed", "final_test_acc": 87.0,
        "best_test_acc": 88.0, "final_sparsity": 0.9, "options": {"noise": True},
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps({**summary, **fields}))


def run_report(capsys, *argv) -> tuple[int, str, str]:
    code = report.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


NOT_PERCENT = "not a percentage (0-100)"
SKIPPED = [
    ("an accuracy of 150", {"final_test_acc": 150},
     f"completed, but final_test_acc is 150, {NOT_PERCENT}"),
    ("an accuracy of 1e308", {"final_test_acc": 1e308},
     f"completed, but final_test_acc is 1e+308, {NOT_PERCENT}"),
    ("a negative accuracy", {"final_test_acc": -0.5},
     f"completed, but final_test_acc is -0.5, {NOT_PERCENT}"),
    ("a NaN accuracy", {"final_test_acc": math.nan}, "completed, but final_test_acc is nan"),
    ("an infinite accuracy", {"final_test_acc": math.inf}, "completed, but final_test_acc is inf"),
    ("an accuracy in a string", {"final_test_acc": "87"}, "completed, but final_test_acc is '87'"),
    ("options null", {"options": None}, "options is None, not an object"),
    ("options a list", {"options": ["noise"]}, "options is ['noise'], not an object"),
    ("model_kwargs a number", {"options": {"model_kwargs": 3}},
     "model_kwargs is 3, not a list of KEY=VALUE"),
    ("model_kwargs a string", {"options": {"model_kwargs": "depth=2"}},
     "model_kwargs is 'depth=2', not a list of KEY=VALUE"),
    ("schedule a list", {"options": {"schedule": ["gradual"]}},
     "schedule is ['gradual'], not a schedule's name"),
    ("noise a string", {"options": {"noise": "yes"}}, "noise is 'yes', not true or false"),
    ("rewind_epoch a string", {"prune_criterion": "imp", "options": {"rewind_epoch": "1"}},
     "rewind_epoch is '1', not an epoch"),
    ("nm a number", {"options": {"nm": 24}}, "nm is 24, not N:M"),
    ("-5 epochs of -5", {"epochs": -5, "epochs_completed": -5, "run_id": "b0a5"},
     "completed, but epochs is -5, not a whole number from 1"),
    ("fewer epochs completed than planned", {"epochs_completed": 2},
     "completed, but epochs_completed is 2, fewer than its epochs (3)"),
    ("epochs a fraction", {"epochs": 2.5},
     "completed, but epochs is 2.5, not a whole number from 1"),
    ("epochs_completed a string", {"epochs_completed": "3"},
     "completed, but epochs_completed is '3', not a whole number from 0"),
    ("epochs_completed true", {"epochs_completed": True},
     "completed, but epochs_completed is True, not a whole number from 0"),
    ("a failed run of -1 epochs", {"status": "failed", "epochs_completed": -1},
     "epochs_completed is -1, not a whole number from 0"),
    ("more FLOPs remaining than dense", {"flops_dense": 100, "flops_remaining": 200},
     "flops_remaining is 200, more than flops_dense (100)"),
    ("negative FLOPs", {"flops_dense": -1}, "flops_dense is -1, not a count of operations"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "reason"), [case[1:] for case in SKIPPED],
                         ids=[case[0] for case in SKIPPED])  # fmt: skip
def test_a_summary_no_run_writes_is_listed_as_skipped_and_not_tabled(
    fields, reason, tmp_path, capsys
):
    write_summary(tmp_path / "good")
    write_summary(tmp_path / "bad", **fields)
    code, out, err = run_report(capsys, tmp_path)
    assert code == 0 and not err, err
    assert "| FlipOut | 90.00 | 87.00 (n=1) |" in out
    assert out.endswith(f"### Skipped files\n\n- bad/summary.json: {reason}\n")


def test_the_best_accuracy_is_checked_where_it_is_tabled(tmp_path, capsys):
    write_summary(tmp_path / "good")
    write_summary(tmp_path / "bad", best_test_acc=150)
    code, out, _ = run_report(capsys, tmp_path)  # the final accuracy: both runs are fine
    assert code == 0 and "87.00 ± 0.00 (n=2)" in out
    code, out, _ = run_report(capsys, tmp_path, "--metric", "best")
    assert code == 0 and "| FlipOut | 90.00 | 88.00 (n=1) |" in out
    assert f"- bad/summary.json: completed, but best_test_acc is 150, {NOT_PERCENT}" in out


SPECIAL = [
    ("summary.json", "fifo", "a FIFO"),
    ("summary.json", "device", "a character device"),
    ("summary.json", "socket", "a socket"),
    ("summary.json", "directory", "a directory"),
    ("config.json", "fifo", "a FIFO"),
    ("metrics.jsonl", "fifo", "a FIFO"),
    ("metrics.jsonl", "device", "a character device"),
]


@pytest.mark.parametrize(("name", "kind", "what"), SPECIAL,
                         ids=[f"{name} a {kind}" for name, kind, _ in SPECIAL])  # fmt: skip
def test_a_run_file_that_is_no_file_is_skipped_unopened(name, kind, what, tmp_path, capsys):
    write_summary(tmp_path / "good")
    make(tmp_path / "bad" / name, kind)
    with deadline(SECONDS, f"the report with {name} {what}"):
        code, out, err = run_report(capsys, tmp_path)
    assert code == 0 and not err, err
    assert "| FlipOut | 90.00 | 87.00 (n=1) |" in out
    assert f"- bad/{name}: unreadable: {what}, not a file\n" in out


# -- the report: what it writes, and what it leaves alone -----------------------------------------


def two_levels(root: Path) -> None:
    """Runs of one method at two sparsities: the report draws accuracy_vs_sparsity.png."""
    write_summary(root / "half", final_sparsity=0.5)
    write_summary(root / "most", final_sparsity=0.9)


def user_file(path: Path) -> None:
    path.write_bytes(b"model,dataset\nmy own numbers\n")


THINGS = {
    "a user's own file": (user_file, "not {what}"),
    "a FIFO": (lambda path: make(path, "fifo"), "a FIFO, not {what}"),
    "a device": (lambda path: make(path, "device"), "a character device, not {what}"),
    "a directory": (lambda path: make(path, "directory"), "a directory, not {what}"),
}


@pytest.mark.parametrize("thing", THINGS)
def test_the_csv_never_replaces_what_the_report_did_not_write(thing, tmp_path, capsys):
    two_levels(tmp_path / "runs")
    put, problem = THINGS[thing]
    target = tmp_path / "results.csv"
    put(target)
    before = snapshot(tmp_path)
    with deadline(SECONDS, f"--csv onto {thing}"):
        code, out, err = run_report(capsys, tmp_path / "runs", "--csv", target)
    assert code == 2 and not out, out
    problem = problem.format(what="a CSV of this report")
    assert err == (
        f"error: --csv {target} is {problem}: left as it is (give another path, or move it away)\n"
    )
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("thing", THINGS)
def test_the_plot_never_replaces_what_the_report_did_not_write(thing, tmp_path, capsys):
    runs = tmp_path / "runs"
    two_levels(runs)
    put, problem = THINGS[thing]
    put(runs / plots.PLOT_NAME)
    before = snapshot(tmp_path)
    with deadline(SECONDS, f"the plot onto {thing}"):
        code, out, err = run_report(capsys, runs)
    assert code == 0 and "| FlipOut | 50.00 | 87.00 (n=1) |" in out and "Plot:" not in out
    problem = problem.format(what="a plot of this report")
    assert err == (
        f"note: {runs / plots.PLOT_NAME} is {problem}: left as it is, no plot written (move it "
        "away for one)\n"
    )
    assert snapshot(tmp_path) == before


def test_the_reports_own_files_are_replaced_on_a_rerun(tmp_path, capsys):
    runs, table = tmp_path / "runs", tmp_path / "results.csv"
    two_levels(runs)
    plot = runs / plots.PLOT_NAME
    code, out, err = run_report(capsys, runs, "--csv", table, "--flops")
    assert code == 0 and f"Plot: {plot}" in out, err
    assert png_texts(plot.read_bytes()).get(plots.PNG_MARK[0]) == plots.PNG_MARK[1]
    first = (table.read_text(), plot.stat().st_ino)
    write_summary(runs / "more", final_sparsity=0.75, final_test_acc=80.0)
    code, out, err = run_report(capsys, runs, "--csv", table)
    assert code == 0 and f"CSV: {table}" in out and f"Plot: {plot}" in out, err
    assert table.read_text() != first[0] and "80.0" in table.read_text()
    assert plot.stat().st_ino != first[1]  # a new file, renamed over the report's own
