"""Runs that survive: checkpoints, resume, interruption, divergence and bad input."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import main
import training
from models import build_model
from tests.support import ROOT
from tests.support.blocks import README, code_block
from tests.support.datasets import IMAGENETTE_CLASSES
from tests.support.runs import assert_identical, only_run_dir, quick_run, records, summary
from utils import io as io_module
from utils.checkpoint import CHECKPOINT, load_checkpoint, save_atomic

# A FlipOut run with gradient noise on digits: every source of randomness is exercised.
FLIPOUT_NOISE = ["-e", "8", "--prune_freq", "2", "--noise", "--num_workers", "0", "--quiet"]


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "main.py", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# main.py, sending itself SIGTERM as epoch EPOCH begins: a real signal, from the kernel, at a
# moment that does not depend on how fast the machine is (random moments: tests/test_faults.py)
SIGTERM_AT_EPOCH = """
import os, signal, sys
import main
train_one_epoch = main.train_one_epoch

def signalled(*args, **kwargs):
    if args[5] == EPOCH:
        os.kill(os.getpid(), signal.SIGTERM)
    return train_one_epoch(*args, **kwargs)

main.train_one_epoch = signalled
sys.exit(main.main())
"""


def start_signalled(argv: list[str], epoch: int) -> subprocess.Popen:
    code = SIGTERM_AT_EPOCH.replace("EPOCH", str(epoch))
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_epochs(parent: Path, epochs: int, process: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        runs = list(parent.glob("*/metrics.jsonl"))
        if runs and len(runs[0].read_text().splitlines()) >= epochs:
            return
        time.sleep(0.02)
    raise AssertionError("the run ended or stalled before it could be interrupted")


def final_state(run_dir: Path) -> dict:
    return load_checkpoint(run_dir)


# -- interruption and resume -------------------------------------------------------------------


def test_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    reference = start([*FLIPOUT_NOISE, "--logdir", str(tmp_path / "reference")])
    # stopped after the first step of epoch 4
    interrupted = start_signalled([*FLIPOUT_NOISE, "--logdir", str(tmp_path / "interrupted")], 4)
    _, stderr = interrupted.communicate(timeout=300)
    assert interrupted.returncode == 143, stderr[-2000:]
    run_dir = only_run_dir(tmp_path / "interrupted")
    assert summary(run_dir)["status"] == "interrupted"
    assert f"python main.py --resume {run_dir}" in stderr
    assert summary(run_dir)["epochs_completed"] == 3
    assert load_checkpoint(run_dir)["epoch"] == 3

    resumed = subprocess.run(
        [sys.executable, "main.py", "--resume", str(run_dir), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    reference.communicate(timeout=300)
    assert reference.returncode == 0
    reference_dir = only_run_dir(tmp_path / "reference")

    assert summary(run_dir)["status"] == "completed"
    assert records(run_dir) == records(reference_dir)  # every epoch once, identical values
    assert [r["epoch"] for r in records(run_dir)] == list(range(1, 9))
    ours, theirs = final_state(run_dir), final_state(reference_dir)
    for key in ("model", "optimizer"):
        assert_identical(ours[key], theirs[key])
    assert_identical(ours["pruner"]["masks"], theirs["pruner"]["masks"])
    assert_identical(ours["pruner"]["flip_counts"], theirs["pruner"]["flip_counts"])
    assert sum(int(c.sum()) for c in ours["pruner"]["flip_counts"].values()) > 0
    for key in ("final_test_acc", "best_test_acc", "final_sparsity", "prune_events"):
        assert summary(run_dir)[key] == summary(reference_dir)[key]

    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("acc/test")] == list(range(1, 9))


def test_sigint_stops_cleanly_with_exit_130(tmp_path):
    process = start([*FLIPOUT_NOISE, "-e", "200", "--logdir", str(tmp_path)])
    wait_for_epochs(tmp_path, 1, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in stderr and "interrupted by SIGINT" in stderr
    run_dir = only_run_dir(tmp_path)
    assert summary(run_dir)["status"] == "interrupted"
    assert load_checkpoint(run_dir)["epoch"] >= 1


# -- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_holds_everything_to_go_on(tmp_path):
    state = load_checkpoint(quick_run(tmp_path, "--noise"))
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert {"model", "optimizer", "pruner", "rng", "data_order", "args", "best_test_acc"} <= set(
        state
    )
    assert {"masks", "flip_counts", "random_generator", "noise_generator"} <= set(state["pruner"])
    assert {"python", "numpy", "torch", "cuda"} <= set(state["rng"])
    assert state["optimizer"]["state"]  # momentum buffers
    assert state["args"]["model"] == "lenet300"


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT
    save_atomic({"format_version": 1, "epoch": 1}, path)
    before = path.read_bytes()

    def dies_halfway(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise main.Interrupted(signal.SIGTERM)

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(main.Interrupted):
        save_atomic({"format_version": 1, "epoch": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT]  # no temporary left behind


def test_a_truncated_checkpoint_is_detected_on_resume(tmp_path, capsys):
    run_dir = quick_run(tmp_path)
    checkpoint = run_dir / CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    capsys.readouterr()
    assert main.main(["--resume", str(run_dir), "--num_workers", "0"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "unreadable, probably truncated or corrupt" in line and str(checkpoint) in line


@pytest.mark.parametrize(
    "flags, message",
    [
        (["-m", "lenet5"], "that run has --model lenet300, not lenet5"),
        (["--prune_criterion", "random"], "that run has --prune_criterion flipout, not random"),
    ],
)
def test_resume_refuses_a_different_experiment(tmp_path, capsys, flags, message):
    run_dir = quick_run(tmp_path)
    capsys.readouterr()
    assert main.main(["--resume", str(run_dir), *flags]) == 2
    assert message in capsys.readouterr().err


def test_resume_refuses_a_foreign_checkpoint(tmp_path, capsys):
    run_dir = quick_run(tmp_path / "a")
    other = quick_run(tmp_path / "b", "-m", "lenet5")
    (run_dir / CHECKPOINT).write_bytes((other / CHECKPOINT).read_bytes())
    capsys.readouterr()
    assert main.main(["--resume", str(run_dir), "--num_workers", "0"]) == 2
    assert "checkpoint is from a run with --model lenet5" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["missing", "empty"])
def test_resume_needs_a_run_with_a_checkpoint(tmp_path, capsys, what):
    target = tmp_path / "nothing"
    if what == "empty":
        target.mkdir()
        (target / "config.json").write_text("{}")
    assert main.main(["--resume", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume") and len(err.strip().splitlines()) == 1


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    run_dir = quick_run(tmp_path)
    before = records(run_dir)
    assert main.main(["--resume", str(run_dir), "--num_workers", "0", "--quiet"]) == 0
    assert records(run_dir) == before
    assert summary(run_dir)["status"] == "completed"


def test_save_model_loads_with_plain_torch_load(tmp_path):
    run_dir = quick_run(tmp_path, "-e", "3", "--prune_freq", "1", "--save_model")
    saved = torch.load(run_dir / "model.pt")
    assert saved["spec"] == {"name": "lenet300", "num_classes": 10, "in_channels": 1,
                             "image_size": 32}  # fmt: skip
    model = build_model(**saved["spec"])
    model.load_state_dict(saved["state_dict"])
    for name, mask in saved["masks"].items():
        weight = dict(model.named_parameters())[name]
        assert mask.dtype == torch.bool and weight.shape == mask.shape
        assert torch.all(weight[~mask] == 0)
    live = sum(int(m.sum()) for m in saved["masks"].values())
    total = sum(m.numel() for m in saved["masks"].values())
    assert 1 - live / total == pytest.approx(summary(run_dir)["final_sparsity"])


def test_the_readmes_model_pt_snippet_runs(tmp_path, monkeypatch):
    run_dir = quick_run(tmp_path, "-e", "3", "--prune_freq", "1", "--save_model")
    snippet = code_block(README.parent / "docs" / "runs.md", "`model.pt` (`--save_model`) loads")
    placeholder = "runs/<logdir>/<run>/model.pt"
    assert placeholder in snippet
    namespace: dict = {}
    # from another directory, as a user's own script would run it
    monkeypatch.chdir(tmp_path)
    exec(snippet.replace(placeholder, str(run_dir / "model.pt")), namespace)
    model, masks = namespace["model"], namespace["masks"]
    weights = dict(model.named_parameters())
    assert masks and all(torch.all(weights[name][~mask] == 0) for name, mask in masks.items())
    live = sum(int(m.sum()) for m in masks.values())
    assert 1 - live / sum(m.numel() for m in masks.values()) == pytest.approx(
        summary(run_dir)["final_sparsity"]
    )


# -- divergence --------------------------------------------------------------------------------


def test_divergence_names_epoch_and_batch_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, capsys
):
    calls = {"n": 0}
    real = training.regularisation

    def nan_at_epoch_2_batch_3(args, model):
        calls["n"] += 1  # 12 batches per digits epoch at -bs 128
        if calls["n"] == 12 + 3:
            return torch.tensor(float("nan"))
        return real(args, model)

    monkeypatch.setattr(training, "regularisation", nan_at_epoch_2_batch_3)
    argv = ["-e", "4", "--num_workers", "0", "--quiet", "--logdir", str(tmp_path)]
    argv += ["--reg_type", "l2"]
    assert main.main(argv) == main.EXIT_DIVERGED
    run_dir = only_run_dir(tmp_path)
    result = summary(run_dir)
    assert result["status"] == "diverged"
    assert "non-finite at epoch 2, batch 3" in result["error"]
    assert "non-finite at epoch 2, batch 3" in capsys.readouterr().err
    assert load_checkpoint(run_dir)["epoch"] == 1


# -- bad input ---------------------------------------------------------------------------------


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith("error: ")
    return line


def test_val_size_must_leave_training_images(tmp_path, capsys):
    argv = ["--val", "--val_size", "1437", "--logdir", str(tmp_path), "--num_workers", "0"]
    assert main.main(argv) == 2
    assert "--val_size must be between 1 and 1436" in one_error_line(capsys)


def test_unwritable_logdir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main.main(["--logdir", str(blocker / "runs"), "--num_workers", "0"]) == 2
    assert "cannot write runs under --logdir" in one_error_line(capsys)


@pytest.mark.parametrize("workers", ["0", "1"])
def test_corrupt_imagenette_image_is_named(imagenette_dir, tmp_path, capsys, workers):
    bad = imagenette_dir / "imagenette2" / "val" / IMAGENETTE_CLASSES[0] / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    argv = ["-d", "imagenette", "-m", "lenet5", "--data_dir", str(imagenette_dir), "-e", "1"]
    argv += ["-bs", "4", "--limit_batches", "1", "--num_workers", workers, "--quiet"]
    assert main.main([*argv, "--logdir", str(tmp_path / "runs")]) == 2
    line = one_error_line(capsys)
    assert "cannot read image" in line and str(bad) in line


def test_atomic_json_keeps_umask_permissions(tmp_path):
    path = tmp_path / "x.json"
    io_module.write_json_atomic(path, {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o666 & ~io_module.current_umask()
