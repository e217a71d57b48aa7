"""Hoyer-Square regulariser (Yang, Wen & Li, "DeepHoyer", ICLR 2020).

For each tensor w the penalty is (sum |w|)^2 / sum w^2: scale-invariant, and smallest when the
tensor is sparse, so it drives weights to exactly prunable values without shrinking the rest.
Used with the `threshold` criterion, which then removes weights below `--magnitude_threshold`.

Which tensors it sums over is its scope (`SCOPES`, `--hoyer_scope`): "prunable", the tensors the
pruner prunes, each its own term; "all", every parameter that requires a gradient (biases and
BatchNorm's weights and biases too), as the FlipOut authors' code (utils/getters.py,
get_weight_penalty) summed it over `model.parameters()`.
"""

from collections.abc import Iterable

import torch
from torch import nn

from .options import Choice

SCOPES = Choice("prunable", "all")


def hoyer_square(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Sum over tensors of (sum |w|)^2 / sum w^2; tensors that are all zero contribute 0."""
    total = None
    for w in tensors:
        l1 = w.abs().sum()
        squares = w.pow(2).sum()
        # An all-zero tensor has l1 = 0; dividing by 1 instead of 0 keeps value and gradient finite.
        term = l1.pow(2) / torch.where(squares > 0, squares, torch.ones_like(squares))
        total = term if total is None else total + term
    if total is None:
        raise ValueError("hoyer_square needs at least one tensor")
    return total


def penalised(model: nn.Module, prunable: Iterable[torch.Tensor], scope: str) -> list[torch.Tensor]:
    """The tensors the penalty of `scope` sums over: the prunable ones, or every trainable
    parameter of `model`. An all-zero tensor adds 0 with a zero gradient, as the authors' code,
    which skipped it, had it."""
    if scope == "prunable":
        return list(prunable)
    # read at each call, as theirs was: a parameter frozen since leaves the sum
    return [p for p in model.parameters() if p.requires_grad]
