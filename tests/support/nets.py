"""A small network with every kind of tensor the prune flags talk about, the Pruner main.py would
build for it from command-line options, and random batches to score it on: what the tests of the
pruning engine and its criteria drive (tests/test_pruning.py, tests/test_snip_bn.py)."""

import torch
import torch.nn.functional as F
from torch import nn

from cli import build_pruner
from pruning import Pruner
from record import RunRecord

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
    """The Pruner main.py builds for these options (by name; defaults for the rest). prune_freq
    1 and a far-away last epoch: end_of_epoch(e) prunes for any small e."""
    values = {"prune_freq": 1, "epochs": 1000, **overrides}
    assert set(values) <= set(RunRecord().by_name()), values
    return build_pruner(RunRecord().replace(**values), model)


def snip_batches(n: int, shape: tuple[int, ...], classes: int = 3, size: int = 8):
    """`n` batches of `size` random inputs of `shape` with random labels below `classes`."""
    return [(torch.randn(size, *shape), torch.randint(0, classes, (size,))) for _ in range(n)]
