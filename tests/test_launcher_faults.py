"""The sweep launcher (python -m experiments) under hostile input and faults: every case ends in
one line naming the problem and its documented exit code (experiments/__main__.py), and loses
nothing. Two launchers never misreport each other's runs, a run someone holds is never planned as
started, and no run outlives its launcher unsupervised.

Nothing here waits a fixed time for something to happen: each test waits for the condition it
needs (a run's first epoch, a process's end) with a generous deadline, and the runs that must be
stopped are far longer than any wait, so that a loaded machine changes how long the tests take,
not what they see.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from experiments import __main__ as launcher
from tests.support import ROOT
from tests.support.launcher import in_process, slurm_commands, slurm_environment
from tests.support.runs import summary
from utils.lock import holder

# the smoke sweep's four runs, cut to one short epoch each
QUICK = ["--", "-e", "1", "--limit_batches", "2"]
# ... and long enough that they are still training whenever a test stops them
ENDLESS = ["--", "-e", "1000", "--limit_batches", "2"]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file and directory under `root` with its bytes (None for a directory)."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
    }


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"waited {seconds:.0f} s for {what}")


def start_launcher(cwd: Path, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "experiments", *argv], cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def epochs_logged(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def two_training(smoke: Path) -> bool:
    """Whether two runs of the sweep have finished an epoch (the two a --jobs 2 launch starts)."""
    return sum(epochs_logged(d) >= 1 for d in smoke.glob("*-*")) == 2


# -- the sweep run once, by two launchers at once -----------------------------------------------


@pytest.fixture(scope="module")
def two_launchers(tmp_path_factory) -> tuple[Path, list[tuple[int, str, str]]]:
    """The smoke sweep (short runs) launched twice at the same moment in one directory: the
    directory, and each launcher's exit code, stdout and stderr. Its runs are also the completed
    sweep the table's cases damage copies of."""
    cwd = tmp_path_factory.mktemp("two_launchers")
    processes = [start_launcher(cwd, "run", "smoke", "--jobs", "1", *QUICK) for _ in range(2)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=900)
        results.append((process.returncode, out, err))
    return cwd, results


def test_two_launchers_of_one_sweep_train_each_run_once(two_launchers):
    cwd, results = two_launchers
    for code, out, err in results:
        # 5: a run the other launcher held was not done yet when this one ended; never "failed"
        assert code in (0, 5), out + err
        assert "failed" not in out + err and "Traceback" not in err
        assert not err or err.startswith("held: runs/smoke/"), err
    assert any(code == 0 for code, _, _ in results)  # the last to end saw every run done
    runs = sorted((cwd / "runs" / "smoke").glob("*/summary.json"))
    assert len(runs) == 4
    for path in runs:
        run_dir = path.parent
        assert summary(run_dir)["status"] == "completed"
        epochs = [json.loads(line)["epoch"] for line in
                  (run_dir / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
        assert epochs == [1]
        log = (run_dir / "output.log").read_text()
        # one launcher's main.py wrote it: started once, finished once, no refusal in it
        assert log.count("done: test accuracy") == 1 and "in use" not in log, log
        assert sum(line.startswith("run ") for line in log.splitlines()) == 1, log


# -- the table ---------------------------------------------------------------------------------


def nothing(cwd: Path, done: Path, monkeypatch) -> None:
    pass


def copy_of(done: Path, cwd: Path) -> list[Path]:
    """A copy of the completed sweep in `cwd`; its run directories."""
    shutil.copytree(done / "runs", cwd / "runs")
    return sorted(path for path in (cwd / "runs" / "smoke").iterdir() if path.is_dir())


def a_run_directory_replaced_by_a_file(cwd: Path, done: Path, monkeypatch) -> None:
    victim = copy_of(done, cwd)[0]
    shutil.rmtree(victim)
    victim.write_text("not a run")


def a_completed_sweep(cwd: Path, done: Path, monkeypatch) -> None:
    copy_of(done, cwd)


def a_truncated_config(cwd: Path, done: Path, monkeypatch) -> None:
    victim = copy_of(done, cwd)[0]
    (victim / "config.json").write_text('{"model": "lenet300", "epo')


def a_damaged_launch_record(cwd: Path, done: Path, monkeypatch) -> None:
    copy_of(done, cwd)
    (cwd / "runs" / "smoke" / "launch.json").write_text('{"sweep": "smo')


def an_immutable_runs_directory(cwd: Path, done: Path, monkeypatch) -> None:
    runs = cwd / "runs"
    runs.mkdir()
    made = subprocess.run(["chattr", "+i", str(runs)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not possible here: {made.stderr.strip()}")


def a_full_disk(cwd: Path, done: Path, monkeypatch) -> None:
    """The runs directory on a 1 MB tmpfs, full. Needs root."""
    disk = cwd / "runs"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"mounting a small tmpfs needs root: {mounted.stderr.strip()}")
    with open(disk / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
        filler.write(b"\0" * 2**21)  # more than fits: the disk is full


def a_cluster_of_two_cpu_nodes(cwd: Path, done: Path, monkeypatch) -> None:
    """A stand-in for Slurm's commands: one partition, `debug`, with one 2-CPU node."""
    slurm_commands(cwd, monkeypatch, cpus=2, memory_mb=3900)


def undo(cwd: Path) -> None:
    """What a case's setup did to the machine beyond `cwd`'s files."""
    subprocess.run(["chattr", "-i", str(cwd / "runs")], capture_output=True)
    if os.path.ismount(cwd / "runs"):
        subprocess.run(["umount", "-l", str(cwd / "runs")], capture_output=True)


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    code: int
    line: str  # a regular expression the one line on stderr matches from its start
    setup: Callable = nothing


CASES = [
    Case("jobs of twenty digits", ("run", "smoke", "--jobs", "9" * 20), 2,
         r"error: argument --jobs: must be a whole number from 1 to \d+ \(one core per run"),
    Case("jobs of twenty digits, dry run", ("run", "smoke", "--dry-run", "--jobs", "9" * 20), 2,
         r"error: argument --jobs: must be a whole number from 1 to \d+ "),
    Case("jobs beyond the cores", ("run", "smoke", "--jobs", "300000000"), 2,
         r"error: argument --jobs: must be a whole number from 1 to \d+ .*not '300000000'$"),
    Case("gpus of another script's digits", ("run", "smoke", "--gpus", "\u0663"), 2,
         r"error: argument --gpus: must be a whole number"),
    Case("cpus per task of twenty digits", ("run", "smoke", "--executor", "slurm",
         "--cpus_per_task", "9" * 20), 2,
         r"error: argument --cpus_per_task: must be a whole number from 1 to 4096"),
    Case("a time limit of zero", ("run", "smoke", "--executor", "slurm", "--time", "0"), 2,
         r"error: argument --time: must be a whole number from 1 to"),
    Case("a seed beyond NumPy's", ("status", "smoke", "--seeds", str(2**40)), 2,
         r"error: argument --seeds: must be a whole number from 0 to 4294967295"),
    Case("a bad --mem", ("run", "smoke", "--executor", "slurm", "--mem", "lots"), 2,
         r"error: argument --mem: expected a size such as 32G"),
    Case("a bad --sbatch", ("run", "smoke", "--executor", "slurm", "--sbatch", "qos"), 2,
         r"error: argument --sbatch: expected KEY=VALUE"),
    Case("arguments after -- to list", ("list", "--", "-e", "3"), 2,
         r"error: arguments after -- go to main\.py, with run or status; list takes none: -e 3$"),
    Case("a run directory that is a file", ("run", "smoke"), 2,
         r"error: runs/smoke/flipout_seed_0-\w+ is damaged: a file, not a directory; it is left "
         r"as it is", setup=a_run_directory_replaced_by_a_file),
    Case("a truncated config.json", ("run", "smoke"), 2,
         r"error: runs/smoke/flipout_seed_0-\w+ is damaged: config\.json is unreadable: ",
         setup=a_truncated_config),
    Case("a damaged launch.json", ("status", "smoke"), 2,
         r"error: runs/smoke/launch\.json is damaged", setup=a_damaged_launch_record),
    Case("other overrides than the launch's", ("run", "smoke", "--", "-e", "2"), 2,
         r"error: runs/smoke/launch\.json: smoke was launched there with `--seeds 0 -- -e 1 "
         r"--limit_batches 2`; -- -e 2 makes other runs", setup=a_completed_sweep),
    Case("an immutable runs directory", ("run", "smoke", *QUICK), 4,
         r"error: cannot write runs into runs/smoke: Operation not permitted$",
         setup=an_immutable_runs_directory),
    Case("a full disk", ("run", "smoke", *QUICK), 4,
         r"error: cannot remember the launch in runs/smoke/launch\.json: No space left on device$",
         setup=a_full_disk),
    Case("a Slurm request no node can hold", ("run", "digits_demo", "--executor", "slurm",
         "--gpus_per_task", "0"), 2,
         r"error: --cpus_per_task 4 --gpus_per_task 0: no node of partition debug can run such a "
         r"task \(its 1 node has at most 2 CPUs, 0 GPUs and 3900 MB of memory\); every task "
         r"would pend$", setup=a_cluster_of_two_cpu_nodes),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_fault_is_one_line_and_its_exit_code(
    case, two_launchers, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    try:
        case.setup(tmp_path, two_launchers[0], monkeypatch)
        before = snapshot(tmp_path)
        code, out, err = in_process(capsys, *case.argv)
        after = snapshot(tmp_path)
    finally:
        undo(tmp_path)
    lines = err.strip().splitlines()
    assert code == case.code, out + err
    assert len(lines) == 1 and re.match(case.line, lines[0]), err
    assert "Traceback" not in out + err
    # nothing lost, nothing started: what was there is still there, byte for byte, and nothing
    # was added but the empty directory the runs would have gone to
    assert {key: value for key, value in after.items() if key in before} == before
    assert all(after[key] is None for key in after.keys() - before.keys())


def test_a_damaged_run_is_planned_and_shown_as_damaged(
    two_launchers, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    a_truncated_config(tmp_path, two_launchers[0], monkeypatch)
    victim = sorted((tmp_path / "runs" / "smoke").iterdir())[0]
    code, out, _ = in_process(capsys, "status", "smoke")
    assert code == 0
    line = next(line for line in out.splitlines() if victim.name in line)
    assert line.startswith("damaged ") and "config.json is unreadable" in line
    code, out, err = in_process(capsys, "run", "smoke")
    assert code == 2
    plan = next(line for line in out.splitlines() if victim.name in line)
    assert plan.startswith("refuse (damaged: config.json is unreadable")
    assert err.strip().endswith("repair it, or delete it to run it afresh")
    assert (victim / "config.json").read_text() == '{"model": "lenet300", "epo'


# -- a launch remembered -----------------------------------------------------------------------


def test_status_finds_a_sweep_launched_with_overrides_without_them(
    two_launchers, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    copy_of(two_launchers[0], tmp_path)
    code, out, _ = in_process(capsys, "status", "smoke")
    assert code == 0
    assert out.startswith("note: as launched before (runs/smoke/launch.json): -- -e 1")
    assert "smoke: 4 completed (of 4)" in out
    code, out, _ = in_process(capsys, "status", "smoke", "--report")
    assert code == 0 and "| FlipOut |" in out
    # a relaunch without arguments finds them done, and starts nothing
    before = snapshot(tmp_path / "runs")
    code, out, _ = in_process(capsys, "run", "smoke")
    assert code == 0 and out.count("skip (completed)") == 4
    assert snapshot(tmp_path / "runs") == before
    # without the record, the same command would have looked for other runs
    (tmp_path / "runs" / "smoke" / "launch.json").unlink()
    code, out, _ = in_process(capsys, "status", "smoke")
    assert "smoke: 4 new (of 4)" in out


def test_a_slurm_request_no_node_can_hold_is_refused_by_a_real_cluster(
    tmp_path, monkeypatch, capsys
):
    environment = slurm_environment()
    if environment is None:
        pytest.skip("no Slurm cluster answers (start one with .ci/slurm-cluster up)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLURM_CONF", environment["SLURM_CONF"])
    code, _, err = in_process(
        capsys, "run", "smoke", "--executor", "slurm", "--gpus_per_task", "0",
        "--cpus_per_task", "4096",
    )  # fmt: skip
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("error: --cpus_per_task 4096 --gpus_per_task 0: no node of partition")
    assert "every task would pend" in line
    assert not (tmp_path / "runs").exists()


# -- processes: two launchers, a killed launcher, a stopped one, a held run ----------------------


def test_a_killed_launcher_takes_its_runs_down_resumable(tmp_path, monkeypatch, capsys):
    process = start_launcher(tmp_path, "run", "smoke", "--jobs", "2", *ENDLESS)
    smoke = tmp_path / "runs" / "smoke"
    wait_until(lambda: two_training(smoke), "two runs' first epochs")
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    started = [d for d in smoke.iterdir() if (d / "config.json").exists()]
    assert len(started) == 2  # two at once
    # each run got SIGTERM from the kernel when its launcher died, and stopped at a safe point
    wait_until(
        lambda: all(holder(d) is None and (d / "summary.json").exists() for d in started),
        "the orphans to stop",
    )
    for run_dir in started:
        assert summary(run_dir)["status"] == "interrupted"
    # stopped, so a relaunch resumes them (and starts the other two)
    monkeypatch.chdir(tmp_path)
    code, out, _ = in_process(capsys, "status", "smoke")
    assert code == 0 and "smoke: 2 new, 2 stopped (of 4)" in out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_run_whose_launcher_died_before_it_was_tied_never_starts(tmp_path):
    """The race a parent-death signal leaves: the launcher dies between the fork and the
    child's prctl. The child then has another parent, sees it, and ends without starting."""
    program = tmp_path / "program.py"
    program.write_text(f"open({str(tmp_path / 'started')!r}, 'w').close()\n")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    tether = [sys.executable, "-I", str(ROOT / "experiments" / "tether.py")]
    orphan = subprocess.run([*tether, gone.stdout.strip(), "-", str(program)], timeout=60)
    assert orphan.returncode == 128 + signal.SIGTERM
    assert not (tmp_path / "started").exists()
    # with its launcher alive, the same child runs the program
    tied = subprocess.run([*tether, str(os.getpid()), "0", str(program)], timeout=60)
    assert tied.returncode == 0 and (tmp_path / "started").exists()


def test_a_held_run_is_never_planned_as_started(two_launchers, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    victim = copy_of(two_launchers[0], tmp_path)[0]
    shutil.rmtree(victim)
    victim.mkdir()
    # a main.py that has taken its run's lock but not yet written config.json
    holding = subprocess.Popen(
        [sys.executable, "-c",
         f"from utils.lock import RunLock; import time; RunLock({str(victim)!r}).acquire(); "
         "print('held', flush=True); time.sleep(600)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holding.stdout.readline().strip() == "held"
        code, out, _ = in_process(capsys, "status", "smoke")
        line = next(line for line in out.splitlines() if victim.name in line)
        assert line.startswith("running ") and f"held by pid {holding.pid}" in line
        code, out, err = in_process(capsys, "run", "smoke", "--jobs", "2")
        plan = next(line for line in out.splitlines() if victim.name in line)
        assert plan.startswith(f"skip (held by pid {holding.pid}")
        assert code == 5, err
        (line,) = err.strip().splitlines()
        assert line.startswith(f"held: runs/smoke/{victim.name} by pid {holding.pid} on ")
        assert list(victim.iterdir()) == [victim / ".lock"]  # nothing written into it
    finally:
        holding.kill()
        holding.wait()


def test_a_stopped_launcher_says_what_it_stopped(tmp_path):
    process = start_launcher(tmp_path, "run", "smoke", "--jobs", "2", *ENDLESS)
    smoke = tmp_path / "runs" / "smoke"
    wait_until(lambda: two_training(smoke), "two runs' first epochs")
    process.send_signal(signal.SIGTERM)  # the launcher alone, as `kill` or a scheduler does
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143, err
    (line,) = err.strip().splitlines()
    assert line == (
        "stopped by SIGTERM: 2 run(s) stopped at a safe point and 2 not started, every one "
        "resumable; continue with: python -m experiments run smoke --jobs 2 -- -e 1000 "
        "--limit_batches 2"
    )
    stopped = [d for d in smoke.iterdir() if (d / "summary.json").exists()]
    assert len(stopped) == 2
    assert all(summary(d)["status"] == "interrupted" for d in stopped)


def test_a_launcher_stopped_before_it_starts_anything_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    stop = launcher.StopSignals

    class Stopped(stop):  # a SIGTERM that arrived while the imports were still running
        def install(self):
            installed = super().install()
            os.kill(os.getpid(), signal.SIGTERM)
            return installed

    monkeypatch.setattr(launcher, "StopSignals", Stopped)
    code, _, err = in_process(capsys, "run", "smoke", *QUICK)
    assert code == 143
    (line,) = err.strip().splitlines()
    assert line.startswith("stopped by SIGTERM before any run was started or changed")
    assert not (tmp_path / "runs").exists()


def test_a_run_that_completes_while_being_stopped_counts_as_completed(
    tmp_path, monkeypatch, capsys
):
    """The stop line counts the runs by how they really ended: here the one run started stops
    the launcher itself (SIGTERM to its parent) and then, told to stop, completes (exit 0)."""
    fake_main = tmp_path / "fake_main.py"
    fake_main.write_text(
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "os.kill(os.getppid(), signal.SIGTERM)\n"
        "time.sleep(600)\n"
    )
    monkeypatch.setattr("experiments.runs.MAIN", fake_main)
    monkeypatch.chdir(tmp_path)
    code, out, err = in_process(capsys, "run", "smoke", "--jobs", "1", *QUICK)
    assert code == 143, out + err
    (line,) = err.strip().splitlines()
    assert line == (
        "stopped by SIGTERM: 3 not started, every one resumable; 1 completed; continue with: "
        "python -m experiments run smoke --jobs 1 -- -e 1 --limit_batches 2"
    )
