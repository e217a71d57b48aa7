"""Choosing the lowest-scoring live weights, globally or within one tensor.

Selection uses a k-th value search rather than a full sort, and breaks ties by position (the first
of equal scores in parameter order goes first), so that the same scores always give the same mask.

Weights that must go whatever the count (`forced`: an N:M constraint's excess, pruning/nm.py)
rank below every other live weight, so that they fill the count first, and go even beyond it.
"""

import torch

from .mask import Masks


def lowest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask over a 1-D `scores` marking its `k` smallest entries, ties broken by index."""
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    if k <= 0:
        return chosen
    if k >= scores.numel():
        return ~chosen
    threshold = torch.kthvalue(scores, k).values
    chosen = scores < threshold
    missing = k - int(chosen.sum())
    ties = torch.nonzero(scores == threshold).flatten()
    chosen[ties[:missing]] = True
    return chosen


def live_scores(
    scores: dict[str, torch.Tensor], masks: Masks, forced: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Scores with dead weights pushed to +inf so that they are never chosen again, and the
    `forced` ones (name -> bool, only where given) to -inf so that they are chosen first."""
    inf = torch.tensor(float("inf"))
    scores = {
        name: torch.where(masks[name], s.float(), inf.to(s.device)) for name, s in scores.items()
    }
    for name, chosen in (forced or {}).items():
        scores[name] = scores[name].masked_fill(chosen, -inf)
    return scores


def with_forced(
    chosen: dict[str, torch.Tensor], forced: dict[str, torch.Tensor] | None
) -> dict[str, torch.Tensor]:
    """`chosen` together with the `forced` weights that the count left out."""
    if not forced:
        return chosen
    return {name: c | forced[name] if name in forced else c for name, c in chosen.items()}


def prune_lowest_global(
    scores: dict[str, torch.Tensor],
    masks: Masks,
    count: int,
    forced: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The `count` lowest-scoring live weights across all tensors, as name -> bool mask, and
    the `forced` ones however many they are."""
    scores = live_scores(scores, masks, forced)
    flat = torch.cat([s.flatten() for s in scores.values()])
    chosen = lowest_k(flat, count).split([s.numel() for s in scores.values()])
    chosen = {name: c.view_as(s) for (name, s), c in zip(scores.items(), chosen, strict=True)}
    return with_forced(chosen, forced)


def prune_lowest_per_layer(
    scores: dict[str, torch.Tensor],
    masks: Masks,
    counts: dict[str, int],
    forced: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """In each tensor, its `counts[name]` lowest-scoring live weights, and the `forced` ones
    however many they are."""
    scores = live_scores(scores, masks, forced)
    chosen = {name: lowest_k(s.flatten(), counts[name]).view_as(s) for name, s in scores.items()}
    return with_forced(chosen, forced)
