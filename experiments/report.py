"""The results report: markdown tables in the paper's layout, an optional CSV and an
accuracy-vs-sparsity plot, computed from the `summary.json` files that training runs leave.

    python -m experiments.report runs/cifar10 [--metric final|best] [--csv results.csv] [--flops]
    python -m experiments.report runs/vgg19_cifar10_figures --paper     # beside the paper

docs/replication.md ("The report") says what a reader gets: the rows, the lists after them, the
plots, the labels, the exit codes; with `--paper`, experiments/paper.py sets the rows beside the
published ones. What the code keeps to:

- A row is the completed runs of one (model, dataset), method, recipe and sparsity level, as
  mean ± sample std (a single run: its accuracy alone, its CSV std empty). The recipe
  (recipe_defaults) is every option of a run's identity (record.py), and any its summary records
  that this version does not know (a plugin's criterion's), less the seed, the NEUTRAL options and
  the LEVEL ones, which split only the runs that reach one level through different values; an
  option a summary lacks is at its default.
- Where some run records its training FLOPs (summary.json's `train_flops`), a column gives their
  mean over the row's runs that record them, and their multiple of the dense network's over the
  same steps (`train_flops_dense`): "2.1e+11 (0.42x)"; "—" where none does.
- No run counts twice and none goes unseen: copies of a run (the same `run_id`; for older runs the
  same summary apart from `run_dir`) count once, and runs that did not complete and files that
  cannot be used are listed with the reason. A run is completed by the numbers the launcher's
  `status` reads (experiments/runs.py); only regular files are opened.
- It writes only what it can tell is its own (experiments/files.py: CSV_MARK, PNG_MARK).
"""

import hashlib
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from itertools import groupby
from pathlib import Path

from experiments.files import replace_problem
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
from utils.io import special
from utils.rundir import (
    CONFIG,
    MARKS,
    METRICS_LOG,
    SUMMARY,
    Damaged,
    epochs_logged,
    read_config,
    read_json,
)

REQUIRED_KEYS = ("model", "dataset", "prune_criterion", "status")
NO_SUMMARY = f"no {SUMMARY} (killed?)"


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


# columns a CSV has only where asked for (--flops) or where runs record them (train FLOPs), after
# those it always has: a CSV written without them is known as this report's all the same
OPTIONAL_COLUMNS = ("flops_remaining_mean", "train_flops_mean", "train_flops_vs_dense")
NOT_COLUMNS = ("training",)  # the rows' own bookkeeping
CSV_MARK = ",".join(
    field.name for field in fields(Row) if field.name not in (*OPTIONAL_COLUMNS, *NOT_COLUMNS)
)


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
    for key in ("flops_dense", "flops_remaining", "train_flops", "train_flops_dense"):
        if summary.get(key) is not None and not (finite_number(summary[key]) and summary[key] >= 0):
            return f"{key} is {shown(summary[key])}, not a count of operations"
    dense, remaining = summary.get("flops_dense"), summary.get("flops_remaining")
    if dense is not None and remaining is not None and remaining > dense:
        return f"flops_remaining is {shown(remaining)}, more than flops_dense ({shown(dense)})"
    return None


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
        except Damaged as error:
            skipped.append((relative, error.reason))
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
    # a run's files without a summary.json beside them: a run that never wrote its end
    folders = {path.parent for name in MARKS for path in root.rglob(name)} - with_summary
    runs, skipped = [], []
    for folder in sorted(folders):
        config, problem = run_config(folder)
        if problem:
            skipped.append(((folder / CONFIG).relative_to(root), problem))
        logged, problem = epochs_read(folder)
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


def run_config(folder: Path) -> tuple[dict, str | None]:
    """A run's config.json ({} where there is none) and why it cannot be used, if it cannot
    (then {} too)."""
    try:
        config = read_config(folder)
    except Damaged as error:
        return {}, error.reason
    except OSError as error:  # a folder that cannot be searched
        return {}, f"unreadable: {error.strerror or error}"
    problem = None if config is None else config_problem(config)
    return ({}, problem) if problem or config is None else (config, None)


def epochs_read(folder: Path) -> tuple[int | None, str | None]:
    """The epochs a run's metrics.jsonl records (None where there is none), and why it cannot be
    read where it is not a regular file, which is never opened."""
    try:
        kind = special(folder / METRICS_LOG)
    except OSError as error:
        return None, f"unreadable: {error.strerror or error}"
    if kind:
        return None, f"unreadable: {kind}, not a file"
    return epochs_logged(folder), None


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


def markdown_tables(
    rows: list[Row], show_flops: bool = False, against: tuple[str, dict] | None = None
) -> str:
    """A heading and a table per (model, dataset); `rows` as ordered by group_runs. The column
    of training FLOPs is there where some run records them; with `against`, (the baseline's
    label, experiments.against.compare's results), a column of each row beside the baseline's."""
    metric = rows[0].metric if rows else "final"
    header = ["Method", "Sparsity (%)", METRICS[metric][1]]
    if show_flops:
        header.append("Remaining FLOPs (%)")
    show_train_flops = has_train_flops(rows)
    if show_train_flops:
        header.append("Train FLOPs (vs dense)")
    if against is not None:
        header.append(f"vs {against[0]}: Δ, Welch's p")
    blocks = []
    for (model, dataset), pair_rows in groupby(rows, key=lambda row: (row.model, row.dataset)):
        lines = [f"### {model} on {dataset}", "", *table_head(header)]
        for row in pair_rows:
            accuracy = mean_std(row.accuracy_mean, row.accuracy_std, row.n)
            cells = [row.method, percent(row.sparsity_mean / 100, sign=""), accuracy]
            if show_flops:
                flops = row.flops_remaining_mean
                cells.append("—" if flops is None else percent(flops / 100, sign=""))
            if show_train_flops:
                cells.append(train_flops_cell(row))
            if against is not None:
                compared = against[1].get(id(row))
                cells.append("baseline" if compared is None else compared.cell())
            lines.append(table_line(cells))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def has_train_flops(rows: list[Row]) -> bool:
    return any(row.train_flops_mean is not None for row in rows)


def train_flops_cell(row: Row) -> str:
    """The row's training FLOPs, and as a multiple of the dense network's over the same steps:
    "2.1e+11 (0.42x)", two significant digits below 0.1x (0.0031x at 99.9%). The count compares
    runs of different lengths (RigL 5x), the multiple the cost of a step."""
    if row.train_flops_mean is None:
        return "—"
    multiple = row.train_flops_vs_dense
    times = f"{multiple:.2f}x" if multiple >= 0.1 else f"{multiple:.2g}x"
    return f"{row.train_flops_mean:.2g} ({times})"


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


def write_csv(
    rows: list[Row], path: Path, show_flops: bool = False, against: tuple[str, dict] | None = None
) -> None:
    """One line per row, numbers unrounded; with `against`, the baseline's label and each row's
    difference and Welch's p beside it."""
    columns = [field.name for field in fields(Row) if field.name not in NOT_COLUMNS]
    # DictWriter's extrasaction drops a column left out from the rows
    if not show_flops:
        columns.remove("flops_remaining_mean")
    if not has_train_flops(rows):
        columns = [column for column in columns if not column.startswith("train_flops")]
    lines = [asdict(row) for row in rows]
    if against is not None:
        columns += ["baseline", "delta_vs_baseline", "welch_p", "welch_df"]
        for row, line in zip(rows, lines, strict=True):
            compared = against[1].get(id(row))
            line["baseline"] = against[0]
            if compared is not None:
                line.update(delta_vs_baseline=compared.delta, welch_p=compared.p,
                            welch_df=compared.df)  # fmt: skip
    write_dicts_csv(columns, lines, path)


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
    parser.add_argument(
        "--against",
        metavar="METHOD",
        help="set each row beside METHOD's row (its label in the tables, e.g. GlobalMagnitude) "
        "on the same network at the same sparsity: the difference of the mean accuracies and "
        "Welch's two-sided t-test of it (experiments/against.py)",
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


def check_dir(path: Path) -> None:
    """A UserError unless `path` is a directory (the folder a command searches for runs)."""
    if not path.exists():
        raise UserError(f"{path}: no such directory")
    if not path.is_dir():
        raise UserError(f"{path} is not a directory")


def compared_with(rows: list[Row], method: str) -> tuple[str, dict]:
    """--against's baseline and each row's comparison with it (experiments/against.py)."""
    from experiments import against  # its statistics (scipy) only where asked for

    if method not in against.methods(rows):
        known = ", ".join(against.methods(rows)) or "none"
        raise UserError(f"--against {method}: no row of that method (the rows: {known})")
    return method, against.compare(rows, method)


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.paper and args.metric != "final":
        raise UserError("--paper compares final accuracies, as the paper's are: drop --metric best")
    if args.against is not None and args.paper and args.csv:
        raise UserError(
            "--against with --paper --csv: the CSV would hold the paper's comparison only; write "
            "the --against CSV in a call without --paper"
        )
    if args.equivalence_margin is not None and not args.paper:
        raise UserError("--equivalence_margin is the margin of --paper's verdicts: add --paper")
    with given_path(str(args.dir), args.dir):
        check_dir(args.dir)
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
    against = None if args.against is None else compared_with(rows, args.against)
    beside = None
    if args.paper:
        from experiments import paper  # its statistics (scipy) only where asked for

        beside = paper.compare(summaries.values(), args.metric, args.equivalence_margin)
    sections = [
        markdown_tables(rows, show_flops, against) if rows else "No completed runs.",
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
                write_csv(rows, args.csv, show_flops, against)
        print(f"\nCSV: {args.csv}")
    for plot in write_plots(rows, args.dir, args.paper):
        print(f"\nPlot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
