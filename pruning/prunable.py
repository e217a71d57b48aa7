"""Which tensors of a network pruning may remove weights from: the one place that decides.

By default, every weight matrix a layer multiplies its input with: the weights of nn.Linear, of
every convolution and of nn.MultiheadAttention, whose input projection is a bare parameter
(`in_proj_weight`, or `q_proj_weight`, `k_proj_weight` and `v_proj_weight`) that a search by
layer type would miss; a subclass counts as its base. A layer of one's own says what is prunable
in it by the class attributes `prunable_weights` and `prunable_biases`, or is registered from
outside with `register_prunable`. Weight-standardised convolutions (timm's StdConv2d) are never
prunable: they normalise the weight where they use it, so a zero there would not stay zero.
`include` and `exclude` select by parameter name, module name or glob, and a pattern that matches
nothing is an error. docs/sparsity.md ("What is pruned, and layers kept dense") tells it with the
flags and the rest of the rules.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from .options import spelled


@dataclass(frozen=True)
class PrunableParts:
    """The parameter names of one layer type: its weight matrices, and the biases that
    `prune_bias` adds."""

    weights: tuple[str, ...]
    biases: tuple[str, ...] = ()


# layer type, or its qualified name for a library this one does not import -> what is prunable
# in it; looked up along the class's method resolution order
PRUNABLE: dict[type | str, PrunableParts] = {
    nn.Linear: PrunableParts(("weight",), ("bias",)),
    _ConvNd: PrunableParts(("weight",), ("bias",)),
    nn.MultiheadAttention: PrunableParts(
        ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"), ("in_proj_bias",)
    ),
    # timm's weight-standardised convolutions (BiT, NFNet) normalise the weight in forward, so a
    # weight set to zero is not zero where it is used: masking them would prune nothing
    **dict.fromkeys(
        (f"timm.layers.std_conv.{name}" for name in
         ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame")),
        PrunableParts(()),
    ),
}  # fmt: skip


def register_prunable(
    layer: type[nn.Module], weights: Iterable[str], biases: Iterable[str] = ()
) -> None:
    """Make the parameters `weights` (and, with `prune_bias`, `biases`) of every `layer`
    prunable, for a layer type one cannot give a `prunable_weights` attribute."""
    PRUNABLE[layer] = PrunableParts(tuple(weights), tuple(biases))


def parts_of(module: nn.Module) -> PrunableParts | None:
    """What is prunable in `module` by default: its own declaration, else the registry's entry for
    the nearest of its classes."""
    declared = getattr(module, "prunable_weights", None)
    if declared is not None:
        return PrunableParts(tuple(declared), tuple(getattr(module, "prunable_biases", ())))
    for cls in type(module).__mro__:
        for key in (cls, f"{cls.__module__}.{cls.__qualname__}"):
            if key in PRUNABLE:
                return PRUNABLE[key]
    return None


def prunable_parameters(
    model: nn.Module, prune_bias: bool = False, prune_bnorm: bool = False
) -> dict[str, nn.Parameter]:
    """The default set, in `named_parameters` order: every layer's weight matrices, plus their
    biases with `prune_bias` and BatchNorm scales with `prune_bnorm`."""
    wanted: set[int] = set()
    for module in model.modules():
        parts = parts_of(module)
        if parts is not None:
            names = parts.weights + (parts.biases if prune_bias else ())
            for name in names:
                tensor = getattr(module, name, None)
                if isinstance(tensor, nn.Parameter):
                    wanted.add(id(tensor))
        elif prune_bnorm and isinstance(module, _BatchNorm) and module.weight is not None:
            wanted.add(id(module.weight))
    return {name: p for name, p in model.named_parameters() if id(p) in wanted}


def matches(pattern: str, name: str) -> bool:
    """Whether `pattern` (a parameter's name, a module's name or a glob) selects parameter
    `name`."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


def aliases(model: nn.Module) -> dict[str, list[str]]:
    """Each parameter's name in `named_parameters` -> every name it has: a tied weight (an
    embedding shared with the classifier) has one per module that holds it."""
    first = {id(p): name for name, p in model.named_parameters()}
    names: dict[str, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(first[id(p)], []).append(name)
    return names


def matching(
    patterns: Iterable[str],
    names: Iterable[str],
    what: str,
    among: str,
    also_known_as: dict[str, list[str]] | None = None,
) -> list[str]:
    """The `names` that any of `patterns` selects by any of their names (`also_known_as`), in
    their order. ValueError, naming `what` (the option) and a few of the candidates, for a
    pattern that selects none of them."""
    names, patterns, known = list(names), list(patterns), also_known_as or {}

    def selected(pattern: str, name: str) -> bool:
        return any(matches(pattern, alias) for alias in known.get(name, [name]))

    for pattern in patterns:
        if not any(selected(pattern, name) for name in names):
            examples = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "") or "none"
            raise ValueError(f"{what} {pattern}: no {among} matches it; they are {examples}")
    return [name for name in names if any(selected(pattern, name) for pattern in patterns)]


def as_patterns(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """One pattern alone is a pattern, not the characters of one."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass
class Selection:
    """The outcome of choosing: the tensors pruned, and the default ones kept dense."""

    params: dict[str, nn.Parameter]
    excluded: dict[str, nn.Parameter] = field(default_factory=dict)


def select_prunable(
    model: nn.Module,
    prune_bias: bool = False,
    prune_bnorm: bool = False,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    names: tuple[str, str] | None = None,
) -> Selection:
    """The tensors to prune and the default ones left dense, as the module docstring says;
    messages name `include` and `exclude` as `names` says (default: as prune_include and
    prune_exclude)."""
    include, exclude = as_patterns(include), as_patterns(exclude)
    include_name, exclude_name = names or (spelled("prune_include"), spelled("prune_exclude"))
    default = prunable_parameters(model, prune_bias, prune_bnorm)
    every, known = dict(model.named_parameters()), aliases(model)
    chosen = dict(default)
    if include:
        # from the default set; a parameter outside it (an embedding, a norm) by its exact name
        named = {alias: name for name, names in known.items() for alias in names}
        outside = {p: named[p] for p in include if p in named and named[p] not in default}
        wanted = [pattern for pattern in include if pattern not in outside]
        picked = set(outside.values())
        if wanted:
            among = "prunable tensor (a parameter outside them is included by its exact name)"
            picked |= set(matching(wanted, default, include_name, among, known))
        chosen = {name: p for name, p in every.items() if name in picked}
    if exclude:
        dropped = set(matching(exclude, chosen, exclude_name, "prunable tensor", known))
        chosen = {name: p for name, p in chosen.items() if name not in dropped}
    excluded = {name: p for name, p in default.items() if name not in chosen}
    return Selection(chosen, excluded)
