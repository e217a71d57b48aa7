"""The registry of pruning criteria: the name `--prune_criterion` takes, and the class it builds.

A criterion in a file of its own (grasp.py, synflow.py) subclasses the classes of criteria.py;
gathering them here, above all of them, keeps the imports one way.
"""

from .criteria import (
    Criterion,
    FlipOut,
    GlobalMagnitude,
    IterativeMagnitude,
    LayerMagnitude,
    NoPruning,
    Random,
    Snip,
    Threshold,
)
from .grasp import GraSP
from .synflow import SynFlow

CRITERIA: dict[str, type[Criterion]] = {
    "flipout": FlipOut,
    "global_magnitude": GlobalMagnitude,
    "grasp": GraSP,
    "imp": IterativeMagnitude,
    "magnitude": LayerMagnitude,
    "none": NoPruning,
    "random": Random,
    "snip": Snip,
    "synflow": SynFlow,
    "threshold": Threshold,
}


def build_criterion(name: str, **options) -> Criterion:
    """The criterion registered as `name`, with its options by keyword."""
    if name not in CRITERIA:
        raise ValueError(
            f"unknown prune criterion {name!r}; choose from {', '.join(sorted(CRITERIA))}"
        )
    return CRITERIA[name](**options)
