"""Sweeps (python -m experiments): the paper's commands as data, run on this machine or on a real
single-node Slurm cluster (.ci/slurm-cluster), with nothing run twice and nothing lost when a run
is stopped or a task preempted."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

import cli
from experiments.runs import identity, resolve_all
from experiments.sweeps import LADDER_SPARSITY, SWEEPS
from tests.support import ROOT
from tests.support.launcher import in_process, slurm_environment
from tests.support.runs import records


def experiments(*argv: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600):
    """`python -m experiments ...` from `cwd`, whose runs/ the runs go to."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "experiments", *argv], cwd=cwd, env=environment,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def dry_run(capsys, sweep: str, *extra: str) -> list:
    """The sweep's commands as `--dry-run` prints them, each parsed by main.py's own parser."""
    code, out, err = in_process(capsys, "run", sweep, "--dry-run", *extra)
    assert code == 0, err
    parsed = []
    for line in out.strip().splitlines():
        words = shlex.split(line)
        assert words[:2] == ["python", "main.py"], line
        at = words.index("--run_dir")
        # each option by name, flat, as the assertions below read them
        parsed.append(SimpleNamespace(**cli.parse_args(words[2:at] + words[at + 2 :]).by_name()))
    return parsed


# -- the sweeps as data ------------------------------------------------------------------------

TABLES = {  # sweep -> (model, dataset, Hoyer-Square lambda)
    "vgg19_cifar10": ("vgg19", "cifar10", 6e-5),
    "resnet18_cifar10": ("resnet18", "cifar10", 1e-4),
    "densenet121_imagenette": ("densenet121", "imagenette", 3e-4),
}


def test_list_names_every_sweep(capsys):
    code, out, _ = in_process(capsys, "list")
    assert code == 0
    for name in SWEEPS:
        assert name in out


@pytest.mark.parametrize("sweep", sorted(TABLES))
def test_table_sweeps_run_every_method_of_the_table_for_three_seeds(capsys, sweep):
    model, dataset, hoyer_lambda = TABLES[sweep]
    commands = dry_run(capsys, sweep)
    assert len(commands) == 15
    assert Counter(c.prune_criterion for c in commands) == {
        "flipout": 3, "global_magnitude": 3, "random": 3, "snip": 3, "threshold": 3,
    }  # fmt: skip
    assert Counter(c.seed for c in commands) == {0: 5, 1: 5, 2: 5}
    for c in commands:
        assert (c.model, c.dataset, c.logdir) == (model, dataset, sweep)
        assert (c.batch_size, c.lr, c.opt, c.momentum) == (128, 0.1, "sgd", 0.9)
        assert (c.reg_type, c.lambda_, c.use_scheduler, c.milestones) == (
            "wdecay", 5e-4, True, [150, 250],
        )  # fmt: skip
        if c.prune_criterion == "threshold":  # Hoyer-Square, as in the seed README
            assert c.add_hs and c.hoyer_lambda == hoyer_lambda and c.magnitude_threshold == 1e-4
            assert (c.epochs, c.prune_freq, c.stop_hoyer_at) == (500, 350, 350)
        else:
            assert c.epochs == 350 and not c.add_hs
        if c.prune_criterion in ("flipout", "global_magnitude", "random"):
            assert (c.prune_freq, c.prune_rate) == (32, 0.5)
        assert c.noise == (c.prune_criterion == "flipout")
        if c.prune_criterion == "flipout":
            assert (c.flipout_p, c.noise_scale_factor) == (2, 1)
        if c.prune_criterion == "snip":
            assert c.snip_sparsity == 0.999


def test_extra_arguments_reach_every_command_and_seeds_can_be_chosen(capsys):
    argv = ["--seeds", "7", "--", "-e", "3", "--limit_batches", "2"]
    commands = dry_run(capsys, "vgg19_cifar10", *argv)
    assert len(commands) == 5
    assert {(c.epochs, c.limit_batches, c.seed) for c in commands} == {(3, 2, 7)}


def test_the_sparsity_sweep_climbs_the_seed_readmes_ladder(capsys):
    commands = dry_run(capsys, "vgg19_cifar10_sweep")
    assert len(commands) == 75
    assert Counter(c.prune_criterion for c in commands) == {
        "flipout": 15, "global_magnitude": 15, "rigl": 15, "set": 15, "granet": 15,
    }  # fmt: skip
    periodic = [c for c in commands if c.prune_criterion in ("flipout", "global_magnitude")]
    assert {c.prune_freq for c in periodic} == {117, 70, 50, 39, 32}
    assert {(c.epochs, c.prune_rate, c.model) for c in periodic} == {(350, 0.5, "vgg19")}
    # the dynamic sparse methods at the ladder's exact sparsities, by the same recipe
    dynamic = [c for c in commands if c not in periodic]
    levels = {float(f) for f in LADDER_SPARSITY.values()}
    assert {c.init_sparsity for c in dynamic if c.prune_criterion != "granet"} == levels
    assert {c.granet_sparsity for c in dynamic if c.prune_criterion == "granet"} == levels
    assert {(c.epochs, c.lr, c.milestones[0], c.model) for c in dynamic} == {
        (350, 0.1, 150, "vgg19")
    }


def test_the_demo_is_the_table_in_miniature_on_digits(capsys):
    commands = dry_run(capsys, "digits_demo")
    assert {(c.model, c.dataset) for c in commands} == {("lenet300", "digits")}
    table = [c for c in commands if c.prune_freq in (2, 5) or c.prune_criterion == "snip"]
    assert Counter(c.prune_criterion for c in table) == {
        "flipout": 3, "global_magnitude": 3, "random": 3, "snip": 3, "threshold": 3,
    }  # fmt: skip


def test_a_runs_identity_is_its_options_not_where_or_how_it_runs(tmp_path):
    command = SWEEPS["smoke"].commands([0])[0]
    base = resolve_all([command], tmp_path)[0]
    elsewhere = resolve_all([[*command, "--num_workers", "3", "--device", "cpu"]], tmp_path)[0]
    renamed = resolve_all([[*command, "--comment", "another name"]], tmp_path)[0]
    changed = resolve_all([[*command, "-lr", "0.02"]], tmp_path)[0]
    assert base.run_id == elsewhere.run_id == renamed.run_id != changed.run_id
    assert base.run_dir == tmp_path / "smoke" / f"flipout_seed_0-{base.run_id}"
    # what main.py writes into config.json gives the same identity back
    options = cli.parse_args(command).options()
    assert identity(options) == base.run_id
    # a config.json written before a flag existed (the flag at its default) is the same run;
    # the flag away from its default is another
    older = {key: value for key, value in options.items() if key != "snip_bn"}
    assert identity(older) == base.run_id
    assert identity({**options, "snip_bn": "eval"}) != base.run_id


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "no_such_sweep"], "unknown sweep 'no_such_sweep'"),
        (["run", "smoke", "--gpus", "1"], "--gpus 1: 0 visible here"),
        (["run", "smoke", "--", "-lr", "nan"], "argument -lr: must be a finite number"),
        (["run", "smoke", "--bogus"], "unrecognized arguments: --bogus"),
        (["status", "smoke", "--", "--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    code, _, err = in_process(capsys, *argv)
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("where", ["no Slurm installed", "a missing SLURM_CONF"])
def test_slurm_where_no_slurm_answers_is_one_line(tmp_path, monkeypatch, capsys, where):
    monkeypatch.chdir(tmp_path)
    if where == "no Slurm installed":
        monkeypatch.setenv("PATH", str(tmp_path))
    else:
        monkeypatch.setenv("SLURM_CONF", str(tmp_path / "nowhere.conf"))
    code, _, err = in_process(capsys, "run", "smoke", "--executor", "slurm")
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("error: --executor slurm: ")


def test_a_run_directory_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file where the runs should go")
    code, _, err = in_process(capsys, "run", "smoke")
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("error: cannot write runs into ") and "smoke" in line


# -- the local executor ------------------------------------------------------------------------


def completed_runs(root: Path) -> dict[str, Path]:
    runs = {}
    for summary in sorted(root.glob("runs/smoke/*/summary.json")):
        assert json.loads(summary.read_text())["status"] == "completed", summary
        runs[summary.parent.name] = summary.parent
    return runs


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, Path]:
    """The smoke sweep run locally from start to end: the reference for the tests that stop it."""
    cwd = tmp_path_factory.mktemp("uninterrupted")
    result = experiments("run", "smoke", "--jobs", "2", cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return completed_runs(cwd)


def test_a_local_sweep_runs_every_run_once_and_reports(uninterrupted, tmp_path):
    assert len(uninterrupted) == 4
    for run_dir in uninterrupted.values():
        assert [r["epoch"] for r in records(run_dir)] == list(range(1, 7))
        assert "done: test accuracy" in (run_dir / "output.log").read_text()
    # launched again: every run is skipped, nothing runs, the table is printed
    cwd = next(iter(uninterrupted.values())).parents[2]
    again = experiments("run", "smoke", "--jobs", "2", cwd=cwd)
    assert again.returncode == 0
    assert again.stdout.count("skip (completed)") == 4 and "0 to run" in again.stdout
    assert "| FlipOut |" in again.stdout and "started" not in again.stdout


def test_ctrl_c_stops_the_sweep_and_a_second_launch_resumes_it(uninterrupted, tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments", "run", "smoke", "--jobs", "2"], cwd=tmp_path,
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 180
    while time.time() < deadline:
        logged = [
            len(p.read_text().splitlines()) for p in tmp_path.glob("runs/smoke/*/metrics.jsonl")
        ]
        if logged and max(logged) >= 2:
            break
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C: the launcher and its runs
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "every one resumable" in err

    resumed = experiments("run", "smoke", "--jobs", "2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resume " in resumed.stdout
    finished = completed_runs(tmp_path)
    assert finished.keys() == uninterrupted.keys()
    for name, run_dir in finished.items():
        assert records(run_dir) == records(uninterrupted[name])  # every epoch once, identical


def test_a_directory_with_another_runs_options_is_refused(uninterrupted, tmp_path):
    for name, run_dir in uninterrupted.items():
        shutil.copytree(run_dir, tmp_path / "runs" / "smoke" / name)
    tampered = tmp_path / "runs" / "smoke" / next(iter(uninterrupted))
    config = json.loads((tampered / "config.json").read_text())
    (tampered / "config.json").write_text(json.dumps({**config, "lr": 0.5}))

    status = experiments("status", "smoke", cwd=tmp_path)
    line = next(line for line in status.stdout.splitlines() if tampered.name in line)
    assert line.startswith("conflict ")
    result = experiments("run", "smoke", "--jobs", "2", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout.count("skip (completed)") == 3 and "0 to run" in result.stdout
    (error,) = result.stderr.strip().splitlines()
    assert (
        error
        == f"error: runs/smoke/{tampered.name} holds a run with other options; it is left alone"
    )
    assert json.loads((tampered / "config.json").read_text())["lr"] == 0.5


# -- Slurm -------------------------------------------------------------------------------------


def squeue(environment: dict) -> list[str]:
    answer = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], env=environment,
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    return answer.stdout.split("\n") if answer.stdout.strip() else []


def test_a_sweep_on_slurm_survives_a_requeue_and_is_not_run_twice(uninterrupted, tmp_path):
    environment = slurm_environment()
    if environment is None:
        pytest.skip("no Slurm cluster answers (start one with .ci/slurm-cluster up)")
    flags = ["--executor", "slurm", "--gpus_per_task", "0", "--cpus_per_task", "1", "--time", "10"]
    submitted = experiments("run", "smoke", *flags, cwd=tmp_path, env=environment)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "submitted 4 run(s) as Slurm job array" in submitted.stdout

    # requeue one task mid-run, as a preemption would
    deadline = time.time() + 300
    victim = None
    while time.time() < deadline and victim is None:
        for metrics in tmp_path.glob("runs/smoke/*/metrics.jsonl"):
            if len(metrics.read_text().splitlines()) >= 2:
                victim = metrics.parent
                break
        time.sleep(0.2)
    assert victim is not None, "no task got going"
    job_id = json.loads((victim / "slurm.json").read_text())["job_id"]
    subprocess.run(["scontrol", "requeue", job_id], env=environment, check=True, timeout=30)

    while time.time() < deadline and squeue(environment):
        time.sleep(1)
    assert not squeue(environment), "the sweep did not finish in time"
    finished = completed_runs(tmp_path)
    assert finished.keys() == uninterrupted.keys()
    for name, run_dir in finished.items():
        # every epoch logged once, and the same as an uninterrupted run's
        assert records(run_dir) == records(uninterrupted[name]), name
    starts = json.loads((victim / "slurm.json").read_text())["starts"]
    assert [start["restart"] for start in starts] == [0, 1]
    assert "interrupted by SIGTERM" in (victim / "output.log").read_text()

    status = experiments("status", "smoke", "--report", cwd=tmp_path, env=environment)
    assert "4 completed" in status.stdout and "requeued 1x" in status.stdout
    assert "| FlipOut |" in status.stdout
    again = experiments("run", "smoke", *flags, cwd=tmp_path, env=environment)
    assert again.returncode == 0 and "0 to run" in again.stdout
    assert "submitted" not in again.stdout and not squeue(environment)
