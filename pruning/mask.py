"""Masks: which weights are still alive, one boolean tensor per prunable parameter.

A mask lives on its weight's device, has its weight's shape, and is keyed by the parameter's name in
`model.named_parameters()`. Sparsity is always counted from the masks (a live weight that happens to
be exactly zero is still live).
"""

import math
from collections.abc import Iterator

import torch


class Masks:
    def __init__(self, params: dict[str, torch.Tensor]):
        if not params:
            raise ValueError("the model has no prunable parameters")
        self.params = params
        self.masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in params.items()}
        # Host-side flag, so that a dense network costs no masking work per step.
        self.any_pruned = False

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.masks)

    def __len__(self) -> int:
        return len(self.masks)

    def items(self):
        return self.masks.items()

    def prune(self, name: str, remove: torch.Tensor) -> None:
        """Kill the weights of `name` where `remove` is True. Dead weights stay dead."""
        mask = self.masks[name]
        if remove.shape != mask.shape or remove.dtype != torch.bool:
            raise ValueError(
                f"mask update for {name} must be a bool tensor of shape {tuple(mask.shape)}, "
                f"got {remove.dtype} {tuple(remove.shape)}"
            )
        mask &= ~remove.to(mask.device)
        self.any_pruned = True

    @torch.no_grad()
    def apply_to_weights(self) -> None:
        if self.any_pruned:
            torch._foreach_mul_(list(self.params.values()), list(self.masks.values()))

    def live_counts(self) -> dict[str, tuple[int, int]]:
        """name -> (live, total), one host sync for all layers."""
        live = torch.stack([m.sum() for m in self.masks.values()]).tolist()
        return {
            name: (int(n), m.numel()) for (name, m), n in zip(self.masks.items(), live, strict=True)
        }

    @property
    def num_live(self) -> int:
        return sum(live for live, _ in self.live_counts().values())

    @property
    def num_total(self) -> int:
        return sum(m.numel() for m in self.masks.values())

    @property
    def sparsity(self) -> float:
        """Fraction of prunable weights that are pruned."""
        return 1.0 - self.num_live / self.num_total

    def layer_sparsity(self) -> dict[str, float]:
        return {name: 1.0 - live / total for name, (live, total) in self.live_counts().items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.masks)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.masks):
            raise ValueError(
                f"mask names differ: missing {sorted(set(self.masks) - set(state))}, "
                f"unexpected {sorted(set(state) - set(self.masks))}"
            )
        for name, mask in state.items():
            check_mask(name, mask, self.masks[name].shape)
        for name, mask in state.items():
            self.masks[name].copy_(mask)
        self.any_pruned = any(not bool(m.all()) for m in self.masks.values())


def check_mask(name: str, mask, shape: torch.Size) -> None:
    """TypeError unless `mask` is a bool tensor, ValueError unless it has `shape`: a mask of
    0.5s read as bools would keep every weight."""
    if not torch.is_tensor(mask) or mask.dtype != torch.bool:
        got = mask.dtype if torch.is_tensor(mask) else type(mask).__name__
        raise TypeError(
            f"masks[{name!r}] must be a bool tensor (True = live), got {got}; a mask of 0s and "
            "1s converts with .bool()"
        )
    if mask.shape != shape:
        raise ValueError(
            f"masks[{name!r}] has shape {tuple(mask.shape)}, its parameter {tuple(shape)}"
        )


def percent(fraction: float, digits: int = 2, sign: str = "%") -> str:
    """`fraction` in percent with `digits` decimals, or as many more as it takes never to show
    a share that is not 0 as zero or one that is not all as 100: a layer with 14 of 307,200
    weights left is 99.995% pruned, not a collapsed 100.00%."""
    if not math.isfinite(fraction):
        return f"{100 * fraction}{sign}"
    for decimals in range(digits, digits + 12):
        text = f"{100 * fraction:.{decimals}f}"
        if (float(text) != 0 or fraction == 0) and (float(text) != 100 or fraction == 1):
            return text + sign
    # closer to 0 or 1 than a float shows in percent
    edge = 10**-digits
    return f"<{edge:.{digits}f}{sign}" if fraction < 0.5 else f">{100 - edge:.{digits}f}{sign}"


def human(count: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.1f}{unit}"
    return f"{count:.0f}"


def layer_table(
    counts: dict[str, tuple[int, int]],
    flops: dict[str, tuple[int, int]] | None = None,
    excluded: dict[str, int] | None = None,
) -> str:
    """A text table of each prunable tensor's live / total weights and sparsity, with its
    remaining / dense multiply-accumulates per input where `flops` has them. The `excluded`
    tensors (name -> size), kept dense, follow with their own total, and a last line counts
    them in."""
    excluded = excluded or {}
    width = max(len(name) for name in [*counts, *excluded, "all prunable"])
    header = f"{'layer':<{width}}  {'live':>10}  {'total':>10}  {'sparsity':>8}"
    if flops:
        header += f"  {'MACs left':>9}  {'of dense':>8}"
    rows = [(name, live, total, flops.get(name) if flops else None) for name, (live, total) in
            counts.items()]  # fmt: skip
    live = sum(row[1] for row in rows)
    total = sum(row[2] for row in rows)
    macs = [row[3] for row in rows if row[3] is not None]
    overall = (sum(d for d, _ in macs), sum(r for _, r in macs)) if macs else None
    lines = [header]
    for name, live_count, total_count, layer_macs in [
        *rows,
        ("all prunable", live, total, overall),
    ]:
        line = f"{name:<{width}}  {live_count:>10,}  {total_count:>10,}  "
        line += f"{percent(1 - live_count / total_count):>8}"
        if layer_macs is not None:
            dense, remaining = layer_macs
            line += f"  {human(remaining):>9}  {human(dense):>8}"
        lines.append(line)
    if excluded:
        for name, size in excluded.items():
            lines.append(f"{name:<{width}}  {size:>10,}  {size:>10,}  {'excluded':>8}")
        dense = sum(excluded.values())
        lines.append(
            f"{'with excluded':<{width}}  {live + dense:>10,}  {total + dense:>10,}  "
            f"{percent(1 - (live + dense) / (total + dense)):>8}"
        )
    return "\n".join(lines)
