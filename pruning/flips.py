"""Sign-flip counters, the statistic FlipOut ranks weights by (Apostol, Stol & Forré, 2020).

After every optimizer step each live weight whose sign differs from its sign before the step gains
one flip. A sign is one bit, negative or not: zero counts as not negative, so a weight that crosses
zero flips once, and a pruned weight, held at zero, never flips.

Per weight, one byte holds the sign bit after the last step (bit 0) and the flips counted since the
int32 totals were last brought up to date (bits 1-7, at most 127). Each step then reads and writes
that byte only, instead of the four-byte total; the totals catch up every 127 steps and whenever
they are read (`counts`), so no reader ever sees a stale count. That is 5 bytes per weight, on the
weights' device, and no host synchronisation per step.
"""

import torch

from .kernels import Kernels
from .mask import Masks

PENDING_LIMIT = 127  # steps between catch-ups: bits 1-7 of a byte count to 127


def sign_bits(p: torch.Tensor) -> torch.Tensor:
    """1 where `p` is negative, 0 elsewhere, as uint8 in `p`'s memory layout."""
    return (p < 0).to(torch.uint8)


class FlipCounter:
    """`packed` (sign bit and pending flips) and `totals` are only ever updated in place, so
    references to them stay valid. Read the counts through `counts`, which are up to date."""

    def __init__(self, params: dict[str, torch.Tensor], kernels: Kernels | None = None):
        self.params = params
        self.kernels = kernels or Kernels("off")
        with torch.no_grad():
            self.packed = {name: sign_bits(p) for name, p in params.items()}
        self.totals = {name: torch.zeros_like(p, dtype=torch.int32) for name, p in params.items()}
        self.pending_steps = 0
        self.cleared = 0  # flips counted of weights since pruned, whose counters were zeroed
        self.cleared_in = dict.fromkeys(params, 0)  # ... by tensor
        self._weights = [p.data for p in params.values()]
        self._packed = list(self.packed.values())

    @torch.no_grad()
    def update(self, masks: list[torch.Tensor] | None = None) -> None:
        """Count the flips of the step just taken; with `masks` (one per parameter, in order),
        re-mask the weights first. Pruned weights must be back at zero when their flips are
        counted: then they are not negative before or after, and never count a flip."""
        if masks is None:
            self.kernels.count_flips(self._weights, self._packed)
        else:
            self.kernels.mask_weights_and_count_flips(self._weights, masks, self._packed)
        self.pending_steps += 1
        if self.pending_steps == PENDING_LIMIT:
            self.catch_up()

    @torch.no_grad()
    def catch_up(self) -> None:
        """Move the pending flips into the int32 totals."""
        if self.pending_steps == 0:
            return
        for name, byte in self.packed.items():
            self.totals[name].add_(byte >> 1)
            byte.bitwise_and_(1)
        self.pending_steps = 0

    @property
    def counts(self) -> dict[str, torch.Tensor]:
        """name -> int32 flips of each weight so far, up to date."""
        self.catch_up()
        return self.totals

    @torch.no_grad()
    def forget_pruned(self, masks: Masks) -> None:
        """Zero the counters of pruned weights and record their (zero, not negative) sign."""
        for name, count in self.counts.items():
            cleared = int(count[~masks[name]].sum(dtype=torch.int64))
            self.cleared += cleared
            self.cleared_in[name] += cleared
            count.mul_(masks[name])
            self.packed[name].copy_(sign_bits(self.params[name]))

    def total(self) -> int:
        return int(sum(c.sum(dtype=torch.int64) for c in self.counts.values()))

    def counted(self) -> int:
        """Every flip counted in this process, those of weights pruned since included: a
        difference of two is the flips between them, even across a mask update mid-epoch."""
        return self.total() + self.cleared

    def counted_by_tensor(self) -> dict[str, int]:
        """`counted`, tensor by tensor."""
        return {
            name: int(count.sum(dtype=torch.int64)) + self.cleared_in[name]
            for name, count in self.counts.items()
        }

    def live_counts(self, masks: Masks) -> torch.Tensor:
        """Flip counts of every live weight, flattened, on the CPU (for histograms)."""
        return torch.cat([count[masks[name]].cpu() for name, count in self.counts.items()])

    def state_dict(self) -> dict[str, torch.Tensor]:
        # The sign bits are not saved: between steps they are the weights' own.
        return dict(self.counts)

    @torch.no_grad()
    def load_state_dict(self, counts: dict[str, torch.Tensor]) -> None:
        if set(counts) != set(self.totals):
            raise ValueError("flip counters are for different parameters")
        for name, value in counts.items():
            self.totals[name].copy_(value)
            self.packed[name].copy_(sign_bits(self.params[name]))
        self.pending_steps = 0
