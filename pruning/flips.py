"""Sign-flip counters, the statistic FlipOut ranks weights by (Apostol, Stol & Forré, 2020).

After every optimizer step each live weight whose sign differs from its sign before the step gains
one flip. A sign is one bit, negative or not: zero counts as not negative, so a weight that crosses
zero flips once, and a pruned weight, held at zero, never flips. The previous sign bits are kept as
bool and the counts as int32, on the weights' device, so tracking costs 5 bytes per weight and no
host synchronisation per step.
"""

import torch

from pruning.kernels import Kernels
from pruning.mask import Masks


class FlipCounter:
    """`negative` (the sign bits after the last step) and `counts` are only ever updated in place,
    so references to them stay valid."""

    def __init__(self, params: dict[str, torch.Tensor], kernels: Kernels | None = None):
        self.params = params
        self.kernels = kernels or Kernels("off")
        with torch.no_grad():
            self.negative = {name: p < 0 for name, p in params.items()}
        self.counts = {name: torch.zeros_like(p, dtype=torch.int32) for name, p in params.items()}

    @torch.no_grad()
    def update(self) -> None:
        """Count the flips of the step just taken. Call once pruned weights are back at zero: then
        they are not negative before or after, so they never count a flip."""
        self.kernels.count_flips(
            [p.data for p in self.params.values()],
            list(self.negative.values()),
            list(self.counts.values()),
        )

    @torch.no_grad()
    def forget_pruned(self, masks: Masks) -> None:
        """Zero the counters of pruned weights and record their (zero, not negative) sign."""
        for name, p in self.params.items():
            self.counts[name].mul_(masks[name])
            torch.lt(p, 0, out=self.negative[name])

    def total(self) -> int:
        return int(sum(c.sum(dtype=torch.int64) for c in self.counts.values()))

    def live_counts(self, masks: Masks) -> torch.Tensor:
        """Flip counts of every live weight, flattened, on the CPU (for histograms)."""
        return torch.cat([self.counts[name][masks[name]].cpu() for name in self.counts])

    def state_dict(self) -> dict[str, torch.Tensor]:
        # The sign bits are not saved: between steps they are the weights' own.
        return dict(self.counts)

    @torch.no_grad()
    def load_state_dict(self, counts: dict[str, torch.Tensor]) -> None:
        if set(counts) != set(self.counts):
            raise ValueError("flip counters are for different parameters")
        for name, value in counts.items():
            self.counts[name].copy_(value)
            torch.lt(self.params[name], 0, out=self.negative[name])
