"""Where and how reproducibly a run executes: device selection, seeding, and the memory left."""

import os
import random

import numpy as np
import torch
from torch import nn

from utils.errors import UserError

# The device types the training loop, the pruning kernels and the checkpoints are written for;
# "meta" tensors hold no data, and other accelerators are untested.
SUPPORTED_DEVICES = ("cpu", "cuda", "mps")


def resolve_device(spec: str) -> torch.device:
    """Turn `--device` into a torch.device; `auto` prefers CUDA. Raises UserError when the
    requested accelerator is not present, rather than failing later inside a kernel."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UserError(
            f"--device {spec!r} is not a device name; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type not in SUPPORTED_DEVICES:
        raise UserError(
            f"--device {spec}: training runs on {', '.join(SUPPORTED_DEVICES)} (or auto), not on "
            f"{device.type}"
        )
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec} was requested but no CUDA GPU is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {spec} was requested but MPS is not available")
    return device


def pin_memory(device: torch.device) -> bool:
    """Page-locked host batches speed up copies to a CUDA device and mean nothing elsewhere."""
    return device.type == "cuda"


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on `device` (CUDA, or the CPU); a no-op context when disabled. bf16 keeps
    fp32's exponent range, so no loss scaling is needed."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def batchnorm_in_fp32(model: nn.Module) -> None:
    """Make every BatchNorm layer compute in fp32 under autocast: its input is cast up, and the
    next layer casts back down. Batch statistics of bf16 activations are too coarse. A float64
    input (SynFlow's scoring pass, pruning/synflow.py) stays float64."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(lambda _, args: (at_least_fp32(args[0]), *args[1:]))


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_num_workers() -> int:
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def available_memory() -> int | None:
    """Bytes of memory this process could still allocate (Linux's MemAvailable: free memory and
    the caches the kernel would give up), or None where the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
