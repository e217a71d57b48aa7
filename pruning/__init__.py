"""Pruning: masks, sign-flip counters, the criteria of the FlipOut paper and its baselines, SNIP,
Hoyer-Square, gradient noise and the prune schedule."""

from pruning.criteria import CRITERIA, Criterion, build_criterion
from pruning.mask import Masks, prunable_parameters
from pruning.pruner import PruneEvent, Pruner, PruningConfig

__all__ = [
    "CRITERIA",
    "Criterion",
    "Masks",
    "PruneEvent",
    "Pruner",
    "PruningConfig",
    "build_criterion",
    "prunable_parameters",
]
