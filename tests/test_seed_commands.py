"""Each of the original README's five commands runs as written, shrunk only in data and length:
`-d synthetic`, fewer epochs, a shorter prune interval, small batches and one batch per pass."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import main
from tests.support.seed import seed_commands

SHRINK = {"--dataset": "synthetic", "-e": "2", "--prune_freq": "1", "-bs": "8"}


def shrunk(argv: list[str]) -> list[str]:
    out = list(argv)
    for flag, value in SHRINK.items():
        if flag in out:
            out[out.index(flag) + 1] = value
    return [*out, "--limit_batches", "1", "-tbs", "16"]


@pytest.fixture
def memory_dir(tmp_path):
    """A directory in memory where there is one (/dev/shm): VGG-19's checkpoints are 260 MB,
    written and fsynced after every epoch, which the disk makes the bulk of these tests' time."""
    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="flipout-test-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("argv", seed_commands(), ids=lambda a: a[a.index("--prune_criterion") + 1])
def test_seed_command_runs(argv, memory_dir, monkeypatch, capsys):
    monkeypatch.chdir(memory_dir)  # the commands log to runs/vgg19/ relative to the working dir
    assert main.main(shrunk(argv)) == 0
    (run_dir,) = (memory_dir / "runs" / "vgg19").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["model"] == "vgg19"
    criterion = summary["prune_criterion"]
    if criterion in ("flipout", "global_magnitude", "random"):
        # one scheduled prune, after epoch 1 (never after the last), of half the live weights
        assert [e["epoch"] for e in summary["prune_events"]] == [1]
        assert summary["final_sparsity"] == pytest.approx(0.5, abs=1e-6)
    elif criterion == "snip":
        assert [e["epoch"] for e in summary["prune_events"]] == [0]
        assert summary["final_sparsity"] == pytest.approx(0.999, abs=1e-6)
        # at 99.9% SNIP empties whole layers of VGG-19: the paper's 10% accuracy, named
        assert summary["collapsed_layers"]
        stderr = capsys.readouterr().err
        for name in summary["collapsed_layers"]:
            assert f"warning: layer {name} has no live weights left" in stderr
    else:  # Hoyer-Square, then the threshold prune after epoch 1
        assert [e["epoch"] for e in summary["prune_events"]] == [1]
