"""The Pruner's parts, each an argument of its own: gradient noise (pruning/noise.py), the
Hoyer-Square penalty (pruning/hoyer.py) and the choice of tensors to prune (pruning/prunable.py).

    Pruner(model, FlipOut(), noise=Noise(scale=1.0, stop_at=100))
    Pruner(model, Threshold(), penalty=HoyerSquare(strength=6e-5, last_epoch=350))
    Pruner(model, "global_magnitude", tensors=Tensors(bias=True, exclude=("conv1", "fc")))

Each is a frozen dataclass that checks its fields when built, naming the field (its flag when
built from the command line). The Pruner's keywords of the release before, one per field
(`noise_scale`, `hoyer_lambda`, `prune_bias`, ...), are read here into parts for one more release.
"""

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from .hoyer import SCOPES
from .noise import KINDS
from .options import Bounded, flags_named, spelled
from .schedule import NEVER

STRENGTH = Bounded(float, low=0)
EPOCH = Bounded(int, low=0)  # a part's last epoch; None is never, where the keywords said -1
KEYWORD_EPOCH = Bounded(int, low=0, also=(NEVER,))


def field_name(part, field: str) -> str:
    """How messages name a part's field: its flag from the command line, Part.field in Python."""
    return f"--{part.FLAGS[field]}" if flags_named() else f"{type(part).__name__}.{field}"


def names_of(part, keywords: bool = False) -> dict[str, str]:
    """How messages name each of the part's fields: as `field_name` does, or, for a part built from
    the release before's keywords, by those keywords."""
    return {f: spelled(flag) if keywords else field_name(part, f) for f, flag in part.FLAGS.items()}


def check_switch(part, field: str) -> None:
    value = getattr(part, field)
    if not isinstance(value, bool):
        raise TypeError(f"{field_name(part, field)} must be True or False, got {value!r}")


def check_epoch(part, field: str) -> None:
    """None (never) or an epoch."""
    value = getattr(part, field)
    if value is not None:
        EPOCH.check(field_name(part, field), value)


@dataclass(frozen=True)
class Noise:
    """Gradient noise: after each backward pass, Gaussian noise of std ||g||_2 / sqrt(numel) *
    `scale` on the gradient of every trainable tensor (of the prunable ones only, with
    `only_prunable`), in every epoch before `stop_at` (None: in every epoch). That is `kind`
    "gradient", the paper's; "update" adds it to the optimizer's step instead, of std the step's
    RMS * `scale`, and "second_moment" to the gradient with a std per coordinate, its gradient's
    RMS over recent steps * `scale` (pruning/noise.py, docs/noise.md)."""

    scale: float = 1.0
    only_prunable: bool = False
    stop_at: int | None = None
    kind: str = "gradient"

    # the command line's flags, by which messages name the fields there
    FLAGS: ClassVar[dict] = {
        "scale": "noise_scale_factor",
        "only_prunable": "noise_only_prunable",
        "stop_at": "stop_noise_at",
        "kind": "noise_kind",
    }

    def __post_init__(self):
        STRENGTH.check(field_name(self, "scale"), self.scale)
        KINDS.check(field_name(self, "kind"), self.kind)
        check_switch(self, "only_prunable")
        check_epoch(self, "stop_at")

    def applies(self, epoch: int) -> bool:
        return self.stop_at is None or epoch < self.stop_at


@dataclass(frozen=True)
class HoyerSquare:
    """The Hoyer-Square penalty, `strength` times the sum over tensors of (sum |w|)^2 / sum w^2,
    added to the loss in every epoch up to `last_epoch` (None: in every epoch), over the prunable
    tensors (`scope="prunable"`) or every trainable parameter (`"all"`, as the FlipOut authors'
    code)."""

    strength: float
    last_epoch: int | None = None
    scope: str = "prunable"

    FLAGS: ClassVar[dict] = {
        "strength": "hoyer_lambda",
        "last_epoch": "stop_hoyer_at",
        "scope": "hoyer_scope",
    }

    def __post_init__(self):
        STRENGTH.check(field_name(self, "strength"), self.strength)
        check_epoch(self, "last_epoch")
        SCOPES.check(field_name(self, "scope"), self.scope)

    def applies(self, epoch: int) -> bool:
        return bool(self.strength) and (self.last_epoch is None or epoch <= self.last_epoch)


def as_patterns(part, field: str) -> tuple[str, ...]:
    """A field of names or globs as a tuple: one string alone is one pattern, not its
    characters; None is none."""
    value = getattr(part, field)
    patterns = () if value is None else (value,) if isinstance(value, str) else value
    # a tuple first: checking the items of a generator would use it up
    patterns = tuple(patterns) if isinstance(patterns, Iterable) else None
    if patterns is None or not all(isinstance(p, str) for p in patterns):
        raise TypeError(
            f"{field_name(part, field)} takes a name or glob, or several, got {value!r}"
        )
    return patterns


@dataclass(frozen=True)
class Tensors:
    """Which tensors are pruned (pruning/prunable.py): every layer's weight matrices, with the
    layers' biases (`bias`) and BatchNorm scales (`bnorm`); of those only the ones `include`
    selects (parameter names, module names or globs; a parameter outside the set by its exact
    name), less the ones `exclude` keeps dense."""

    bias: bool = False
    bnorm: bool = False
    include: str | Iterable[str] = ()
    exclude: str | Iterable[str] = ()

    FLAGS: ClassVar[dict] = {
        "bias": "prune_bias",
        "bnorm": "prune_bnorm",
        "include": "prune_include",
        "exclude": "prune_exclude",
    }

    def __post_init__(self):
        check_switch(self, "bias")
        check_switch(self, "bnorm")
        # tuples, so that the part stays hashable and equal whatever iterable it was given
        object.__setattr__(self, "include", as_patterns(self, "include"))
        object.__setattr__(self, "exclude", as_patterns(self, "exclude"))


# the Pruner's keywords of the release before: (its argument now, that part, the part's field)
KEYWORDS = {
    "noise_scale": ("noise", Noise, "scale"),
    "noise_only_prunable": ("noise", Noise, "only_prunable"),
    "stop_noise_at": ("noise", Noise, "stop_at"),
    "hoyer_lambda": ("penalty", HoyerSquare, "strength"),
    "stop_hoyer_at": ("penalty", HoyerSquare, "last_epoch"),
    "hoyer_scope": ("penalty", HoyerSquare, "scope"),
    "prune_bias": ("tensors", Tensors, "bias"),
    "prune_bnorm": ("tensors", Tensors, "bnorm"),
    "prune_include": ("tensors", Tensors, "include"),
    "prune_exclude": ("tensors", Tensors, "exclude"),
}


def check_keywords(keywords: dict) -> None:
    """The keywords' own checks, naming them as the release before did; the parts built from
    them then hold."""
    unknown = [name for name in keywords if name not in KEYWORDS]
    if unknown:
        raise TypeError(f"Pruner() got an unexpected keyword argument {unknown[0]!r}")
    for name in ("noise_scale", "hoyer_lambda"):
        if keywords.get(name) is not None:
            STRENGTH.check(name, keywords[name])
    for name in ("stop_noise_at", "stop_hoyer_at"):
        if keywords.get(name) is not None:
            KEYWORD_EPOCH.check(name, keywords[name])
    if "hoyer_scope" in keywords:
        SCOPES.check(spelled("hoyer_scope"), keywords["hoyer_scope"])


def fields_of(keywords: dict, argument: str) -> dict:
    """The fields of the part for `argument` that `keywords` give, -1 read as None (never)."""
    fields = {}
    for name, value in keywords.items():
        to, _, field = KEYWORDS[name]
        if to == argument:
            fields[field] = None if value == NEVER and field in ("stop_at", "last_epoch") else value
    return fields


def parts_from_keywords(keywords: dict) -> dict:
    """The parts the release before's keywords stand for, as `Pruner` arguments. Noise needed a
    scale and the penalty a strength to be on: without one, the others are checked and
    dropped."""
    check_keywords(keywords)
    parts = {}
    noise, penalty = fields_of(keywords, "noise"), fields_of(keywords, "penalty")
    if noise.get("scale") is not None:
        parts["noise"] = Noise(**{**noise, "only_prunable": bool(noise.get("only_prunable"))})
    if penalty.get("strength"):
        parts["penalty"] = HoyerSquare(**penalty)
    tensors = fields_of(keywords, "tensors")
    if tensors:
        switches = {f: bool(tensors[f]) for f in ("bias", "bnorm") if f in tensors}
        parts["tensors"] = Tensors(**{**tensors, **switches})
    return parts


def replacement(keywords: dict, parts: dict) -> str:
    """The new form of `keywords`, as a call would spell it: noise=Noise(scale=1.0), ...; a part
    that they leave off (noise_scale=None), as None."""
    spelt = []
    for argument in dict.fromkeys(KEYWORDS[name][0] for name in keywords):
        part = parts.get(argument)
        fields = ", ".join(f"{f}={v!r}" for f, v in fields_of(keywords, argument).items())
        spelt.append(f"{argument}={type(part).__name__}({fields})" if part else f"{argument}=None")
    return ", ".join(spelt)


def resolve(given: dict, keywords: dict) -> dict:
    """The parts for `Pruner`: `given` (noise, penalty, tensors as passed), with what the
    deprecated `keywords` stand for, warning once. A keyword beside the part it belongs to is a
    TypeError naming both."""
    if not keywords:
        return given
    for name in keywords:
        argument = KEYWORDS.get(name, (None,))[0]
        if given.get(argument) is not None:
            raise TypeError(
                f"Pruner got both {argument}= and {name}=, the old spelling of a field of "
                f"{argument}: pass {argument}= alone"
            )
    parts = parts_from_keywords(keywords)
    warnings.warn(
        f"Pruner({', '.join(f'{name}=' for name in keywords)}) is deprecated and goes in the "
        f"next release: pass {replacement(keywords, parts)}",
        DeprecationWarning,
        stacklevel=3,
    )
    return {**given, **parts}
