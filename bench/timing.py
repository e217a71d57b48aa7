"""Timing helpers: interleaved repetitions, device synchronisation, parts of a timed call."""

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    cases: dict[str, Callable[[], None]], device, repeats: int, warmup: int = 1, warm: bool = False
):
    """Median seconds per call of each case. Cases run in turn (A B C A B C ...), so slow drifts
    of the machine hit all of them alike. With `warm`, each timed call follows an untimed call of
    the same case, so that it finds its data in the caches as a call in a loop of its own would,
    not evicted by the case before it."""
    for _ in range(warmup):
        for run in cases.values():
            run()
    synchronize(device)
    samples = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            if warm:
                run()
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


class Parts:
    """Seconds spent in chosen parts of a call that `interleaved` times whole, without stalling
    the device between them: CUDA events on a GPU, the clock on the CPU. The call marks its parts
    with `part()` and ends with `end_call()`; `median()` is over the calls after `warmup`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.open: list[tuple] = []  # (start, end) of each part of the call in progress
        self.calls: list[float] = []

    def point(self):
        if self.device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    @contextmanager
    def part(self) -> Iterator[None]:
        start = self.point()
        yield
        self.open.append((start, self.point()))

    def end_call(self) -> None:
        if self.device.type == "cuda":
            self.open[-1][1].synchronize()  # the call's work is done: as interleaved waits anyway
            seconds = sum(start.elapsed_time(end) / 1000 for start, end in self.open)
        else:
            seconds = sum(end - start for start, end in self.open)
        self.calls.append(seconds)
        self.open = []

    def median(self, warmup: int = 1) -> float:
        return statistics.median(self.calls[warmup:])
