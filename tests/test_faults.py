"""Faults a cluster and a hostile user produce: stop signals at any moment, a full disk, two
processes in one run directory, a damaged config.json, a torchrun rank that dies or freezes.
Each must end in one line and its exit code (utils/errors.py), with nothing lost."""

import errno
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import main
from tests.support import ROOT
from tests.support.damage import CHECKPOINT_DAMAGE, CONFIG_DAMAGE, METRICS_DAMAGE, SUMMARY_DAMAGE
from tests.support.runs import assert_identical, only_run_dir, quick_run, records, summary
from utils import io as io_module
from utils.checkpoint import CHECKPOINT, load_checkpoint
from utils.lock import RunLock

QUICK = ["--num_workers", "0", "--quiet"]


def run_main(*argv: str) -> int:
    return main.main([*argv])


def one_line(capsys, stream: str = "err") -> str:
    out, err = capsys.readouterr()
    text = err if stream == "err" else out
    lines = [line for line in text.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) >= 1 and "Traceback" not in out + err, out + err
    return lines[-1]


def leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob(".*.tmp"))


# -- stop signals ------------------------------------------------------------------------------


def launch(argv: list[str], cwd: Path = ROOT) -> subprocess.Popen:
    """main.py in a session of its own, so that a signal can go to its whole process group, as a
    terminal's Ctrl-C does (the DataLoader workers included)."""
    return subprocess.Popen(
        [sys.executable, "main.py", *argv], cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


SIGNAL_PATTERNS = [
    [signal.SIGTERM],
    [signal.SIGINT],
    [signal.SIGINT, signal.SIGINT],
    [signal.SIGTERM, signal.SIGINT, signal.SIGTERM],
]


def check_stopped_run(process, stdout, stderr, logdir: Path, first: int) -> Path | None:
    """What every stopped run must show; returns its run directory, if it got one."""
    name = signal.Signals(first).name
    assert process.returncode == 128 + first, (process.returncode, stderr[-2000:])
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    runs = list(logdir.iterdir()) if logdir.exists() else []
    if not runs:
        assert last == f"interrupted by {name} before the run started; nothing to resume", last
        return None
    (run_dir,) = runs
    assert last.startswith(f"interrupted by {name} ") and "continue with: python main.py" in last
    finished = summary(run_dir)
    assert finished["status"] == "interrupted" and finished["exit_code"] == 128 + first
    epochs = finished["epochs_completed"]
    if epochs:
        assert load_checkpoint(run_dir)["epoch"] == epochs
    else:
        assert not (run_dir / CHECKPOINT).exists()
    assert not leftovers(run_dir)
    return run_dir


def test_stop_signals_at_random_moments_are_never_lost(tmp_path):
    # Two DataLoader workers, started afresh every epoch: forks happen all the time, and a
    # handler that raised during a fork used to lose its signal about one time in five. Each
    # signal comes at a random moment after a landmark of the run's own progress (its launch, or
    # the end of its 1st, 2nd or 3rd epoch), never after a time measured on the clock: on a
    # loaded machine a run goes slower, and the signals follow it. The runs are far longer than
    # that (1000 epochs), so every signal reaches a run that is still working. (An earlier
    # version timed the signals from a calibration run; under load a signal could then come
    # after the run had finished, which a process on its way out rightly ignores.)
    argv = ["-e", "1000", "--prune_freq", "1", "--num_workers", "2", "--quiet"]
    rng = random.Random(13)
    landmarks = [0, 0, 1, 1, 2, 3]  # 0: the launch; k: the end of epoch k
    rng.shuffle(landmarks)
    trials = []
    for index, landmark in enumerate(landmarks):
        delay = rng.uniform(0.0, 1.5)
        pattern = rng.choice(SIGNAL_PATTERNS)
        whole_group = rng.random() < 0.5
        trials.append((index, landmark, delay, pattern, whole_group))
    stopped = []
    for pair in (trials[i : i + 2] for i in range(0, len(trials), 2)):
        processes = [
            (trial, launch([*argv, "--logdir", str(tmp_path / f"trial{trial[0]}")]))
            for trial in pair
        ]
        for (index, landmark, delay, pattern, whole_group), process in processes:
            if landmark:
                logdir = tmp_path / f"trial{index}"
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and process.poll() is None:
                    logged = [len(p.read_text().splitlines()) for p in
                              logdir.glob("*/metrics.jsonl")]  # fmt: skip
                    if logged and logged[0] >= landmark:
                        break
                    time.sleep(0.02)
            time.sleep(delay)
            assert process.poll() is None, f"trial {index} ended before its signal"
            for number, sig in enumerate(pattern):
                if number:
                    time.sleep(rng.uniform(0.0, 0.3))
                if whole_group:
                    os.killpg(process.pid, sig)
                else:
                    os.kill(process.pid, sig)
        for (index, _, _, pattern, _), process in processes:
            stdout, stderr = process.communicate(timeout=300)
            run_dir = check_stopped_run(
                process, stdout, stderr, tmp_path / f"trial{index}", pattern[0]
            )
            if run_dir is not None:
                stopped.append((run_dir, stderr.strip().splitlines()[-1]))

    # the printed resume command works (of the run stopped earliest, finished two epochs later:
    # another test resumes runs stopped later, one more resumes a run stopped before its first
    # epoch ended)
    assert stopped
    for run_dir, line in [min(stopped, key=lambda item: summary(item[0])["epochs_completed"])]:
        command = shlex.split(line.split("continue with: ", 1)[1])
        assert command[:2] == ["python", "main.py"]
        epochs = summary(run_dir)["epochs_completed"] + 2
        resumed = subprocess.run(
            [sys.executable, *command[1:], "-e", str(epochs), "--quiet"], cwd=ROOT,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert summary(run_dir)["status"] == "completed"
        assert [r["epoch"] for r in records(run_dir)] == list(range(1, epochs + 1))


def test_a_signal_during_the_checkpoint_write_stops_after_it(tmp_path, monkeypatch, capsys):
    real_save = torch.save
    calls = {"n": 0}

    def signalled_mid_write(obj, f):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 2's checkpoint
            os.kill(os.getpid(), signal.SIGTERM)
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", signalled_mid_write)
    code = run_main("-e", "5", "--prune_freq", "1", *QUICK, "--logdir", str(tmp_path))
    assert code == 143
    line = one_line(capsys)
    assert line.startswith("interrupted by SIGTERM after 2 completed epochs; continue with:")
    run_dir = only_run_dir(tmp_path)
    assert summary(run_dir)["status"] == "interrupted"
    assert load_checkpoint(run_dir)["epoch"] == 2  # the write finished and counts
    assert not leftovers(run_dir)


def test_interrupted_before_the_first_checkpoint_a_resume_starts_afresh(tmp_path, capsys):
    calls = {"n": 0}

    def sigterm_at_the_third_step(module, args) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    import models

    original_build = models.build_model

    def build_with_hook(*args, **kwargs):
        model = original_build(*args, **kwargs)
        model.register_forward_pre_hook(sigterm_at_the_third_step)
        return model

    flags = ["-e", "3", "--prune_freq", "1", "--noise", *QUICK]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "build_model", build_with_hook)  # main builds through it
        assert run_main(*flags, "--logdir", str(tmp_path / "stopped")) == 143
    line = one_line(capsys)
    assert "before its first epoch ended" in line
    run_dir = only_run_dir(tmp_path / "stopped")
    assert not (run_dir / CHECKPOINT).exists()
    command = shlex.split(line.split("continue with: ", 1)[1])
    assert run_main(*command[2:], "--quiet") == 0
    assert "starting it afresh" in capsys.readouterr().out

    assert run_main(*flags, "--logdir", str(tmp_path / "reference")) == 0
    reference = only_run_dir(tmp_path / "reference")
    assert records(run_dir) == records(reference)
    assert_identical(load_checkpoint(run_dir)["model"], load_checkpoint(reference)["model"])


# -- one process per run directory -------------------------------------------------------------


def test_a_run_directory_in_use_is_refused_in_one_line(tmp_path, capsys):
    run_dir = quick_run(tmp_path)
    capsys.readouterr()
    with RunLock(run_dir):
        assert run_main("--resume", str(run_dir), *QUICK) == 5
        line = one_line(capsys)
    assert line.startswith(f"error: {run_dir} is in use by another process (pid {os.getpid()}")
    assert run_main("--resume", str(run_dir), *QUICK) == 0  # released: fine again


def test_a_lock_left_by_a_killed_holder_does_not_block(tmp_path):
    run_dir = quick_run(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from utils.lock import RunLock; "
         f"RunLock({str(run_dir)!r}).acquire(); print('held', flush=True); time.sleep(600)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    assert run_main("--resume", str(run_dir), *QUICK) == 5
    holder.kill()
    holder.wait()
    assert run_main("--resume", str(run_dir), *QUICK) == 0


def test_temporary_files_of_a_killed_write_are_removed_on_resume(tmp_path):
    run_dir = quick_run(tmp_path)
    stale = run_dir / ".checkpoint.pt.k1ll3d.tmp"
    stale.write_bytes(b"PK\x03\x04" + b"\0" * 1000)
    assert run_main("--resume", str(run_dir), *QUICK) == 0
    assert not leftovers(run_dir)


# -- resuming with the run's own options -------------------------------------------------------


def test_overrides_apply_to_one_resume_and_are_recorded(tmp_path, capsys):
    run_dir = quick_run(tmp_path, "--prune_freq", "1")
    capsys.readouterr()
    assert run_main("--resume", str(run_dir), "-e", "3", "-lr", "0.05", *QUICK) == 0
    assert "for this resume only: epochs, lr" in capsys.readouterr().err
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["epochs"], config["lr"]) == (2, 0.1)  # the run's own options stay
    assert config["resumes"][-1]["overrides"] == {"epochs": 3, "lr": 0.05}
    assert config["resumes"][-1]["at_epoch"] == 3
    assert [r["lr"] for r in records(run_dir)] == [0.1, 0.1, 0.05]
    # a later plain resume uses the run's own options again: 2 epochs, which the run has
    # trained and more, so it is left as the longer resume completed it, not shortened
    config = (run_dir / "config.json").read_text()
    assert run_main("--resume", str(run_dir), *QUICK) == 0
    assert summary(run_dir)["epochs"] == 3 and (run_dir / "config.json").read_text() == config


def test_the_printed_resume_command_survives_spaces_in_the_path(tmp_path, capsys):
    logdir = tmp_path / "my runs (test)"
    process = launch(["-e", "1000", *QUICK, "--logdir", str(logdir)])
    deadline = time.time() + 120
    while time.time() < deadline and not list(logdir.glob("*/metrics.jsonl")):
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143
    command = shlex.split(stderr.strip().splitlines()[-1].split("continue with: ", 1)[1])
    assert Path(command[-1]) == only_run_dir(logdir)
    # one epoch more than it trained, if any: a resume never shortens a run
    checkpoint = Path(command[-1]) / CHECKPOINT
    trained = torch.load(checkpoint, weights_only=True)["epoch"] if checkpoint.exists() else 0
    assert run_main(*command[2:], "-e", str(trained + 1), "--quiet") == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "unreadable"),
        ("{not json", "unreadable"),
        ("[1, 2]", "is a list, not options"),
        ('"flipout"', "is a str, not options"),
        ("{}", "was not written by main.py"),
        ("\udcff", "unreadable"),
    ],
)
def test_a_damaged_config_json_is_one_line(tmp_path, capsys, content, message):
    run_dir = quick_run(tmp_path)
    (run_dir / "config.json").write_text(content, errors="surrogateescape")
    capsys.readouterr()
    assert run_main("--resume", str(run_dir), *QUICK) == 2
    line = one_line(capsys)
    assert line.startswith(f"error: --resume {run_dir}: ") and message in line


@pytest.mark.parametrize(
    ("key", "value"),
    [("lr", "fast"), ("lr", -1), ("lr", float("nan")), ("seed", 2**40), ("milestones", 5),
     ("noise", "yes"), ("model", "alexnet"), ("prune_rate", [0.5])],
)  # fmt: skip
def test_a_config_json_with_a_bad_value_is_one_line_naming_it(tmp_path, capsys, key, value):
    run_dir = quick_run(tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    config[key] = value
    (run_dir / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert run_main("--resume", str(run_dir), *QUICK) == 2
    line = one_line(capsys)
    assert "config.json" in line and key in line, line


# A few of tests/test_run_files.py's damaged run files, given to `main.py --resume` (that file gives
# all of them to the report, export and inspect): a file the resume needs is refused in one line
# naming it; metrics.jsonl and summary.json are rebuilt from the checkpoint.
RESUME_CASES = [
    (CHECKPOINT, "empty", {2}),
    (CHECKPOINT, "first half only", {2}),
    (CHECKPOINT, "a list", {2}),
    (CHECKPOINT, "a pickle that runs code", {2}),
    (CHECKPOINT, "model_spec missing", {2}),
    (CHECKPOINT, "wrong number of classes", {2}),
    (CHECKPOINT, "masks of the wrong shape", {2}),
    (CHECKPOINT, "a byte flipped halfway", {0, 2}),
    ("config.json", "random bytes", {2}),
    ("config.json", "nested too deeply to parse", {2}),
    ("config.json", "epochs a list", {2}),
    ("config.json", "seed an object", {2}),
    ("metrics.jsonl", "random bytes", {0}),
    ("metrics.jsonl", "strings for lines", {0}),
    ("summary.json", "random bytes", {0}),
    ("summary.json", "a list", {0}),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    return quick_run(tmp_path_factory.mktemp("finished"))


@pytest.mark.parametrize(("name", "label", "codes"), RESUME_CASES, ids=lambda v: str(v))
def test_a_damaged_run_file_is_refused_or_rebuilt_on_resume(
    finished_run, tmp_path, capsys, name, label, codes
):
    damages = {
        CHECKPOINT: CHECKPOINT_DAMAGE,
        "config.json": CONFIG_DAMAGE,
        "metrics.jsonl": METRICS_DAMAGE,
        "summary.json": SUMMARY_DAMAGE,
    }
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    damages[name][label](run_dir / name)
    capsys.readouterr()
    code = run_main("--resume", str(run_dir), *QUICK)
    assert code in codes
    if code == 2:
        line = one_line(capsys)
        assert line.startswith("error: ") and name in line, line
    else:
        out, err = capsys.readouterr()
        # a checkpoint that still reads leaves a run whose other files are intact as it is
        last = out.strip().splitlines()[-1]
        assert "Traceback" not in err and last.startswith(("done: ", "nothing to train: "))
        assert summary(run_dir)["status"] == "completed" and len(records(run_dir)) == 2


# -- a failed write ----------------------------------------------------------------------------


def test_a_full_disk_mid_run_ends_in_one_line_and_resumes_to_the_same_result(
    tmp_path, monkeypatch, capsys
):
    flags = ["-e", "6", "--prune_freq", "2", "--noise", *QUICK]
    real_fsync, calls = os.fsync, {"n": 0}

    def disk_full_once(fd):
        calls["n"] += 1
        if calls["n"] == 5:  # config.json, then the checkpoints of epochs 1-3, then epoch 4's
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(io_module.os, "fsync", disk_full_once)
    assert run_main(*flags, "--logdir", str(tmp_path / "full")) == 4
    line = one_line(capsys)
    run_dir = only_run_dir(tmp_path / "full")
    assert line.startswith(f"error: cannot write {run_dir / CHECKPOINT}: No space left on device")
    assert "after 3 completed epochs; continue with: python main.py --resume" in line
    assert summary(run_dir)["status"] == "failed" and summary(run_dir)["exit_code"] == 4
    assert load_checkpoint(run_dir)["epoch"] == 3 and not leftovers(run_dir)
    monkeypatch.setattr(io_module.os, "fsync", real_fsync)

    assert run_main("--resume", str(run_dir), *QUICK) == 0
    assert run_main(*flags, "--logdir", str(tmp_path / "reference")) == 0
    reference = only_run_dir(tmp_path / "reference")
    assert records(run_dir) == records(reference)
    ours, theirs = load_checkpoint(run_dir), load_checkpoint(reference)
    for key in ("model", "optimizer", "pruner"):
        assert_identical(ours[key], theirs[key])


@pytest.fixture
def tiny_disk(tmp_path):
    """A 3 MB tmpfs: smaller than one LeNet-300-100 checkpoint (4.4 MB). Needs root."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root; the simulated full disk test still runs")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_really_full_disk_is_one_line_without_tracebacks(tiny_disk):
    process = launch(["-e", "3", *QUICK, "--logdir", str(tiny_disk / "runs")])
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 4, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], stderr[-2000:]
    assert "Traceback" not in stderr and "Exception" not in stderr
    (run_dir,) = (tiny_disk / "runs").iterdir()
    assert not leftovers(run_dir) and not (run_dir / CHECKPOINT).exists()


def test_divergence_before_any_checkpoint_does_not_name_one(tmp_path, capsys):
    assert run_main("-lr", "100", "-e", "2", *QUICK, "--logdir", str(tmp_path)) == 3
    line = one_line(capsys)
    assert "became non-finite at epoch 1" in line
    assert "no epoch completed, so there is no checkpoint" in line


# -- torchrun: two gloo ranks ------------------------------------------------------------------


def launch_ranks(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "utils.launch", "--standalone", "--nproc_per_node", "2",
         "main.py", *argv],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the worker with RANK=`rank` among the launcher's children."""
    deadline = time.time() + 60
    while time.time() < deadline:
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        for pid in children:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no worker with rank {rank}")


def wait_for_metrics(logdir: Path, epochs: int, process: subprocess.Popen) -> Path:
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        found = list(logdir.glob("*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= epochs:
            return found[0].parent
        time.sleep(0.05)
    raise AssertionError("the run ended or stalled before the fault could be made")


RANKS = ["-e", "40", "--prune_freq", "2", "--noise", "--num_workers", "0", "--quiet"]


def test_ctrl_c_under_torchrun_is_130_one_line_and_resumes(tmp_path):
    process = launch_ranks([*RANKS, "--logdir", str(tmp_path)])
    run_dir = wait_for_metrics(tmp_path, 2, process)
    os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C: launcher and ranks alike
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert lines[0].startswith("interrupted by SIGINT after ")
    assert summary(run_dir)["status"] == "interrupted"

    command = shlex.split(lines[0].split("continue with: ", 1)[1])
    assert command[:3] == ["python", "-m", "utils.launch"]
    resumed = subprocess.run(
        [sys.executable, *command[1:], "-e", "6", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed at epoch" in resumed.stdout
    assert summary(run_dir)["status"] == "completed" and summary(run_dir)["processes"] == 2
    assert [r["epoch"] for r in records(run_dir)] == list(range(1, 7))


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_a_lost_rank_stops_the_others_in_bounded_time_naming_it(tmp_path, fault):
    process = launch_ranks([*RANKS, "--dist_timeout", "6", "--logdir", str(tmp_path)])
    run_dir = wait_for_metrics(tmp_path, 2, process)
    victim = rank_pid(process, 1)
    os.kill(victim, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
    struck = time.monotonic()
    # Rank 0 gives up on rank 1 after --dist_timeout 6 and a few heartbeats, about 10 s on a
    # quiet machine; without that it would wait for gloo's own timeout, 30 minutes. The bound
    # here tells the two apart on a machine however loaded, without timing the 10 s.
    while time.monotonic() - struck < 300 and not (run_dir / "summary.json").exists():
        time.sleep(0.1)
    waited = time.monotonic() - struck
    if fault == "frozen":
        os.kill(victim, signal.SIGCONT)  # let the launcher wind the frozen rank down promptly
    _, stderr = process.communicate(timeout=120)
    assert waited < 300, f"rank 0 waited {waited:.0f} s for the lost rank"
    assert process.returncode == 6, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    first = stderr.strip().splitlines()[0]
    assert first.startswith("error: rank 1 stopped answering") and "continue with:" in first
    finished = summary(run_dir)
    assert finished["status"] == "failed" and "rank 1" in finished["error"]
    assert load_checkpoint(run_dir)["epoch"] == finished["epochs_completed"] >= 2
