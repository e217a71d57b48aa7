"""N:M semi-structured sparsity: at most N live weights in every group of M consecutive weights
along a layer's input dimension, the pattern that sparse tensor cores run (2:4 on NVIDIA Ampere and
later; Mishra et al., "Accelerating Sparse Deep Neural Networks", 2021; Zhou et al., "Learning
N:M Fine-grained Structured Sparse Neural Networks From Scratch", ICLR 2021).

A constraint, not a criterion: any ranking criterion decides which weights go, and the pruner
(pruning/pruner.py) makes every prune also remove, in each group, the live weights beyond the N
that score highest (`NM.excess`). The selection ranks those lowest (pruning/select.py), so that a
prune that removes at least as many weights as the constraint forces reaches the schedule's
sparsity exactly, and one that removes fewer removes the forced ones as well.

Groups run along dim 1 of the weight, its inputs: for nn.Linear (out, in) along `in`; for
nn.Conv2d (out, C, kh, kw) along the input channels C at each kernel position, NVIDIA ASP's
convention, which matches the channels-last implicit GEMM. 1-D tensors (biases, BatchNorm scales
pruned with prune_bias and prune_bnorm) are never constrained: no sparse kernel reads them.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .mask import Masks
from .options import flags_named, spelled

MAX_M = 64  # far above any hardware pattern (2:4, 1:4 and 2:8 are the ones in use)
# a Masks, or name -> bool tensor (True: live) as its state_dict and a saved model.pt hold them
MaskSet = Masks | dict[str, torch.Tensor]
PATTERN = re.compile(r"\s*(\d+)\s*:\s*(\d+)\s*")


@dataclass(frozen=True)
class NM:
    """At most `n` live weights in every `m` consecutive ones along the input dimension."""

    n: int
    m: int

    def __post_init__(self):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.n, self.m)):
            raise ValueError(f"N:M takes integers, got {self.n!r}:{self.m!r}")
        if not 1 <= self.n < self.m <= MAX_M:
            raise ValueError(
                f"N:M must have 1 <= N < M <= {MAX_M} (such as 2:4), got {self.n}:{self.m}"
            )

    @classmethod
    def parse(cls, text: str) -> "NM":
        """The constraint written as N:M, such as "2:4"."""
        match = PATTERN.fullmatch(text)
        if match is None:
            raise ValueError(f"expected N:M such as 2:4, got {text!r}")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def sparsity_floor(self) -> float:
        """The least sparsity of a constrained layer once the constraint holds."""
        return 1.0 - self.n / self.m

    def constrained(
        self, tensors: dict[str, torch.Tensor], exclude: Iterable[str] = ()
    ) -> list[str]:
        """The names of `tensors` the constraint applies to: those with an input dimension (two
        or more dims), less `exclude`."""
        exclude = set(exclude)
        return [name for name, t in tensors.items() if t.dim() >= 2 and name not in exclude]

    def check(self, params: dict[str, torch.Tensor], exclude: Iterable[str] = ()) -> None:
        """ValueError unless every constrained tensor's input dimension is a multiple of M;
        `exclude` holds names of `params`."""
        names = self.constrained(params, exclude)
        if not names:
            raise ValueError(
                f"{spelled('nm')} {self}: every prunable tensor is left out, nothing to constrain"
            )
        for name in names:
            size = params[name].shape[1]
            if size % self.m:
                what = "inputs" if params[name].dim() == 2 else "input channels"
                leave_out = f"--nm_exclude {name}" if flags_named() else f"nm_exclude=[{name!r}]"
                raise ValueError(
                    f"{spelled('nm')} {self}: {name} has {size} {what}, not a multiple of "
                    f"{self.m}; leave it out with {leave_out}"
                )

    def groups(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` (shaped like a weight) as (..., groups, M), each last row one group of M
        consecutive entries along dim 1 at one output and kernel position."""
        moved = tensor.movedim(1, -1)
        return moved.reshape(*moved.shape[:-1], moved.shape[-1] // self.m, self.m)

    def ungroup(self, grouped: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The inverse of `groups`: back to the weight's `shape`."""
        moved = grouped.reshape(*shape[:1], *shape[2:], shape[1])
        return moved.movedim(-1, 1)

    def excess(
        self,
        scores: dict[str, torch.Tensor],
        masks: MaskSet,
        exclude: Iterable[str] = (),
    ) -> dict[str, torch.Tensor]:
        """name -> bool tensor of the live weights that must go for the constraint to hold: in
        every group, the live ones beyond the N highest-scoring live ones, equal scores kept in
        order of position (the first stays). Only the constrained tensors are named."""
        excess = {}
        for name in self.constrained(scores, exclude):
            score, live = self.groups(scores[name]), self.groups(masks[name])
            # each group from its highest score down; the sort is stable, so equal scores keep
            # their order of position
            order = torch.sort(score, dim=-1, descending=True, stable=True).indices
            live_in_order = live.gather(-1, order)
            kept_in_order = live_in_order & (live_in_order.cumsum(-1) <= self.n)
            kept = torch.zeros_like(live).scatter(-1, order, kept_in_order)
            excess[name] = self.ungroup(live & ~kept, scores[name].shape)
        return excess

    def satisfied(self, masks: MaskSet, exclude: Iterable[str] = ()) -> bool:
        """Whether every group of every constrained tensor has at most N live weights."""
        names = self.constrained(dict(masks.items()), exclude)
        return all(bool((self.groups(masks[name]).sum(-1) <= self.n).all()) for name in names)
