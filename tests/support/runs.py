"""Running main.py in this process and reading what a run leaves behind: the argv of a quick run,
the one run directory under a log directory, its metrics.jsonl records and its summary.json, and
the checks most run tests end with (a single `error:` line, two states identical to the bit), and
a run stopped mid-epoch, resumed and set beside a straight one."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch

import main
import models
from utils.checkpoint import load_checkpoint


def quick(tmp_path, *argv: str) -> list[str]:
    """argv for a fast in-process run that logs under tmp_path."""
    return [*argv, "--num_workers", "0", "--quiet", "--logdir", str(tmp_path / "runs")]


def only_run_dir(parent: Path) -> Path:
    """The one run directory under the log directory `parent`."""
    (run_dir,) = parent.iterdir()
    return run_dir


def quick_run(tmp_path, *argv: str) -> Path:
    """A completed two-epoch run under tmp_path/runs, in this process: its run directory."""
    logdir = tmp_path / "runs"
    assert (
        main.main(["-e", "2", "--num_workers", "0", "--quiet", "--logdir", str(logdir), *argv]) == 0
    )
    return only_run_dir(logdir)


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl, one dict an epoch, without the wall-clock `seconds`."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def assert_identical(ours, theirs) -> None:
    """Equal nested dicts, lists and tensors, every tensor to the bit."""
    if isinstance(ours, dict):
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert_identical(ours[key], theirs[key])
    elif isinstance(ours, list | tuple):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert_identical(a, b)
    elif isinstance(ours, torch.Tensor):
        assert torch.equal(ours, theirs)
    else:
        assert ours == theirs


def assert_one_error_line(capsys, *names: str) -> str:
    """What main.py printed is one `error:` line on stderr naming each of `names`, without a
    traceback or the usage text: that line."""
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out and "usage:" not in err + out
    assert all(name in lines[0] for name in names), (names, lines[0])
    return lines[0]


def stopped_before_training_forward(tmp_path, argv: list[str], forward: int) -> Path:
    """A quick run of `argv` under tmp_path/stopped, stopped by SIGTERM as its model begins its
    `forward`-th training forward pass (evaluation and no-grad passes, such as a FLOPs count,
    not counted): its run directory, with the checkpoint of the last epoch it ended."""
    calls = {"n": 0}

    def stop(module, _):
        if module.training and torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == forward:
                os.kill(os.getpid(), signal.SIGTERM)

    original_build = models.build_model

    def build_with_hook(*args, **kwargs):
        model = original_build(*args, **kwargs)
        model.register_forward_pre_hook(stop)
        return model

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "build_model", build_with_hook)
        assert main.main(quick(tmp_path / "stopped", *argv)) == 143
    return only_run_dir(tmp_path / "stopped" / "runs")


def stopped_in_epoch(tmp_path, argv: list[str], epoch: int) -> Path:
    """A quick run of `argv` under tmp_path/stopped, sent SIGTERM as its epoch `epoch` begins
    and stopped after the step in progress: its run directory, with the checkpoint of the epoch
    before."""
    train_one_epoch = main.train_one_epoch

    def signalled(*args, **kwargs):
        if args[5] == epoch:
            os.kill(os.getpid(), signal.SIGTERM)  # acted on after the step in progress
        return train_one_epoch(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(main, "train_one_epoch", signalled)
        assert main.main(quick(tmp_path / "stopped", *argv)) == 143
    return only_run_dir(tmp_path / "stopped" / "runs")


def assert_resumed_equals_straight(tmp_path, run_dir: Path, argv: list[str]) -> None:
    """`run_dir` resumed to its end equals a straight run of `argv`: records, and the model,
    optimizer and pruner of their checkpoints to the bit."""
    assert main.main(["--resume", str(run_dir), "--num_workers", "0", "--quiet"]) == 0
    assert main.main(quick(tmp_path / "straight", *argv)) == 0
    reference = only_run_dir(tmp_path / "straight" / "runs")
    assert records(run_dir) == records(reference)
    resumed, straight = load_checkpoint(run_dir), load_checkpoint(reference)
    for part in ("model", "optimizer", "pruner"):
        assert_identical(resumed[part], straight[part])
