"""Trained weights read back from any file this repository writes, so that a run can start from
them (main.py's `--init_from PATH`).

`read_weights(path)` tells the formats apart by what the file holds, not by its name:

- model.pt, written by `main.py --save_model`: {"spec", "state_dict", "masks"};
- a run's checkpoint.pt (utils/checkpoint.py), checked as `--resume` checks it;
- the exports of export/formats.py: dense {"spec", "state_dict"}; torch_prune {"spec",
  "state_dict", "pruned"}, whose `X_orig` and `X_mask` entries become `X = X_orig * X_mask`;
  sparse {"spec", "sparse", "dense"}, whose CSR tensors become dense again (a compact or
  sparse_runtime export is a network rather than weights: refused in one line that says what
  to give, told by its header without unpickling it);
- a plain state dict (name -> tensor), also wrapped as {"state_dict": ...}, and also with the
  "module." that DataParallel and DistributedDataParallel put before every name: a `.pth`,
  `.pt` or `.bin` that torch.save wrote (torchvision's and timm's published weights), or a
  `.safetensors` file (timm's hub format), told by its suffix;
- a run directory: its model.pt, else its checkpoint.pt.

Masks come from model.pt, checkpoints and the torch_prune and sparse exports; a sparse export
stores in CSR only the tensors that lost weights, so only they have a mask there (every weight of
the others is live). Where a file has masks its pruned weights are exactly zero. Where it has a
spec, its tensors are checked against the network the spec builds (on the meta device, so a
damaged spec costs no memory) before anything is returned. `load_weights` then puts the weights
into a network, strictly: the same names, shapes and kinds of number (integers are never cast to
floating-point weights), every floating-point value finite, in the file and in the network's
precision (1e300 in a float64 file would be an infinity in float32).

Every failure is a UserError of one line that starts with the flag and the path as the user gave
them. Files are read with `weights_only=True`: a file cannot run code. A FIFO, a device or a
socket is refused before it is opened, as reading it would block or never end.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from export.artifacts import meta_model, names_mismatch, pruner_part, reason, shown
from export.formats import MODULE_FORMATS, export_header, read_torch_file, reading, sparse_state
from utils.checkpoint import FORMAT_VERSION, SHAPE, checkpoint_problem
from utils.errors import UserError, special_file
from utils.rundir import CHECKPOINT
from utils.rundir import MODEL as MODEL_FILE

# DataParallel and DistributedDataParallel name their module "module"
WRAPPER_PREFIX = "module."


@dataclass
class Weights:
    state_dict: dict[str, torch.Tensor]  # plain names -> tensors, pruned weights exactly zero
    masks: dict[str, torch.Tensor] | None  # parameter name -> bool, True = live; None: no masks
    spec: dict | None  # models.build_model(**spec) rebuilds the network; None: not in the file
    kind: str  # "model.pt", "checkpoint", "dense export", "torch_prune export", ...
    source: str = ""  # the path as the user gave it, for load_weights's messages


def read_weights(path: str | Path, flag: str = "--init_from") -> Weights:
    """The weights in `path`: a file in any format of the module docstring, or a run directory.
    Raises a one-line UserError starting with `f"{flag} {path}: "` when there are none to use."""
    where = f"{flag} {path}"
    given = Path(path)
    file = weights_file(given, where)
    # in a run directory, say which of its files is at fault
    inside = "" if file == given else f"{file.name}: "
    try:
        weights = parse(read_tensors(file), file)
    except UserError as error:
        raise restated(error, f"{where}: {inside}", file) from error
    weights.source = str(path)
    return weights


def load_weights(model: nn.Module, weights: Weights, flag: str = "--init_from") -> None:
    """Put `weights` into `model` (the unwrapped network) strictly: every tensor of the model,
    and nothing else, of the same shape and the same kind of number (a half-precision file loads
    into float32 weights; integers or booleans are not read as weights). Raises a one-line
    UserError naming the tensors that differ, a tensor with NaN or infinite values (or values
    that would become infinite in the model's precision), or masks that are not boolean masks of
    the model's parameters."""
    where = f"{flag} {weights.source}"
    mismatch = names_mismatch(model.state_dict(), weights.state_dict)
    if mismatch:
        raise UserError(
            f"{where}: its weights are for another network{held(weights.spec)}: {mismatch}"
        )
    if weights.masks is not None:
        source = Path(weights.source)
        try:
            checked_masks(weights.masks, dict(model.named_parameters()), "this network", source)
        except UserError as error:
            raise restated(error, f"{where}: ", source) from error
    cast = casts(model.state_dict(), weights.state_dict)
    if cast:
        raise UserError(
            f"{where}: {cast}; a tensor is loaded only as the kind of number it holds: "
            "floating point into floating point (float16, bfloat16, float32, float64), integers "
            "into integers"
        )
    unfit = out_of_range(model.state_dict(), weights.state_dict)
    if unfit:
        raise UserError(f"{where}: {unfit}; weights to start from are finite numbers")
    try:
        model.load_state_dict(weights.state_dict)
    except RuntimeError as error:  # a tensor that cannot be copied into its parameter
        raise UserError(f"{where}: its weights cannot be loaded: {reason(error)}") from error


def number_kind(dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return "floating point"
    if dtype.is_complex:
        return "complex"
    return "boolean" if dtype == torch.bool else "integer"


def casts(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """The tensors of `state` that loading into tensors like `expected` would turn into another
    kind of number, as "1.weight is int64 in the file, float32 here (and 2 more)", or "". Among
    floating-point types (a half-precision file) nothing is lost but precision, nor among integer
    ones (BatchNorm's num_batches_tracked)."""
    wrong = [
        f"{name} is {str(state[name].dtype).removeprefix('torch.')} in the file, "
        f"{str(tensor.dtype).removeprefix('torch.')} here"
        for name, tensor in expected.items()
        if name in state and number_kind(tensor.dtype) != number_kind(state[name].dtype)
    ]
    more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
    return f"{wrong[0]}{more}" if wrong else ""


def out_of_range(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """The first floating-point tensor of `state` that holds NaN or an infinity, or a value that
    loading into tensors like `expected` would turn into one (1e300 into float32), as "1.weight
    holds NaN or infinite values in the file", or ""."""
    for name, tensor in expected.items():
        value = state.get(name)
        if value is None or not (tensor.is_floating_point() and value.is_floating_point()):
            continue
        if not torch.isfinite(value).all():
            return f"{name} holds NaN or infinite values in the file"
        limit = torch.finfo(tensor.dtype).max
        if not value.numel() or torch.finfo(value.dtype).max <= limit:
            continue
        largest = value.abs().max().item()
        if largest > limit:
            kind = str(tensor.dtype).removeprefix("torch.")
            return f"{name} holds {largest:.3g} in the file, beyond {kind}'s range ({limit:.3g})"
    return ""


def restated(error: UserError, lead: str, file: Path) -> UserError:
    """`error` on one line that starts with `lead` in place of `file`, with which the
    repository's readers start theirs."""
    return UserError(lead + " ".join(str(error).removeprefix(f"{file}: ").split()))


def read_tensors(file: Path) -> object:
    """What `file` holds: a safetensors file's tensors by name, or what torch.load reads."""
    if file.suffix != ".safetensors":
        try:
            return read_torch_file(file)
        except UserError:
            refuse_a_whole_network(file)
            raise
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UserError(
            f"{file}: reading .safetensors needs safetensors, which timm installs: "
            "pip install safetensors"
        ) from None
    with reading(file):
        return load_file(file, device="cpu")


def refuse_a_whole_network(file: Path) -> None:
    """A UserError for a compact or sparse_runtime export, a network rather than weights, told
    by its header (export_header) without unpickling it: what torch.load read of it with
    weights_only=True was only the refusal to build the module."""
    header = export_header(file)
    if header is None or header.format not in MODULE_FORMATS:
        return
    source = f" (this one was exported from {header.run_dir})" if header.run_dir else ""
    raise UserError(
        f"{file}: a {header.format} export is a whole network, not weights to start from; "
        f"--init_from takes a run directory{source}, its {MODEL_FILE} or {CHECKPOINT}, or a "
        "dense, torch_prune or sparse export (python -m export RUN_DIR --to dense OUT)"
    ) from None


def weights_file(path: Path, where: str) -> Path:
    """The file to read for `path`: itself, or a run directory's model.pt, else its
    checkpoint.pt. A FIFO, a device or a socket is refused before it is opened: reading one
    would block, or never end."""
    if path.is_dir():
        for name in (MODEL_FILE, CHECKPOINT):
            kind = special_file(path / name)
            if kind:
                raise UserError(f"{where}: its {name} is {kind}, not a file")
            if (path / name).is_file():
                return path / name
        raise UserError(
            f"{where}: no {MODEL_FILE} or {CHECKPOINT} there (a run writes {CHECKPOINT} after its "
            f"first epoch, and {MODEL_FILE} at its end with --save_model)"
        )
    kind = special_file(path)
    if kind:
        raise UserError(f"{where}: it is {kind}, not a file")
    if not path.exists():
        raise UserError(f"{where}: no such file or directory")
    return path


# -- the formats ------------------------------------------------------------------------------
# Each reader checks the structure it relies on and returns the Weights (`parse` names the kind);
# those of the formats with a spec go through `fitted`, which checks the parts against each other.


def from_checkpoint(payload: dict, file: Path) -> Weights:
    version = payload["format_version"]
    if not isinstance(version, int) or version != FORMAT_VERSION:
        raise UserError(
            f"a checkpoint of format version {version!r}, where this code reads version "
            f"{FORMAT_VERSION}"
        )
    problem = checkpoint_problem(payload)
    if problem:
        raise UserError(f"a damaged checkpoint: {problem}")
    return fitted(payload["model"], payload["pruner"]["masks"], payload["model_spec"], file)


def from_model_file(payload: dict, file: Path) -> Weights:
    return fitted(tensors(payload, "state_dict"), tensors(payload, "masks"), payload["spec"], file)


def from_dense(payload: dict, file: Path) -> Weights:
    return fitted(tensors(payload, "state_dict"), None, payload["spec"], file)


def from_torch_prune(payload: dict, file: Path) -> Weights:
    state = dict(tensors(payload, "state_dict"))
    pruned = payload["pruned"]
    if not isinstance(pruned, list) or not all(isinstance(name, str) for name in pruned):
        raise UserError("its 'pruned' is not a list of parameter names")
    masks = {}
    for name in pruned:
        orig, mask = state.pop(f"{name}_orig", None), state.pop(f"{name}_mask", None)
        if orig is None or mask is None:
            raise UserError(f"its state_dict lacks {name}_orig or {name}_mask")
        if mask.shape != orig.shape or not ((mask == 0) | (mask == 1)).all():
            raise UserError(f"its {name}_mask is not a mask of zeros and ones for {name}_orig")
        # `fitted` multiplies by the mask, as for every format with masks
        state[name], masks[name] = orig, mask.bool()
    return fitted(state, masks, payload["spec"], file)


def from_sparse(payload: dict, file: Path) -> Weights:
    tensors(payload, "dense")  # checked before sparse_state copies it
    parts, spec = payload["sparse"], payload["spec"]
    if not isinstance(parts, dict):
        raise UserError("its 'sparse' is not a dict of CSR tensors")
    skeleton = network(spec)
    expected = skeleton.state_dict()
    # a damaged shape could ask to_dense for terabytes: each must be that of the network's tensor
    for name, part in parts.items():
        if name not in expected or not isinstance(part, dict):
            raise UserError(f"its sparse {name!r} is not a tensor of {spec}")
        shape = part.get("shape")
        if not isinstance(shape, list) or shape != list(expected[name].shape):
            raise UserError(f"its sparse {name!r} does not have the shape {spec} gives it")
    try:
        state, masks = sparse_state(payload)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise UserError(f"its sparse tensors are damaged: {reason(error)}") from error
    return fitted(state, masks, spec, file, skeleton)


def from_state_dict(payload: dict, file: Path) -> Weights:
    state = tensors(payload, "state_dict") if "state_dict" in payload else payload
    if all(name.startswith(WRAPPER_PREFIX) for name in state):
        state = {name.removeprefix(WRAPPER_PREFIX): tensor for name, tensor in state.items()}
    return Weights(dict(state), None, None, "state dict")


# the keys that tell each format apart, tried in this order: model.pt holds a dense export's
# keys and more; a plain state dict, last, is told by its values
FORMATS = {
    "checkpoint": ({"format_version"}, from_checkpoint),
    "torch_prune export": ({"spec", "state_dict", "pruned"}, from_torch_prune),
    "sparse export": ({"spec", "sparse", "dense"}, from_sparse),
    MODEL_FILE: ({"spec", "state_dict", "masks"}, from_model_file),
    "dense export": ({"spec", "state_dict"}, from_dense),
    "state dict": ({"state_dict"}, from_state_dict),
}


def kind_of(payload: object) -> str | None:
    if not isinstance(payload, dict):
        return None
    for kind, (keys, _) in FORMATS.items():
        if keys <= payload.keys():
            return kind
    return "state dict" if payload and is_tensor_dict(payload) else None


def parse(payload: object, file: Path) -> Weights:
    kind = kind_of(payload)
    if kind is None:
        raise UserError(
            f"it holds {contents(payload)}, which is none of: model.pt, checkpoint.pt, an export "
            "of python -m export, a state dict (names -> tensors)"
        )
    weights = FORMATS[kind][1](payload, file)
    weights.kind = kind
    return weights


def fitted(
    state: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor] | None,
    spec: object,
    file: Path,
    skeleton: nn.Module | None = None,
) -> Weights:
    """The weights of a file with a spec, once its tensors and masks are known to be those of
    the network the spec builds (`skeleton`, when the reader has built it already)."""
    if skeleton is None:
        skeleton = network(spec)
    expected = skeleton.state_dict()
    mismatch = names_mismatch(expected, state, there="by the spec")
    if mismatch:
        raise UserError(f"its weights do not fit its spec {spec}: {mismatch}")
    if masks is not None:
        masks = checked_masks(masks, dict(skeleton.named_parameters()), spec, file)
    # the network's own order, and pruned weights exactly zero whatever the file holds there
    state = {
        name: state[name] * masks[name] if masks and name in masks else state[name]
        for name in expected
    }
    return Weights(state, masks, dict(spec), kind="")


# -- checks -----------------------------------------------------------------------------------


def is_tensor_dict(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(name, str) and torch.is_tensor(tensor) for name, tensor in value.items()
    )


def tensors(payload: dict, key: str) -> dict[str, torch.Tensor]:
    if not is_tensor_dict(payload[key]):
        raise UserError(f"its {key!r} is not a dict of tensors by name")
    return payload[key]


def network(spec: object) -> nn.Module:
    """The network `spec` describes, on the meta device."""
    if not SHAPE["model_spec"](spec):
        raise UserError(f"its spec {spec!r} is not one this repository writes")
    try:
        return meta_model(spec)
    except (TypeError, ValueError, RuntimeError) as error:
        raise UserError(f"its spec {spec} is not a network: {reason(error)}") from error


def checked_masks(
    masks: dict[str, torch.Tensor],
    parameters: dict[str, nn.Parameter],
    described: object,
    file: Path,
) -> dict[str, torch.Tensor]:
    """`masks` once each is a bool tensor of a parameter's shape; `described` names the
    network in the error."""
    # the checks a checkpoint's masks pass, for masks from any file
    return pruner_part(
        file, {"pruner": {"masks": masks}, "model_spec": described}, "masks", parameters
    )


def held(spec: dict | None) -> str:
    if spec is None:
        return ""
    side = spec["image_size"]
    return (
        f" (the file holds a {spec['name']} for {spec['num_classes']} classes of "
        f"{spec['in_channels']}x{side}x{side} images)"
    )


def contents(payload: object) -> str:
    if not isinstance(payload, dict):
        return f"a {type(payload).__name__}"
    if not payload:
        return "an empty dict"
    return f"a dict with keys {shown([repr(key) for key in payload])}"
