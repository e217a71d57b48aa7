"""Hoyer-Square regulariser (Yang, Wen & Li, "DeepHoyer", ICLR 2020).

For each tensor w the penalty is (sum |w|)^2 / sum w^2: scale-invariant, and smallest when the
tensor is sparse, so it drives weights to exactly prunable values without shrinking the rest.
Used with the `threshold` criterion, which then removes weights below `--magnitude_threshold`.
"""

from collections.abc import Iterable

import torch


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
