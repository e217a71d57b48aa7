"""The per-step element work of pruning, in two forms with identical results.

Every optimizer step touches every prunable weight: its gradient is masked before the step, and
after the step its sign is compared with the one before (and, for optimizers that could move a
pruned weight, the weight is re-masked). That is a few bytes of traffic per weight and nothing else,
so the cost is all in how many passes over memory it takes.

- Compiled (`torch.compile`, the default on CUDA): the plain functions below, which inductor fuses
  into one pass per tensor.
- Eager (the default on the CPU, where it measured faster than inductor's code for these bool and
  int32 operations): the same work as in-place `out=` operations on reused scratch buffers. Nothing
  is allocated per step, and the masks are multiplied in as uint8 views, which CPU kernels
  vectorise, where bool operands take a slower casting path (about 2.5x on VGG-19's gradients).

A weight's sign here is one bit: negative or not. Zero (either zero) counts as not negative, so a
weight crossing zero flips once and a pruned weight, held at zero, never flips. The flip kernels
work on `packed` bytes (pruning/flips.py): bit 0 the sign bit after the last step, bits 1-7 the
flips counted since the int32 totals last caught up.
"""

import logging
import warnings

import torch

# torch.compile's C++ toolchain lookup warns about a missing CUDA runtime on every CPU-only
# machine; it is irrelevant to these CPU or GPU kernels.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


# -- the plain forms, compiled where that pays -------------------------------------------------


def mask_gradients(grads: list[torch.Tensor], masks: list[torch.Tensor]) -> None:
    torch._foreach_mul_(grads, masks)


def count_flips(weights: list[torch.Tensor], packed: list[torch.Tensor]) -> None:
    """Where a weight's sign bit differs from bit 0 of its byte: toggle that bit and add one to
    the pending count in bits 1-7."""
    for weight, byte in zip(weights, packed, strict=True):
        flip = (byte ^ (weight < 0).to(torch.uint8)) & 1
        byte.copy_((byte ^ flip) + 2 * flip)


def mask_weights_and_count_flips(
    weights: list[torch.Tensor], masks: list[torch.Tensor], packed: list[torch.Tensor]
) -> None:
    torch._foreach_mul_(weights, masks)
    count_flips(weights, packed)


def add_masked_noise(
    grad: torch.Tensor, noise: torch.Tensor, std: torch.Tensor, mask: torch.Tensor
) -> None:
    """grad += noise * std, then pruned entries back to zero."""
    grad.addcmul_(noise, std).mul_(mask)


def add_noise(grad: torch.Tensor, noise: torch.Tensor, std: torch.Tensor) -> None:
    grad.addcmul_(noise, std)


FUNCTIONS = (
    mask_gradients,
    count_flips,
    mask_weights_and_count_flips,
    add_masked_noise,
    add_noise,
)
_COMPILED: dict = {}  # one compilation per function and process, shared by every Pruner


# -- the eager forms ---------------------------------------------------------------------------


def dense_layout(tensor: torch.Tensor) -> bool:
    """Whether `tensor` fills its memory in one of the layouts this code meets: contiguous or
    channels-last."""
    return tensor.is_contiguous() or (
        tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)
    )


def as_bytes(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Bool masks viewed as uint8 (no copy): multiplying by 0 / 1 gives the same values."""
    return [mask.view(torch.uint8) if mask.dtype == torch.bool else mask for mask in masks]


class Scratch:
    """One flat buffer per dtype and device, grown to the largest tensor asked for and lent out
    as views, so eager kernels allocate nothing per step. A view is valid until the next request
    for the same dtype and device."""

    def __init__(self):
        self.buffers: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def flat(self, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (dtype, torch.device(device))
        buffer = self.buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = self.buffers[key] = torch.empty(numel, dtype=dtype, device=device)
        return buffer[:numel]

    def like(self, tensor: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A view of `flat(tensor.numel(), ...)` with `tensor`'s shape, and its strides where the
        tensor is dense (contiguous or channels-last), so the two pair element for element in
        memory order."""
        flat = self.flat(tensor.numel(), dtype or tensor.dtype, tensor.device)
        if dense_layout(tensor):
            return flat.as_strided(tensor.size(), tensor.stride())
        return flat.view(tensor.shape)


class EagerKernels:
    """The functions above as in-place operations on scratch buffers: the same masks and flip
    counts, bit for bit (a compiled noise add may round differently, fusing multiply and add)."""

    def __init__(self):
        self.scratch = Scratch()

    def mask_gradients(self, grads, masks) -> None:
        torch._foreach_mul_(grads, as_bytes(masks))

    def count_flips(self, weights, packed) -> None:
        for weight, byte in zip(weights, packed, strict=True):
            negative = self.scratch.like(weight, torch.bool)
            flip = self.scratch.like(weight, torch.uint8)
            torch.lt(weight, 0, out=negative)
            torch.bitwise_xor(byte, negative.view(torch.uint8), out=flip)
            flip.bitwise_and_(1)
            byte.bitwise_xor_(flip)
            byte.add_(flip, alpha=2)

    def mask_weights_and_count_flips(self, weights, masks, packed) -> None:
        torch._foreach_mul_(weights, as_bytes(masks))
        self.count_flips(weights, packed)

    def add_masked_noise(self, grad, noise, std, mask) -> None:
        grad.addcmul_(noise, std).mul_(as_bytes([mask])[0])

    def add_noise(self, grad, noise, std) -> None:
        grad.addcmul_(noise, std)


class Kernels:
    """The per-step functions as attributes, compiled or eager. `mode` is `on` (compile, and fail
    loudly if that is impossible), `off` (eager) or `auto`: compiled on CUDA, falling back to
    eager with a warning where no compiler works; eager on the CPU, where it measured faster
    (`python -m bench`). The eager forms keep their scratch buffers in `scratch`, which is not
    thread-safe: one thread per Kernels."""

    def __init__(self, mode: str = "auto", device: torch.device | None = None):
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"kernel mode must be auto, on or off, got {mode!r}")
        self.mode = mode
        on_cpu = device is None or torch.device(device).type == "cpu"
        self._eager = EagerKernels()
        self.scratch = self._eager.scratch
        self.eager = mode == "off" or (mode == "auto" and on_cpu)
        for function in FUNCTIONS:
            name = function.__name__
            eager = getattr(self._eager, name)
            setattr(self, name, eager if self.eager else self._wrap(function, eager))

    def _wrap(self, plain, eager):
        if plain not in _COMPILED:
            _COMPILED[plain] = torch.compile(plain, dynamic=True)
        compiled = _COMPILED[plain]

        def call(*args):
            if self.eager:
                return eager(*args)
            try:
                return compiled(*args)
            except Exception as error:  # compilation fails before any input is touched
                if self.mode == "on":
                    raise
                warnings.warn(
                    f"compiling the pruning kernels failed ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}); running them eagerly "
                    "(same results, slower)",
                    RuntimeWarning,
                    stacklevel=1,  # from here: the CLI recognises the library's warnings by file
                )
                self.eager = True
                return eager(*args)

        return call
