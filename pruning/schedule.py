"""When iterative pruning happens, and the sparsity that schedule reaches.

At the end of epoch `e` (counted from 1) a scheduled criterion prunes when `e` is a multiple of
`prune_freq`, `e` is not the last epoch, and pruning has not been stopped (`stop_pruning_at`, -1
for never). With `prune_rate` r and n prunes the sparsity is 1 - (1 - r)^n, which gives the seed
README's table for 350 epochs at r = 0.5: prune_freq 117, 70, 50, 39, 32 -> 75%, 93.75%, 98.44%,
99.61%, 99.90%.
"""


def is_prune_epoch(epoch: int, prune_freq: int, epochs: int, stop_pruning_at: int = -1) -> bool:
    return (
        epoch % prune_freq == 0
        and epoch != epochs
        and (stop_pruning_at == -1 or epoch < stop_pruning_at)
    )


def prune_epochs(prune_freq: int, epochs: int, stop_pruning_at: int = -1) -> list[int]:
    return [
        e for e in range(1, epochs + 1) if is_prune_epoch(e, prune_freq, epochs, stop_pruning_at)
    ]


def expected_sparsity(
    prune_rate: float, prune_freq: int, epochs: int, stop_pruning_at: int = -1
) -> float:
    """Sparsity the schedule reaches, ignoring the rounding of each prune to whole weights."""
    return 1.0 - (1.0 - prune_rate) ** len(prune_epochs(prune_freq, epochs, stop_pruning_at))
