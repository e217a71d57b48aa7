"""Checkpoints that resume everything, written so that a crash never leaves a broken one.

`checkpoint.pt` in the run directory is replaced at the end of every epoch: model, optimizer,
masks, flip counters, pruner and data-order generators, RNG states, the metrics so far and the
config. It is written to a temporary file and renamed, so a kill during the write leaves the
previous checkpoint intact. Loading uses `weights_only=True`: a checkpoint cannot run code, and
one that would (a pickle calling exec, os.system, ...) is refused in one line naming what it
would have called.
"""

import _compat_pickle
import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from utils.errors import UserError, special_file
from utils.io import write_atomic
from utils.rundir import CHECKPOINT

FORMAT_VERSION = 1


def rng_state() -> dict:
    """Every global RNG a training step may draw from: Python, NumPy, torch CPU and CUDA."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.copy()), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy(), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj, path: Path) -> None:
    write_atomic(path, lambda f: torch.save(obj, f))


def save_checkpoint(state: dict, run_dir: Path) -> None:
    save_atomic({"format_version": FORMAT_VERSION, **state}, Path(run_dir) / CHECKPOINT)


def load_checkpoint(run_dir: str | Path, flag: str = "") -> dict:
    """The run's checkpoint, or a UserError that says why it cannot be used; `flag` names the
    command-line option the directory came from (main.py's `--resume`), if any."""
    where = f"{flag} {run_dir}".strip()
    path = Path(run_dir) / CHECKPOINT
    if not Path(run_dir).is_dir():
        raise UserError(f"{where}: no such run directory")
    kind = special_file(path)
    if kind:  # reading it would block (a FIFO) or never end (a device)
        raise UserError(f"{where}: its {CHECKPOINT} is {kind}, not a file")
    if not path.is_file():
        raise UserError(f"{where}: no {CHECKPOINT} there (a run writes it after its first epoch)")
    try:
        state = load_weights_only(path)
    except pickle.UnpicklingError as error:  # what torch's weights-only reader refuses
        raise UserError(f"{where}: {path} was not loaded: {unpickling_reason(error)}") from None
    except Exception as error:  # truncated zip, bad pickle, foreign file: all unusable
        raise UserError(
            f"{where}: {path} is unreadable, probably truncated or corrupt "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{where}: {path} is not a checkpoint written by main.py")
    problem = checkpoint_problem(state)
    if problem:
        raise UserError(f"{where}: {path} is damaged: {problem}")
    return state


def load_weights_only(file) -> object:
    """What torch.load reads from `file` (a path or a file object) onto the CPU with its
    weights-only reader, which builds tensors and plain containers only (and the globals a
    `torch.serialization.safe_globals` block around the call admits). Its note that a pickle
    has another protocol than its own is not shown: the file is read all the same, or refused
    in a one-line error of its reader."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(file, map_location="cpu", weights_only=True)


def python_name(pickled: str) -> str:
    """A pickled global's name as Python 3 calls it: a pickle of protocol 2 writes Python 2's
    names (subprocess.call as commands.call), which pickle maps back when it reads them."""
    module, _, name = pickled.rpartition(".")
    module = module or "builtins"  # which torch's message leaves out
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def refused_global(error: Exception) -> str | None:
    """The global (builtins.exec, posix.system, ...) that torch's weights-only reader refused
    a file for, where its message names one; None for a file it could not read at all."""
    text = str(error)
    for marker in ("GLOBAL ", "unrecognized function "):
        if marker in text:
            return python_name(text.split(marker, 1)[1].split()[0].rstrip(".,"))
    return None


def unpickling_reason(error: Exception) -> str:
    """Why torch's weights-only reader refused a file, in one line. Its own message runs over
    several lines and suggests loading the file with weights_only=False, which would run the
    code it refused."""
    name = refused_global(error)
    if name is not None:
        return f"loading it would call or build {name}, which no file of this tool holds"
    # torch's own reason follows this marker; the lines before it advise weights_only=False
    detail = str(error).partition("WeightsUnpickler error:")[2].strip().splitlines()
    what = f" ({detail[0].strip()[:200]})" if detail and detail[0].strip() else ""
    return f"it is not a file of tensors that torch.save wrote{what}"


def _tensors(value) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in value.items()
    )


# what each part of a checkpoint must be, checked before anything is restored from it
SHAPE = {
    "epoch": lambda v: isinstance(v, int) and v >= 1,
    "args": lambda v: isinstance(v, dict),
    "model_spec": lambda v: (
        isinstance(v, dict)
        and isinstance(v.get("name"), str)
        and all(isinstance(v.get(k), int) for k in ("num_classes", "in_channels", "image_size"))
    ),
    "model": _tensors,
    "optimizer": lambda v: isinstance(v, dict) and "state" in v and "param_groups" in v,
    "pruner": lambda v: (
        isinstance(v, dict)
        and _tensors(v.get("masks"))
        and _tensors(v.get("flip_counts"))
        and isinstance(v.get("events"), list)
    ),
    "data_order": torch.is_tensor,
    "rng": lambda v: isinstance(v, dict) and {"python", "numpy", "torch", "cuda"} <= set(v),
    "history": lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
    "wall_seconds": lambda v: isinstance(v, int | float),
}


def checkpoint_problem(state: dict) -> str | None:
    """What is wrong with a loaded checkpoint's structure, or None."""
    for key, fits in SHAPE.items():
        if key not in state:
            return f"it has no {key!r}"
        if not fits(state[key]):
            return f"its {key!r} is not what main.py writes"
    if len(state["history"]) != state["epoch"]:
        return f"it records {len(state['history'])} epochs of metrics for epoch {state['epoch']}"
    return None
