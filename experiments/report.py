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

import csv
import hashlib
import io
import json
import math
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from itertools import groupby
from pathlib import Path

from experiments.files import png_texts, read_text, replace_problem, special
from pruning.mask import percent
from pruning.options import Bounded
from pruning.registry import CRITERIA
from utils.errors import OneLineParser, StorageError, UserError, command, given_path
from utils.io import write_atomic, write_text_atomic
from utils.logging import epochs_logged

PLOT_NAME = "accuracy_vs_sparsity.png"
NOISE_PLOT_NAME = "noise_ablation.png"
# a panel whose accuracies span more points than this gets a second, zoomed row (see draw)
ZOOM_SPAN = 15.0
# runs of one method whose final sparsities (fractions) lie this close belong to one level
SPARSITY_TOLERANCE = 0.0005
# Options that set how far a method prunes, which a curve varies from one sparsity level to the
# next: the ladder's prune_freq (experiments/sweeps.py), SNIP's snip_sparsity, a rate, a target, a
# number of rounds, a threshold. Part of no recipe, so that they never cut a curve into points: the
# sparsity a run reached places it at its level. Runs that reach one level through different
# values of them are still told apart, at that level (level_rows).
LEVEL_OPTIONS = {
    "prune_freq", "prune_rate", "stop_pruning_at", "rounds", "target_sparsity", "init_sparsity",
    "snip_sparsity", "magnitude_threshold",
}  # fmt: skip
# main.py records options as plain values and lists of them; a damaged file may nest deeper
MAX_NESTING = 8
HOYER_SQUARE = "Hoyer-Square"
PAPER_ORDER = [
    "FlipOut",
    "GlobalMagnitude",
    "Random",
    "SNIP",
    HOYER_SQUARE,
    "Magnitude",
    "Threshold",
    # the baselines that followed the paper
    "IMP",
    "SynFlow",
    "GraSP",
    "GMP",
    "GMP (global)",
    "Dense",
]
# the methods the paper runs with gradient noise: a run of them without it is labelled so
NOISY_BY_DEFAULT = {"flipout"}
REQUIRED_KEYS = ("model", "dataset", "prune_criterion", "status")
SUMMARY = "summary.json"
CONFIG = "config.json"
METRICS_LOG = "metrics.jsonl"
# any of these without a summary.json beside it is a run that never wrote its end
RUN_FILES = (CONFIG, "checkpoint.pt", METRICS_LOG)
NO_SUMMARY = "no summary.json (killed?)"
# a damaged file can hold a value of any size; messages and table cells show this much of it
SHOWN_CHARACTERS = 40
# --metric -> (summary.json key, table column, plot axis)
METRICS = {
    "final": ("final_test_acc", "Accuracy (%)", "Test accuracy (%)"),
    "best": ("best_test_acc", "Best accuracy (%)", "Best test accuracy (%)"),
}


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


@dataclass(frozen=True)
class Row:
    """The completed runs of one method at one sparsity level of one (model, dataset)."""

    model: str
    dataset: str
    method: str
    sparsity_mean: float
    accuracy_mean: float
    accuracy_std: float | None  # sample std; None for a single run, where it is undefined
    n: int
    metric: str = "final"  # which accuracy: a key of METRICS
    # mean share of the dense model's FLOPs left; None when no run of the group recorded FLOPs
    flops_remaining_mean: float | None = None


# what marks the report's files as its own, so that a rerun replaces them and nothing else
# (experiments/files.py): a plot's PNG text chunk, and the start of a CSV's first line, the
# columns every CSV of the report begins with
PNG_MARK = ("Software", "python -m experiments.report")
CSV_MARK = ",".join(field.name for field in fields(Row) if field.name != "flops_remaining_mean")


def is_our_plot(head: bytes) -> bool:
    keyword, text = PNG_MARK
    return png_texts(head).get(keyword) == text


def is_our_csv(head: bytes) -> bool:
    return head.startswith(f"{CSV_MARK}\n".encode()) or head.startswith(f"{CSV_MARK},".encode())


def compact_number(value: float) -> str:
    """Shortest readable spelling of a strength like λ: 6e-5, 2.5e-4, 1e-3, but 0.5 and 10."""
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:g}"
    mantissa, exponent = f"{value:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def option(summary: dict, name: str):
    """A training option as the summary records it; None where an older summary lacks it."""
    return (summary.get("options") or {}).get(name)


def hoyer_lambda(summary: dict) -> float:
    return float(option(summary, "hoyer_lambda") or 0.0)


def is_hoyer_square(summary: dict) -> bool:
    """The paper's Hoyer-Square baseline: the penalty in the loss, then pruning by threshold."""
    return summary["prune_criterion"] == "threshold" and bool(option(summary, "add_hs"))


def noise_label(summary: dict) -> str:
    """How the run's gradient noise sets it apart: the paper's FlipOut adds noise (λ = 1) and the
    other methods do not, so only a departure shows: "(no noise)", "+ noise", and a scale other
    than 1. Nothing for a summary that does not record the option."""
    noise = option(summary, "noise")
    if noise is None:
        return ""
    scale = option(summary, "noise_scale_factor")
    scaled = noise and finite_number(scale) and scale != 1
    if bool(noise) == (summary["prune_criterion"] in NOISY_BY_DEFAULT):
        return f" (noise scale {scale:g})" if scaled else ""
    if not noise:
        return " (no noise)"
    return f" + noise (scale {scale:g})" if scaled else " + noise"


def method_label(summary: dict) -> str:
    criterion = summary["prune_criterion"]
    strength = compact_number(hoyer_lambda(summary))
    if is_hoyer_square(summary):
        return f"{HOYER_SQUARE} (λ={strength})"
    # the criterion's class names its method; a criterion this version lacks keeps its own name
    known = CRITERIA.get(criterion)
    label = known.method_label(summary.get("options") or {}) if known else criterion
    label += noise_label(summary)
    if option(summary, "add_hs"):
        return f"{label} + HS (λ={strength})"
    return label


def method_sort_key(summary: dict) -> tuple:
    """Paper order; Hoyer-Square rows by λ; methods the paper does not have last, alphabetically."""
    label = method_label(summary)
    if option(summary, "nm"):  # "FlipOut 2:4" right after the same method unconstrained
        return (*method_sort_key({**summary, "options": {**summary["options"], "nm": None}}), label)
    if is_hoyer_square(summary):
        return (PAPER_ORDER.index(HOYER_SQUARE), hoyer_lambda(summary), label)
    if label in PAPER_ORDER:
        return (PAPER_ORDER.index(label), 0.0, label)
    # a variant ("IMP (rewind to epoch 1)", "FlipOut (gradual)", "GlobalMagnitude + noise")
    # right after its method
    base = label.split(" (")[0].split(" + ")[0]
    if base in PAPER_ORDER:
        return (PAPER_ORDER.index(base), 0.5, label)
    return (len(PAPER_ORDER), 0.0, label)


def one_line(text: str) -> str:
    """`text` fit for a report line or a table cell: on one line, cut short when long, without
    the `|` that would split a markdown cell."""
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 1] + "…"


def shown(value) -> str:
    """A value from a file as a message quotes it."""
    return one_line(repr(value))


def cell(value) -> str:
    """A value from a file as a table cell shows it."""
    return one_line(str(value))


def finite_number(value) -> bool:
    """A JSON number that arithmetic can use: not a bool, NaN, infinity or an int too large for a
    float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_percentage(value) -> bool:
    """Whether `value` can be an accuracy as a summary.json records it: a number from 0 to 100."""
    return finite_number(value) and 0 <= value <= 100


def is_count(value, least: int) -> bool:
    """Whether `value` is a JSON integer (not a bool) of at least `least`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def epochs_problem(summary: dict) -> str | None:
    """Why a summary's count of epochs cannot be a run's, or None: where recorded, `epochs` (all
    it trains) a whole number from 1 and `epochs_completed` one from 0; a completed run has
    trained all its epochs (more, where a resume with a shorter -e ended it as it was, main.py's
    "nothing to train")."""
    completed = summary.get("status") == "completed"
    lead = "completed, but " if completed else ""
    for key, least in (("epochs", 1), ("epochs_completed", 0)):
        value = summary.get(key)
        if value is not None and not is_count(value, least):
            return f"{lead}{key} is {shown(value)}, not a whole number from {least}"
    done, planned = summary.get("epochs_completed"), summary.get("epochs")
    if completed and done is not None and planned is not None and done < planned:
        return f"completed, but epochs_completed is {done}, fewer than its epochs ({planned})"
    return None


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
            method = method_label({"prune_criterion": config["prune_criterion"], "options": config})
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


def sparsity_levels(runs: list[dict]) -> list[list[dict]]:
    """Runs split into levels of nearly equal final sparsity. Distances are measured from a
    level's least sparse run, not from its latest member, so that a chain of close runs cannot
    stretch one level beyond the tolerance."""
    levels: list[list[dict]] = []
    for run in sorted(runs, key=lambda r: r["final_sparsity"]):
        if levels and run["final_sparsity"] - levels[-1][0]["final_sparsity"] <= SPARSITY_TOLERANCE:
            levels[-1].append(run)
        else:
            levels.append([run])
    return levels


def flops_remaining_percent(runs: list[dict]) -> float | None:
    shares = [
        100 * run["flops_remaining"] / run["flops_dense"]
        for run in runs
        if run.get("flops_dense") and run.get("flops_remaining") is not None
    ]
    return statistics.mean(shares) if shares else None


def network(summary: dict) -> str:
    """The network of a run as its command line named it: -m, with --model_kwargs where given (a
    timm ViT cut small is another network than the one its name describes)."""
    kwargs = option(summary, "model_kwargs")
    return f"{summary['model']} ({' '.join(kwargs)})" if kwargs else summary["model"]


def recipe_defaults(runs: list[dict]) -> dict:
    """The options of the recipe of `runs`, each with its default: every option of a run's
    identity (experiments/runs.py), and every option their summaries record that this version's
    parser does not know (one of a criterion registered from a researcher's own module, whose
    default is unknown here: None), less RECIPE_NEUTRAL's (the seed among them) and those of where
    and how a run ran and of its name, which its summary records too."""
    from cli import MACHINE_OPTIONS, NAME_OPTIONS
    from experiments.runs import IDENTITY_DEFAULTS, RECIPE_NEUTRAL

    recorded = sorted({key for run in runs for key in run.get("options") or {}})
    left_out = MACHINE_OPTIONS | NAME_OPTIONS | RECIPE_NEUTRAL
    keys = dict.fromkeys([*IDENTITY_DEFAULTS, *recorded])
    return {key: IDENTITY_DEFAULTS.get(key) for key in keys if key not in left_out}


def recorded_option(run: dict, key: str, defaults: dict):
    """The run's value of option `key`, its default where its summary lacks it (or records null,
    as options_problem reads it). A value nested deeper than MAX_NESTING, which no run records,
    stands as one placeholder: comparing or showing it would recurse past Python's limit."""
    value = option(run, key)
    if value is None:
        return defaults[key]
    return value if nesting(value) <= MAX_NESTING else "(nested too deeply)"


def nesting(value) -> int:
    """How deep lists and objects nest in `value`: 0 for a number or a string, 1 for a list of
    them. Counted layer by layer, without recursion."""
    depth, layer = 0, [value]
    while any(isinstance(item, list | dict) for item in layer):
        depth += 1
        layer = [
            child
            for item in layer
            if isinstance(item, list | dict)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
    return depth


def plain(value):
    """A recorded value with equal numbers alike (2.0 as 2, as a file written by hand may have
    it) and sequences as lists, as JSON keeps them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def recipe_value(run: dict, key: str, defaults: dict) -> str:
    """The run's value of option `key` as a string that is equal exactly where the values are."""
    return json.dumps(plain(recorded_option(run, key, defaults)), sort_keys=True)


def option_text(value) -> str:
    """An option's value in a label: on or off, a number in its shortest spelling (0.05, 5e-4),
    a list by spaces, none."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return " ".join(option_text(item) for item in value) or "none"
    if isinstance(value, float) and finite_number(value):
        return compact_number(value)
    return str(value)


def varying(runs: list[dict], keys: Iterable[str], defaults: dict) -> list[str]:
    """Those of `keys` whose value is not the same in all `runs`, shortest name first."""
    found = [key for key in keys if len({recipe_value(run, key, defaults) for run in runs}) > 1]
    return sorted(found, key=lambda key: (len(key), key))


def value_order(run: dict, keys: list[str], defaults: dict) -> tuple:
    """A sort key of the run's values of `keys`: numbers by size (lr 0.05 before 0.1, epochs 4
    before 10), other values by their text, after the numbers."""
    order = []
    for key in keys:
        value = recorded_option(run, key, defaults)
        order.append((0, value, "") if finite_number(value) else (1, 0, option_text(value)))
    return tuple(order)


def split(runs: list[dict], keys: list[str], defaults: dict) -> list[list[dict]]:
    """`runs` parted by their values of `keys`, in the order of those values."""
    parts = defaultdict(list)
    for run in runs:
        parts[tuple(recipe_value(run, key, defaults) for key in keys)].append(run)
    return sorted(parts.values(), key=lambda part: value_order(part[0], keys, defaults))


def variant_label(method: str, named: list[tuple[str, str]]) -> str:
    """`method` with the (option, value) pairs that set its group apart: "FlipOut (lr 0.05)",
    "FlipOut (no noise; lr 0.05)"; `method` itself without any."""
    if not named:
        return method
    what = ", ".join(f"{key} {value}" for key, value in named)
    return f"{method[:-1]}; {what})" if method.endswith(")") else f"{method} ({what})"


@dataclass(frozen=True)
class Grouping:
    """The report's rows, and how the completed runs were grouped into them."""

    rows: list[Row]
    splits: tuple[str, ...] = ()  # "FlipOut by lr": each method of several recipes, and how

    @property
    def groups(self) -> int:
        """Groups of runs, each one method's of one recipe on one network: a label of a table
        and a curve of a plot."""
        return len({(row.model, row.dataset, row.method) for row in self.rows})

    def line(self) -> str:
        """The report's line that says how it grouped the runs."""
        groups = f"{self.groups} group{'' if self.groups == 1 else 's'} of runs"
        if not self.splits:
            return f"{groups} (rows keyed by recipe; no method split)."
        methods = f"{len(self.splits)} method{'' if len(self.splits) == 1 else 's'}"
        return f"{groups} (rows keyed by recipe; {methods} split: {'; '.join(self.splits)})."


def grouping(summaries: Iterable[dict], metric: str = "final") -> Grouping:
    """The completed runs as rows, one per (model, dataset, method, recipe, sparsity level), with
    the test accuracy `metric` names, ordered by (model, dataset), then paper order of methods,
    then recipe, then increasing sparsity; and the methods that their recipes split."""
    by_method = defaultdict(list)
    for summary in summaries:
        if summary["status"] == "completed":
            by_method[(network(summary), summary["dataset"], method_label(summary))].append(summary)
    keyed_rows, splits = [], []
    for (_, _, method), runs in by_method.items():
        rows, keys = method_rows(method, runs, metric)
        keyed_rows += rows
        if keys:  # named in the order of the tables
            splits.append((min(order for order, _ in rows), f"{method} by {', '.join(keys)}"))
    keyed_rows.sort(key=lambda pair: pair[0])
    named = dict.fromkeys(text for _, text in sorted(splits, key=lambda split: split[0]))
    return Grouping([row for _, row in keyed_rows], tuple(named))


def method_rows(method: str, runs: list[dict], metric: str) -> tuple[list[tuple], list[str]]:
    """The rows of one method's runs on one (model, dataset), each after its sort key, and the
    options that tell its groups apart (none where all its runs are of one recipe): those of
    the recipe that differ between its runs, and those of LEVEL_OPTIONS that differ between runs
    of one sparsity level, which set that level's rows apart."""
    defaults = recipe_defaults(runs)
    recipe = varying(runs, [key for key in defaults if key not in LEVEL_OPTIONS], defaults)
    level_keys = [key for key in defaults if key in LEVEL_OPTIONS]
    keyed_rows, keys = [], set(recipe)
    for curve in split(runs, recipe, defaults):
        for level in sparsity_levels(curve):
            apart = varying(level, level_keys, defaults)
            keys.update(apart)
            for point in split(level, apart, defaults):
                named = [
                    (key, one_line(option_text(recorded_option(point[0], key, defaults))))
                    for key in [*recipe, *apart]
                ]
                row = level_row(point, metric, variant_label(method, named))
                order = (row.model, row.dataset, method_sort_key(point[0]),
                         value_order(point[0], recipe, defaults), row.sparsity_mean,
                         value_order(point[0], apart, defaults))  # fmt: skip
                keyed_rows.append((order, row))
    return keyed_rows, sorted(keys, key=lambda key: (len(key), key))


def group_runs(summaries: Iterable[dict], metric: str = "final") -> list[Row]:
    """The rows of `grouping`: one per (model, dataset, method, recipe, sparsity level)."""
    return grouping(summaries, metric).rows


def level_row(level: list[dict], metric: str = "final", method: str | None = None) -> Row:
    """The Row of completed runs of one method at one sparsity level: their mean sparsity and
    the mean and sample std of their test accuracy `metric`, labelled `method` (the method's
    own label by default)."""
    accuracies = [run[METRICS[metric][0]] for run in level]
    return Row(
        model=network(level[0]),
        dataset=level[0]["dataset"],
        method=method_label(level[0]) if method is None else method,
        sparsity_mean=100 * statistics.mean(run["final_sparsity"] for run in level),
        accuracy_mean=statistics.mean(accuracies),
        accuracy_std=statistics.stdev(accuracies) if len(accuracies) > 1 else None,
        n=len(level),
        metric=metric,
        flops_remaining_mean=flops_remaining_percent(level),
    )


def mean_std(mean: float, std: float | None, n: int) -> str:
    """`mean ± std (n=k)`, without the ± where a single run has no sample std."""
    spread = "" if std is None else f" ± {std:.2f}"
    return f"{mean:.2f}{spread} (n={n})"


def table_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_head(header: list[str]) -> list[str]:
    return [table_line(header), "|---" * len(header) + "|"]


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
            runs.append(IncompleteRun(path.parent, method_label(summary), seed, status, epochs))
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


def write_dicts_csv(columns: list[str], lines: list[dict], path: Path) -> None:
    """`lines` under `columns` (a key a line lacks is an empty cell, one not in `columns` left
    out), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    write_text_atomic(Path(path), buffer.getvalue())


def nines(sparsity_percent: float) -> float:
    """Plot position: 90% -> 1, 99% -> 2, 99.9% -> 3, so that 75% .. 99.9% spread evenly.
    Clamped so that a fully pruned model stays on the axis instead of at infinity."""
    return -math.log10(max(1 - sparsity_percent / 100, 1e-6))


def readable_ticks(sparsities: list[float]) -> list[float]:
    """The measured sparsities, dropping any that would print on top of the previous one."""
    ticks: list[float] = []
    for sparsity in sorted(sparsities):
        if not ticks or nines(sparsity) - nines(ticks[-1]) >= 0.15:
            ticks.append(sparsity)
    return ticks


@dataclass(frozen=True)
class Curve:
    """One line of a panel: a method's accuracy at each of its sparsities (percent)."""

    method: str  # the method's label, which pairs our curve with the paper's
    sparsity: tuple[float, ...]
    accuracy: tuple[float, ...]
    spread: tuple[float, ...]  # error bars: the sample std, 0 where there is none
    paper: bool = False  # the published curve, drawn dashed beside ours

    @property
    def label(self) -> str:
        return f"{self.method} (paper)" if self.paper else self.method


@dataclass(frozen=True)
class Level:
    """A horizontal line across a panel: an unpruned network's accuracy."""

    method: str
    accuracy: float
    spread: float
    paper: bool = False

    @property
    def label(self) -> str:
        return f"{self.method} (paper)" if self.paper else self.method


@dataclass
class Panel:
    """One subplot: a (model, dataset)'s curves and horizontal lines, what a plot shows."""

    model: str
    dataset: str
    metric: str
    curves: list[Curve]
    levels: list[Level]
    note: str = ""  # a second title line, e.g. what the dashed curves are

    @property
    def title(self) -> str:
        return f"{self.model} on {self.dataset}" + (f"\n{self.note}" if self.note else "")


def curve_of(rows: list[Row], paper: bool = False) -> Curve:
    """The rows of one method as a curve, by increasing sparsity."""
    rows = sorted(rows, key=lambda row: row.sparsity_mean)
    return Curve(
        method=rows[0].method,
        sparsity=tuple(row.sparsity_mean for row in rows),
        accuracy=tuple(row.accuracy_mean for row in rows),
        spread=tuple(row.accuracy_std or 0.0 for row in rows),
        paper=paper,
    )


def panel_of(rows: list[Row], methods: Iterable[str] | None = None) -> Panel:
    """One (model, dataset)'s rows as a panel: a curve per method label, so one per group of
    runs (all, or those in `methods`), the dense network's as a horizontal line (one per
    recipe, where its runs are of several)."""
    dense = CRITERIA["none"].label
    wanted = None if methods is None else set(methods)
    curves, levels = [], []
    for method in dict.fromkeys(row.method for row in rows):  # paper order, once each
        points = [row for row in rows if row.method == method]
        if method == dense or method.startswith(f"{dense} ("):
            [row, *_] = points
            levels.append(Level(method, row.accuracy_mean, row.accuracy_std or 0.0))
        elif wanted is None or method in wanted:
            curves.append(curve_of(points))
    return Panel(rows[0].model, rows[0].dataset, rows[0].metric, curves, levels)


def by_pair(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    """The rows of each (model, dataset), in table order."""
    pairs: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        pairs.setdefault((row.model, row.dataset), []).append(row)
    return pairs


def accuracy_panels(rows: list[Row], paper: bool = False) -> list[Panel]:
    """The accuracy-vs-sparsity plot: a panel for every (model, dataset) where some method has
    several sparsity levels (with `paper`, also for every network of the paper), with every
    method's curve and the dense network as a line. Where the noise ablation has its own panel
    (noise_panels), its variants are drawn there, not here."""
    ablated = {(panel.model, panel.dataset) for panel in noise_panels(rows)}
    variants = set(noise_ablation_methods().values())
    rows = [r for r in rows if (r.model, r.dataset) not in ablated or r.method not in variants]
    levels = Counter((row.model, row.dataset, row.method) for row in rows)
    networks = paper_networks() if paper else set()
    return [
        panel_of(pair_rows)
        for (model, dataset), pair_rows in by_pair(rows).items()
        if model in networks or any(levels[(model, dataset, row.method)] > 1 for row in pair_rows)
    ]


def paper_networks() -> set[str]:
    from experiments.published import load

    return set(load().networks)


def noise_ablation_methods() -> dict[str, str]:
    """The noise ablation's pairs: each method as the paper runs it -> its other noise setting."""
    return {
        method_label({"prune_criterion": name, "options": {}}): method_label(
            {"prune_criterion": name, "options": {"noise": name not in NOISY_BY_DEFAULT}}
        )
        for name in ("flipout", "global_magnitude")
    }


def noise_panels(rows: list[Row]) -> list[Panel]:
    """The noise-ablation plot: a panel for every (model, dataset) with runs of a method both as
    the paper runs it and with the other noise setting (FlipOut without its noise,
    GlobalMagnitude with noise), with both settings of both methods."""
    pairs = noise_ablation_methods()
    methods = [*pairs, *pairs.values()]
    panels = []
    for pair_rows in by_pair(rows).values():
        present = {row.method for row in pair_rows}
        if any(plain in present and variant in present for plain, variant in pairs.items()):
            panels.append(panel_of(pair_rows, methods))
    return panels


def draw(panels: list[Panel], path: Path) -> Path | None:
    """Write the panels side by side as one PNG; None, and nothing written, without panels.
    Our curves are solid with error bars of one sample std; the paper's dashed, in the colour of
    ours of the same method; horizontal lines for the unpruned networks. Where a panel's
    accuracies span more than ZOOM_SPAN points, a second row shows its top ZOOM_SPAN points,
    where methods that did not collapse differ by tenths."""
    if not panels:
        return None
    # the Agg canvas directly rather than pyplot: no display, and no global figure state to leak
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    zoomed = [accuracy_span(panel) > ZOOM_SPAN for panel in panels]
    rows = 2 if any(zoomed) else 1
    figure = Figure(figsize=(6.5 * len(panels), 4.8 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, len(panels), squeeze=False)
    for column, panel in enumerate(panels):
        draw_panel(grid[0][column], panel)
        if rows == 2 and zoomed[column]:
            draw_panel(grid[1][column], panel, zoom=True)
        elif rows == 2:
            grid[1][column].set_axis_off()
    keyword, mark = PNG_MARK  # what makes the file recognisably ours (experiments/files.py)
    write_atomic(
        Path(path),
        lambda file: figure.savefig(file, format="png", dpi=150, metadata={keyword: mark}),
    )
    return Path(path)


def accuracy_span(panel: Panel) -> float:
    values = [value for curve in panel.curves for value in curve.accuracy]
    values += [level.accuracy for level in panel.levels]
    return max(values) - min(values) if values else 0.0


def draw_panel(axes, panel: Panel, zoom: bool = False) -> None:
    methods = list(dict.fromkeys(curve.method for curve in panel.curves))
    colours = {method: f"C{index % 10}" for index, method in enumerate(methods)}
    for curve in panel.curves:
        axes.errorbar(
            [nines(value) for value in curve.sparsity],
            curve.accuracy,
            yerr=curve.spread,
            color=colours[curve.method],
            linestyle="--" if curve.paper else "-",
            marker="s" if curve.paper else "o",
            markerfacecolor="none" if curve.paper else None,
            alpha=0.8 if curve.paper else 1.0,
            capsize=3,
            label=curve.label,
        )
    for level in panel.levels:
        colour = "black" if level.paper else "dimgray"
        axes.axhline(level.accuracy, color=colour, linestyle="--" if level.paper else "-",
                     linewidth=1, label=level.label)  # fmt: skip
    # ticks at the curves' levels: a lone point elsewhere would crowd out a level's label
    swept = [value for curve in panel.curves if len(curve.sparsity) > 1 for value in curve.sparsity]
    ticks = readable_ticks(swept or [value for curve in panel.curves for value in curve.sparsity])
    labels = [f"{tick:.2f}".rstrip("0").rstrip(".") for tick in ticks]
    axes.set_xticks([nines(tick) for tick in ticks], labels, rotation=45 if len(ticks) > 5 else 0)
    axes.set_xlabel("Sparsity (%)")
    axes.set_ylabel(METRICS[panel.metric][2])
    axes.grid(alpha=0.3)
    if zoom:
        top = max(
            [v for c in panel.curves for v in c.accuracy] + [v.accuracy for v in panel.levels]
        )
        axes.set_ylim(top - ZOOM_SPAN, top + 1)
        axes.set_title(f"the top {ZOOM_SPAN:g} points", fontsize="small")
        return
    axes.set_title(panel.title, fontsize="medium")
    axes.legend(fontsize="x-small")


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


def write_plots(rows: list[Row], directory: Path, paper: bool) -> list[Path]:
    """accuracy_vs_sparsity.png and noise_ablation.png where they have panels; with `paper`,
    a panel for every network of the paper, the paper's curves dashed beside ours. A runs folder
    that refuses the files is a note, not a failure: the plots were not asked for."""
    written = []
    figures = [(PLOT_NAME, accuracy_panels(rows, paper)), (NOISE_PLOT_NAME, noise_panels(rows))]
    for name, panels in figures:
        if paper:
            from experiments.paper import with_paper

            panels = with_paper(panels)
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
        from experiments import paper

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
