"""The rows of the report: completed runs grouped by (model, dataset), then by method and recipe,
and each group's runs at one sparsity level as one Row, in the paper's order of methods; and the
markdown and CSV pieces the report's tables are made of. experiments/report.py says how the
grouping reads; a method's label is pruning.registry.method_label's."""

import csv
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from experiments.values import finite_number, one_line
from pruning.registry import HOYER_SQUARE, compact_number, is_hoyer_square, method_label
from utils.io import write_text_atomic

# runs of one method whose final sparsities (fractions) lie this close belong to one level
SPARSITY_TOLERANCE = 0.0005

# main.py records options as plain values and lists of them; a damaged file may nest deeper
MAX_NESTING = 8

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
    "Taylor",
    # dynamic sparse training
    "RigL",
    "SET",
    "GraNet",
    "Dense",
]

# --metric -> (summary.json key, table column, plot axis)
METRICS = {
    "final": ("final_test_acc", "Accuracy (%)", "Test accuracy (%)"),
    "best": ("best_test_acc", "Best accuracy (%)", "Best test accuracy (%)"),
}


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
    # mean training FLOPs, and as a multiple of the same steps' dense ones (0.42: 42%); None when
    # no run of the group records them (runs of versions before summary.json's train_flops)
    train_flops_mean: float | None = None
    train_flops_vs_dense: float | None = None
    # the training recipe its runs share (the network's, the data's and the training's options of
    # the RECIPE role, record.py), apart from the method: rows compare only where it is the same.
    # Not a column of the CSV.
    training: tuple = field(default=(), compare=False)


def option(summary: dict, name: str):
    """A training option as the summary records it; None where an older summary lacks it."""
    return (summary.get("options") or {}).get(name)


def method_of(summary: dict) -> str:
    """The label of a run's method (pruning.registry.method_label)."""
    return method_label(summary["prune_criterion"], summary.get("options") or {})


def method_sort_key(summary: dict) -> tuple:
    """Paper order; Hoyer-Square rows by λ; methods the paper does not have last, alphabetically."""
    label = method_of(summary)
    if option(summary, "nm"):  # "FlipOut 2:4" right after the same method unconstrained
        unconstrained = {**summary, "options": {**summary["options"], "nm": None}}
        return (*method_sort_key(unconstrained), label)
    if is_hoyer_square(summary["prune_criterion"], summary.get("options") or {}):
        return (
            PAPER_ORDER.index(HOYER_SQUARE),
            float(option(summary, "hoyer_lambda") or 0.0),
            label,
        )
    if label in PAPER_ORDER:
        return (PAPER_ORDER.index(label), 0.0, label)
    # a variant ("IMP (rewind to epoch 1)", "FlipOut (gradual)", "GlobalMagnitude + noise")
    # right after its method
    base = label.split(" (")[0].split(" + ")[0]
    if base in PAPER_ORDER:
        return (PAPER_ORDER.index(base), 0.5, label)
    return (len(PAPER_ORDER), 0.0, label)


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


def train_flops(runs: list[dict]) -> tuple[float | None, float | None]:
    """The mean training FLOPs of the runs that record them, and their mean multiple of the
    dense FLOPs of the same steps (None, None where none does)."""
    counted = [
        run for run in runs if run.get("train_flops_dense") and run.get("train_flops") is not None
    ]
    if not counted:
        return None, None
    return (
        statistics.mean(run["train_flops"] for run in counted),
        statistics.mean(run["train_flops"] / run["train_flops_dense"] for run in counted),
    )


def network(summary: dict) -> str:
    """The network of a run as its command line named it: -m, with --model_kwargs where given (a
    timm ViT cut small is another network than the one its name describes)."""
    kwargs = option(summary, "model_kwargs")
    return f"{summary['model']} ({' '.join(kwargs)})" if kwargs else summary["model"]


def recipe_defaults(runs: list[dict]) -> dict:
    """The options of the recipe of `runs`, each with its default: every option of a run's
    identity (experiments/runs.py), and every option their summaries record that this version's
    parser does not know (one of a criterion registered from a researcher's own module, whose
    default is unknown here: None), less those of the roles (record.py) that are no part of a
    recipe: the seed and how the same training is computed (NEUTRAL), where and how a run ran
    (MACHINE) and its name (NAMING), which its summary records too."""
    from record import Role, identity_defaults, keys_with

    recorded = sorted({key for run in runs for key in run.get("options") or {}})
    left_out = set(keys_with(Role.NEUTRAL, Role.MACHINE, Role.NAMING))
    defaults = identity_defaults()
    keys = dict.fromkeys([*defaults, *recorded])
    return {key: defaults.get(key) for key in keys if key not in left_out}


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
            by_method[(network(summary), summary["dataset"], method_of(summary))].append(summary)
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
    the recipe that differ between its runs, and those of the LEVEL role (record.py: how far a
    method prunes, part of no recipe, so that they never cut a curve into points) that differ
    between runs of one sparsity level, which set that level's rows apart."""
    from record import Role, keys_with

    defaults, levels = recipe_defaults(runs), set(keys_with(Role.LEVEL))
    recipe = varying(runs, [key for key in defaults if key not in levels], defaults)
    level_keys = [key for key in defaults if key in levels]
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
                row = replace(
                    level_row(point, metric, variant_label(method, named)),
                    training=training_recipe(point[0]),
                )
                order = (row.model, row.dataset, method_sort_key(point[0]),
                         value_order(point[0], recipe, defaults), row.sparsity_mean,
                         value_order(point[0], apart, defaults))  # fmt: skip
                keyed_rows.append((order, row))
    return keyed_rows, sorted(keys, key=lambda key: (len(key), key))


def training_recipe(summary: dict) -> tuple:
    """The run's options that set how the network is trained, the method's aside: those of the
    RECIPE role in the model, data and train sections of the record, as (key, value) pairs."""
    from record import Role, specs

    options = summary.get("options") or {}
    return tuple(
        (key, comparable(options.get(key)))
        for key, spec in sorted(specs().items())
        if spec.section in ("model", "data", "train") and spec.role is Role.RECIPE
    )


def comparable(value) -> str:
    """An option's value as text that is equal where the values are; one text for every value
    that cannot be written (nested beyond reason, not JSON)."""
    try:
        return json.dumps(value, sort_keys=True)
    except (RecursionError, TypeError, ValueError):
        return "<unreadable>"


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
        method=method_of(level[0]) if method is None else method,
        sparsity_mean=100 * statistics.mean(run["final_sparsity"] for run in level),
        accuracy_mean=statistics.mean(accuracies),
        accuracy_std=statistics.stdev(accuracies) if len(accuracies) > 1 else None,
        n=len(level),
        metric=metric,
        flops_remaining_mean=flops_remaining_percent(level),
        **dict(zip(("train_flops_mean", "train_flops_vs_dense"), train_flops(level), strict=True)),
    )


def mean_std(mean: float, std: float | None, n: int) -> str:
    """`mean ± std (n=k)`, without the ± where a single run has no sample std."""
    spread = "" if std is None else f" ± {std:.2f}"
    return f"{mean:.2f}{spread} (n={n})"


def table_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_head(header: list[str]) -> list[str]:
    return [table_line(header), "|---" * len(header) + "|"]


def write_dicts_csv(columns: list[str], lines: list[dict], path: Path) -> None:
    """`lines` under `columns` (a key a line lacks is an empty cell, one not in `columns` left
    out), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    write_text_atomic(Path(path), buffer.getvalue())
