"""The per-step element work of pruning, written once and run either eagerly or compiled.

Every optimizer step touches every prunable weight twice: its gradient is masked before the step,
and after the step the weight is re-masked and its sign compared with the previous one. Eagerly
that is several passes over memory per tensor; `torch.compile` can fuse each function below into
one pass per tensor. Shapes are compiled dynamically, so a few compilations serve every model.
"""

import logging

import torch

from utils.logging import warn

# torch.compile's C++ toolchain lookup warns about a missing CUDA runtime on every CPU-only
# machine; it is irrelevant to these CPU or GPU kernels.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def mask_and_count_flips(
    weights: list[torch.Tensor],
    masks: list[torch.Tensor],
    signs: list[torch.Tensor],
    counts: list[torch.Tensor],
) -> None:
    """After a step: zero pruned weights, add one to `counts` where the sign changed, and keep
    the new signs. Pruned weights are zero before and after, so they never count a flip."""
    torch._foreach_mul_(weights, masks)
    count_flips(weights, signs, counts)


def count_flips(
    weights: list[torch.Tensor], signs: list[torch.Tensor], counts: list[torch.Tensor]
) -> None:
    for weight, previous, count in zip(weights, signs, counts, strict=True):
        sign = torch.sign(weight).to(torch.int8)
        count.add_(sign != previous)
        previous.copy_(sign)


def mask_gradients(grads: list[torch.Tensor], masks: list[torch.Tensor]) -> None:
    torch._foreach_mul_(grads, masks)


def add_masked_noise(
    grad: torch.Tensor, noise: torch.Tensor, std: torch.Tensor, mask: torch.Tensor
) -> None:
    """grad += noise * std, then pruned entries back to zero."""
    grad.add_(noise * std).mul_(mask)


def add_noise(grad: torch.Tensor, noise: torch.Tensor, std: torch.Tensor) -> None:
    grad.add_(noise * std)


FUNCTIONS = (mask_and_count_flips, count_flips, mask_gradients, add_masked_noise, add_noise)
_COMPILED: dict = {}  # one compilation per function and process, shared by every Pruner


class Kernels:
    """The functions above as attributes, compiled or eager. `mode` is `on` (compile, and fail
    loudly if that is impossible), `off` (eager) or `auto`: compiled on CUDA, falling back to
    eager with a warning where no compiler works; eager on the CPU, where it measured faster
    (`python -m bench`): each eager pass over one layer's tensors stays in the CPU's cache, while
    the compiled CPU code for these mixed bool / int8 / int32 operations is not vectorised."""

    def __init__(self, mode: str = "auto", device: torch.device | None = None):
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"kernel mode must be auto, on or off, got {mode!r}")
        self.mode = mode
        on_cpu = device is None or torch.device(device).type == "cpu"
        self.eager = mode == "off" or (mode == "auto" and on_cpu)
        for function in FUNCTIONS:
            setattr(self, function.__name__, function if self.eager else self._wrap(function))

    def _wrap(self, eager):
        if eager not in _COMPILED:
            _COMPILED[eager] = torch.compile(eager, dynamic=True)
        compiled = _COMPILED[eager]

        def call(*args):
            if self.eager:
                return eager(*args)
            try:
                return compiled(*args)
            except Exception as error:  # compilation fails before any input is touched
                if self.mode == "on":
                    raise
                warn(
                    f"compiling the pruning kernels failed ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}); running them eagerly "
                    "(same results, slower)"
                )
                self.eager = True
                return eager(*args)

        return call
