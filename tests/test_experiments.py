"""The experiment scripts: their commands are the paper's, they parse with main.py's own parser,
extra arguments reach every run, and a whole table runs end to end on tiny settings."""

import json
import os
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import cli

ROOT = Path(__file__).resolve().parents[1]
TABLES = {  # script -> (model, dataset, Hoyer-Square lambda)
    "vgg19_cifar10.sh": ("vgg19", "cifar10", 6e-5),
    "resnet18_cifar10.sh": ("resnet18", "cifar10", 1e-4),
    "densenet121_imagenette.sh": ("densenet121", "imagenette", 3e-4),
}


def dry_run(script: str, *extra: str, env: dict | None = None) -> list:
    """The script's commands, each parsed and validated by main.py's own argument parser."""
    result = subprocess.run(
        ["bash", str(ROOT / "experiments" / script), "--dry-run", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    parsed = []
    for line in result.stdout.strip().splitlines():
        words = shlex.split(line)
        assert words[:2] == ["python", "main.py"], line
        parsed.append(cli.parse_args(words[2:]))
    return parsed


@pytest.mark.parametrize("script", sorted(TABLES))
def test_table_scripts_run_every_method_of_the_table_for_three_seeds(script):
    model, dataset, hoyer_lambda = TABLES[script]
    commands = dry_run(script)
    assert len(commands) == 15
    assert Counter(c.prune_criterion for c in commands) == {
        "flipout": 3, "global_magnitude": 3, "random": 3, "snip": 3, "threshold": 3,
    }  # fmt: skip
    assert Counter(c.seed for c in commands) == {0: 5, 1: 5, 2: 5}
    logdir = script.removesuffix(".sh")
    for c in commands:
        assert (c.model, c.dataset, c.logdir) == (model, dataset, logdir)
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


def test_extra_arguments_reach_every_command():
    for c in dry_run("vgg19_cifar10.sh", "-e", "3", "--limit_batches", "2"):
        assert (c.epochs, c.limit_batches) == (3, 2)


def test_seeds_can_be_chosen():
    assert {c.seed for c in dry_run("resnet18_cifar10.sh", env={"SEEDS": "7"})} == {7}


def test_sparsity_sweep_climbs_the_seed_ladder():
    commands = dry_run("sparsity_sweep.sh")
    assert len(commands) == 30
    assert Counter(c.prune_criterion for c in commands) == {"flipout": 15, "global_magnitude": 15}
    assert {c.prune_freq for c in commands} == {117, 70, 50, 39, 32}
    assert {(c.epochs, c.prune_rate) for c in commands} == {(350, 0.5)}
    assert {c.model for c in dry_run("sparsity_sweep.sh", env={"MODEL": "resnet18"})} == {
        "resnet18"
    }


def test_demo_is_the_table_in_miniature_on_digits():
    commands = dry_run("digits_demo.sh")
    assert {(c.model, c.dataset) for c in commands} == {("lenet300", "digits")}
    table = [c for c in commands if c.prune_freq in (2, 5) or c.prune_criterion == "snip"]
    assert Counter(c.prune_criterion for c in table) == {
        "flipout": 3, "global_magnitude": 3, "random": 3, "snip": 3, "threshold": 3,
    }  # fmt: skip


def test_a_whole_table_runs_on_tiny_settings(tmp_path):
    tiny = ["-d", "synthetic", "-e", "2", "--prune_freq", "1", "-bs", "8", "-tbs", "16"]
    tiny += ["--limit_batches", "1", "--num_workers", "0", "--quiet"]
    result = subprocess.run(
        ["bash", str(ROOT / "experiments" / "resnet18_cifar10.sh"), *tiny],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SEEDS": "0", "JOBS": "2", "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = [
        json.loads(p.read_text())
        for p in (tmp_path / "runs" / "resnet18_cifar10").glob("*/summary.json")
    ]
    assert sorted(s["prune_criterion"] for s in summaries) == [
        "flipout", "global_magnitude", "random", "snip", "threshold",
    ]  # fmt: skip
    assert {s["status"] for s in summaries} == {"completed"}
    # the report ends the script: the paper's table for what just ran
    assert "### resnet18 on synthetic" in result.stdout
    for method in ("FlipOut", "GlobalMagnitude", "Random", "SNIP", "Hoyer-Square (λ=1e-4)"):
        assert f"| {method} |" in result.stdout
