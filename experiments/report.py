"""The results report: markdown tables in the paper's layout, an optional CSV and an
accuracy-vs-sparsity plot, computed from the `summary.json` files that training runs leave.

    python -m experiments.report runs/cifar10 [--metric final|best] [--csv results.csv] [--flops]
    python -m experiments.report runs/vgg19_cifar10_figures --paper     # beside the paper

With `--paper` the runs are also set beside the numbers the paper published, row by row with a
verdict, and the CSV and the plots carry the paper's numbers too: experiments/paper.py says how.

Completed runs are grouped by (model, dataset), then by method and recipe, and each group's runs
at one sparsity level become one row: mean sparsity and test accuracy as mean ± sample std over
its runs (a single run has no sample std: its accuracy is shown alone, and its CSV std is empty).
The recipe is every option that makes a run what it trains (recipe_defaults): those of its
identity (experiments/runs.py) and any its summary records that this version does not know, such
as one of a criterion registered from a researcher's own module, less the seed and the options
that only change how the same training is computed or evaluated (RECIPE_NEUTRAL, there, as the
report beside the paper has them) and those that set the sparsity level (LEVEL_OPTIONS: they
split only the runs that reach one level through different values); an option a summary lacks
is at its default. Where a method's runs are of several recipes, each row's label names what
differs, shortest option first ("FlipOut (lr 0.05)" beside "FlipOut (lr 0.1)", "Hoyer-Square
(λ=6e-5; epochs 4)"); a method of one recipe keeps its own label. A line after the tables counts
the groups and names the methods split ("3 groups of runs (rows keyed by recipe; 1 method split:
FlipOut by lr)"); the plots draw a curve per group, under its label. Listed after the tables and
never counted: runs that did not complete, including run directories without a
summary.json (a killed run, or one still running); the extra copies of a run found more than once,
such as a copied run directory (the same `run_id`, or for older runs without one the same summary
apart from `run_dir`), whose run counts once; and files that could not be used, each with the
reason: unreadable (only regular files are opened: a FIFO, device or socket under a run file's name
is never read), or holding what no run writes (an accuracy that is not a number from 0 to 100, such
as 150, 1e308 or NaN; `epochs` and `epochs_completed` that are not whole numbers from 1 and 0, or a
completed run that trained fewer epochs than it records, -5 of -5 say; FLOPs below 0, or more
remaining than dense; `options` that are not an object, or an option the report reads of another
type, such as `model_kwargs` 3). The launcher's `status` takes a run as completed by the same
numbers (experiments/runs.py).

The report writes only what it can tell is its own (experiments/files.py): the CSV replaces a file
whose first line starts with the report's columns (CSV_MARK), and a plot a PNG that carries the
report's text chunk (PNG_MARK); anything else at that path (a user's own file, a directory, a FIFO,
a device) is left as it is: for the CSV an error before anything is printed, for a plot, which was
not asked for, a note.

Exit code 0 when there is a report (however many problems it lists), 1 when DIR holds no run at
all, 2 with one line on stderr for a bad command line, a DIR that is not a directory, a CSV path
that cannot be (too long, through a file) or that holds what the report did not write, 4 for a
CSV file the disk refuses (read-only, full).

The accuracy is the test accuracy after the last epoch (`--metric final`, the default) or the
highest over the epochs (`--metric best`). Compare with the paper's numbers on `final`: the
original code logged only each epoch's test accuracy, and its table script read the last value
logged. `best` picks the epoch by its test accuracy, which is an optimistic, test-set-selected
figure.

When any method was run at more than one sparsity level, `accuracy_vs_sparsity.png` is written into
DIR: one figure, always under that name, with one subplot per (model, dataset) that has such a
method (with `--paper`, also one per network of the paper), the dense network as a horizontal line.
Where a (model, dataset) has runs of FlipOut or GlobalMagnitude with both gradient-noise settings,
the noise ablation is drawn in `noise_ablation.png` instead, in the same style. A method's label
says where its noise departs from the paper's: FlipOut adds noise there and the others do not, so
"FlipOut (no noise)" and "GlobalMagnitude + noise" are methods of their own. All percentages in the
tables and the CSV are percent (0-100). The tables show two decimals, or as many more as it takes
never to round a share that is not 0 to 0.00 or one that is not all to 100.00 (`percent`).
"""

import hashlib
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from itertools import groupby
from pathlib import Path

from experiments.files import read_text, replace_problem, special
from experiments.plots import (
    NOISE_PLOT_NAME,
    PLOT_NAME,
    accuracy_panels,
    draw,
    is_our_plot,
    noise_panels,
)
from experiments.rows import (
    METRICS,
    Row,
    grouping,
    mean_std,
    method_of,
    table_head,
    table_line,
    write_dicts_csv,
)
from experiments.values import cell, epochs_problem, finite_number, is_percentage, shown
from pruning.mask import percent
from pruning.options import Bounded
from pruning.registry import method_label
from utils.errors import OneLineParser, StorageError, UserError, command, given_path
from utils.logging import epochs_logged

REQUIRED_KEYS = ("model", "dataset", "prune_criterion", "status")
SUMMARY = "summary.json"
CONFIG = "config.json"
METRICS_LOG = "metrics.jsonl"
# any of these without a summary.json beside it is a run that never wrote its end
RUN_FILES = (CONFIG, "checkpoint.pt", METRICS_LOG)
NO_SUMMARY = "no summary.json (killed?)"


@dataclass(frozen=True)
class IncompleteRun:
    """A line of the "Runs that did not complete" table."""

    run: Path  # the run directory, relative to the report's DIR
    method: str
    seed: str
    status: str
    epochs: str  # "completed/planned"


@dataclass(frozen=True)
class UnfinishedRun:
    """A run directory without summary.json, and the run_id its config.json gives, if any."""

    row: IncompleteRun
    run_id: str | None


@dataclass(frozen=True)
class Duplicate:
    """A run directory left out because the run it holds is already counted from `original`."""

    run: Path
    original: Path
    reason: str


CSV_MARK = ",".join(field.name for field in fields(Row) if field.name != "flops_remaining_mean")


def is_our_csv(head: bytes) -> bool:
    return head.startswith(f"{CSV_MARK}\n".encode()) or head.startswith(f"{CSV_MARK},".encode())


def listed_strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# the options the report reads (labels, networks), and what each must be where it is recorded
OPTION_TYPES = {
    "add_hs": (lambda value: isinstance(value, bool), "true or false"),
    "noise": (lambda value: isinstance(value, bool), "true or false"),
    "hoyer_lambda": (finite_number, "a number"),
    "noise_scale_factor": (finite_number, "a number"),
    "nm": (lambda value: isinstance(value, str), "N:M"),
    "schedule": (lambda value: isinstance(value, str), "a schedule's name"),
    "snip_bn": (lambda value: isinstance(value, str), "a mode's name"),
    "imp_optimizer": (lambda value: isinstance(value, str), "a choice's name"),
    "rewind_epoch": (lambda value: isinstance(value, int) and not isinstance(value, bool),
                     "an epoch"),
    "model_kwargs": (listed_strings, "a list of KEY=VALUE"),
}  # fmt: skip


def options_problem(options) -> str | None:
    """Why a summary's `options` (or a config.json) cannot label a method or name a network, or
    None. An option it does not record (or records as null) is at its default."""
    if not isinstance(options, dict):
        return f"options is {shown(options)}, not an object"
    for key, (fits, what) in OPTION_TYPES.items():
        value = options.get(key)
        if value is not None and not fits(value):
            return f"{key} is {shown(value)}, not {what}"
    return None


def summary_problem(summary, metric: str = "final") -> str | None:
    """Why a parsed summary cannot be reported on with `metric`, or None when it can."""
    if not isinstance(summary, dict):
        return "not a JSON object"
    missing = [key for key in REQUIRED_KEYS if key not in summary]
    if missing:
        return f"missing {', '.join(missing)}"
    for key in REQUIRED_KEYS:
        if not isinstance(summary[key], str):
            return f"{key} is {shown(summary[key])}, not a string"
    # a summary older than the option records none; one that records null is damaged
    problem = options_problem(summary["options"]) if "options" in summary else None
    problem = problem or epochs_problem(summary)
    if problem:
        return problem
    if summary["status"] == "completed":
        return completed_problem(summary, METRICS[metric][0])
    return None


def completed_problem(summary: dict, accuracy: str) -> str | None:
    """Why the numbers of a completed run's summary cannot be tabled, or None."""
    for key in (accuracy, "final_sparsity"):
        if not finite_number(summary.get(key)):
            return f"completed, but {key} is {shown(summary.get(key))}"
    if not is_percentage(summary[accuracy]):
        return f"completed, but {accuracy} is {shown(summary[accuracy])}, not a percentage (0-100)"
    if not 0 <= summary["final_sparsity"] <= 1:
        return f"completed, but final_sparsity is {summary['final_sparsity']}, not a fraction"
    for key in ("flops_dense", "flops_remaining"):
        if summary.get(key) is not None and not (finite_number(summary[key]) and summary[key] >= 0):
            return f"{key} is {shown(summary[key])}, not a count of operations"
    dense, remaining = summary.get("flops_dense"), summary.get("flops_remaining")
    if dense is not None and remaining is not None and remaining > dense:
        return f"flops_remaining is {shown(remaining)}, more than flops_dense ({shown(dense)})"
    return None


def read_json(path: Path):
    """The parsed content of the regular file `path`; ValueError (with OSError's message where
    reading failed: "a FIFO, not a file" for what is never opened) when it cannot be read or
    parsed."""
    try:
        return json.loads(read_text(path))
    except (OSError, RecursionError) as error:  # RecursionError: absurdly deep nesting
        reason = error.strerror if isinstance(error, OSError) else "nested too deeply"
        raise ValueError(reason) from error


def load_summaries(
    root: Path, metric: str = "final"
) -> tuple[dict[Path, dict], list[tuple[Path, str]]]:
    """Every summary.json below `root`, keyed by its path relative to `root`, and the files that
    could not be used (for `metric`), each with the reason."""
    root = Path(root)
    summaries, skipped = {}, []
    for path in sorted(root.rglob(SUMMARY)):
        relative = path.relative_to(root)
        try:
            summary = read_json(path)
        except ValueError as error:  # covers bad JSON and bad UTF-8 too
            skipped.append((relative, f"unreadable: {error}"))
            continue
        problem = summary_problem(summary, metric)
        if problem:
            skipped.append((relative, problem))
        else:
            summaries[relative] = summary
    return summaries, skipped


def config_problem(config) -> str | None:
    """Why a parsed config.json cannot say which method a run used, or None."""
    if not isinstance(config, dict):
        return "not a JSON object"
    if "prune_criterion" not in config:
        return "missing prune_criterion"
    if not isinstance(config["prune_criterion"], str):
        return f"prune_criterion is {shown(config['prune_criterion'])}, not a string"
    return options_problem(config)


def unfinished_runs(root: Path) -> tuple[list[UnfinishedRun], list[tuple[Path, str]]]:
    """The run directories below `root` without summary.json, each described from its config.json
    and metrics.jsonl as far as they can be read, and those files that could not be."""
    root = Path(root)
    with_summary = {path.parent for path in root.rglob(SUMMARY)}
    folders = {path.parent for name in RUN_FILES for path in root.rglob(name)} - with_summary
    runs, skipped = [], []
    for folder in sorted(folders):
        config, problem = run_config(folder / CONFIG)
        if problem:
            skipped.append(((folder / CONFIG).relative_to(root), problem))
        logged, problem = epochs_read(folder / METRICS_LOG)
        if problem:
            skipped.append(((folder / METRICS_LOG).relative_to(root), problem))
        method = "?"
        if config:
            method = method_label(config["prune_criterion"], config)
        run_id = config.get("run_id")
        row = IncompleteRun(
            run=folder.relative_to(root),
            method=method,
            seed=cell(config.get("seed", "?")),
            status=NO_SUMMARY,
            epochs=f"{logged if logged is not None else '?'}/{cell(config.get('epochs', '?'))}",
        )
        runs.append(UnfinishedRun(row, run_id if isinstance(run_id, str) and run_id else None))
    return runs, skipped


def run_config(path: Path) -> tuple[dict, str | None]:
    """A run's config.json ({} where there is none) and why it cannot be used, if it cannot
    (then {} too)."""
    if not path.exists():
        return {}, None
    try:
        config = read_json(path)
    except ValueError as error:
        return {}, f"unreadable: {error}"
    problem = config_problem(config)
    return ({}, problem) if problem else (config, None)


def epochs_read(path: Path) -> tuple[int | None, str | None]:
    """The epochs a metrics.jsonl records (None where there is none), and why it cannot be read
    where it is not a regular file, which is never opened."""
    try:
        kind = special(path)
    except OSError as error:
        return None, f"unreadable: {error.strerror or error}"
    if kind:
        return None, f"unreadable: {kind}, not a file"
    return epochs_logged(path), None


def run_identity(summary: dict) -> tuple[str, str]:
    """What makes two summaries the same run, and how to say so: the run_id drawn when the run
    started, or for older runs without one, the summary's content apart from `run_dir`, which a
    copied directory keeps unchanged."""
    run_id = summary.get("run_id")
    if isinstance(run_id, str) and run_id:
        return f"run_id {run_id}", "same run_id"
    content = json.dumps(
        {key: value for key, value in summary.items() if key != "run_dir"}, sort_keys=True
    )
    return f"content {hashlib.sha256(content.encode()).hexdigest()}", f"same {SUMMARY}"


def drop_duplicates(
    summaries: dict[Path, dict], unfinished: Iterable[UnfinishedRun] = ()
) -> tuple[dict[Path, dict], list[UnfinishedRun], list[Duplicate]]:
    """Each run once: the summaries and summary-less runs to report on, and the duplicates left
    out. Of summaries of one run, a completed one is kept, then the first by path: a run resumed
    to its end in a copied directory is counted with its result, not as the copy's interruption.
    A run directory without summary.json is a duplicate when its config.json's run_id is that of
    a run already kept."""
    kept, duplicates = {}, []
    originals: dict[str, Path] = {}
    completed_first = sorted(summaries, key=lambda p: (summaries[p]["status"] != "completed", p))
    for path in completed_first:
        identity, reason = run_identity(summaries[path])
        if identity in originals:
            duplicates.append(Duplicate(path.parent, originals[identity], reason))
        else:
            originals[identity] = path.parent
            kept[path] = summaries[path]
    kept_unfinished = []
    for run in unfinished:
        identity = f"run_id {run.run_id}"
        if run.run_id and identity in originals:
            duplicates.append(Duplicate(run.row.run, originals[identity], "same run_id"))
            continue
        if run.run_id:
            originals[identity] = run.row.run
        kept_unfinished.append(run)
    return dict(sorted(kept.items())), kept_unfinished, sorted(duplicates, key=lambda d: d.run)


def markdown_tables(rows: list[Row], show_flops: bool = False) -> str:
    """A heading and a table per (model, dataset); `rows` as ordered by group_runs."""
    metric = rows[0].metric if rows else "final"
    header = ["Method", "Sparsity (%)", METRICS[metric][1]]
    if show_flops:
        header.append("Remaining FLOPs (%)")
    blocks = []
    for (model, dataset), pair_rows in groupby(rows, key=lambda row: (row.model, row.dataset)):
        lines = [f"### {model} on {dataset}", "", *table_head(header)]
        for row in pair_rows:
            accuracy = mean_std(row.accuracy_mean, row.accuracy_std, row.n)
            cells = [row.method, percent(row.sparsity_mean / 100, sign=""), accuracy]
            if show_flops:
                flops = row.flops_remaining_mean
                cells.append("—" if flops is None else percent(flops / 100, sign=""))
            lines.append(table_line(cells))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def incomplete_runs_table(
    summaries: dict[Path, dict], unfinished: Iterable[UnfinishedRun] = ()
) -> str:
    """The runs left out of the tables, so that a missing seed is noticed: those whose summary
    says they did not complete and those without a summary; empty when none."""
    runs = [run.row for run in unfinished]
    for path, summary in summaries.items():
        if summary["status"] != "completed":
            done, planned = summary.get("epochs_completed", "?"), summary.get("epochs", "?")
            epochs = f"{cell(done)}/{cell(planned)}"
            seed, status = cell(summary.get("seed", "?")), cell(summary["status"])
            runs.append(IncompleteRun(path.parent, method_of(summary), seed, status, epochs))
    if not runs:
        return ""
    header = ["Run", "Method", "Seed", "Status", "Epochs"]
    lines = ["### Runs that did not complete", "", *table_head(header)]
    for run in sorted(runs, key=lambda run: run.run):
        cells = [run.run.as_posix(), run.method, run.seed, run.status, run.epochs]
        lines.append(table_line(cells))
    return "\n".join(lines)


def duplicates_list(duplicates: list[Duplicate]) -> str:
    if not duplicates:
        return ""
    lines = [
        f"- {duplicate.run.as_posix()} duplicates {duplicate.original.as_posix()} "
        f"({duplicate.reason}), counted once"
        for duplicate in duplicates
    ]
    return "\n".join(["### Duplicate runs", "", *lines])


def skipped_files_list(skipped: list[tuple[Path, str]]) -> str:
    if not skipped:
        return ""
    lines = [f"- {path.as_posix()}: {reason}" for path, reason in skipped]
    return "\n".join(["### Skipped files", "", *lines])


def write_csv(rows: list[Row], path: Path, show_flops: bool = False) -> None:
    """One line per row, numbers unrounded."""
    columns = [field.name for field in fields(Row)]
    if not show_flops:
        columns.remove("flops_remaining_mean")  # DictWriter's extrasaction drops it from the rows
    write_dicts_csv(columns, [asdict(row) for row in rows], path)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m experiments.report",
        description="Tables (and a plot) of test accuracy by method and sparsity from the "
        "summary.json files below DIR.",
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="folder searched for runs")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write the rows as CSV")
    parser.add_argument(
        "--metric",
        choices=sorted(METRICS),
        default="final",
        help="final: test accuracy after the last epoch, what the paper reports (default); "
        "best: the highest test accuracy over the epochs, selected on the test set",
    )
    parser.add_argument(
        "--flops", action="store_true", help="add the share of the dense FLOPs that remains"
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="set the runs beside the paper's published numbers, with a verdict for each row "
        "(experiments/paper.py), in the tables, the CSV and the plots",
    )
    parser.add_argument(
        "--equivalence_margin",
        type=Bounded(float, above=0, high=100),
        metavar="POINTS",
        help="with --paper: how close, in accuracy points, our mean must be shown to be to the "
        "paper's (two one-sided tests at 5%%) for a row to count as replicated (default 1)",
    )
    return parser


def write_plots(rows: list[Row], directory: Path, beside_paper: bool) -> list[Path]:
    """accuracy_vs_sparsity.png and noise_ablation.png where they have panels; with `beside_paper`,
    a panel for every network of the paper, the paper's curves dashed beside ours. A runs folder
    that refuses the files is a note, not a failure: the plots were not asked for."""
    written = []
    figures = [
        (PLOT_NAME, accuracy_panels(rows, beside_paper)),
        (NOISE_PLOT_NAME, noise_panels(rows)),
    ]
    for name, panels in figures:
        if beside_paper:
            from experiments import paper  # its statistics (scipy) only where asked for

            panels = paper.with_paper(panels)
        problem = plot_problem(directory / name) if panels else None
        if problem:
            print(f"note: {problem}", file=sys.stderr)
            continue
        try:
            path = draw(panels, directory / name)
        except StorageError as error:
            print(f"note: {error}", file=sys.stderr)
            continue
        if path:
            written.append(path)
    return written


def plot_problem(path: Path) -> str | None:
    """Why the plot cannot be written at `path` without replacing what this report did not
    write (experiments/files.py), or None."""
    try:
        problem = replace_problem(path, is_our_plot, "a plot of this report")
    except OSError as error:
        return f"cannot write {path}: {error.strerror or error}"
    if problem:
        return f"{path} is {problem}: left as it is, no plot written (move it away for one)"
    return None


def check_csv(path: Path) -> None:
    """A UserError, before anything is printed, unless --csv replaces nothing or a CSV of this
    report (experiments/files.py)."""
    with given_path(f"cannot write {path}", path):
        problem = replace_problem(path, is_our_csv, "a CSV of this report")
    if problem:
        raise UserError(
            f"--csv {path} is {problem}: left as it is (give another path, or move it away)"
        )


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.paper and args.metric != "final":
        raise UserError("--paper compares final accuracies, as the paper's are: drop --metric best")
    if args.equivalence_margin is not None and not args.paper:
        raise UserError("--equivalence_margin is the margin of --paper's verdicts: add --paper")
    with given_path(str(args.dir), args.dir):
        if not args.dir.exists():
            raise UserError(f"{args.dir}: no such directory")
        if not args.dir.is_dir():
            raise UserError(f"{args.dir} is not a directory")
        summaries, skipped = load_summaries(args.dir, args.metric)
        unfinished, config_skipped = unfinished_runs(args.dir)
    if args.csv:
        check_csv(args.csv)
    skipped = sorted(skipped + config_skipped)
    if not summaries and not unfinished and not skipped:
        print(f"no usable summary.json below {args.dir}", file=sys.stderr)
        return 1
    summaries, unfinished, duplicates = drop_duplicates(summaries, unfinished)
    grouped = grouping(summaries.values(), args.metric)
    rows = grouped.rows
    if args.metric == "best":
        print(
            "note: best-epoch accuracy is chosen on the test set; the paper's numbers are the "
            "final epoch's (--metric final)",
            file=sys.stderr,
        )
    show_flops = args.flops and any(row.flops_remaining_mean is not None for row in rows)
    if args.flops and not show_flops:
        print("note: no completed run records FLOPs; that column is left out", file=sys.stderr)
    beside = None
    if args.paper:
        from experiments import paper  # its statistics (scipy) only where asked for

        beside = paper.compare(summaries.values(), args.metric, args.equivalence_margin)
    sections = [
        markdown_tables(rows, show_flops) if rows else "No completed runs.",
        grouped.line() if rows else "",
        paper.markdown(beside) if beside else "",
        incomplete_runs_table(summaries, unfinished),
        duplicates_list(duplicates),
        skipped_files_list(skipped),
    ]
    print("\n\n".join(section for section in sections if section))
    if args.csv:
        with given_path(f"cannot write {args.csv}", args.csv):
            if beside:
                paper.write_csv(beside, args.csv, show_flops)
            else:
                write_csv(rows, args.csv, show_flops)
        print(f"\nCSV: {args.csv}")
    for plot in write_plots(rows, args.dir, args.paper):
        print(f"\nPlot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
