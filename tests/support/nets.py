"""A small network with every kind of tensor the prune flags talk about, the Pruner main.py would
build for it from command-line options, and random batches to score it on: what the tests of the
pruning engine and its criteria drive (tests/test_pruning.py, tests/test_snip_bn.py)."""

import torch
import torch.nn.functional as F
from torch import nn

from cli import build_parser, build_pruner
from pruning import Pruner

CPU = torch.device("cpu")


class ConvBnNet(nn.Module):
    """conv (with bias) -> BatchNorm -> linear: every kind of tensor the prune flags talk about."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


def make_pruner(model: nn.Module, **overrides) -> Pruner:
    """The Pruner main.py builds for these options (argparse destinations; defaults for the
    rest). prune_freq 1 and a far-away last epoch: end_of_epoch(e) prunes for any small e."""
    args = build_parser().parse_args([])
    for dest, value in {"prune_freq": 1, "epochs": 1000, **overrides}.items():
        assert hasattr(args, dest), dest
        setattr(args, dest, value)
    return build_pruner(args, model)


def snip_batches(n: int, shape: tuple[int, ...], classes: int = 3, size: int = 8):
    """`n` batches of `size` random inputs of `shape` with random labels below `classes`."""
    return [(torch.randn(size, *shape), torch.randint(0, classes, (size,))) for _ in range(n)]
