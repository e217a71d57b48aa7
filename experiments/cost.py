"""What a sweep costs before it is run: its runs, the epochs they train, and the GPU-hours those
take at the pace `python -m bench` measured on the GPU at hand.

bench's epoch section (bench/epoch.py) times one training epoch of each of the paper's networks on
its dataset, with `--amp --data_on_device --channels_last`, and files the time of a whole epoch in
BENCHMARKS.json (beside BENCHMARKS.md) under the GPU's name. The GPU-hours are the epochs of every
run times that pace: training only (evaluation and start-up not counted), at bench's flags, on the
sweep's own data (an override after `--` that shrinks the runs is not counted in).
"""

import json
from collections.abc import Iterable
from pathlib import Path

from experiments.runs import Run

# written by `python -m bench` (bench/epoch.py):
# {"epoch": {device name: {"model/dataset": {"seconds": one whole epoch, ...}}}}
EPOCH_TIMES = Path(__file__).resolve().parents[1] / "BENCHMARKS.json"


def gpu_at_hand() -> str | None:
    """The name bench files a measurement of this machine's GPU under; None without one."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def paces(device: str, path: Path | None = None) -> dict[str, float]:
    """The seconds of one whole training epoch on `device`, by "model/dataset", as measured
    (in `path`, by default EPOCH_TIMES); empty when nothing was measured there, or when the file
    cannot be read."""
    try:
        times = json.loads(Path(path or EPOCH_TIMES).read_text(encoding="utf-8"))
        measured = times["epoch"].get(device, {})
        return {network: float(entry["seconds"]) for network, entry in measured.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def epochs(runs: Iterable[Run]) -> int:
    return sum(run.total_epochs for run in runs)


def gpu_hours(runs: Iterable[Run], pace: dict[str, float]) -> float | None:
    """Hours of training the runs take at `pace`; None when a run's network was not measured."""
    seconds = 0.0
    for run in runs:
        network = f"{run.options['model']}/{run.options['dataset']}"
        if network not in pace:
            return None
        seconds += run.total_epochs * pace[network]
    return seconds / 3600
