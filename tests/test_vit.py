"""A vision transformer end to end from the command line: timm's ViT and torchvision's ViT-B/16
cut small, pruned by FlipOut with gradient noise on the bundled data to the schedule's exact
sparsity, every weight matrix pruned (attention's packed input projection included), and a run
stopped by a signal and resumed identical to the bit to one that was not."""

import pytest

import main
from tests.support.runs import (
    assert_identical,
    only_run_dir,
    quick,
    records,
    stopped_in_epoch,
    summary,
)
from utils.checkpoint import load_checkpoint

pytest.importorskip("timm")

TIMM_VIT = ["-m", "timm:vit_tiny_patch16_224", "--model_kwargs", "patch_size=8", "depth=2",
            "embed_dim=32", "num_heads=2"]  # fmt: skip
TORCHVISION_VIT = ["-m", "torchvision:vit_b_16", "--model_kwargs", "patch_size=8",
                   "num_layers=2", "num_heads=2", "hidden_dim=32", "mlp_dim=64"]  # fmt: skip
# four epochs, half the live weights after each of the first three: 87.5% (as counted below)
FLIPOUT_NOISE = ["-e", "4", "--prune_criterion", "flipout", "--prune_freq", "1", "--noise",
                 "--opt", "adamw", "-lr", "1e-3", "--limit_batches", "4", "-bs", "32"]  # fmt: skip
DATA = {"digits": ["-d", "digits"], "synthetic": ["-d", "synthetic", "--image_size", "16"]}


def exact_live(total: int, prunes: int, rate: float = 0.5) -> int:
    """The live weights after `prunes` periodic prunes of `rate` of the live ones, each rounded
    down as pruning/schedule.py counts."""
    live = total
    for _ in range(prunes):
        live -= int(rate * live)
    return live


@pytest.mark.parametrize("network", ["timm", "torchvision"])
@pytest.mark.parametrize("data", list(DATA))
def test_a_vit_reaches_the_exact_sparsity_with_every_matrix_pruned(tmp_path, network, data):
    vit = TIMM_VIT if network == "timm" else TORCHVISION_VIT
    assert main.main(quick(tmp_path, *vit, *DATA[data], *FLIPOUT_NOISE)) == 0
    run = summary(only_run_dir(tmp_path / "runs"))
    assert run["status"] == "completed" and run["excluded_layers"] == []
    masks = load_checkpoint(only_run_dir(tmp_path / "runs"))["pruner"]["masks"]
    total = sum(m.numel() for m in masks.values())
    live = sum(int(m.sum()) for m in masks.values())
    assert live == exact_live(total, 3)
    assert run["final_sparsity"] == 1 - live / total
    attention = "attn.qkv.weight" if network == "timm" else "self_attention.in_proj_weight"
    projections = [name for name in masks if name.endswith(attention)]
    assert len(projections) == 2, sorted(masks)
    assert all(run["layer_sparsity"][name] > 0 for name in projections)


def test_a_vit_stopped_by_a_signal_resumes_identical_to_the_bit(tmp_path, monkeypatch):
    argv = [*TIMM_VIT, "-d", "digits", *FLIPOUT_NOISE]
    assert main.main(quick(tmp_path / "straight", *argv)) == 0
    straight = only_run_dir(tmp_path / "straight" / "runs")

    stopped = stopped_in_epoch(tmp_path, argv, 3)
    assert summary(stopped)["status"] == "interrupted"
    assert main.main(["--resume", str(stopped), "--num_workers", "0", "--quiet"]) == 0

    assert records(stopped) == records(straight)
    ours, theirs = load_checkpoint(stopped), load_checkpoint(straight)
    for key in ("model", "optimizer"):
        assert_identical(ours[key], theirs[key])
    for key in ("masks", "flip_counts"):
        assert_identical(ours["pruner"][key], theirs["pruner"][key])
    assert summary(stopped)["final_sparsity"] == summary(straight)["final_sparsity"]
