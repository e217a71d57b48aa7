"""FLOPs (multiply-accumulates) of conv and linear layers, counted by hand, and the figures a run
records in summary.json."""

import json

import torch
from torch import nn

import main
from export.flops import flops_summary, layer_flops
from models import build_model


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 8x8 out: 4*3*3*3 = 108 weights x 64 positions
        nn.ReLU(),
        nn.Conv2d(4, 2, 3, stride=2, padding=1),  # 4x4 out: 2*4*9 = 72 weights x 16 positions
        nn.Flatten(),
        nn.Linear(2 * 4 * 4, 5),  # 32*5 = 160 weights x 1
    )


def test_dense_and_masked_flops_by_hand():
    model = small_net()
    assert layer_flops(model, (3, 8, 8)) == {
        "0.weight": (108 * 64, 108 * 64),
        "2.weight": (72 * 16, 72 * 16),
        "4.weight": (160, 160),
    }
    masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in model.named_parameters()}
    masks["0.weight"].view(-1)[:100] = False  # 8 live of 108
    masks["4.weight"].view(-1)[:150] = False  # 10 live of 160
    summary = flops_summary(model, (3, 8, 8), masks)
    dense = 108 * 64 + 72 * 16 + 160
    remaining = 8 * 64 + 72 * 16 + 10
    assert summary == {
        "flops_dense": dense,
        "flops_remaining": remaining,
        "theoretical_speedup": dense / remaining,
    }


def test_known_architectures():
    # VGG-19 and ResNet-18 on CIFAR-10: 398M and 556M multiply-accumulates, as usually quoted
    assert flops_summary(build_model("vgg19"), (3, 32, 32))["flops_dense"] == 398_136_320
    assert flops_summary(build_model("resnet18"), (3, 32, 32))["flops_dense"] == 555_422_720


def test_a_run_records_its_flops(tmp_path):
    argv = ["-e", "3", "--prune_freq", "1", "--num_workers", "0", "--quiet"]
    assert main.main([*argv, "--logdir", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    # LeNet-300-100 on 32x32 digits: every weight used once; 75% of them pruned
    assert summary["flops_dense"] == 338_200
    assert summary["flops_remaining"] == 84_550
    assert summary["theoretical_speedup"] == 4.0
