"""The registry of pruning criteria: the name `--prune_criterion` takes, the class it builds, and
the name of the method a run of it is in reports (`method_label`).

A criterion in a file of its own (grasp.py, synflow.py, dynamic.py) subclasses the classes of
criteria.py; gathering them here, above all of them, keeps the imports one way: a criterion
learns its registry name from CRITERIA, which this module hands to the base class
(`Criterion.registry`).
"""

import math

from .criteria import (
    Criterion,
    FlipOut,
    GlobalMagnitude,
    IterativeMagnitude,
    LayerMagnitude,
    NoPruning,
    Random,
    Snip,
    Taylor,
    Threshold,
)
from .dynamic import SET, GraNet, RigL
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
    "rigl": RigL,
    "set": SET,
    "granet": GraNet,
    "snip": Snip,
    "synflow": SynFlow,
    "taylor": Taylor,
    "threshold": Threshold,
}
Criterion.registry = CRITERIA

HOYER_SQUARE = "Hoyer-Square"


def build_criterion(name: str, **options) -> Criterion:
    """The criterion registered as `name`, with its options by keyword."""
    if name not in CRITERIA:
        raise ValueError(
            f"unknown prune criterion {name!r}; choose from {', '.join(sorted(CRITERIA))}"
        )
    return CRITERIA[name](**options)


def compact_number(value: float) -> str:
    """Shortest readable spelling of a strength like λ: 6e-5, 2.5e-4, 1e-3, but 0.5 and 10."""
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:g}"
    mantissa, exponent = f"{value:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def finite_number(value) -> bool:
    """A JSON number that arithmetic can use: not a bool, NaN, infinity or an int too large for a
    float (a damaged summary may hold any of them)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def published_noise(criterion: str) -> bool:
    """Whether the method registered as `criterion` adds gradient noise as published (FlipOut)."""
    known = CRITERIA.get(criterion)
    return known is not None and known.noisy


def is_hoyer_square(criterion: str, options: dict) -> bool:
    """The paper's Hoyer-Square baseline: the penalty in the loss, then pruning by threshold."""
    known = CRITERIA.get(criterion)
    return known is not None and known.hoyer_square and bool(options.get("add_hs"))


def noise_label(criterion: str, options: dict) -> str:
    """How the run's gradient noise sets it apart: the paper's FlipOut adds noise (λ = 1) and the
    other methods do not, so only a departure shows: "(no noise)", "+ noise", a scale other
    than 1, and a kind other than the paper's ("(update noise)"). Nothing for options that do not
    record it (an older summary)."""
    noise = options.get("noise")
    if noise is None:
        return ""
    scale = options.get("noise_scale_factor")
    scaled = noise and finite_number(scale) and scale != 1
    kind = options.get("noise_kind") or "gradient"
    if noise and kind != "gradient":  # a variant of the noise (docs/noise.md)
        words = f"{kind.replace('_', '-')} noise"
        if published_noise(criterion):
            return f" ({words}, scale {scale:g})" if scaled else f" ({words})"
        return f" + {words} (scale {scale:g})" if scaled else f" + {words}"
    if bool(noise) == published_noise(criterion):
        return f" (noise scale {scale:g})" if scaled else ""
    if not noise:
        return " (no noise)"
    return f" + noise (scale {scale:g})" if scaled else " + noise"


def method_label(criterion: str, options: dict) -> str:
    """The name of a run's method in reports, plots and its summary, from its criterion's
    registry name and its options under their flags' names (as summary.json records them): the
    criterion's label and variant ("SNIP (Xavier copy, NLL)", "GMP"), the N:M constraint ("FlipOut
    2:4"), a departure from the paper's noise ("FlipOut (no noise)", "GlobalMagnitude + noise"),
    the Hoyer-Square penalty ("Hoyer-Square (λ=6e-5)", "FlipOut + HS (λ=1e-4)"). A criterion this
    version does not know keeps its registry name."""
    strength = compact_number(float(options.get("hoyer_lambda") or 0.0))
    if is_hoyer_square(criterion, options):
        return f"{HOYER_SQUARE} (λ={strength})"
    known = CRITERIA.get(criterion)
    label = criterion if known is None else known.variant_label(options)
    if known is not None and options.get("nm"):  # a constrained run is another method
        label = f"{label} {options['nm']}"
    label += noise_label(criterion, options)
    if options.get("add_hs"):
        return f"{label} + HS (λ={strength})"
    return label
