"""Training in several processes under torchrun, with DistributedDataParallel.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; a plain `python main.py` has none of them and
runs alone, for which every collective below is a no-op. Under torchrun the process group is
used whatever its size, so `torchrun --nproc_per_node 1` runs the DistributedDataParallel path
(NCCL or gloo, the sampler, the fingerprint checks) as a group of one. FlipOut's state must stay
identical on every rank: gradients are all-reduced by DDP before they are masked and noised, the
noise and the random criterion draw from generators seeded alike on every rank, and after each
prune `check_identical` compares a fingerprint of the masks, weights and flip counters across
ranks, so that a divergence is an error rather than a silent difference.
"""

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from utils.errors import UserError
from utils.runtime import resolve_device


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun, which set RANK and WORLD_SIZE

    @property
    def enabled(self) -> bool:
        """Whether this process is one of a process group (of any size)."""
        return self.launched or self.world_size > 1

    @property
    def backend(self) -> str | None:
        return dist.get_backend() if self.enabled and dist.is_initialized() else None

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints, logs and writes files."""
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> "Distributed":
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return cls()
        return cls(
            int(os.environ["RANK"]),
            int(os.environ["WORLD_SIZE"]),
            int(os.environ.get("LOCAL_RANK", 0)),
            launched=True,
        )

    def setup(self, device_spec: str) -> torch.device:
        """This process's device; joins the process group (NCCL on CUDA, gloo on the CPU)."""
        device = resolve_device(device_spec)
        if not self.enabled:
            return device
        if device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise UserError(
                    f"local rank {self.local_rank} has no GPU: {torch.cuda.device_count()} visible"
                )
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.enabled:
            return model
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_reduce_min(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return tensor

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's BatchNorm statistics (each rank updates its own while
        training), so that all ranks evaluate the same network."""
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def check_identical(self, tensors: Iterable[torch.Tensor], what: str) -> None:
        """Raise if `tensors` differ between ranks, bit for bit (compared by fingerprint)."""
        if not self.enabled:
            return
        mine = fingerprint(tensors)
        everyone = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(everyone, mine)
        differing = [rank for rank, theirs in enumerate(everyone) if not torch.equal(theirs, mine)]
        if differing:
            raise RuntimeError(
                f"{what} differ between rank {self.rank} and rank(s) {differing}: the ranks no "
                "longer train the same network"
            )


def fingerprint(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """One int64 per tensor that changes with any bit of any element: the elements' bit patterns
    times position-dependent weights, summed (wrapping on overflow is harmless for a hash)."""
    sums = []
    for tensor in tensors:
        values = tensor.detach()
        if values.is_floating_point():
            values = values.float().contiguous().view(torch.int32)
        values = values.reshape(-1).to(torch.int64)
        weights = torch.arange(values.numel(), device=values.device) % 1_000_003 + 1
        sums.append((values * weights).sum())
    return torch.stack(sums) if sums else torch.zeros(1, dtype=torch.int64)
