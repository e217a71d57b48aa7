"""What the Pruner asks of a process group, so that the library runs under torchrun without
importing any launcher: gradient scores summed over ranks, and every rank's state checked equal
after a prune. One process needs neither (`Alone`); the CLI passes utils.distributed.Distributed,
which has both methods."""

from collections.abc import Iterable
from typing import Protocol

import torch


class Sync(Protocol):
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def check_identical(self, tensors: Iterable[torch.Tensor], what: str) -> None: ...


class Alone:
    """A single process: sums over one rank, and nothing to compare against."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def check_identical(self, tensors: Iterable[torch.Tensor], what: str) -> None:
        pass
