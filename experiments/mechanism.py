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
from experiments.report import check_dir, load_summaries, plot_problem
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


def signal_kept(record: dict) -> float | None:
    return over_tensors(record, "signal_kept")


def history(record: dict) -> float | None:
    """history_to_step where the noise went into the gradients, else noise_to_step (the same:
    noise on the update leaves nothing in the optimizer's state)."""
    value = over_tensors(record, "history_to_step")
    return over_tensors(record, "noise_to_step") if value is None else value


def short(network_name: str) -> str:
    """A network's name without its library's prefix and its options, for a legend."""
    return network_name.split(" (")[0].split(":")[-1]


def style_of(method: str) -> str:
    """Solid: the paper's noise; dashed: a variant of it; dotted: none."""
    if "no noise" in method or "Magnitude" in method:
        return ":"
    return "--" if "noise)" in method else "-"


def draw(found: dict, path: Path) -> None:
    """Three panels by epoch: the share of the noise-free step the step keeps, the noise (with
    its history) against the step, and the test accuracy; a colour per network and optimizer, a
    line style per kind of noise; each group at its lowest sparsity level."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lowest = {}
    for key in found:
        lowest.setdefault(key[:3], key)
    figure = Figure(figsize=(15, 5.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    panels = (
        ("signal kept: the step along the noise-free step", signal_kept, "linear"),
        ("noise, with its history in the state, / step", history, "log"),
        ("test accuracy (%)", lambda r: r.get("test_acc"), "linear"),
    )  # fmt: skip
    colours = {pair: f"C{i % 10}" for i, pair in enumerate(dict.fromkeys(k[:2] for k in lowest))}
    for key in lowest.values():
        label = f"{short(key[0])}, {key[1]}: {key[2]}"
        for ax, (_, stat, _) in zip(axes, panels, strict=True):
            epochs, values = by_epoch(found[key], stat)
            if values and any(values):
                ax.plot(epochs, values, style_of(key[2]), color=colours[key[:2]], label=label)
    for ax, (title, _, scale) in zip(axes, panels, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_yscale(scale)
        ax.grid(alpha=0.3)
    handles, labels = axes[2].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
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
        check_dir(args.dir)
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
