"""What a sweep costs before it is run: its runs, the epochs they train, and the GPU-hours those
take at the pace `python -m bench` measured on the GPU at hand.

bench's epoch section (bench/epoch.py) times one training epoch of each of the paper's networks on
its dataset, with `--amp --data_on_device --channels_last`, and files the time of a whole epoch in
BENCHMARKS.json (beside BENCHMARKS.md) under the GPU's name. The GPU-hours are the epochs of every
run times that pace: training only (evaluation and start-up not counted), at bench's flags, on the
sweep's own data (an override after `--` that shrinks the runs is not counted in).

Importing this module imports no torch: the GPU is asked for (gpu_at_hand) only where an epoch
was timed at all, and the runs are resolved by the caller (experiments/cost_cache.py keeps what
they cost between calls of `python -m experiments list`).
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# written by `python -m bench` (bench/epoch.py):
# {"epoch": {device name: {"model/dataset": {"seconds": one whole epoch, ...}}}}
EPOCH_TIMES = Path(__file__).resolve().parents[1] / "BENCHMARKS.json"


@dataclass(frozen=True)
class Cost:
    """What a sweep's runs train: how many runs, and their epochs by "model/dataset"."""

    runs: int
    epochs_by_network: dict[str, int]

    @property
    def epochs(self) -> int:
        return sum(self.epochs_by_network.values())


def cost_of(runs: Iterable) -> Cost:
    """The Cost of resolved runs (experiments/runs.py's Run)."""
    by_network: dict[str, int] = {}
    count = 0
    for run in runs:
        network = f"{run.options['model']}/{run.options['dataset']}"
        by_network[network] = by_network.get(network, 0) + run.total_epochs
        count += 1
    return Cost(count, by_network)


def gpu_at_hand() -> str | None:
    """The name bench files a measurement of this machine's GPU under; None without one."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def epoch_times(path: Path | None = None) -> dict[str, dict[str, float]]:
    """The seconds of one whole training epoch, by device, then by "model/dataset", as measured
    (in `path`, by default EPOCH_TIMES); only devices with a network timed; empty when nothing
    was measured, or when the file cannot be read."""
    try:
        times = json.loads(Path(path or EPOCH_TIMES).read_text(encoding="utf-8"))
        measured = {
            device: {network: float(entry["seconds"]) for network, entry in networks.items()}
            for device, networks in times["epoch"].items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}
    return {device: networks for device, networks in measured.items() if networks}


def gpu_hours(cost: Cost, pace: dict[str, float]) -> float | None:
    """Hours of training the runs take at `pace`; None when a run's network was not measured."""
    if not cost.epochs_by_network.keys() <= pace.keys():
        return None
    return sum(epochs * pace[network] for network, epochs in cost.epochs_by_network.items()) / 3600
