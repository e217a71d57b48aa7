"""Sign-flip counters, the statistic FlipOut ranks weights by (Apostol, Stol & Forré, 2020).

After every optimizer step each live weight whose sign (-1, 0 or +1) differs from its sign before
the step gains one flip. The previous signs are kept as int8 and the counts as int32, on the
weights' device, so tracking costs 5 bytes per weight and no host synchronisation per step.
"""

import torch

from pruning.kernels import Kernels
from pruning.mask import Masks


class FlipCounter:
    """`signs` and `counts` are only ever updated in place, so references to them stay valid."""

    def __init__(self, params: dict[str, torch.Tensor], kernels: Kernels | None = None):
        self.params = params
        self.kernels = kernels or Kernels("off")
        with torch.no_grad():
            self.signs = {name: p.sign().to(torch.int8) for name, p in params.items()}
        self.counts = {name: torch.zeros_like(p, dtype=torch.int32) for name, p in params.items()}

    @torch.no_grad()
    def update(self) -> None:
        """Count the flips of the step just taken. Call after the weights were re-masked: a pruned
        weight is zero before and after, so it can never count a flip."""
        self.kernels.count_flips(
            [p.data for p in self.params.values()],
            list(self.signs.values()),
            list(self.counts.values()),
        )

    @torch.no_grad()
    def forget_pruned(self, masks: Masks) -> None:
        """Zero the counters of pruned weights and record their (zero) sign."""
        for name, p in self.params.items():
            self.counts[name].mul_(masks[name])
            self.signs[name].copy_(p.sign())

    def total(self) -> int:
        return int(sum(c.sum(dtype=torch.int64) for c in self.counts.values()))

    def live_counts(self, masks: Masks) -> torch.Tensor:
        """Flip counts of every live weight, flattened, on the CPU (for histograms)."""
        return torch.cat([self.counts[name][masks[name]].cpu() for name in self.counts])

    def state_dict(self) -> dict[str, torch.Tensor]:
        # The previous signs are not saved: between steps they equal the weights' signs.
        return dict(self.counts)

    @torch.no_grad()
    def load_state_dict(self, counts: dict[str, torch.Tensor]) -> None:
        if set(counts) != set(self.counts):
            raise ValueError("flip counters are for different parameters")
        for name, value in counts.items():
            self.counts[name].copy_(value)
            self.signs[name].copy_(self.params[name].sign())
