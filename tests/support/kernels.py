"""Sparse convolutions to run the export room's kernels on, and the closeness they are held to
(tests/test_sparse_kernels.py, tests/test_direct_conv.py)."""

import torch
from torch import nn

TOLERANCE = 1e-5


def sparse_conv(*args, density: float = 0.1, seed: int = 0, **kwargs) -> nn.Conv2d:
    """nn.Conv2d(*args, **kwargs) in eval mode with about `density` of its weights left."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(*args, **kwargs).eval()
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) < density)
    return conv


def assert_close(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal shapes, and values within TOLERANCE of the largest expected one (or of 1, where
    all are near zero: a layer with no weights left)."""
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= TOLERANCE * expected.abs().max().clamp_min(1)
