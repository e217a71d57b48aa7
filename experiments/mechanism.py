"""What --log_mechanism measured, summed up over the runs below a folder (docs/noise.md):

    python -m experiments.mechanism runs/noise [--plot FILE]

Runs are grouped by network, optimizer, method (its report label) and sparsity level, seeds
together. For each group a line: the noise-to-step ratio at one step, and with the noise's
history in the optimizer's state (history_to_step), and the share of noise-dominated weights
(means over the epochs with noise, the tensors weighted alike), the RMS of the optimizer's clean
step (over all epochs), the flip rate of the first epoch and of the epochs after the first
prune, the first prune's flip rates of the weights it removed and kept, and the final test
accuracy. With `--plot`, one figure of the noise (with its history) against the step, the flip
rate and the test accuracy by epoch, a line per group of the runs at the lowest sparsity level.
A metrics.jsonl without measurements (a run without --log_mechanism) is left out; a folder with
none is one line, exit 1.
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from experiments.plots import PNG_MARK
from experiments.report import load_summaries, plot_problem
from experiments.rows import method_of, network
from utils.errors import OneLineParser, UserError, command, given_path
from utils.io import read_text, write_atomic
from utils.rundir import METRICS_LOG


def epochs_of(run_dir: Path) -> list[dict] | None:
    """The run's metrics.jsonl records with measurements, or None (unreadable, or none)."""
    try:
        lines = read_text(run_dir / METRICS_LOG).splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return None
    records = [r for r in records if isinstance(r, dict) and isinstance(r.get("mechanism"), dict)]
    return records or None


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def over_tensors(record: dict, stat: str) -> float | None:
    """The mean of `stat` over the tensors that measured it in this epoch."""
    return mean(entry.get(stat) for entry in record["mechanism"].values())


def group_key(summary: dict) -> tuple:
    options = summary.get("options") or {}
    return (
        network(summary),
        options.get("opt", "sgd"),
        method_of(summary),
        round(100 * summary["final_sparsity"], 2),
    )


def groups(root: Path) -> dict[tuple, list[list[dict]]]:
    """(network, optimizer, method, sparsity %) -> each run's measured epochs."""
    summaries, _ = load_summaries(root)
    found = defaultdict(list)
    for relative, summary in summaries.items():
        records = epochs_of((root / relative).parent)
        if summary.get("status") == "completed" and records:
            found[group_key(summary)].append(records)
    return dict(sorted(found.items()))


def line(key: tuple, runs: list[list[dict]]) -> list[str]:
    """The cells of a group's line."""
    noisy = [r for run in runs for r in run if over_tensors(r, "noise_to_step")]
    first_prune = [next((r for r in run if over_tensors(r, "flip_rate_removed") is not None),
                        None) for run in runs]  # fmt: skip
    pruned_at = [r["epoch"] for r in first_prune if r is not None]
    after = [r for run in runs for r in run if pruned_at and r["epoch"] > min(pruned_at)]

    def shown(value, scale=1.0, digits=2):
        return "—" if value is None else f"{value * scale:.{digits}f}"

    def scientific(value):
        return "—" if value is None else f"{value:.2g}"

    def rate(value):  # flips per 1,000 weights and steps
        return shown(value, 1000, 2)

    return [
        *key[:3],
        f"{key[3]:.2f}",
        str(len(runs)),
        shown(mean(over_tensors(r, "noise_to_step") for r in noisy)),
        shown(mean(over_tensors(r, "history_to_step") for r in noisy)),
        shown(mean(over_tensors(r, "signal_kept") for r in noisy)),
        shown(mean(over_tensors(r, "noise_dominated") for r in noisy), 100, 1),
        scientific(mean(clean_step(r) for run in runs for r in run)),
        rate(mean(over_tensors(run[0], "flip_rate") for run in runs)),
        rate(mean(over_tensors(r, "flip_rate") for r in after)),
        rate(mean(over_tensors(r, "flip_rate_removed") for r in first_prune if r)),
        rate(mean(over_tensors(r, "flip_rate_kept") for r in first_prune if r)),
        shown(mean(run[-1].get("test_acc") for run in runs)),
    ]


HEADER = ["Network", "Optimizer", "Method", "Sparsity (%)", "Runs", "Noise/step", "History/step",
          "Signal kept",
          "Noise-dominated (%)", "Clean step RMS", "Flips ‰, epoch 1", "Flips ‰, after prune 1",
          "Removed ‰", "Kept ‰", "Accuracy (%)"]  # fmt: skip


def table(found: dict) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|---" * len(HEADER) + "|"]
    lines += ["| " + " | ".join(line(key, runs)) + " |" for key, runs in found.items()]
    return "\n".join(lines)


def by_epoch(runs: list[list[dict]], stat) -> tuple[list[int], list[float]]:
    """The mean over runs of `stat(record)` at each epoch."""
    values = defaultdict(list)
    for run in runs:
        for record in run:
            value = stat(record)
            if value is not None:
                values[record["epoch"]].append(value)
    epochs = sorted(values)
    return epochs, [statistics.mean(values[e]) for e in epochs]


def clean_step(record: dict) -> float | None:
    return over_tensors(record, "clean_step_rms")


def history(record: dict) -> float | None:
    """history_to_step where the noise went into the gradients, else noise_to_step (the same:
    noise on the update leaves nothing in the optimizer's state)."""
    value = over_tensors(record, "history_to_step")
    return over_tensors(record, "noise_to_step") if value is None else value


def draw(found: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lowest = {}
    for key in found:  # each (network, optimizer, method) at its lowest level
        lowest.setdefault(key[:3], key)
    figure = Figure(figsize=(16, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    panels = (
        ("noise and its history in the state, against the step", history, "log"),
        ("sign flips per weight and step", lambda r: over_tensors(r, "flip_rate"), "symlog"),
        ("test accuracy (%)", lambda r: r.get("test_acc"), "linear"),
    )
    for index, key in enumerate(lowest.values()):
        label = f"{key[0]}, {key[1]}: {key[2]}"
        style = "-" if "no noise" not in key[2] and "Magnitude" not in key[2] else ":"
        for ax, (_, stat, _) in zip(axes, panels, strict=True):
            epochs, values = by_epoch(found[key], stat)
            if values and any(values):
                ax.plot(epochs, values, style, color=f"C{index % 10}", label=label)
    for ax, (title, _, scale) in zip(axes, panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if scale == "symlog":
            ax.set_yscale("symlog", linthresh=1e-4)
        else:
            ax.set_yscale(scale)
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7, loc="lower right")
    keyword, mark = PNG_MARK
    write_atomic(path, lambda file: figure.savefig(file, format="png", dpi=110,
                                                   metadata={keyword: mark}))  # fmt: skip


@command
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m experiments.mechanism",
        description="What --log_mechanism measured, per network, optimizer, method and "
        "sparsity level, from the runs below DIR (docs/noise.md).",
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="folder searched for runs")
    parser.add_argument("--plot", type=Path, metavar="FILE", help="also draw them, as a PNG")
    args = parser.parse_args(argv)
    with given_path(str(args.dir), args.dir):
        if not args.dir.is_dir():
            raise UserError(f"{args.dir}: no such directory")
        found = groups(args.dir)
    if not found:
        print(f"no completed run below {args.dir} measured with --log_mechanism", file=sys.stderr)
        return 1
    if args.plot is not None:
        problem = plot_problem(args.plot)
        if problem:
            raise UserError(problem)
    print(table(found))
    if args.plot is not None:
        with given_path(f"cannot write {args.plot}", args.plot):
            draw(found, args.plot)
        print(f"\nPlot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
