"""Training in several processes under torchrun, with DistributedDataParallel.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; a plain `python main.py` has none of them and
runs alone, for which every collective below is a no-op. Under torchrun the process group is
used whatever its size, so `torchrun --nproc_per_node 1` runs the DistributedDataParallel path
(NCCL or gloo, the sampler, the fingerprint checks) as a group of one. FlipOut's state must stay
identical on every rank: gradients are all-reduced by DDP before they are masked and noised, the
noise and the random criterion draw from generators seeded alike on every rank, and after each
prune `check_identical` compares a fingerprint of the masks, weights and flip counters across
ranks, so that a divergence is an error rather than a silent difference.

A rank that dies or freezes must not leave the others waiting in a collective for ever. Every
collective has a time limit (`--dist_timeout`), and a heartbeat names the culprit: each rank bumps
a counter in the process group's store once a second from a thread of its own, which goes on while
the rank computes, and watches the others' counters. A counter that stops moving for the time limit
belongs to a rank that is dead, stopped or cut off; when a collective fails, the ranks whose
counters stopped are the ones to blame.
"""

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from utils.errors import PeerLost, UserError
from utils.runtime import resolve_device

HEARTBEAT_SECONDS = 1.0
# after a collective failed, how long a dead rank's counter takes to show that it stopped
SETTLE_SECONDS = 3 * HEARTBEAT_SECONDS
# what gloo and NCCL say when the other end of a collective is gone
TRANSPORT_FAILURES = (
    "Connection reset",
    "Connection closed",
    "Connection refused",
    "Broken pipe",
    "Timed out",
    "timed out",
    "NCCL communicator was aborted",
)


class Heartbeat:
    """Liveness of every rank through the store; see the module's docstring. `on_lost(ranks)` is
    called from the heartbeat's thread when other ranks have been silent for `timeout` seconds."""

    def __init__(self, store, rank: int, world_size: int, timeout: float, on_lost: Callable):
        self.store = dist.PrefixStore("flipout/heartbeat", store)
        self.rank, self.timeout = rank, timeout
        self.on_lost = on_lost
        self.others = [r for r in range(world_size) if r != rank]
        now = time.monotonic()
        self.last_seen = {r: (None, now) for r in self.others}  # rank -> (counter, when it moved)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def stop(self, wait: bool = True) -> None:
        """Stop beating; with `wait`, also wait (a few beats at most) for the thread to be out of
        the store: a thread still inside the store's C++ code while the process group is torn
        down and the interpreter exits can abort the process ("terminate called without an
        active exception"), seen once under heavy load after a run had completed."""
        self._stopped.set()
        if wait and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=3 * HEARTBEAT_SECONDS)

    def _run(self) -> None:
        beats = 0
        while not self._stopped.wait(HEARTBEAT_SECONDS):
            beats += 1
            values = {}
            try:
                self.store.set(str(self.rank), str(beats))
                for r in self.others:
                    if self.store.check([str(r)]):  # get would wait for a key not yet set
                        values[r] = self.store.get(str(r))
            except Exception:  # the store itself is gone (its host died): count as silence
                pass
            now = time.monotonic()
            for r, value in values.items():
                if value != self.last_seen[r][0]:
                    self.last_seen[r] = (value, now)
            lost = self.silent(self.timeout)
            if lost and not self._stopped.is_set():
                self.on_lost(lost)
                return

    def silent(self, seconds: float) -> list[int]:
        """The other ranks whose counter has not moved for `seconds`."""
        now = time.monotonic()
        return [r for r, (_, moved) in self.last_seen.items() if now - moved >= seconds]

    def blame(self) -> list[int]:
        """After a collective failed: the ranks that stopped beating, given a few beats to show
        (a loaded machine can delay a beat)."""
        deadline = time.monotonic() + SETTLE_SECONDS + 3 * HEARTBEAT_SECONDS
        while time.monotonic() < deadline:
            lost = self.silent(SETTLE_SECONDS)
            if lost:
                return lost
            time.sleep(HEARTBEAT_SECONDS / 4)
        return []


def describe_lost(ranks: list[int], seconds: float | None = None) -> str:
    names = ", ".join(map(str, ranks))
    what = f"rank {names}" if len(ranks) == 1 else f"ranks {names}"
    since = f" for {seconds:.0f} s" if seconds is not None else ""
    return f"{what} stopped answering{since} (died, was stopped, or lost its connection)"


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun, which set RANK and WORLD_SIZE
    heartbeat: Heartbeat | None = field(default=None, repr=False, compare=False)
    # Called from the heartbeat's thread when peers are lost, with the message: the run writes
    # its summary there, since the main thread may be blocked in a collective, and returns the
    # line to end with (None: this rank stays silent). The process then ends.
    on_peers_lost: Callable[[str], str | None] | None = field(
        default=None, repr=False, compare=False
    )

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

    def setup(self, device_spec: str, timeout: float = 300.0) -> torch.device:
        """This process's device; joins the process group (NCCL on CUDA, gloo on the CPU), whose
        collectives give up after `timeout` seconds, and starts the heartbeat."""
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
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
        if self.world_size > 1:
            store = dist.distributed_c10d._get_default_store()
            self.heartbeat = Heartbeat(store, self.rank, self.world_size, timeout, self._lost)
            self.heartbeat.start()
        return device

    def _lost(self, ranks: list[int]) -> None:
        """Peers have been silent for the time limit: say so (the lowest surviving rank alone),
        let the run record it, and end this process; its main thread may be blocked for good."""
        message = describe_lost(ranks, self.heartbeat.timeout)
        line = None
        if self.on_peers_lost is not None:
            # the exit must happen whatever the summary's fate
            with contextlib.suppress(BaseException):
                line = self.on_peers_lost(message)
        survivors = [r for r in range(self.world_size) if r not in ranks]
        if line is None and 0 in ranks and self.rank == min(survivors):
            line = f"error: {message}; stopping"  # rank 0, which reports, is the lost one
        if line:
            print(line, file=sys.stderr, flush=True)
        os._exit(PeerLost.exit_code)

    def peer_failure(self, error: BaseException) -> PeerLost | None:
        """When `error` (raised by a collective, directly or inside DDP's backward) came from a
        lost peer: a PeerLost naming it; None when every peer is alive, i.e. a genuine error."""
        if self.heartbeat is None or not isinstance(error, RuntimeError):
            return None
        lost = self.heartbeat.blame()
        if lost:
            return PeerLost(describe_lost(lost))
        text = str(error)
        if isinstance(error, dist.DistError) or any(words in text for words in TRANSPORT_FAILURES):
            first = next((line.strip() for line in text.splitlines() if line.strip()), "")
            return PeerLost(f"a collective failed, another rank is gone ({first[:200]})")
        return None

    def shutdown(self, peers_lost: bool = False) -> None:
        """Leave the process group; after a lost peer, only stop the heartbeat, since tearing
        the group down would wait on the peer."""
        if self.heartbeat is not None:
            # after a lost peer the store may not answer: do not wait for the thread then
            self.heartbeat.stop(wait=not peers_lost)
        if self.enabled and dist.is_initialized() and not peers_lost:
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

    def agree_to_stop(self, stop) -> None:
        """Raise Interrupted on every rank when any rank received a stop signal (utils.stop), so
        that they all stop at the same point; alone, just `stop.check()`."""
        if stop is None:
            return
        if not self.enabled:
            stop.check()
            return
        signum = torch.tensor([stop.requested or 0], dtype=torch.long)
        if self.backend == "nccl":
            signum = signum.cuda()
        dist.all_reduce(signum, op=dist.ReduceOp.MAX)
        if int(signum):
            raise stop.interrupted(int(signum))

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
