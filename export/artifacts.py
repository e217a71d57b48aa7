"""A finished (or interrupted) run read back from its directory: the pruned network, its masks
and flip counters, for the tools that take a run elsewhere (python -m export, export.inspect).

Everything in checkpoint.pt is checked against everything else before it is used, so that a
damaged checkpoint ends in a UserError naming the file, never in a traceback or in a network
that does not match its own description."""

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models import (
    TooManyLayers,
    build_model,
    input_problem,
    is_external,
    layer_budget,
    memory_problem,
)
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils.rundir import CHECKPOINT

# cli.py's limit on --image_size, and no dataset's images are larger: a model_spec naming larger
# images is damaged, and a forward pass on them (export.inspect counts FLOPs with one) could take
# minutes and gigabytes
MAX_IMAGE_SIZE = 1024
# how many names a mismatch lists of each kind before "(and N more)"
SHOWN = 3


@dataclass
class PrunedRun:
    model: nn.Module  # the registry's network with the run's weights, pruned ones exactly zero
    masks: dict[str, torch.Tensor]  # prunable parameter name -> bool tensor, True = live
    flip_counts: dict[str, torch.Tensor]  # same names -> int32 sign flips so far
    spec: dict  # build_model(**spec) rebuilds the architecture
    epoch: int  # the last completed epoch
    run_dir: Path

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return input_shape(self.spec)


def input_shape(spec: dict) -> tuple[int, int, int]:
    return (spec["in_channels"], spec["image_size"], spec["image_size"])


def reason(error: BaseException) -> str:
    """An exception's message on one line, as the end of a UserError's."""
    return " ".join(str(error).split()) or type(error).__name__


class NotANetwork(ValueError):
    """The model library refused to build a spec read from a file; the message says how."""


def meta_model(spec: dict) -> nn.Module:
    """The network `spec`, read from a file, describes, on the meta device: its shapes without
    memory, so that a damaged spec asking for an enormous layer costs nothing. Whatever the
    model library raises against the spec is a NotANetwork (a ValueError): timm checks its
    arguments with assert (AssertionError) and looks names up in dicts (KeyError). So is a spec
    of more layers than any network has (depth=100000, which would take minutes to build even
    here), and one whose weights would not fit in the memory available."""
    with torch.device("meta"), warnings.catch_warnings(), layer_budget():
        # a damaged spec can ask for zero-sized layers, whose initialisation warns
        warnings.simplefilter("ignore")
        try:
            skeleton = build_model(**spec)
        except TooManyLayers as error:
            raise NotANetwork(f"it {error}") from None
        except Exception as error:
            raise NotANetwork(rejection(error)) from error
    problem = memory_problem(skeleton)
    if problem:
        raise NotANetwork(f"it {problem}")
    return skeleton


def rejection(error: Exception) -> str:
    """Why a spec was refused, on one line: the message of a TypeError, ValueError or
    RuntimeError, the kind too of anything else ("KeyError: 'bogus'", not "'bogus'")."""
    text = reason(error)
    if isinstance(error, TypeError | ValueError | RuntimeError) or text == type(error).__name__:
        return text
    return f"{type(error).__name__}: {text}"


def shown(items: list[str], separator: str = ", ") -> str:
    more = f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return separator.join(items[:SHOWN]) + more


def dims(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "a scalar"


def names_mismatch(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], there: str = "here"
) -> str:
    """How the tensors `found` in the file differ from the `expected` ones (`there`) by name
    and shape, at most SHOWN names of each kind; "" when they fit."""
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    reshaped = [
        f"shape of {name} is {dims(found[name])} in the file, {dims(tensor)} {there}"
        for name, tensor in expected.items()
        if name in found and found[name].shape != tensor.shape
    ]
    parts = []
    if missing:
        parts.append(f"missing {shown(missing)}")
    if unexpected:
        parts.append(f"unexpected {shown(unexpected)}")
    if reshaped:
        parts.append(shown(reshaped, "; "))
    # a name with a line break in it must not break the line
    return " ".join("; ".join(parts).split())


def restore_model(path: Path, spec: dict, state: dict[str, torch.Tensor]) -> nn.Module:
    """The network of `spec` with the weights `state`, in eval mode, once both are known to fit
    each other and the images the spec names."""
    if not 1 <= spec["image_size"] <= MAX_IMAGE_SIZE:
        raise UserError(
            f"{path}: its model_spec {spec} has an image_size of {spec['image_size']}, where "
            f"main.py writes 1 to {MAX_IMAGE_SIZE}"
        )
    try:
        skeleton = meta_model(spec)
    except (TypeError, ValueError, RuntimeError) as error:
        raise UserError(
            f"{path}: its model_spec {spec} is not a network: {reason(error)}"
        ) from error
    mismatch = names_mismatch(skeleton.state_dict(), state, there="by the model_spec")
    if mismatch:
        raise UserError(f"{path}: its weights do not fit its model_spec {spec}: {mismatch}")
    model = build_model(**spec).eval()
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(f"{path}: its weights cannot be loaded: {reason(error)}") from error
    batch = 1 if is_external(spec["name"]) else 0
    problem = input_problem(model, spec["in_channels"], spec["image_size"], batch)
    if problem:
        raise UserError(
            f"{path}: its model_spec {spec} names images the network cannot take: {problem}"
        )
    return model


def is_mask(tensor: torch.Tensor) -> bool:
    return tensor.dtype == torch.bool


def is_count(tensor: torch.Tensor) -> bool:
    dtype = tensor.dtype
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def pruner_part(
    path: Path, checkpoint: dict, part: str, parameters: dict[str, nn.Parameter]
) -> dict[str, torch.Tensor]:
    """The pruner's `part` (masks or flip_counts): a dense CPU tensor of the right kind for
    parameters of the network, each of that parameter's shape."""
    tensors = checkpoint["pruner"][part]
    right_kind = is_mask if part == "masks" else is_count
    kind = "bool" if part == "masks" else "integer"
    spec = checkpoint["model_spec"]
    for name, tensor in tensors.items():
        if name not in parameters:
            raise UserError(f"{path}: its {part} do not fit {spec}: it has no parameter {name!r}")
        if tensor.shape != parameters[name].shape:
            raise UserError(
                f"{path}: its {part} do not fit {spec}: {name!r} has shape "
                f"{tuple(tensor.shape)} where the parameter's is {tuple(parameters[name].shape)}"
            )
        if tensor.layout != torch.strided or tensor.device.type != "cpu":
            raise UserError(f"{path}: its {part} for {name!r} are not a plain tensor")
        if not right_kind(tensor):
            raise UserError(f"{path}: its {part} for {name!r} are {tensor.dtype}, not {kind}")
    return dict(tensors)


def load_run(run_dir: str | Path) -> PrunedRun:
    """The state of `run_dir`'s checkpoint.pt, on the CPU. Raises UserError naming the file when
    the directory holds no usable checkpoint."""
    checkpoint = load_checkpoint(run_dir)
    path = Path(run_dir) / CHECKPOINT
    spec = checkpoint["model_spec"]
    model = restore_model(path, spec, checkpoint["model"])
    parameters = dict(model.named_parameters())
    masks = pruner_part(path, checkpoint, "masks", parameters)
    flip_counts = pruner_part(path, checkpoint, "flip_counts", parameters)
    if not masks:
        raise UserError(f"{path}: its masks are empty")
    if set(flip_counts) != set(masks):
        raise UserError(f"{path}: its flip_counts and masks are for different parameters")
    return PrunedRun(
        model=model,
        masks=masks,
        flip_counts=flip_counts,
        spec=dict(spec),
        epoch=checkpoint["epoch"],
        run_dir=Path(run_dir),
    )
