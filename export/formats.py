"""Export a pruned run's network for use outside this repository.

    python -m export RUN_DIR --to compact OUT          # a smaller dense network: runs faster
    python -m export RUN_DIR --to sparse_runtime OUT   # compact, then sparse CPU kernels
    python -m export RUN_DIR --to semi_structured OUT  # 2:4 linear layers for CUDA
    python -m export RUN_DIR --to dense OUT            # plain state dict, pruned weights zero
    python -m export RUN_DIR --to torch_prune OUT      # torch.nn.utils.prune's _orig / _mask
    python -m export RUN_DIR --to sparse OUT           # pruned tensors in CSR: a smaller file
    python -m export RUN_DIR --to onnx OUT             # compact, as ONNX for onnxruntime

One call loads any of them as a ready network in eval mode, on the CPU or `device`:

    from export import load
    model = load(OUT)                  # or load(OUT, device="cuda")

docs/export.md says what each format holds, how other code reads it, and what an export refuses
to write over. Each format is one ExportFormat record in FORMATS (what it writes, how it loads,
what it reports), which `export` and `load` look up; docs/library.md shows how to add one. What
the code keeps to:

- `load` runs no code of the file (export/safe_load.py), and every module export (compact,
  sparse_runtime) is read back that way before it is written, so one it could not load is refused.
- Every export records the run directory it was written from, resolved ("run_dir" in a dict
  export, in export_info for a module, flipout.run_dir in an ONNX model's metadata_props). An
  export replaces only an export of the same run directory and network (another only with
  `--force`), never a file it did not make nor a file a run keeps; what is at OUT is read from
  its pickle without building any of it (export/peek.py), or from its protobuf for an ONNX file
  (export/onnx.py).

Run the tool as `python -m export` from the repository root, not as `python export/formats.py`:
that would put export/ on sys.path, where export/inspect.py would shadow the standard library's
`inspect`.
"""

import copy
import functools
import io
import json
import math
import os
import pickle
import reprlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils import prune

from export import onnx as onnx_export
from export.artifacts import NotANetwork, PrunedRun, load_run, meta_model, reason, shown
from export.compact import SELF_CHECK_TOLERANCE, NotCompactable, compact
from export.fold import fold_batchnorm
from export.peek import Inert, NotPeekable, peek
from export.safe_load import Refused, read_module
from export.sparse_runtime import (
    LayerChoice,
    choice_table,
    faster_pools,
    fixed_size,
    fuse_into_sparse,
    quiet_csr,
    seconds_per_call,
    sparsify,
    thread_counts,
    threads,
)
from models import build_model
from pruning.mask import human
from pruning.options import Bounded
from utils.checkpoint import load_weights_only, unpickling_reason
from utils.errors import OneLineParser, UserError, command, given_path, special_file
from utils.io import made_folders, write_atomic
from utils.rundir import CHECKPOINT, is_run_directory, is_run_file

BATCH = Bounded(int, low=1, high=65536)
CPU = torch.device("cpu")


# -- a format as a record -------------------------------------------------------------------


@dataclass(frozen=True)
class Made:
    """What a format's `make` returns: the payload `torch.save` writes (for a format of its own
    file, the file's bytes), and the lines of the report that only the making knows
    (sparse_runtime's kernel timings, onnx's check)."""

    payload: dict | nn.Module | bytes
    notes: tuple[str, ...] = ()


def nothing_to_report(run: PrunedRun, payload: dict | nn.Module, size: int) -> list[str]:
    return []


@dataclass(frozen=True)
class ExportFormat:
    """One format of python -m export, registered in FORMATS under its name: `--to NAME` saves
    what `make` returns, and `load` (the function export.load calls) reads it back.

    A state format writes a dict of tensors, which torch.load reads without unpickling code; a
    file is of the format whose `keys` it holds, and `load` gets that dict with its keys and its
    spec checked. A module format (`module=True`, no keys) writes a whole network, as
    compaction changes the architecture; `load` gets the module, read without running any code
    of the file (export/safe_load.py), whose export_info["format"] names the format. A format
    of its own file, which torch.save does not write (onnx), has neither: `make` returns the
    file's bytes, stamped and checked, `header` tells its files from any other, and `read`
    gives `load` what it reads from one (None for a file not of the format)."""

    name: str
    summary: str  # what it writes, as the description of `python -m export --help` lists it
    # (run, --batch) -> what is saved
    make: Callable[[PrunedRun, int], Made]
    # (file, the dict or module read from it, device) -> the network, in eval mode, on device
    load: Callable[[str | Path, Any, torch.device], nn.Module]
    keys: tuple[str, ...] = ()
    module: bool = False
    # a format that makes the network smaller or sparse is refused for a run with nothing pruned
    needs_pruning: bool = False
    # (run, payload as saved, its size in bytes) -> the lines printed after "wrote OUT"
    report: Callable[[PrunedRun, Any, int], list[str]] = nothing_to_report
    # a format of its own file: (file) -> what it says of itself, None for another file
    header: Callable[[str | Path], "ExportHeader | None"] | None = None
    # and (file) -> what its `load` takes, None for a file not of the format
    read: Callable[[str | Path], Any] | None = None

    def __post_init__(self) -> None:
        # a format is told from a file by its keys (a dict), its export_info (a module) or its
        # own header
        if self.header is None and self.module == bool(self.keys):
            raise ValueError(
                f"export format {self.name!r}: keys are the keys of a state format's dict, and a "
                "module format (module=True) has none"
            )
        if self.header is not None and (self.module or self.keys or self.read is None):
            raise ValueError(
                f"export format {self.name!r}: a format of its own file (header) reads it with "
                "`read`, and has neither keys nor module=True"
            )


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
    folded = fold_batchnorm(gm)
    gm.export_info = {
        "format": "compact",
        "spec": run.spec,
        "input_shape": list(run.input_shape),
        # a constant folded through zero padding: exact at the run's image size only
        "exact_image_size": side if report.fixed_size else None,
        "fixed_size_because": ["a constant folded through zero padding"]
        if report.fixed_size
        else [],
        **report.as_dict(),
        "batchnorms_folded": folded,
    }
    return gm


def sparse_runtime_module(
    run: PrunedRun, batch: int, thread_count: int | None = None
) -> tuple[nn.Module, list[LayerChoice]]:
    """The compact network with sparse kernels where they are faster at `batch` images, on
    `thread_count` threads, or on whichever of one and all threads runs the whole network faster
    (which it records); and the timings that decided."""
    compacted = compact_module(run, "sparse_runtime")
    if thread_count is not None:
        return with_kernels(compacted, run, batch, thread_count)
    # compacted once, the kernels chosen on a copy of it for each thread count
    made = {count: with_kernels(copied(compacted), run, batch, count) for count in thread_counts()}
    example = run_example(run, batch)
    times = {}
    with torch.no_grad():
        for count, (gm, _) in made.items():
            with threads(count):
                times[count] = seconds_per_call(gm, example, repeats=7) * 1e3
    fastest = min(times, key=times.get)
    gm, choices = made[fastest]
    # text keys: an export's info holds only what JSON could
    gm.export_info.update(threads=fastest, thread_times_ms={str(n): t for n, t in times.items()})
    return gm, choices


def copied(gm: fx.GraphModule) -> fx.GraphModule:
    """A deep copy of `gm` with its export_info, which GraphModule's own deep copy leaves out."""
    twin = copy.deepcopy(gm)
    twin.export_info = copy.deepcopy(gm.export_info)
    return twin


def with_kernels(
    gm: fx.GraphModule, run: PrunedRun, batch: int, thread_count: int
) -> tuple[nn.Module, list[LayerChoice]]:
    """`gm`, the run's compact network (changed in place), with the kernels chosen on
    `thread_count` threads and the rewrites that serve them; and the timings that decided."""
    with threads(thread_count):
        gm, choices = sparsify(gm, run_example(run, batch))
    fuse_into_sparse(gm)
    faster_pools(gm)
    info = gm.export_info
    info.update(
        format="sparse_runtime",
        batch=batch,
        threads=thread_count,
        sparse_layers=[c.name for c in choices if c.sparse],
        kernels={c.name: c.chosen for c in choices},
    )
    if fixed_size(gm):
        info["exact_image_size"] = run.spec["image_size"]
        info["fixed_size_because"].append("convolutions unrolled for it")
    return gm, choices


def run_example(run: PrunedRun, batch: int) -> torch.Tensor:
    """Random images of the run's shape: what the kernels are timed on (their speed does not
    depend on the values)."""
    return torch.randn(batch, *run.input_shape, generator=torch.Generator().manual_seed(0))


# -- loading them back ----------------------------------------------------------------------


@contextmanager
def reading(path: str | Path):
    """Turns a failure to read `path` into a UserError whose line starts with the path."""
    try:
        yield
    except FileNotFoundError as error:
        raise UserError(f"{path}: no such file") from error
    except pickle.UnpicklingError as error:  # what torch's weights-only reader refuses
        raise UserError(f"{path}: not loaded: {unpickling_reason(error)}") from None
    except Exception as error:  # truncated zip, foreign pickle: either way not a file of ours
        raise UserError(
            f"{path}: unreadable, truncated or not a file of tensors ({type(error).__name__})"
        ) from error


def read_torch_file(path: str | Path) -> object:
    """What `torch.load` reads from `path` on the CPU without unpickling code, or a UserError
    whose line starts with the path."""
    with reading(path):
        return load_weights_only(path)


def read_export(path: str | Path, fmt: str) -> dict:
    return checked_export(path, read_torch_file(path), fmt)


def checked_export(path: str | Path, payload: object, fmt: str) -> dict:
    """`payload`, read from `path`, when it holds the keys of the state format `fmt` and a spec
    that builds a network; a UserError whose line starts with the path otherwise."""
    if not isinstance(payload, dict) or any(key not in payload for key in FORMATS[fmt].keys):
        raise UserError(f"{path} is not a {fmt} export of python -m export")
    spec = payload["spec"]
    try:
        if not isinstance(spec, dict) or not all(isinstance(key, str) for key in spec):
            raise NotANetwork("it is not a dict of keyword arguments")
        meta_model(spec)  # shapes only: a damaged spec costs no memory
    except NotANetwork as error:
        raise UserError(
            f"{path}: its spec {reprlib.repr(spec)} is not a network: {error}"
        ) from None
    return payload


@contextmanager
def damaged(path: str | Path, fmt: str):
    """A file's tensors that do not fit the network its spec builds, or parts of it that are
    not what the format holds, end in a UserError naming the file."""
    try:
        yield
    except (RuntimeError, KeyError, AttributeError, TypeError, ValueError, IndexError) as error:
        raise UserError(f"{path}: a damaged {fmt} export: {reason(error)}") from error


def dense_model(payload: dict) -> nn.Module:
    model = build_model(**payload["spec"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def load_dense(path: str | Path) -> nn.Module:
    """The registry model of a `--to dense` export, in eval mode."""
    return dense_network(path, read_export(path, "dense"), CPU)


def dense_network(path: str | Path, payload: dict, device: torch.device) -> nn.Module:
    with damaged(path, "dense"):
        model = dense_model(payload)
    return model.to(device).eval()


def load_torch_prune(path: str | Path) -> nn.Module:
    """The registry model of a `--to torch_prune` export, in eval mode, with the prune
    reparametrisation in place: each listed parameter is `<name>_orig * <name>_mask`."""
    return torch_prune_network(path, read_export(path, "torch_prune"), CPU)


def torch_prune_network(path: str | Path, payload: dict, device: torch.device) -> nn.Module:
    with damaged(path, "torch_prune"):
        model = build_model(**payload["spec"])
        for name in payload["pruned"]:
            module_path, param = split_name(name)
            # creates the <param>_orig parameter and <param>_mask buffer the state dict fills
            prune.identity(model.get_submodule(module_path), param)
        model.load_state_dict(payload["state_dict"])
        masks_applied(model, payload["pruned"])
    return model.to(device).eval()


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
    return sparse_network(path, read_export(path, "sparse"), CPU)


def sparse_network(path: str | Path, payload: dict, device: torch.device) -> nn.Module:
    with damaged(path, "sparse"):
        state, _ = sparse_state(payload)
        model = build_model(**payload["spec"])
        model.load_state_dict(state)
    return model.to(device).eval()


def semi_structured_network(path: str | Path, payload: dict, device: torch.device) -> nn.Module:
    with damaged(path, "semi_structured"):
        model = dense_model(payload).to(device)
    return to_semi_structured(model, payload["layers"]) if device.type == "cuda" else model


def module_network(path: str | Path, module: nn.Module, device: torch.device) -> nn.Module:
    return module.to(device).eval()


def to_semi_structured(model: nn.Module, layers: list[str]) -> nn.Module:
    """On CUDA, in float16, the listed linear layers with their weights as 2:4 semi-structured
    sparse tensors, which the sparse tensor cores multiply at about twice the dense rate."""
    from torch.sparse import to_sparse_semi_structured

    model.half()
    for name in layers:
        linear = model.get_submodule(name)
        linear.weight = nn.Parameter(to_sparse_semi_structured(linear.weight.detach()))
    return model


def file_format(path: str | Path, payload: object) -> ExportFormat:
    """The state format whose keys `payload` holds; more keys first, as a torch_prune or a
    semi_structured file holds a dense one's keys too (and model.pt holds them and more)."""
    if isinstance(payload, dict):
        for record in sorted(state_formats(), key=lambda record: -len(record.keys)):
            if all(key in payload for key in record.keys):
                return record
    raise UserError(f"{path} is not an export of python -m export")


def load_module_export(path: str | Path) -> nn.Module:
    """A compact or sparse_runtime export: a pickled module, read without running any code of
    the file (export/safe_load.py)."""
    try:
        module = read_module(path)
    except Refused as error:
        raise UserError(f"{path} is not an export of python -m export: {error}") from None
    except Exception as error:
        raise UserError(
            f"{path}: unreadable, truncated or not an export ({type(error).__name__})"
        ) from error
    info = getattr(module, "export_info", None)
    if not isinstance(info, dict) or info.get("format") not in MODULE_FORMATS:
        raise UserError(
            f"{path} is not an export of python -m export: it has no export_info naming its format"
        )
    if not follows_the_batch(module):
        raise UserError(
            f"{path}: a constant network that answers one row for a batch of images, written by "
            "an earlier version of python -m export; export the run again"
        )
    return module


def follows_the_batch(module: nn.Module) -> bool:
    """Whether a module export answers one row per image. Only a constant network (no
    parameter left: nothing of the input reaches the output) can fail this, as compaction
    wrote them before it widened constants to the batch: then its output reads nothing of its
    input. Told from the graph, so that loading never runs the file's network."""
    info = getattr(module, "export_info", None)
    graph = getattr(module, "graph", None)
    if not isinstance(info, dict) or info.get("params_after") != 0 or graph is None:
        return True
    (output,) = (node for node in graph.nodes if node.op == "output")
    seen, waiting = set(), [output]
    while waiting:
        node = waiting.pop()
        if node.op == "placeholder":
            return True
        for source in node.all_input_nodes:
            if source not in seen:
                seen.add(source)
                waiting.append(source)
    return False


def load(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Any export of this tool as a ready network in eval mode on `device`. A semi_structured
    export loaded on CUDA runs its 2:4 linear layers as semi-structured sparse tensors."""
    device = torch.device(device)
    with given_path(str(path), path):
        kind = special_file(path)
        if kind is not None or Path(path).is_dir():
            # a FIFO would block the read until something writes to it
            raise UserError(f"{path} is {kind or 'a directory'}, not an export")
    record, held = read_any_export(path)
    return record.load(path, held, device)


def read_any_export(path: str | Path) -> tuple[ExportFormat, object]:
    """The format of the export `path`, and what its loader takes: the module, read without
    running code of the file, or the dict, its keys and spec checked, or what a format of its
    own file reads."""
    for record in own_file_formats():
        held = record.read(path)
        if held is not None:
            return record, held
    with reading(path):
        # a module export names classes for the unpickler to build; a dict of tensors none
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    if unsafe:
        module = load_module_export(path)
        return FORMATS[module.export_info["format"]], module
    payload = read_torch_file(path)
    record = file_format(path, payload)
    return record, checked_export(path, payload, record.name)


# -- the registry: one record a format ------------------------------------------------------


def compact_report(run: PrunedRun, module: nn.Module, size: int) -> list[str]:
    return compact_lines(module)


def sparse_runtime_made(run: PrunedRun, batch: int) -> Made:
    module, choices = sparse_runtime_module(run, batch)
    if not choices:
        return Made(module)
    info = module.export_info
    count = info["threads"]
    times = {int(n): t for n, t in info["thread_times_ms"].items()}
    lines = [f"kernels chosen by timing at batch {batch} on {threads_text(count)}:"]
    lines.append(choice_table(choices))
    if len(times) > 1:
        other = ", ".join(
            f"{ms:.2f} ms on {threads_text(n)}" for n, ms in times.items() if n != count
        )
        lines.append(
            f"fastest on {threads_text(count)} at batch {batch} ({times[count]:.2f} ms against "
            f"{other}): torch.set_num_threads({count}) before running it"
        )
    return Made(module, tuple(lines))


def threads_text(count: int) -> str:
    return f"{count} thread{'s' if count > 1 else ''}"


def sparse_report(run: PrunedRun, payload: dict, size: int) -> list[str]:
    dense = saved_size(dense_payload(run))
    ratio = f"{dense / size:.1f}x smaller" if size <= dense else f"{size / dense:.1f}x larger"
    return [f"sparse: {file_size(size)}, dense: {file_size(dense)} ({ratio})"]


def masked_network(run: PrunedRun) -> nn.Module:
    """The run's network with its masks applied, in eval mode: what every export must answer."""
    return dense_model(dense_payload(run))


def onnx_made(run: PrunedRun, batch: int) -> Made:
    """The compact network as ONNX, recording the run, once onnxruntime answers what the masked
    network does; a UserError, one line, for a network ONNX cannot express or one it answers
    differently."""
    module = compact_module(run, "onnx")
    fields = {
        "format": "onnx",
        "spec": spec_json(run.spec),
        "run_dir": recorded_dir(run),
    }
    try:
        data = onnx_export.onnx_bytes(module, run.input_shape, fields)
        agreed = onnx_export.check(data, masked_network(run), run.input_shape)
    except UserError as error:
        raise UserError(f"{run.run_dir}: --to onnx: {error}") from None
    return Made(data, (*compact_lines(module), agreed))


def onnx_header(path: str | Path) -> "ExportHeader | None":
    held = onnx_export.metadata(path)
    if held is None:
        return None
    return ExportHeader("onnx", held["spec"], recorded_run(held["run_dir"]))


def onnx_network(path: str | Path, data: bytes, device: torch.device) -> nn.Module:
    return onnx_export.network(path, data, device)


def semi_structured_report(run: PrunedRun, payload: dict, size: int) -> list[str]:
    layers = ", ".join(payload["layers"])
    return [f"2:4 linear layers: {layers} (semi-structured when loaded on CUDA)"]


COMPACT = ExportFormat(
    name="compact",
    summary="a compacted network (channels pruning made useless removed)",
    make=lambda run, batch: Made(compact_module(run)),
    load=module_network,
    module=True,
    needs_pruning=True,
    report=compact_report,
)
SPARSE_RUNTIME = ExportFormat(
    name="sparse_runtime",
    summary="that network with sparse CPU kernels",
    make=sparse_runtime_made,
    load=module_network,
    module=True,
    needs_pruning=True,
    report=compact_report,
)
DENSE = ExportFormat(
    name="dense",
    summary="a dense state dict",
    make=lambda run, batch: Made(dense_payload(run)),
    load=dense_network,
    keys=("spec", "state_dict"),
)
TORCH_PRUNE = ExportFormat(
    name="torch_prune",
    summary="a torch.nn.utils.prune state dict",
    make=lambda run, batch: Made(torch_prune_payload(run)),
    load=torch_prune_network,
    keys=("spec", "state_dict", "pruned"),
)
SPARSE = ExportFormat(
    name="sparse",
    summary="a compressed sparse (CSR) file",
    make=lambda run, batch: Made(sparse_payload(run)),
    load=sparse_network,
    keys=("spec", "sparse", "dense"),
    report=sparse_report,
)
SEMI_STRUCTURED = ExportFormat(
    name="semi_structured",
    summary="a 2:4 semi-structured network for CUDA",
    make=lambda run, batch: Made(semi_structured_payload(run)),
    load=semi_structured_network,
    keys=("format", "spec", "state_dict", "layers"),
    needs_pruning=True,
    report=semi_structured_report,
)
ONNX = ExportFormat(
    name="onnx",
    summary="the compacted network as ONNX for onnxruntime",
    make=onnx_made,
    load=onnx_network,
    needs_pruning=True,
    header=onnx_header,
    read=onnx_export.read,
)

# name -> format, in the order `--to` offers them; a format of one's own is one more entry
# (docs/library.md, "An export format")
FORMATS: dict[str, ExportFormat] = {
    "compact": COMPACT,
    "sparse_runtime": SPARSE_RUNTIME,
    "dense": DENSE,
    "torch_prune": TORCH_PRUNE,
    "sparse": SPARSE,
    "semi_structured": SEMI_STRUCTURED,
    "onnx": ONNX,
}


class ModuleFormats:
    """The names of the registered module formats, in FORMATS' order, read from FORMATS at each
    use, so that a format registered later is among them."""

    def names(self) -> list[str]:
        return [name for name, record in FORMATS.items() if record.module]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        # compared, not hashed: a damaged file's export_info may name its format by a list
        return any(name == known for known in self.names())


MODULE_FORMATS = ModuleFormats()


def state_formats() -> list[ExportFormat]:
    return [record for record in FORMATS.values() if record.keys]


def own_file_formats() -> list[ExportFormat]:
    return [record for record in FORMATS.values() if record.header is not None]


def export_format(name: str) -> ExportFormat:
    """The format registered as `name`."""
    if name not in FORMATS:
        raise ValueError(f"unknown export format {name!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[name]


# -- telling an export from any other file ---------------------------------------------------


@dataclass(frozen=True)
class ExportHeader:
    """What an export of python -m export says of itself (`export_header`)."""

    format: str
    spec: object  # the network, as the file records it
    run_dir: str | None  # the run directory it was written from, resolved; None: not recorded


# how every module export's pickle begins: torch.fx rebuilding a GraphModule
GRAPH_MODULE = "torch.fx.graph_module.reduce_graph_module"
# where an export records the run it was written from: a key of the state formats' dicts, and of
# a module export's export_info (exports written before this was recorded lack it)
RUN_KEY = "run_dir"


def export_header(path: str | Path) -> ExportHeader | None:
    """The format, network and run of `path` when it is an export of python -m export; None for
    any other file, and for one that cannot be read. Read by export.peek: nothing the file names
    is built or run and no tensor is read, so this is safe on a module export someone sent, and
    cheap on a large file."""
    try:
        held = peek(path)
    except NotPeekable:
        headers = (record.header(path) for record in own_file_formats())
        return next((header for header in headers if header is not None), None)
    if isinstance(held, dict):
        return state_header(held)
    if isinstance(held, Inert) and held.name == GRAPH_MODULE and held.args:
        body = held.args[0]
        return module_header(body.get("export_info")) if isinstance(body, dict) else None
    return None


def recorded_run(value: object) -> str | None:
    return value if isinstance(value, str) else None


def state_header(payload: dict) -> ExportHeader | None:
    # exactly a format's keys: model.pt holds a dense export's and the masks besides
    keys = set(payload) - {RUN_KEY}
    fmt = next((record.name for record in state_formats() if keys == set(record.keys)), None)
    if fmt is None:
        return None
    return ExportHeader(fmt, payload["spec"], recorded_run(payload.get(RUN_KEY)))


def module_header(info: object) -> ExportHeader | None:
    if not isinstance(info, dict) or info.get("format") not in MODULE_FORMATS:
        return None
    return ExportHeader(info["format"], info.get("spec"), recorded_run(info.get(RUN_KEY)))


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
    """Load a module export's bytes as `load` does and check that the network answers what
    `module` does, one row per image of a batch of three. A network this tool could not read
    back, or one whose output ignores the batch, is a bug: it is refused before anything is
    written, with its traceback."""
    try:
        copy = read_module(io.BytesIO(data))
    except Refused as error:
        # a network whose forward calls what no export may (another library's function):
        # written, it could only be loaded by running the file's code
        raise UserError(
            f"its network cannot be written as a module that loads without running code: {error}"
        ) from None
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


def write(data: bytes, out: Path, target: Path | None = None) -> None:
    """`data` into `out` (into `target`, the file `out` leads to, when given), atomically, its
    folders created. A path the system refuses ends in one line naming `out`
    (utils.errors.path_error), and neither a part of the file nor a folder made for it is left
    behind."""
    target = out if target is None else target
    with given_path(f"cannot write {out}", target), made_folders(target.parent):
        write_atomic(target, lambda file: file.write(data))


def compact_lines(module: nn.Module) -> list[str]:
    info = module.export_info
    # exports written before the reason was recorded had one reason only
    because = info.get("fixed_size_because") or ["a constant folded through zero padding"]
    size = (
        f"exact at {info['exact_image_size']}x{info['exact_image_size']} images only "
        f"({'; '.join(because)})"
        if info["exact_image_size"]
        else "exact at any image size"
    )
    lines = [
        f"parameters: {info['params_before']:,} -> {info['params_after']:,}; conv and linear "
        f"outputs: {info['channels_before']:,} -> {info['channels_after']:,}; {size}"
    ]
    if info.get("batchnorms_folded"):
        lines.append(
            f"BatchNorm layers folded into the convolution before them: {info['batchnorms_folded']}"
        )
    if info.get("not_compacted"):
        lines.append(f"left at full size, their weights masked: {shown(info['not_compacted'])}")
    return lines


def one_line(text: str) -> str:
    return " ".join(text.split())


def target_of(out: Path) -> Path:
    """The file that writing `out` replaces: `out` resolved, through any link. Refuses in one
    line what no export is written onto: a directory, a device, a FIFO or a socket, and a file
    of a run directory that the run writes."""
    # os.path.realpath, unlike Path.resolve, leaves a link loop to the stat below: ELOOP
    target = Path(os.path.realpath(out))
    link = f" (a link to {target})" if out.is_symlink() else ""
    kind = "a directory" if target.is_dir() else special_file(target)
    if kind is not None:
        raise UserError(f"{out}{link} is {kind}; OUT is the file to write")
    if is_run_file(target.name) and is_run_directory(target.parent):
        raise UserError(
            f"{out}{link} is where the run in {target.parent} keeps its {target.name}, which no "
            "export replaces; OUT is a file of another name"
        )
    return target


def as_json(spec: dict) -> object:
    """`spec` as an export that records it in JSON reads it back (tuples become lists)."""
    return json.loads(spec_json(spec))


def spec_json(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True, default=repr)


def an_export(fmt: str) -> str:
    """The format named with its article: a compact export, an onnx export."""
    return f"{'an' if fmt[:1] in tuple('aeiou') else 'a'} {fmt} export"


def other_export(header: ExportHeader, run: PrunedRun) -> str | None:
    """How the export `header` describes differs from one of `run`: None when it is of the same
    run directory and network."""
    if header.run_dir is None:
        return "written by an earlier version of python -m export, which did not record its run"
    if header.run_dir != str(run.run_dir.resolve()):
        return f"of another run ({one_line(header.run_dir)})"
    if header.spec not in (run.spec, as_json(run.spec)):
        return f"of another network of that run directory ({one_line(reprlib.repr(header.spec))})"
    return None


def check_replaceable(out: Path, target: Path, run: PrunedRun, force: bool) -> None:
    """Refuses in one line to replace an existing `target` that is not an export of python -m
    export, and, unless `force`, one of another run or network."""
    if not target.exists():
        return
    header = export_header(target)
    if header is None:
        raise UserError(
            f"{out} exists and is not an export of python -m export, which no export replaces; "
            "OUT is a file of another name"
        )
    other = other_export(header, run)
    if other is not None and not force:
        raise UserError(f"{out} is {an_export(header.format)} {other}; --force replaces it")


def recorded_dir(run: PrunedRun) -> str:
    return str(run.run_dir.resolve())


def stamped(payload: dict | nn.Module, run: PrunedRun) -> dict | nn.Module:
    """`payload` with the run directory it is exported from (RUN_KEY), by which a later export
    onto the same file tells whether it replaces one of the same run."""
    where = recorded_dir(run)
    if isinstance(payload, nn.Module):
        payload.export_info[RUN_KEY] = where
        return payload
    return {**payload, RUN_KEY: where}


def not_a_run_directory(path: Path) -> str:
    """What `path`, given for RUN_DIR but no directory, is, and what to give instead."""
    header = export_header(path)
    if header is not None:
        source = f" ({one_line(header.run_dir)})" if header.run_dir else ""
        return (
            f"{path} is {an_export(header.format)} of python -m export, not a run directory; "
            f"give the run directory it was exported from{source}"
        )
    folder = path.absolute().parent
    if is_run_directory(folder):
        return f"{path} is a file of the run directory {folder}; give the directory itself"
    return (
        f"{path} is {special_file(path) or 'a file'}, not a run directory (the folder a run "
        f"writes, holding {CHECKPOINT})"
    )


def run_at(run_dir: str | Path) -> PrunedRun:
    """load_run, after one line for a path that is there but no directory, saying what it is."""
    path = Path(run_dir)
    with given_path(str(run_dir), run_dir):
        if path.exists() and not path.is_dir():
            raise UserError(not_a_run_directory(path))
        return load_run(run_dir)


def export(
    run_dir: str | Path, fmt: str, out: str | Path, batch: int = 1, force: bool = False
) -> list[str]:
    """Write `run_dir`'s network to `out` in format `fmt`; returns the lines to report.
    `batch`: the batch size sparse_runtime picks its kernels for. `out` (through any link) is a
    regular file or none, never a run's own file, and an existing one is replaced only when it
    is an export of the same run and network, or with `force` of another (check_replaceable)."""
    record = export_format(fmt)
    out = Path(out)
    with given_path(f"cannot write {out}", out):
        target = target_of(out)
    run = run_at(run_dir)
    check_replaceable(out, target, run, force)
    if record.needs_pruning and all(m.all() for m in run.masks.values()):
        raise UserError(
            f"{run_dir}: nothing was pruned, so there is nothing to make smaller or sparse; "
            "--to dense writes the network as it is"
        )
    made = record.make(run, batch)
    # a format of its own file: `make` gave the bytes, already stamped and checked
    payload = made.payload if record.header else stamped(made.payload, run)
    data = payload if record.header else saved(payload)
    if record.module:
        read_back(data, payload, run.input_shape)
    write(data, out, target)
    size = len(data)
    wrote = f"wrote {out} ({fmt}, {file_size(size)})"
    return [wrote, *record.report(run, payload, size), *made.notes]


def description() -> str:
    """--help's first paragraph, naming every format: those that make the network smaller or
    faster first (`sparse_runtime`'s "that network" is the compact one before it)."""
    records = sorted(FORMATS.values(), key=lambda r: not (r.module or r.needs_pruning))
    *most, last = [record.summary for record in records]
    return (
        f"Write a pruned run's network as {', '.join(most)} or {last}. export.load(OUT) loads "
        "any of them; the module docstring shows more."
    )


@command
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m export", description=description())
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with checkpoint.pt")
    parser.add_argument("--to", required=True, choices=list(FORMATS), help="the format to write")
    parser.add_argument("out", metavar="OUT", help="the file to write (folders are created)")
    parser.add_argument(
        "--batch",
        type=BATCH,
        default=1,
        help="sparse_runtime: the batch size whose speed decides sparse or dense per layer "
        "(default: 1)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace OUT also when it is an export of another run or network (a file that is "
        "not an export of python -m export is never replaced)",
    )
    args = parser.parse_args(argv)
    print("\n".join(export(args.run_dir, args.to, args.out, args.batch, args.force)))
    return 0
