"""Timing helpers: interleaved repetitions and device synchronisation."""

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(cases: dict[str, Callable[[], None]], device, repeats: int, warmup: int = 1):
    """Median seconds per call of each case. Cases run in turn (A B C A B C ...), so slow drifts
    of the machine hit all of them alike."""
    for _ in range(warmup):
        for run in cases.values():
            run()
    synchronize(device)
    samples = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}
