"""Export a pruned run's network for use outside this repository.

    python -m export RUN_DIR --to compact OUT          # a smaller dense network: runs faster
    python -m export RUN_DIR --to sparse_runtime OUT   # compact, then sparse CPU kernels
    python -m export RUN_DIR --to semi_structured OUT  # 2:4 linear layers for CUDA
    python -m export RUN_DIR --to dense OUT            # plain state dict, pruned weights zero
    python -m export RUN_DIR --to torch_prune OUT      # torch.nn.utils.prune's _orig / _mask
    python -m export RUN_DIR --to sparse OUT           # pruned tensors in CSR: a smaller file

One call loads any of them as a ready network in eval mode, on the CPU or `device`:

    from export import load
    model = load(OUT)                  # or load(OUT, device="cuda")

compact: the network with every channel that pruning made useless cut out and its constant
folded into the next layer (export/compact.py), a torch.fx GraphModule of plain torch.nn modules.
It needs no code of this repository: `model = torch.load(OUT, weights_only=False)` (a pickled
module, so load only files you trust). Where a constant was folded through a zero-padded
convolution, it is exact at the run's image size only; `model.export_info` says which, and lists
in "not_compacted" the prunable layers of kinds compaction does not cut (nn.MultiheadAttention,
grouped and depthwise convolutions, other than 2-D ones), kept at full size with their masks
applied. A network torch.fx cannot trace, or whose output is not one tensor, is refused in one
line, and so is its sparse_runtime export, which is made from the compact network.

sparse_runtime: the compact network, with each conv and linear layer that runs faster as a
sparse (CSR) product on the CPU replaced by one (export/sparse_runtime.py), chosen by timing
both at `--batch` images; a linear layer applied to tokens runs sparse on every token, and other
layers (grouped convolutions, attention) stay dense. Loading it needs export/sparse_runtime.py
importable.

semi_structured: {"format", "spec", "state_dict", "layers"}: the masked network, and the linear
layers whose weights keep at most 2 of every 4 consecutive inputs (a run pruned with --nm 2:4),
but not those inside nn.MultiheadAttention, which multiplies by their weights itself.
Loaded on CUDA, those layers run as `torch.sparse.to_sparse_semi_structured` tensors in float16
(the precision NVIDIA's 2:4 sparse tensor cores take); on the CPU it is the masked network.

The three formats below are dicts that `torch.load(OUT, weights_only=True)` reads. Their "spec"
rebuilds the architecture with this repository's registry, `models.build_model(**spec)`; then:

dense: {"spec", "state_dict"}, the network's state dict with every pruned weight exactly zero.

    model = build_model(**f["spec"])
    model.load_state_dict(f["state_dict"])

torch_prune: {"spec", "state_dict", "pruned"}. For each parameter named in "pruned" (such as
"1.weight"), the state dict holds "1.weight_orig" and "1.weight_mask", the entries that
torch.nn.utils.prune creates, so prune-aware code can go on from there. Loading needs the same
reparametrisation in place first: `prune.identity` adds an all-ones mask that the load overwrites.

    from torch.nn.utils import prune
    model = build_model(**f["spec"])
    for name in f["pruned"]:
        path, _, param = name.rpartition(".")
        prune.identity(model.get_submodule(path), param)
    model.load_state_dict(f["state_dict"])
    # optional: prune.remove(model.get_submodule(path), param) for each name, which folds the
    # mask into a plain parameter again (the zeros stay, but are no longer enforced)

A prune hook runs before its module's forward. nn.MultiheadAttention's in_proj_weight is its
own, but it multiplies by out_proj.weight without calling out_proj, whose hook would then never
replace the tensor `prune.identity` made from the initial weights: `load_torch_prune` applies
every mask once after loading, and out_proj's before each call of its attention module.

sparse: {"spec", "sparse", "dense"}. Each prunable tensor that lost weights is stored in
compressed sparse row form, reshaped to 2-D as (shape[0], rest): "sparse"[name] = {"shape",
"crow_indices", "col_indices", "values"}. The stored entries are exactly the live weights of the
run's mask (a live weight that is exactly zero stays an entry, so the pattern is the mask), with
int32 indices where they fit, int64 otherwise. Every other tensor (biases, BatchNorm, buffers,
prunable tensors that were never pruned) is in "dense". Each entry costs a value and a column
index, so a tensor pays off in CSR only above about 50% sparsity.

    state = dict(f["dense"])
    for name, t in f["sparse"].items():
        rows = t["shape"][0]
        size = (rows, math.prod(t["shape"]) // rows)
        csr = torch.sparse_csr_tensor(t["crow_indices"], t["col_indices"], t["values"], size)
        state[name] = csr.to_dense().reshape(t["shape"])
    model = build_model(**f["spec"])
    model.load_state_dict(state)

`load_dense`, `load_torch_prune` and `load_sparse` below do exactly this and return the model in
eval mode, as `load` does for any format. Run the tool as `python -m export` from the
repository root, not as `python export/formats.py`: that would put export/ on sys.path, where
export/inspect.py would shadow the standard library's `inspect`.
"""

import functools
import io
import math
import pickle
import types
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

from export.artifacts import PrunedRun, load_run, shown
from export.compact import SELF_CHECK_TOLERANCE, NotCompactable, compact
from export.sparse_runtime import LayerChoice, choice_table, quiet_csr, sparsify
from models import build_model
from pruning.mask import human
from pruning.options import Bounded
from utils.errors import OneLineParser, UserError, command, given_path
from utils.io import made_folders, write_atomic

# the formats that are plain dicts of tensors, read without unpickling code
STATE_FORMATS = ("dense", "torch_prune", "sparse", "semi_structured")
# the formats that are whole modules: compaction changes the architecture
MODULE_FORMATS = ("compact", "sparse_runtime")
FORMATS = (*MODULE_FORMATS, *STATE_FORMATS)
# what each format's file must hold, checked before a loader trusts it; a file's format is the
# one whose keys it has (the most specific first)
KEYS = {
    "semi_structured": ("format", "spec", "state_dict", "layers"),
    "torch_prune": ("spec", "state_dict", "pruned"),
    "sparse": ("spec", "sparse", "dense"),
    "dense": ("spec", "state_dict"),
}
# where the classes of a module export come from; anything else is not a file of this tool
MODULE_SOURCES = ("torch.", "collections.", "builtins.", "export.sparse_runtime.")
# Modules that moved since files were written: sparse_runtime exports made before the export room
# existed name utils.sparse_runtime's classes.
MOVED = {"utils.sparse_runtime": "export.sparse_runtime"}
BATCH = Bounded(int, low=1, high=65536)


def split_name(name: str) -> tuple[str, str]:
    """Module path and parameter: "features.0.weight" -> ("features.0", "weight"), and a bare
    "weight" is the model's own, ("", "weight")."""
    path, _, param = name.rpartition(".")
    return path, param


# -- the three formats ----------------------------------------------------------------------


def dense_payload(run: PrunedRun) -> dict:
    state = run.model.state_dict()
    # the run's weights are already zero where pruned; the mask makes that hold for any checkpoint
    for name, mask in run.masks.items():
        state[name] = state[name] * mask
    return {"spec": run.spec, "state_dict": state}


def torch_prune_payload(run: PrunedRun) -> dict:
    # a fresh network, so that the reparametrisation leaves the run's own model untouched
    model = build_model(**run.spec)
    model.load_state_dict(run.model.state_dict())
    for name, mask in run.masks.items():
        path, param = split_name(name)
        prune.custom_from_mask(model.get_submodule(path), param, mask)
    return {"spec": run.spec, "state_dict": model.state_dict(), "pruned": list(run.masks)}


def sparse_payload(run: PrunedRun) -> dict:
    state = run.model.state_dict()
    sparse = {}
    for name, mask in run.masks.items():
        if mask.all():
            continue  # with nothing pruned, CSR would only add an index to every weight
        weight = state.pop(name)
        rows = weight.shape[0]
        mask_2d = mask.reshape(rows, -1)
        # the CSR pattern comes from the mask, the values from the weights in the same row-major
        # order, so that live weights which happen to be zero are kept as entries
        with quiet_csr():
            pattern = mask_2d.to_sparse_csr()
        index_type = torch.int32 if mask.numel() < 2**31 else torch.int64
        sparse[name] = {
            "shape": list(weight.shape),
            "crow_indices": pattern.crow_indices().to(index_type),
            "col_indices": pattern.col_indices().to(index_type),
            "values": weight.reshape(rows, -1)[mask_2d],
        }
    return {"spec": run.spec, "sparse": sparse, "dense": state}


# what PyTorch's 2:4 kernels take: a linear layer's (outputs, inputs) are multiples of these
SEMI_STRUCTURED_SIDES = {"outputs": 32, "inputs": 64}
SEMI_STRUCTURED_RULE = (
    "Linear layers whose outputs are a multiple of 32 and inputs a multiple of 64, with at most "
    "2 of every 4 consecutive weights live, as --nm 2:4 prunes"
)


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def inside_attention(model: nn.Module) -> set[str]:
    """The linear layers of nn.MultiheadAttention modules (out_proj): the attention multiplies
    by their weights itself, with kernels that take no semi-structured tensor."""
    holders = [name for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    return {
        name
        for name in linear_layers(model)
        if any(name.startswith(f"{holder}.") or not holder for holder in holders)
    }


def semi_structured_misfit(linear: nn.Linear) -> str | None:
    """Why a linear layer cannot run as a 2:4 semi-structured tensor, or None when it can: the
    pattern NVIDIA's sparse tensor cores run keeps at most 2 of every 4 consecutive inputs, and
    PyTorch's kernels take only some shapes."""
    rows, columns = linear.weight.shape
    sides = {"outputs": rows, "inputs": columns}
    reasons = [
        f"{sides[side]} {side} not a multiple of {step}"
        for side, step in SEMI_STRUCTURED_SIDES.items()
        if sides[side] == 0 or sides[side] % step
    ]
    if columns % 4 == 0:
        groups = (linear.weight.detach() != 0).reshape(rows, columns // 4, 4)
        crowded = int((groups.sum(-1) > 2).sum())
        if crowded:
            reasons.append(f"{crowded:,} groups of 4 consecutive inputs keep more than 2")
    return ", ".join(reasons) or None


def semi_structured_misfits(model: nn.Module) -> dict[str, str | None]:
    """Each linear layer's semi_structured_misfit, or that it is inside an attention module."""
    attention = inside_attention(model)
    return {
        name: "inside nn.MultiheadAttention" if name in attention else semi_structured_misfit(m)
        for name, m in linear_layers(model).items()
    }


def semi_structured_layers(model: nn.Module) -> list[str]:
    """The linear layers that run as 2:4 semi-structured tensors (semi_structured_misfit)."""
    return [name for name, misfit in semi_structured_misfits(model).items() if misfit is None]


def semi_structured_payload(run: PrunedRun) -> dict:
    payload = dense_payload(run)
    model = dense_model(payload)
    linears = linear_layers(model)
    misfits = semi_structured_misfits(model)
    layers = [name for name, misfit in misfits.items() if misfit is None]
    if not layers:
        why = [
            f"{name} ({'x'.join(map(str, linears[name].weight.shape))}): {misfit}"
            for name, misfit in misfits.items()
        ]
        raise UserError(
            f"{run.run_dir}: no layer fits the 2:4 semi-structured kernels, which take "
            f"{SEMI_STRUCTURED_RULE}: {shown(why, '; ') if why else 'it has no linear layer'}"
        )
    return {"format": "semi_structured", **payload, "layers": layers}


def compact_module(run: PrunedRun, fmt: str = "compact") -> nn.Module:
    """The run's network compacted (export/compact.py), with what a reader needs to know; a
    UserError, one line, for a network compaction cannot read."""
    try:
        gm, report = compact(run.model, run.input_shape, run.masks)
    except NotCompactable as error:
        needs = "" if fmt == "compact" else f"--to {fmt} is made from the compact network, and "
        raise UserError(f"{run.run_dir}: {needs}{error}") from None
    side = run.spec["image_size"]
    gm.export_info = {
        "format": "compact",
        "spec": run.spec,
        "input_shape": list(run.input_shape),
        # a constant folded through zero padding: exact at the run's image size only
        "exact_image_size": side if report.fixed_size else None,
        **report.as_dict(),
    }
    return gm


def sparse_runtime_module(run: PrunedRun, batch: int) -> tuple[nn.Module, list[LayerChoice]]:
    """The compact network with sparse kernels where they are faster at `batch` images, and
    the timings that decided."""
    gm = compact_module(run, "sparse_runtime")
    example = torch.randn(batch, *run.input_shape, generator=torch.Generator().manual_seed(0))
    gm, choices = sparsify(gm, example)
    gm.export_info.update(
        format="sparse_runtime", batch=batch, sparse_layers=[c.name for c in choices if c.sparse]
    )
    return gm, choices


PAYLOADS = {
    "dense": dense_payload,
    "torch_prune": torch_prune_payload,
    "sparse": sparse_payload,
    "semi_structured": semi_structured_payload,
    "compact": compact_module,
}


# -- loading them back ----------------------------------------------------------------------


@contextmanager
def reading(path: str | Path):
    """Turns a failure to read `path` into a UserError whose line starts with the path."""
    try:
        yield
    except FileNotFoundError as error:
        raise UserError(f"{path}: no such file") from error
    except Exception as error:  # truncated zip, foreign pickle: either way not a file of ours
        raise UserError(
            f"{path}: unreadable, truncated or not a file of tensors ({type(error).__name__})"
        ) from error


def read_torch_file(path: str | Path) -> object:
    """What `torch.load` reads from `path` on the CPU without unpickling code, or a UserError
    whose line starts with the path."""
    with reading(path):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_export(path: str | Path, fmt: str) -> dict:
    payload = read_torch_file(path)
    if not isinstance(payload, dict) or any(key not in payload for key in KEYS[fmt]):
        raise UserError(f"{path} is not a {fmt} export of python -m export")
    return payload


def dense_model(payload: dict) -> nn.Module:
    model = build_model(**payload["spec"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def load_dense(path: str | Path) -> nn.Module:
    """The registry model of a `--to dense` export, in eval mode."""
    return dense_model(read_export(path, "dense"))


def load_torch_prune(path: str | Path) -> nn.Module:
    """The registry model of a `--to torch_prune` export, in eval mode, with the prune
    reparametrisation in place: each listed parameter is `<name>_orig * <name>_mask`."""
    payload = read_export(path, "torch_prune")
    model = build_model(**payload["spec"])
    for name in payload["pruned"]:
        module_path, param = split_name(name)
        # creates the <param>_orig parameter and <param>_mask buffer that the state dict fills
        prune.identity(model.get_submodule(module_path), param)
    model.load_state_dict(payload["state_dict"])
    masks_applied(model, payload["pruned"])
    return model.eval()


def masks_applied(model: nn.Module, pruned: list[str]) -> None:
    """Compute each reparametrised tensor from the loaded `_orig` and `_mask` now. Its prune hook
    does so before its module's forward, but nn.MultiheadAttention reads `out_proj.weight`
    without calling out_proj, which would keep the tensor `prune.identity` made from the initial
    weights; for such a layer the hook also runs before each forward of its attention module."""
    readers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    for name in pruned:
        module_path, param = split_name(name)
        module = model.get_submodule(module_path)
        (method,) = (
            hook
            for hook in module._forward_pre_hooks.values()
            if isinstance(hook, prune.BasePruningMethod) and hook._tensor_name == param
        )
        method(module, ())
        for reader_path, reader in readers:
            inside = not reader_path or module_path.startswith(f"{reader_path}.")
            if inside and module is not reader:
                reader.register_forward_pre_hook(functools.partial(applied, module, method))


def applied(module: nn.Module, method: prune.BasePruningMethod, reader, inputs) -> None:
    """A forward pre-hook for `reader` that applies `module`'s prune `method` (picklable, unlike
    a lambda, so that the loaded network can be saved whole)."""
    method(module, inputs)


def csr_to_dense(part: dict, values: torch.Tensor) -> torch.Tensor:
    """A tensor of a sparse export's "sparse" part: `values` at its stored entries, zero
    elsewhere, in the tensor's shape."""
    shape = part["shape"]
    size = (shape[0], math.prod(shape) // shape[0])
    with quiet_csr():
        # the invariant checks turn a damaged file into an error instead of a memory fault
        csr = torch.sparse_csr_tensor(
            part["crow_indices"], part["col_indices"], values, size, check_invariants=True
        )
        return csr.to_dense().reshape(shape)


def sparse_state(payload: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A sparse export's state dict with dense tensors again, and the masks its CSR patterns
    are (True at each stored entry). Only the tensors that lost weights are stored in CSR, so
    only they have a mask; every weight of the others is live."""
    state = dict(payload["dense"])
    masks = {}
    for name, part in payload["sparse"].items():
        state[name] = csr_to_dense(part, part["values"])
        masks[name] = csr_to_dense(part, torch.ones_like(part["values"], dtype=torch.bool))
    return state, masks


def load_sparse(path: str | Path) -> nn.Module:
    """The registry model of a `--to sparse` export with dense weights again, in eval mode."""
    payload = read_export(path, "sparse")
    state, _ = sparse_state(payload)
    model = build_model(**payload["spec"])
    model.load_state_dict(state)
    return model.eval()


LOADERS = {"dense": load_dense, "torch_prune": load_torch_prune, "sparse": load_sparse}


def to_semi_structured(model: nn.Module, layers: list[str]) -> nn.Module:
    """On CUDA, in float16, the listed linear layers with their weights as 2:4 semi-structured
    sparse tensors, which the sparse tensor cores multiply at about twice the dense rate."""
    from torch.sparse import to_sparse_semi_structured

    model.half()
    for name in layers:
        linear = model.get_submodule(name)
        linear.weight = nn.Parameter(to_sparse_semi_structured(linear.weight.detach()))
    return model


def file_format(path: str | Path, payload: object) -> str:
    if isinstance(payload, dict):
        for fmt, keys in KEYS.items():
            if all(key in payload for key in keys):
                return fmt
    raise UserError(f"{path} is not an export of python -m export")


def moved(name: str) -> str:
    """A pickled global's dotted name as it is called today."""
    module, _, attribute = name.rpartition(".")
    return f"{MOVED.get(module, module)}.{attribute}"


class MovedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return super().find_class(MOVED.get(module, module), name)


# what torch.load asks of a pickle module, reading moved classes under their new names
Moved = types.SimpleNamespace(__name__="pickle", Unpickler=MovedUnpickler, load=pickle.load)


def load_module_export(path: str | Path, unsafe: list[str]) -> nn.Module:
    """A compact or sparse_runtime export: a pickled module, so that its classes are checked to
    be torch's or this tool's before anything of it is unpickled."""
    foreign = [name for name in unsafe if not moved(name).startswith(MODULE_SOURCES)]
    if foreign:
        raise UserError(
            f"{path} is not an export of python -m export: loading it would run code from "
            f"{shown(foreign)}"
        )
    try:
        module = torch.load(path, map_location="cpu", weights_only=False, pickle_module=Moved)
    except Exception as error:
        raise UserError(
            f"{path}: unreadable, truncated or not an export ({type(error).__name__})"
        ) from error
    if not isinstance(module, nn.Module):
        raise UserError(f"{path} is not an export of python -m export")
    if not follows_the_batch(module):
        raise UserError(
            f"{path}: a constant network that answers one row for a batch of images, written by "
            "an earlier version of python -m export; export the run again"
        )
    return module


def follows_the_batch(module: nn.Module) -> bool:
    """Whether a module export answers one row per image. Only a constant network (no
    parameter left: nothing of the input reaches the output) can fail this, as compaction
    wrote them before it widened constants to the batch; for it the check costs nothing, its
    input being read for its batch size only (so a zero-strided view of one number does)."""
    info = getattr(module, "export_info", None)
    if not isinstance(info, dict) or info.get("params_after") != 0:
        return True
    shape = info.get("input_shape")
    if not isinstance(shape, list) or not all(isinstance(side, int) and side > 0 for side in shape):
        return True  # nothing to try it on
    with torch.no_grad():
        answer = module(torch.zeros(1).expand(2, *shape))
    return isinstance(answer, torch.Tensor) and answer.dim() > 0 and len(answer) == 2


def load(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Any export of this tool as a ready network in eval mode on `device`. A semi_structured
    export loaded on CUDA runs its 2:4 linear layers as semi-structured sparse tensors."""
    device = torch.device(device)
    with reading(path):
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    if unsafe:
        return load_module_export(path, unsafe).to(device).eval()
    payload = read_torch_file(path)
    fmt = file_format(path, payload)
    if fmt == "semi_structured":
        model = dense_model(payload).to(device)
        return to_semi_structured(model, payload["layers"]) if device.type == "cuda" else model
    return LOADERS[fmt](path).to(device).eval()


# -- the command line -----------------------------------------------------------------------


def file_size(count: int) -> str:
    return f"{human(count)}B"


def saved(payload: object) -> bytes:
    """What `torch.save` writes for `payload`, made in memory."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def saved_size(payload: dict) -> int:
    return len(saved(payload))


def read_back(data: bytes, module: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Load a module export's bytes as `load` will and check that the network answers what
    `module` does, one row per image of a batch of three. A network this tool could not read
    back, or one whose output ignores the batch, is a bug: it is refused before anything is
    written, with its traceback."""
    try:
        copy = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as error:
        raise RuntimeError(
            "the exported network cannot be loaded back; this is a bug, please report it with "
            "the run"
        ) from error
    inputs = torch.randn(3, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = module(inputs), copy(inputs)
    scale = expected.abs().max().clamp_min(1e-30)
    if got.shape != expected.shape or len(got) != len(inputs):
        problem = f"answers {tuple(got.shape)} for 3 images, where {tuple(expected.shape)} is due"
    elif (got - expected).abs().max() > SELF_CHECK_TOLERANCE * scale:
        problem = "answers other values than the network it was saved from"
    else:
        return
    raise RuntimeError(
        f"the exported network, loaded back, {problem}; this is a bug, please report it with "
        "the run"
    )


def write(data: bytes, out: Path) -> None:
    """`data` into `out`, atomically, its folders created. A path the system refuses ends in one
    line naming `out` (utils.errors.path_error), and neither a part of the file nor a folder
    made for it is left behind."""
    with given_path(f"cannot write {out}", out), made_folders(out.parent):
        write_atomic(out, lambda file: file.write(data))


def compact_lines(module: nn.Module) -> list[str]:
    info = module.export_info
    size = (
        f"exact at {info['exact_image_size']}x{info['exact_image_size']} images only (a "
        "constant folded through zero padding)"
        if info["exact_image_size"]
        else "exact at any image size"
    )
    lines = [
        f"parameters: {info['params_before']:,} -> {info['params_after']:,}; conv and linear "
        f"outputs: {info['channels_before']:,} -> {info['channels_after']:,}; {size}"
    ]
    if info.get("not_compacted"):
        lines.append(f"left at full size, their weights masked: {shown(info['not_compacted'])}")
    return lines


def export(run_dir: str | Path, fmt: str, out: str | Path, batch: int = 1) -> list[str]:
    """Write `run_dir`'s network to `out` in format `fmt`; returns the lines to report.
    `batch`: the batch size sparse_runtime picks its kernels for."""
    out = Path(out)
    with given_path(f"cannot write {out}", out):
        if out.is_dir():
            raise UserError(f"{out} is a directory; OUT is the file to write")
    with given_path(str(run_dir), run_dir):
        run = load_run(run_dir)
    if fmt in (*MODULE_FORMATS, "semi_structured") and all(m.all() for m in run.masks.values()):
        raise UserError(
            f"{run_dir}: nothing was pruned, so there is nothing to make smaller or sparse; "
            "--to dense writes the network as it is"
        )
    choices = []
    if fmt == "sparse_runtime":
        payload, choices = sparse_runtime_module(run, batch)
    else:
        payload = PAYLOADS[fmt](run)
    data = saved(payload)
    if fmt in MODULE_FORMATS:
        read_back(data, payload, run.input_shape)
    write(data, out)
    size = len(data)
    lines = [f"wrote {out} ({fmt}, {file_size(size)})"]
    if fmt == "sparse":
        dense = saved_size(dense_payload(run))
        ratio = f"{dense / size:.1f}x smaller" if size <= dense else f"{size / dense:.1f}x larger"
        lines.append(f"sparse: {file_size(size)}, dense: {file_size(dense)} ({ratio})")
    if fmt in MODULE_FORMATS:
        lines += compact_lines(payload)
    if choices:
        lines.append(f"kernels chosen by timing at batch {batch}:")
        lines.append(choice_table(choices))
    if fmt == "semi_structured":
        lines.append(
            f"2:4 linear layers: {', '.join(payload['layers'])} (semi-structured when loaded "
            "on CUDA)"
        )
    return lines


@command
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m export",
        description="Write a pruned run's network as a compacted network (channels pruning "
        "made useless removed), that network with sparse CPU kernels, a 2:4 semi-structured "
        "network for CUDA, a dense state dict, a torch.nn.utils.prune state dict or a compressed "
        "sparse (CSR) file. export.load(OUT) loads any of them; the module docstring "
        "shows more.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with checkpoint.pt")
    parser.add_argument("--to", required=True, choices=FORMATS, help="the format to write")
    parser.add_argument("out", metavar="OUT", help="the file to write (folders are created)")
    parser.add_argument(
        "--batch",
        type=BATCH,
        default=1,
        help="sparse_runtime: the batch size whose speed decides sparse or dense per layer "
        "(default: 1)",
    )
    args = parser.parse_args(argv)
    print("\n".join(export(args.run_dir, args.to, args.out, args.batch)))
    return 0
