"""The report's rows are keyed by recipe: runs of one method that differ in an option that changes
what is trained land in rows of their own, labelled with what differs, in the tables, the CSV,
the plots and `status --report`; a normal sweep's report is as it always was."""

import csv
import functools
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from experiments import plots, report
from experiments import rows as report_rows
from experiments.runs import resolve_all
from experiments.sweeps import SWEEPS, Sweep
from pruning import CRITERIA, Criterion
from pruning.options import Bounded, option
from tests.support.launcher import in_process

# what main.py draws at each run's start, which tells copies of a run from runs of one identity
RUN_IDS = (f"run{index}" for index in itertools.count())
# a damaged file's option, nested far deeper than Python's recursion limit
DEEP = functools.reduce(lambda inner, _: [inner], range(5000), [])


@dataclass
class Lowest(Criterion):
    """The criterion docs/library.md adds: an option of its own, and a registry line."""

    power: float = option("lowest_power", Bounded(float, above=0), 1.0, "score |w|^power")
    label = "Lowest power"

    def scores(self, inputs) -> dict[str, torch.Tensor]:
        return {name: w.detach().abs() ** self.power for name, w in inputs.params.items()}


def final_sparsity(options: dict) -> float:
    """The sparsity a run of these options reaches, as main.py's schedules would: a target, or
    `rate` of the live weights at each scheduled prune before the last epoch."""
    # GraNet starts at init_sparsity and ends at its own target
    target = options["granet_sparsity"] or options["snip_sparsity"] or options["init_sparsity"]
    target = target or options["target_sparsity"]
    if target:
        return float(target)
    if options["prune_criterion"] == "none":
        return 0.0
    if options["add_hs"]:
        return 0.9975  # Hoyer-Square's follows from its λ
    prunes = options["rounds"] - 1 if options["prune_criterion"] == "imp" else None
    last = options["epochs"] - 1  # the last epoch a prune may follow (stop_pruning_at: -1 never)
    if options["stop_pruning_at"] > 0:
        last = min(last, options["stop_pruning_at"] - 1)
    prunes = prunes or last // options["prune_freq"]
    return 1 - (1 - options["prune_rate"]) ** prunes


def fabricate(root: Path, argv: list[str], accuracy: float) -> dict:
    """A completed run of main.py's `argv` below `root`, as main.py leaves it: its config.json
    and its summary.json, with the options main.py's parser resolves."""
    [run] = resolve_all([argv], root)
    options = run.options
    summary = {
        "model": options["model"], "dataset": options["dataset"],
        "prune_criterion": options["prune_criterion"], "seed": options["seed"],
        "epochs": run.total_epochs, "epochs_completed": run.total_epochs, "status": "completed",
        "final_test_acc": accuracy, "best_test_acc": accuracy, "run_id": next(RUN_IDS),
        "final_sparsity": final_sparsity(options), "options": options,
    }  # fmt: skip
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.json").write_text(json.dumps(run.options))
    (run.run_dir / "summary.json").write_text(json.dumps(summary))
    return summary


def digits(seed: int, *flags: str) -> list[str]:
    """main.py's arguments for a run on digits; FlipOut as the paper runs it, with its noise."""
    noise = [] if "--prune_criterion" in flags else ["--noise"]
    return ["-d", "digits", "-e", "20", "--seed", str(seed), "--logdir", "groups", *noise, *flags]


def table(out: str) -> list[tuple[str, str]]:
    """(method, accuracy) of each line of the report's tables."""
    lines = [line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith("| ")]
    return [(cells[0], cells[2]) for cells in lines if cells[0] != "Method"]


def the_issues_runs(root: Path, monkeypatch, registered: bool) -> None:
    """The issue's directory: the criterion docs/library.md adds, at two values of its own
    option and two learning rates, beside FlipOut at one. `registered` in the registry as the
    recipe says (the report's parser knows the option), or else by the researcher's own module
    in the process that trained (the report's does not)."""
    with monkeypatch.context() as training:
        training.setitem(CRITERIA, "lowest", Lowest)
        for accuracy, lr, power in [(95.0, "0.1", "1"), (61.0, "0.1", "3"),
                                    (94.0, "0.05", "1"), (64.0, "0.05", "3")]:  # fmt: skip
            # a folder each, as a sweep's runs are
            fabricate(root / f"lowest_power_{power}", digits(0, "-lr", lr, "--prune_criterion",
                      "lowest", "--lowest_power", power), accuracy)  # fmt: skip
        for seed in (0, 1):
            fabricate(root, digits(seed, "-lr", "0.1"), 90.0 + seed)
    if registered:
        monkeypatch.setitem(CRITERIA, "lowest", Lowest)


@pytest.mark.parametrize(("registered", "method"), [(True, "Lowest power"), (False, "lowest")])
def test_the_issues_runs_are_four_rows_named_by_what_differs(
    registered, method, tmp_path, monkeypatch, capsys
):
    the_issues_runs(tmp_path, monkeypatch, registered)
    assert report.main([str(tmp_path), "--csv", str(tmp_path / "rows.csv")]) == 0
    out = capsys.readouterr().out
    # not "78.47 ± 24.36 (n=4)": a row per recipe, lr first (the shorter name), lr by size
    assert table(out) == [
        ("FlipOut", "90.50 ± 0.71 (n=2)"),
        (f"{method} (lr 0.05, lowest_power 1)", "94.00 (n=1)"),
        (f"{method} (lr 0.05, lowest_power 3)", "64.00 (n=1)"),
        (f"{method} (lr 0.1, lowest_power 1)", "95.00 (n=1)"),
        (f"{method} (lr 0.1, lowest_power 3)", "61.00 (n=1)"),
    ]
    line = f"5 groups of runs (rows keyed by recipe; 1 method split: {method} by lr, lowest_power)."
    assert line in out.splitlines()
    # the CSV carries the labels under the columns it always had
    with open(tmp_path / "rows.csv", newline="", encoding="utf-8") as file:
        lines = list(csv.DictReader(file))
    assert ",".join(lines[0]) == report.CSV_MARK
    assert [(line["method"], line["n"]) for line in lines][1:3] == [
        (f"{method} (lr 0.05, lowest_power 1)", "1"),
        (f"{method} (lr 0.05, lowest_power 3)", "1"),
    ]


@pytest.mark.parametrize(
    "sweep", ["vgg19_cifar10", "vgg19_cifar10_sweep", "vgg19_cifar10_figures", "digits_demo",
              "digits_baselines"],
)  # fmt: skip
def test_a_normal_sweeps_rows_keep_their_labels(sweep, tmp_path):
    """The rows of a sweep are those of the report before it keyed rows by recipe (a row per
    method and sparsity level, labelled by the method), though the ladder's levels differ in
    --prune_freq and SNIP's in its sparsity."""
    commands = SWEEPS[sweep].commands((0, 1, 2))
    summaries = [fabricate(tmp_path, argv, 80.0 + index % 3) for index, argv in enumerate(commands)]
    methods = {}
    for summary in summaries:
        methods.setdefault(report_rows.method_of(summary), []).append(summary)
    before = [report_rows.level_row(level) for runs in methods.values()
              for level in report_rows.sparsity_levels(runs)]  # fmt: skip
    before.sort(
        key=lambda row: (report_rows.method_sort_key(methods[row.method][0]), row.sparsity_mean)
    )
    grouped = report_rows.grouping(summaries)
    assert grouped.rows == before
    assert [row.n for row in grouped.rows] == [3] * (len(commands) // 3)
    assert (
        grouped.line() == f"{len(methods)} groups of runs (rows keyed by recipe; no method split)."
    )


def test_the_dynamic_miniature_sets_rigl_and_set_5x_apart_by_their_epochs(tmp_path):
    commands = SWEEPS["digits_dynamic"].commands((0, 1, 2))
    grouped = report_rows.grouping([fabricate(tmp_path, argv, 90.0) for argv in commands])
    assert grouped.splits == ("RigL by epochs", "SET by epochs")
    runs = ((20, 93.75), (20, 99.61), (100, 99.61))  # (epochs, level): RigL 5x at 99.61%
    both = [
        (method, level, 3) for method in ("FlipOut", "GlobalMagnitude") for level in (93.75, 99.61)
    ]
    # in the report's order: the paper's methods, then the dynamic sparse ones
    assert [(row.method, round(row.sparsity_mean, 2), row.n) for row in grouped.rows] == [
        *both,
        *[(f"{method} (epochs {e})", level, 3) for method in ("RigL", "SET") for e, level in runs],
        ("GraNet", 93.75, 3), ("GraNet", 99.61, 3),
    ]  # fmt: skip


def two_rates(root: Path) -> list[dict]:
    """FlipOut at two sparsity levels and the dense network, each at lr 0.1 and 0.05, 2 seeds."""
    summaries = []
    for lr in ("0.1", "0.05"):
        for seed in (0, 1):
            accuracy = 90.0 if lr == "0.1" else 80.0
            for level in ("--prune_freq", "7"), ("--prune_freq", "3"):
                summaries.append(fabricate(root, digits(seed, "-lr", lr, *level), accuracy))
            dense = digits(seed, "-lr", lr, "--prune_criterion", "none")
            summaries.append(fabricate(root, dense, accuracy + 5))
    return summaries


def test_the_plot_draws_a_curve_and_a_dense_line_per_group(tmp_path):
    [panel] = plots.accuracy_panels(report_rows.group_runs(two_rates(tmp_path)))
    assert [(curve.method, curve.sparsity, curve.accuracy) for curve in panel.curves] == [
        ("FlipOut (lr 0.05)", (75.0, pytest.approx(98.4375)), (80.0, 80.0)),
        ("FlipOut (lr 0.1)", (75.0, pytest.approx(98.4375)), (90.0, 90.0)),
    ]
    assert [(level.method, level.accuracy) for level in panel.levels] == [
        ("Dense (lr 0.05)", 85.0),
        ("Dense (lr 0.1)", 95.0),
    ]


def test_status_report_splits_the_rows_as_the_report_does(tmp_path, monkeypatch, capsys):
    def commands(seeds):
        return [["-d", "digits", "-e", "20", "--noise", "-lr", lr, "--seed", str(seed),
                 "--logdir", "lrs"] for lr in ("0.1", "0.05") for seed in seeds]  # fmt: skip

    monkeypatch.setitem(SWEEPS, "lrs", Sweep("lrs", "FlipOut at two learning rates", commands))
    monkeypatch.chdir(tmp_path)
    for index, argv in enumerate(commands((0, 1, 2))):
        fabricate(tmp_path / "runs", argv, 80.0 + index)
    code, out, _ = in_process(capsys, "status", "lrs", "--report")
    assert code == 0 and "lrs: 6 completed (of 6)" in out
    assert table(out) == [("FlipOut (lr 0.05)", "84.00 ± 1.00 (n=3)"),
                          ("FlipOut (lr 0.1)", "81.00 ± 1.00 (n=3)")]  # fmt: skip
    assert "2 groups of runs (rows keyed by recipe; 1 method split: FlipOut by lr)." in out


@pytest.mark.parametrize(
    ("first", "second", "rows"),
    [
        # an older summary without the option counts as its default
        ({"lr": None}, {}, [("FlipOut", 2)]),
        ({"lr": None}, {"lr": 0.05}, [("FlipOut (lr 0.05)", 1), ("FlipOut (lr 0.1)", 1)]),
        # equal numbers are one value, whatever the file's spelling
        ({"epochs": 20.0, "milestones": [150.0, 250]}, {}, [("FlipOut", 2)]),
        # how the same training is computed, evaluated, named or placed: one recipe
        ({"amp": True, "test_batch_size": 1000, "channels_last": True}, {}, [("FlipOut", 2)]),
        ({"comment": "a", "device": "cuda", "num_workers": 4}, {"comment": "b"}, [("FlipOut", 2)]),
        # numbers by size, not as text
        ({"epochs": 4}, {"epochs": 10}, [("FlipOut (epochs 4)", 1), ("FlipOut (epochs 10)", 1)]),
        # the shortest name first
        ({"momentum": 0.5}, {"lr": 0.05},
         [("FlipOut (lr 0.05, momentum 0.9)", 1), ("FlipOut (lr 0.1, momentum 0.5)", 1)]),
        # one the version reading them does not know: a recorded value beside none
        ({"own_option": 2}, {}, [("FlipOut (own_option 2)", 1), ("FlipOut (own_option none)", 1)]),
        # a value no run records, compared and shown without recursing into it
        ({"lr": DEEP}, {}, [("FlipOut (lr 0.1)", 1), ("FlipOut (lr (nested too deeply))", 1)]),
        # a label with a variant of its own takes what differs inside its parentheses
        ({"noise": False, "lr": 0.05}, {"noise": False},
         [("FlipOut (no noise; lr 0.05)", 1), ("FlipOut (no noise; lr 0.1)", 1)]),
    ],
)  # fmt: skip
def test_two_runs_share_a_row_exactly_when_their_recipes_are_one(first, second, rows, tmp_path):
    summaries = []
    for seed, changes in enumerate((first, second)):
        summary = fabricate(tmp_path, digits(seed), 80.0)
        options = {**summary["options"], **changes}
        summaries.append(
            {**summary, "options": {k: v for k, v in options.items() if v is not None}}
        )
    assert [(row.method, row.n) for row in report_rows.group_runs(summaries)] == rows


def test_level_options_split_no_curve_but_the_runs_of_one_level(tmp_path):
    """The ladder's prune_freq moves runs along one curve; two schedules that reach one level
    (half the weights every 3 epochs, or 3/4 every 6: 98.44% both) are rows apart there."""
    summaries = [fabricate(tmp_path, digits(seed, "--prune_freq", freq), 80.0)
                 for seed in (0, 1) for freq in ("7", "4", "3")]  # fmt: skip
    summaries.append(
        fabricate(tmp_path, digits(0, "--prune_freq", "6", "--prune_rate", "0.75"), 70)
    )
    grouped = report_rows.grouping(summaries)
    assert [(row.method, round(row.sparsity_mean, 2), row.n) for row in grouped.rows] == [
        ("FlipOut", 75.0, 2),
        ("FlipOut", 93.75, 2),
        ("FlipOut (prune_freq 3, prune_rate 0.5)", 98.44, 2),
        ("FlipOut (prune_freq 6, prune_rate 0.75)", 98.44, 1),
    ]
    assert grouped.line() == (
        "3 groups of runs (rows keyed by recipe; 1 method split: FlipOut by prune_freq, "
        "prune_rate)."
    )
