"""Gradient noise, FlipOut's exploration term (Apostol, Stol & Forré, 2020, Sec. 3).

After the backward pass each gradient tensor g gains Gaussian noise with standard deviation
||g||_2 / sqrt(numel(g)) * scale: the noise is as large as the tensor's root-mean-square gradient,
so it perturbs every layer in proportion to how fast that layer is moving. Weights near zero then
flip sign often, and the sign-flip counter can tell them from weights that carry signal.

Drawing the noise is most of its cost, and PyTorch's CPU generator is sequential. So on the CPU
each tensor is cut, in memory order, into a fixed number of slices, one per stream with its own
generator, and worker threads handle the streams at once: stream k always draws the k-th slice of
every tensor, in order, so the noise depends on the seed alone, never on the number of cores. The
workers do all the per-element work (norms, draws, adds, masking) single-threaded, because
PyTorch's own intra-op threads, spinning between operations, would otherwise compete with them
for the cores. On CUDA one generator is already parallel: one stream, on the calling thread.

Two variants for adaptive optimizers (docs/noise.md), `Noise.kind`: "update" adds the noise to the
step the optimizer took instead of to the gradient, after its preconditioning, with std the step's
own RMS times the scale (UpdateNoise); "second_moment" adds it to the gradient with a std of its
own per coordinate, the coordinate's gradient RMS over recent steps times the scale (MomentNoise).
"""

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import torch

from .kernels import Kernels, dense_layout
from .options import Choice

CPU_STREAMS = 4
# where the noise goes and how large it is: the paper's, and the two variants
KINDS = Choice("gradient", "update", "second_moment")


def stream_generators(seed: int, streams: int, device: torch.device) -> list[torch.Generator]:
    """`streams` generators on `device`, each seeded by one draw from a generator seeded `seed`."""
    seeds = torch.randint(2**62, (streams,), generator=torch.Generator().manual_seed(seed))
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def memory_order(tensor: torch.Tensor) -> torch.Tensor | None:
    """A 1-D view of `tensor`'s elements in memory order; None unless it is dense (contiguous or
    channels-last)."""
    if not dense_layout(tensor):
        return None
    if tensor.is_contiguous():
        return tensor.view(-1)
    return tensor.permute(0, 2, 3, 1).view(-1)  # channels-last: memory order is NHWC


def single_threaded_pool(workers: int) -> ThreadPoolExecutor:
    """`workers` threads, all started now, whose PyTorch operations use one intra-op thread.

    torch.set_num_threads in a worker sets the process-wide count as well as the worker's own,
    and a thread takes its own from the process-wide one when it first runs an operation. So each
    worker sets 1 and fixes it for itself at once (get_num_threads does), then, once all have,
    the calling thread puts the process-wide count back for the threads started later."""
    threads = torch.get_num_threads()
    started = threading.Barrier(workers + 1)

    def start() -> None:
        torch.set_num_threads(1)
        torch.get_num_threads()
        started.wait()

    pool = ThreadPoolExecutor(workers, "noise", initializer=start)
    for _ in range(workers):
        pool.submit(int)  # each submission starts a thread while fewer than `workers` exist
    started.wait()
    torch.set_num_threads(threads)
    return pool


class GradientNoise:
    """Noise for `params`; where `masks` gives a tensor's mask (None for unprunable tensors),
    pruned entries of its gradient are zeroed again in the same pass."""

    def __init__(
        self,
        params: list[torch.Tensor],
        scale: float,
        seed: int,
        masks: list[torch.Tensor | None] | None = None,
        kernels: Kernels | None = None,
        streams: int | None = None,
    ):
        self.params = list(params)
        self.masks = list(masks) if masks is not None else [None] * len(self.params)
        self.kernels = kernels or Kernels("off")
        device = self.params[0].device if self.params else torch.device("cpu")
        if streams is None:
            streams = CPU_STREAMS if device.type == "cpu" else 1
        self.generators = stream_generators(seed, streams, device)
        # scale / sqrt(numel) per tensor, kept on the device
        self.factors = [
            torch.tensor(scale / math.sqrt(max(p.numel(), 1)), device=device) for p in self.params
        ]
        # One noise buffer, the size of the largest tensor, so nothing is allocated per step;
        # stream k owns its k-th share when the streams work in parallel.
        share = -(-max((p.numel() for p in self.params), default=0) // streams)
        self.buffer = torch.empty(share * streams, device=device)
        self.shares = self.buffer.view(streams, share).unbind()
        workers = min(streams, torch.get_num_threads())
        self._pool = single_threaded_pool(workers) if workers > 1 else None

    def _each_stream(self, work) -> list:
        streams = range(len(self.generators))
        if self._pool is None:
            return [work(k) for k in streams]
        return list(self._pool.map(work, streams))

    @torch.no_grad()
    def add(self) -> None:
        """Noise on every gradient (after backward, before the optimizer's step)."""
        self._add([p.grad for p in self.params])

    def _add(self, targets: list, sources: list | None = None) -> None:
        """Noise on each of `targets` (one per parameter, None to skip), its std from the
        corresponding tensor of `sources` (default: the target itself)."""
        jobs, factors = self._flat(targets)
        if not jobs:
            return
        # 1. every gradient's norm, from the norms of each stream's slices
        stds = self._stds(jobs if sources is None else self._flat(sources)[0], factors)
        # 2. the noise, stream k drawing the k-th slice of every tensor, added and re-masked
        if self._pool is not None and self.kernels.eager:
            # each stream adds its own slices too, so that the adds run in parallel as well
            self._each_stream(partial(self._add_stream, jobs, stds))
        else:
            # compiled kernels are called from this thread only (compilation is not
            # thread-safe), once per whole tensor so that they compile once
            for j, (grad, mask, _) in enumerate(jobs):
                noise = self.buffer[: grad.numel()]
                for k, generator in enumerate(self.generators):
                    self._piece(noise, k).normal_(generator=generator)
                self._add_noise(grad, noise, stds[j], mask)
        for flat, _, original in jobs:
            if original is not None:
                original.copy_(flat.view_as(original))

    def _flat(self, tensors: list) -> tuple[list[tuple], list[torch.Tensor]]:
        """(tensor, mask, where to write back) as flat views in memory order, for every one of
        `tensors` (one per parameter) that is not None, and the noise factor of each."""
        jobs, factors = [], []
        for grad, mask, factor in zip(tensors, self.masks, self.factors, strict=True):
            if grad is None:
                continue
            factors.append(factor)
            flat, flat_mask = memory_order(grad), None
            # in the same memory order: both contiguous or both channels-last (strides alone may
            # differ where a dimension has size 1, as a depthwise convolution's has)
            if mask is not None and mask.is_contiguous() == grad.is_contiguous():
                flat_mask = memory_order(mask)
            if flat is None or (mask is not None and flat_mask is None):
                # an unusual layout: work on contiguous copies, written back by add() unless the
                # gradient itself was contiguous
                copy = grad.contiguous()
                flat = copy.view(-1)
                flat_mask = None if mask is None else mask.contiguous().view(-1)
                jobs.append((flat, flat_mask, None if copy is grad else grad))
            else:
                jobs.append((flat, flat_mask, None))
        return jobs, factors

    def _piece(self, tensor: torch.Tensor, k: int) -> torch.Tensor:
        """Stream k's slice of a flat tensor."""
        streams, n = len(self.generators), tensor.numel()
        return tensor[n * k // streams : n * (k + 1) // streams]

    def _partial_norms(self, jobs: list[tuple], k: int) -> torch.Tensor:
        """The norm of stream k's slice of every gradient."""
        return torch.stack([torch.linalg.vector_norm(self._piece(g, k)) for g, _, _ in jobs])

    def _stds(self, jobs: list[tuple], factors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each tensor's noise std: its gradient's norm times its factor."""
        slice_norms = torch.stack(self._each_stream(partial(self._partial_norms, jobs)))
        # The stds stay on the device: no host synchronisation per step. One fresh 0-d tensor
        # each, not views into one vector: a compiled kernel would specialise on each view's
        # storage offset and recompile for every tensor.
        norms = list(torch.linalg.vector_norm(slice_norms, dim=0).unbind())
        return torch._foreach_mul(norms, factors)

    def _add_stream(self, jobs: list[tuple], stds: list[torch.Tensor], k: int) -> None:
        """Stream k's draws for its slice of every tensor, added where they are drawn."""
        generator, share = self.generators[k], self.shares[k]
        for j, (grad, mask, _) in enumerate(jobs):
            target = self._piece(grad, k)
            if target.numel():
                noise = share[: target.numel()].normal_(generator=generator)
                self._add_noise(
                    target, noise, stds[j], None if mask is None else self._piece(mask, k)
                )

    def _add_noise(self, grad, noise, std, mask) -> None:
        if mask is None:
            self.kernels.add_noise(grad, noise, std)
        else:
            self.kernels.add_masked_noise(grad, noise, std, mask)

    def get_state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def moments(self) -> dict | None:
        """State besides the generators' that a resume needs (None: there is none)."""
        return None

    def load_moments(self, state: dict | None) -> None:
        pass

    def set_state(self, states: list[torch.Tensor]) -> None:
        if not isinstance(states, list | tuple):
            raise ValueError(
                "the checkpoint's gradient noise state is from an earlier version of this code "
                "(one generator); resume it with that version, or start the run again"
            )
        if len(states) != len(self.generators):
            raise ValueError(
                f"the checkpoint has {len(states)} gradient noise streams and this run "
                f"{len(self.generators)} ({CPU_STREAMS} on the CPU, 1 on CUDA): resume on the "
                "kind of device the run started on"
            )
        for generator, state in zip(self.generators, states, strict=True):
            generator.set_state(state)


class UpdateNoise(GradientNoise):
    """Noise on the update: after the optimizer's step, each tensor gains Gaussian noise of std
    RMS(step) * scale, where the step is how far the optimizer just moved the tensor. The noise is
    measured in the steps the optimizer takes, whatever its preconditioning, and never enters its
    state: under an adaptive optimizer the paper's noise raises the second-moment estimates and
    so shrinks every later step (docs/noise.md). Under plain SGD the step is -lr * g, and this
    is the paper's noise in distribution. `before_step` keeps the weights before the step."""

    def __init__(self, params, *args, **kwargs):
        super().__init__(params, *args, **kwargs)
        with torch.no_grad():
            # the weights before the step, then the step itself; in the weights' layout, so that
            # both are read in the same memory order
            self.steps = [torch.empty_like(p) for p in self.params]
        self.weights = [p.detach() for p in self.params]

    @torch.no_grad()
    def before_step(self) -> None:
        torch._foreach_copy_(self.steps, self.weights)

    @torch.no_grad()
    def add(self) -> None:
        """Noise on the weights, after the optimizer's step (before_step called before it)."""
        torch._foreach_sub_(self.steps, self.weights)  # minus the step: its RMS is the step's
        self._add(self.weights, self.steps)


class MomentNoise(GradientNoise):
    """Noise on the gradient, of a std per coordinate: the coordinate's gradient RMS over recent
    steps times the scale, sqrt(v / (1 - BETA^t)) * scale, v the moving average of its squared
    (masked, noise-free) gradient with Adam's default BETA. Every coordinate then keeps the same
    signal-to-noise ratio, which an adaptive optimizer's preconditioning leaves as it is; the
    paper's noise, one std per tensor, gives the coordinates whose gradients are small a lower
    one. It still enters the optimizer's state (docs/noise.md measures what that costs)."""

    BETA = 0.999

    def __init__(self, params, *args, **kwargs):
        super().__init__(params, *args, **kwargs)
        with torch.no_grad():
            self.averages = [torch.zeros_like(p, memory_format=torch.contiguous_format)
                             for p in self.params]  # fmt: skip
        self.count = 0  # steps averaged

    @torch.no_grad()
    def add(self) -> None:
        self.count += 1
        correction = 1.0 - self.BETA**self.count
        for p, average, mask, factor in zip(
            self.params, self.averages, self.masks, self.factors, strict=True
        ):
            grad = p.grad
            if grad is None:
                continue
            average.mul_(self.BETA).addcmul_(grad, grad, value=1.0 - self.BETA)
            # drawn in the gradient's logical order, stream k its k-th slice: the same numbers
            # whatever the layout and the number of cores
            noise = self.buffer[: grad.numel()]
            self._each_stream(partial(self._draw, noise))
            # scale * sqrt(numel) undoes the tensor factor's 1 / sqrt(numel)
            std = average.div(correction).sqrt_().mul_(factor * math.sqrt(grad.numel()))
            grad.addcmul_(noise.view(grad.shape), std)
            if mask is not None:
                grad.mul_(mask)

    def _draw(self, noise: torch.Tensor, k: int) -> None:
        self._piece(noise, k).normal_(generator=self.generators[k])

    def moments(self) -> dict:
        return {"averages": [a.clone() for a in self.averages], "count": self.count}

    @torch.no_grad()
    def load_moments(self, state: dict | None) -> None:
        if state is None:
            raise ValueError(
                "the checkpoint has no gradient averages for --noise_kind second_moment: it was "
                "written by a run with other noise"
            )
        for average, saved in zip(self.averages, state["averages"], strict=True):
            average.copy_(saved)
        self.count = int(state["count"])


NOISES = {"gradient": GradientNoise, "update": UpdateNoise, "second_moment": MomentNoise}
