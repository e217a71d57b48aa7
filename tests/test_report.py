"""The results report, run in-process on hand-written summary.json files in nested run folders."""

import csv
import json
import statistics

import pytest
from scipy import stats

from experiments.report import load_summaries, main, train_flops_cell
from experiments.rows import Row, group_runs
from pruning.registry import compact_number

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_summary(root, run, **fields):
    """A completed vgg19/cifar10 FlipOut run at 99.9% sparsity in `root/run`, with `fields` and
    `options` (merged into the default options) overriding those defaults."""
    summary = {
        "model": "vgg19",
        "dataset": "cifar10",
        "prune_criterion": "flipout",
        "seed": 0,
        "epochs": 350,
        "status": "completed",
        "epochs_completed": 350,
        "final_test_acc": 87.0,
        "best_test_acc": 88.0,
        "final_sparsity": 0.999,
        "options": {"add_hs": False, "hoyer_lambda": 0.0, "prune_rate": 0.5},
    }
    summary["options"].update(fields.pop("options", {}))
    summary.update(fields)
    folder = root / run
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder / "summary.json"


def report(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def hoyer(lam):
    return {"prune_criterion": "threshold", "options": {"add_hs": True, "hoyer_lambda": lam}}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (6e-5, "6e-5"),
        (1e-4, "1e-4"),
        (3e-4, "3e-4"),
        (0.0003, "3e-4"),
        (0.001, "1e-3"),
        (2.5e-4, "2.5e-4"),
        (0.0, "0"),
        (0.5, "0.5"),
    ],
)
def test_compact_number(value, expected):
    assert compact_number(value) == expected


def test_three_seeds_become_one_row_with_mean_and_sample_std(tmp_path, capsys):
    accuracies = [87.1, 87.5, 87.6]
    sparsities = [0.9990, 0.9991, 0.9989]
    for seed, (accuracy, sparsity) in enumerate(zip(accuracies, sparsities, strict=True)):
        write_summary(
            tmp_path,
            f"vgg/seed{seed}",
            seed=seed,
            final_test_acc=accuracy,
            final_sparsity=sparsity,
        )

    code, out, _ = report(capsys, tmp_path)

    mean, std = statistics.mean(accuracies), statistics.stdev(accuracies)
    sparsity = 100 * statistics.mean(sparsities)
    assert code == 0
    assert "### vgg19 on cifar10" in out
    assert "| Method | Sparsity (%) | Accuracy (%) |\n|---|---|---|\n" in out
    assert f"| FlipOut | {sparsity:.2f} | {mean:.2f} ± {std:.2f} (n=3) |" in out.splitlines()
    [row] = group_runs(load_summaries(tmp_path)[0].values())
    assert (row.n, row.accuracy_mean, row.accuracy_std) == (
        3,
        pytest.approx(mean),
        pytest.approx(std),
    )
    assert "did not complete" not in out
    assert not (tmp_path / "accuracy_vs_sparsity.png").exists()


def test_a_single_run_has_std_zero(tmp_path, capsys):
    write_summary(tmp_path, "one", final_test_acc=91.234)
    _, out, _ = report(capsys, tmp_path)
    assert "| FlipOut | 99.90 | 91.23 (n=1) |" in out


def test_a_network_cut_small_by_model_kwargs_is_a_table_of_its_own(tmp_path, capsys):
    vit = {"model": "timm:vit_tiny_patch16_224", "dataset": "digits"}
    write_summary(tmp_path, "small", **vit, options={"model_kwargs": ["depth=2", "patch_size=4"]})
    write_summary(tmp_path, "deeper", **vit, options={"model_kwargs": ["depth=4", "patch_size=4"]})
    _, out, _ = report(capsys, tmp_path)
    assert "### timm:vit_tiny_patch16_224 (depth=2 patch_size=4) on digits" in out
    assert "### timm:vit_tiny_patch16_224 (depth=4 patch_size=4) on digits" in out


def test_methods_in_paper_order_whatever_the_file_order(tmp_path, capsys):
    # folder names sort in roughly the reverse of the paper's order
    write_summary(tmp_path, "a/dense", prune_criterion="none", final_sparsity=0.0)
    write_summary(tmp_path, "b/threshold", prune_criterion="threshold")
    write_summary(tmp_path, "c/magnitude", prune_criterion="magnitude")
    write_summary(tmp_path, "d/hoyer_3e-4", **hoyer(3e-4))
    write_summary(tmp_path, "e/hoyer_6e-5", **hoyer(6e-5))
    write_summary(tmp_path, "f/snip", prune_criterion="snip")
    write_summary(tmp_path, "g/random", prune_criterion="random")
    write_summary(tmp_path, "h/global", prune_criterion="global_magnitude")
    write_summary(tmp_path, "i/flipout")
    write_summary(tmp_path, "j/other", prune_criterion="zzz_new")

    _, out, _ = report(capsys, tmp_path)

    methods = [line.split(" | ")[0][2:] for line in out.splitlines() if line.startswith("| ")][1:]
    assert methods == [
        "FlipOut",
        "GlobalMagnitude",
        "Random",
        "SNIP",
        "Hoyer-Square (λ=6e-5)",
        "Hoyer-Square (λ=3e-4)",
        "Magnitude",
        "Threshold",
        "Dense",
        "zzz_new",
    ]


def test_hoyer_square_with_another_criterion_is_labelled_as_an_addition(tmp_path, capsys):
    write_summary(tmp_path, "run", options={"add_hs": True, "hoyer_lambda": 1e-4})
    _, out, _ = report(capsys, tmp_path)
    assert "| FlipOut + HS (λ=1e-4) |" in out


def test_incomplete_runs_are_listed_apart_not_counted(tmp_path, capsys):
    write_summary(tmp_path, "sweep/done", final_test_acc=87.0)
    write_summary(
        tmp_path,
        "sweep/stopped",
        seed=1,
        status="interrupted",
        epochs_completed=12,
        final_test_acc=None,
    )
    write_summary(
        tmp_path, "sweep/nan", seed=2, status="diverged", epochs_completed=40, final_test_acc=10.0
    )

    code, out, _ = report(capsys, tmp_path)

    assert code == 0
    tables, incomplete = out.split("### Runs that did not complete")
    assert "| FlipOut | 99.90 | 87.00 (n=1) |" in tables
    assert "| Run | Method | Seed | Status | Epochs |" in incomplete
    assert "| sweep/nan | FlipOut | 2 | diverged | 40/350 |" in incomplete
    assert "| sweep/stopped | FlipOut | 1 | interrupted | 12/350 |" in incomplete
    assert "sweep/done" not in incomplete


def test_several_sparsities_give_rows_per_level_and_a_plot(tmp_path, capsys):
    sparsities = [0.75, 0.9375, 0.9844, 0.9961, 0.999]
    for index, sparsity in enumerate(sparsities):
        for seed in range(2):
            write_summary(
                tmp_path,
                f"flipout/s{index}_{seed}",
                seed=seed,
                final_sparsity=sparsity + seed * 0.0001,  # within one level
                final_test_acc=90 - index - seed,
            )
    write_summary(tmp_path, "random/r", prune_criterion="random", final_sparsity=0.9375)

    code, out, _ = report(capsys, tmp_path)

    plot = tmp_path / "accuracy_vs_sparsity.png"
    assert code == 0
    flipout_rows = [line for line in out.splitlines() if line.startswith("| FlipOut |")]
    expected = [f"{100 * statistics.mean([s, s + 0.0001]):.2f}" for s in sparsities]
    assert [row.split(" | ")[1] for row in flipout_rows] == expected
    assert all(row.endswith("(n=2) |") for row in flipout_rows)
    assert plot.read_bytes().startswith(PNG_MAGIC)
    assert plot.stat().st_size > 1000
    assert str(plot) in out


def test_runs_further_apart_than_the_tolerance_are_separate_levels(tmp_path, capsys):
    for name, sparsity in [("a", 0.9990), ("b", 0.9994), ("c", 0.9998)]:
        write_summary(tmp_path, name, final_sparsity=sparsity)
    rows = group_runs(load_summaries(tmp_path)[0].values())
    assert [row.n for row in rows] == [2, 1]


def test_csv_has_one_unrounded_line_per_row(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, accuracy in enumerate([87.1, 87.5, 87.6]):
        write_summary(runs, f"f{seed}", seed=seed, final_test_acc=accuracy)
    write_summary(runs, "h", final_test_acc=85.25, final_sparsity=0.99, **hoyer(6e-5))
    table = tmp_path / "out" / "results.csv"
    table.parent.mkdir()

    code, _, _ = report(capsys, runs, "--csv", table)

    assert code == 0
    with open(table, newline="", encoding="utf-8") as f:
        lines = list(csv.DictReader(f))
    assert list(lines[0]) == [
        "model",
        "dataset",
        "method",
        "sparsity_mean",
        "accuracy_mean",
        "accuracy_std",
        "n",
        "metric",
    ]
    assert [line["method"] for line in lines] == ["FlipOut", "Hoyer-Square (λ=6e-5)"]
    assert float(lines[0]["accuracy_mean"]) == pytest.approx(statistics.mean([87.1, 87.5, 87.6]))
    assert float(lines[0]["accuracy_std"]) == pytest.approx(statistics.stdev([87.1, 87.5, 87.6]))
    assert float(lines[0]["sparsity_mean"]) == pytest.approx(99.9)
    assert (lines[0]["n"], lines[1]["n"], lines[1]["accuracy_mean"]) == ("3", "1", "85.25")
    assert {line["metric"] for line in lines} == {"final"}


def test_metric_final_is_the_default_and_best_is_a_choice(tmp_path, capsys):
    for seed, (final, best) in enumerate([(87.0, 88.0), (86.0, 89.0)]):
        write_summary(tmp_path, f"r{seed}", seed=seed, final_test_acc=final, best_test_acc=best)

    _, default_out, default_err = report(capsys, tmp_path)
    _, final_out, _ = report(capsys, tmp_path, "--metric", "final")
    code, best_out, best_err = report(capsys, tmp_path, "--metric", "best", "--csv",
                                      tmp_path / "best.csv")  # fmt: skip

    assert default_out == final_out and not default_err
    assert "| Method | Sparsity (%) | Accuracy (%) |" in final_out
    assert "| FlipOut | 99.90 | 86.50 ± 0.71 (n=2) |" in final_out
    assert code == 0
    assert "| Method | Sparsity (%) | Best accuracy (%) |" in best_out
    assert "| FlipOut | 99.90 | 88.50 ± 0.71 (n=2) |" in best_out
    assert "chosen on the test set" in best_err
    with open(tmp_path / "best.csv", newline="") as f:
        [line] = csv.DictReader(f)
    assert (line["metric"], float(line["accuracy_mean"])) == ("best", 88.5)


def test_metric_best_skips_runs_that_lack_it(tmp_path, capsys):
    write_summary(tmp_path, "good")
    write_summary(tmp_path, "old", best_test_acc=None)
    _, out, _ = report(capsys, tmp_path, "--metric", "best")
    assert "| FlipOut | 99.90 | 88.00 (n=1) |" in out
    assert "- old/summary.json: completed, but best_test_acc is None" in out


def test_flops_column_when_runs_record_flops(tmp_path, capsys):
    for seed, remaining in enumerate([10, 30]):
        write_summary(tmp_path, f"r{seed}", seed=seed, flops_dense=1000, flops_remaining=remaining)
    table = tmp_path / "rows.csv"

    _, out, _ = report(capsys, tmp_path, "--flops", "--csv", table)

    assert "| Method | Sparsity (%) | Accuracy (%) | Remaining FLOPs (%) |" in out
    assert "|---|---|---|---|" in out
    assert "| FlipOut | 99.90 | 87.00 ± 0.00 (n=2) | 2.00 |" in out
    with open(table, newline="") as f:
        [line] = csv.DictReader(f)
    assert float(line["flops_remaining_mean"]) == pytest.approx(2.0)


def test_flops_flag_without_flops_fields_leaves_the_column_out(tmp_path, capsys):
    write_summary(tmp_path, "r")
    code, out, err = report(capsys, tmp_path, "--flops")
    assert code == 0
    assert "FLOPs" not in out
    assert "FLOPs" in err


def test_train_flops_column_as_a_multiple_of_dense_where_runs_record_them(tmp_path, capsys):
    for seed, flops in enumerate([30, 50]):
        write_summary(tmp_path, f"new{seed}", seed=seed, train_flops=flops, train_flops_dense=100)
    write_summary(tmp_path, "old", final_sparsity=0.9)  # from a version before train_flops
    write_summary(tmp_path, "damaged", final_sparsity=0.5, train_flops="many")
    table = tmp_path / "rows.csv"

    _, out, _ = report(capsys, tmp_path, "--csv", table)

    assert "| Method | Sparsity (%) | Accuracy (%) | Train FLOPs (vs dense) |" in out
    assert "| FlipOut | 90.00 | 87.00 (n=1) | — |" in out
    assert "| FlipOut | 99.90 | 87.00 ± 0.00 (n=2) | 40 (0.40x) |" in out
    assert "- damaged/summary.json: train_flops is 'many', not a count of operations" in out
    with open(table, newline="") as f:
        lines = list(csv.DictReader(f))
    assert [(line["train_flops_mean"], line["train_flops_vs_dense"]) for line in lines] == [
        ("", ""),
        ("40", "0.4"),
    ]


@pytest.mark.parametrize(
    ("flops", "multiple", "cell"),
    [(2.1e11, 0.42, "2.1e+11 (0.42x)"), (6e9, 1.0, "6e+09 (1.00x)"),
     (3.1e8, 0.0031, "3.1e+08 (0.0031x)"), (None, None, "—")],
)  # fmt: skip
def test_train_flops_cells(flops, multiple, cell):
    row = Row("vgg19", "cifar10", "FlipOut", 99.9, 87.0, None, 1, train_flops_mean=flops,
              train_flops_vs_dense=multiple)  # fmt: skip
    assert train_flops_cell(row) == cell


def test_corrupt_summary_is_skipped_not_fatal(tmp_path, capsys):
    write_summary(tmp_path, "good")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text('{"model": "vgg19", ')
    write_summary(tmp_path, "no_accuracy", final_test_acc=None)

    code, out, _ = report(capsys, tmp_path)

    assert code == 0
    assert "| FlipOut | 99.90 | 87.00 (n=1) |" in out
    skipped = out.split("### Skipped files")[1]
    assert "- broken/summary.json: unreadable" in skipped
    assert "- no_accuracy/summary.json: completed, but final_test_acc is None" in skipped


def test_missing_directory_is_an_error(tmp_path, capsys):
    code, out, err = report(capsys, tmp_path / "nowhere")
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and len(err.splitlines()) == 1


def test_directory_without_summaries(tmp_path, capsys):
    (tmp_path / "empty_run").mkdir()
    code, _, err = report(capsys, tmp_path)
    assert code == 1
    assert "no usable summary.json" in err


def write_unfinished(root, run, epochs_logged=0, **config):
    """What a run killed after `epochs_logged` epochs leaves in `root/run`: config.json,
    metrics.jsonl and a checkpoint, but no summary.json."""
    folder = root / run
    folder.mkdir(parents=True)
    settings = {"prune_criterion": "flipout", "seed": 0, "epochs": 350, "hoyer_lambda": 0.0}
    (folder / "config.json").write_text(json.dumps({**settings, **config}))
    lines = [
        json.dumps({"epoch": epoch, "test_acc": 50.0}) for epoch in range(1, epochs_logged + 1)
    ]
    (folder / "metrics.jsonl").write_text("".join(f"{line}\n" for line in lines))
    (folder / "checkpoint.pt").write_bytes(b"not read by the report")
    return folder


def test_a_run_without_summary_is_listed_as_incomplete(tmp_path, capsys):
    write_summary(tmp_path, "sweep/done")
    write_unfinished(tmp_path, "sweep/killed", epochs_logged=3, prune_criterion="random", seed=4)
    # a line half written when the process died is not an epoch
    with open(tmp_path / "sweep/killed/metrics.jsonl", "a") as metrics:
        metrics.write('{"epoch": 4, "te')
    (tmp_path / "sweep/bare").mkdir()
    (tmp_path / "sweep/bare/checkpoint.pt").write_bytes(b"")

    code, out, _ = report(capsys, tmp_path)

    assert code == 0
    tables, incomplete = out.split("### Runs that did not complete")
    assert "| FlipOut | 99.90 | 87.00 (n=1) |" in tables
    assert "| sweep/killed | Random | 4 | no summary.json (killed?) | 3/350 |" in incomplete
    assert "| sweep/bare | ? | ? | no summary.json (killed?) | ?/? |" in incomplete
    assert "sweep/done" not in incomplete


def test_only_killed_or_unreadable_runs_still_make_a_report(tmp_path, capsys):
    write_unfinished(tmp_path, "killed", epochs_logged=1)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("[")

    code, out, err = report(capsys, tmp_path)

    assert (code, err) == (0, "")
    assert out.startswith("No completed runs.")
    assert "| killed | FlipOut | 0 | no summary.json (killed?) | 1/350 |" in out
    assert "- broken/summary.json: unreadable" in out


def test_an_unreadable_config_is_listed_and_the_run_still_shown(tmp_path, capsys):
    write_unfinished(tmp_path, "killed", epochs_logged=2)
    (tmp_path / "killed" / "config.json").write_text('{"prune_criterion": 3}')

    _, out, _ = report(capsys, tmp_path)

    assert "| killed | ? | ? | no summary.json (killed?) | 2/? |" in out
    assert "- killed/config.json: prune_criterion is 3, not a string" in out


def test_summaries_with_one_run_id_count_once(tmp_path, capsys):
    run_id = "0123456789abcdef0123456789abcdef"
    write_summary(tmp_path, "a/run", run_id=run_id, run_dir="a/run", final_test_acc=87.0)
    write_summary(tmp_path, "b/copy", run_id=run_id, run_dir="a/run", final_test_acc=87.0)
    write_summary(tmp_path, "c/other", run_id="f" * 32, seed=1, final_test_acc=89.0)

    code, out, _ = report(capsys, tmp_path)

    assert code == 0
    tables, duplicates = out.split("### Duplicate runs")
    assert "| FlipOut | 99.90 | 88.00 ± 1.41 (n=2) |" in tables
    assert duplicates.strip().splitlines() == [
        "- b/copy duplicates a/run (same run_id), counted once"
    ]


def test_summaries_without_run_id_match_by_content_apart_from_run_dir(tmp_path, capsys):
    write_summary(tmp_path, "a/run", run_dir="/old/disk/a/run")
    write_summary(tmp_path, "b/run", run_dir="/new/disk/b/run")  # a copy, moved
    write_summary(tmp_path, "c/run", run_dir="/old/disk/c/run", wall_seconds=12.5)  # another run

    _, out, _ = report(capsys, tmp_path)

    assert "| FlipOut | 99.90 | 87.00 ± 0.00 (n=2) |" in out
    assert "- b/run duplicates a/run (same summary.json), counted once" in out
    assert "c/run duplicates" not in out


def test_a_copy_resumed_to_completion_is_the_one_counted(tmp_path, capsys):
    run_id = "0123456789abcdef0123456789abcdef"
    write_summary(tmp_path, "a/stopped", run_id=run_id, status="interrupted", final_test_acc=None)
    write_summary(tmp_path, "b/resumed", run_id=run_id, final_test_acc=86.0)

    _, out, _ = report(capsys, tmp_path)

    assert "| FlipOut | 99.90 | 86.00 (n=1) |" in out
    assert "did not complete" not in out
    assert "- a/stopped duplicates b/resumed (same run_id), counted once" in out


def test_a_killed_copy_of_a_reported_run_is_a_duplicate_not_incomplete(tmp_path, capsys):
    run_id = "0123456789abcdef0123456789abcdef"
    write_summary(tmp_path, "finished", run_id=run_id)
    write_unfinished(tmp_path, "snapshot", epochs_logged=5, run_id=run_id)
    write_unfinished(tmp_path, "snapshot_copy", epochs_logged=5, run_id="e" * 32)
    write_unfinished(tmp_path, "snapshot_copy_2", epochs_logged=5, run_id="e" * 32)

    _, out, _ = report(capsys, tmp_path)

    assert "- snapshot duplicates finished (same run_id), counted once" in out
    assert "- snapshot_copy_2 duplicates snapshot_copy (same run_id), counted once" in out
    incomplete = out.split("### Runs that did not complete")[1].split("###")[0]
    assert [line.split(" | ")[0] for line in incomplete.splitlines() if line.startswith("| s")] == [
        "| snapshot_copy"
    ]


@pytest.mark.parametrize(
    "argv",
    [[], ["--metric", "worst", "DIR"], ["DIR", "--unknown"], ["DIR", "--csv"], ["a", "b"]],
)
def test_argument_errors_are_one_line(tmp_path, capsys, argv):
    code, out, err = report(capsys, *[str(tmp_path) if arg == "DIR" else arg for arg in argv])
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith("error: ")


def test_a_file_for_dir_is_one_error_line(tmp_path, capsys):
    path = write_summary(tmp_path, "run")
    code, out, err = report(capsys, path)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"error: {path} is not a directory"]


# -- --against METHOD: each row beside the baseline's, Welch's test (experiments/against.py) --

FLIPOUT = [70.1, 72.4, 69.0]
MAGNITUDE = [66.0, 65.2, 67.9]


def runs(root, accuracies, sparsity=0.9375, **fields):
    name = f"{fields.get('prune_criterion', 'flipout')}_{sparsity}_{len(list(root.iterdir()))}"
    for seed, accuracy in enumerate(accuracies):
        write_summary(root, f"{name}_{seed}", seed=seed, final_test_acc=accuracy,
                      final_sparsity=sparsity, **fields)  # fmt: skip


def test_each_row_gets_the_difference_and_welchs_p_of_scipy(tmp_path, capsys):
    runs(tmp_path, FLIPOUT)
    runs(tmp_path, MAGNITUDE, prune_criterion="global_magnitude")
    code, out, _ = report(capsys, tmp_path, "--against", "GlobalMagnitude", "--csv",
                          tmp_path / "rows.csv")  # fmt: skip
    assert code == 0
    expected = stats.ttest_ind(FLIPOUT, MAGNITUDE, equal_var=False)
    delta = sum(FLIPOUT) / 3 - sum(MAGNITUDE) / 3
    assert "| Method | Sparsity (%) | Accuracy (%) | vs GlobalMagnitude: Δ, Welch's p |" in out
    flipout_line = next(line for line in out.splitlines() if line.startswith("| FlipOut |"))
    assert flipout_line.endswith(f"| {delta:+.2f}, p={expected.pvalue:.3g} |")
    assert any(line.endswith("| baseline |") for line in out.splitlines())
    lines = list(csv.DictReader((tmp_path / "rows.csv").open()))
    flipout = next(line for line in lines if line["method"] == "FlipOut")
    assert float(flipout["welch_p"]) == pytest.approx(expected.pvalue, rel=1e-9)
    assert float(flipout["welch_df"]) == pytest.approx(expected.df, rel=1e-9)
    assert flipout["baseline"] == "GlobalMagnitude"


def test_a_row_without_a_counterpart_or_spread_says_why(tmp_path, capsys):
    runs(tmp_path, FLIPOUT, sparsity=0.99)  # no baseline at 99%
    runs(tmp_path, FLIPOUT[:1], sparsity=0.9375, options={"noise": False})  # one run
    runs(tmp_path, MAGNITUDE, prune_criterion="global_magnitude")
    _, out, _ = report(capsys, tmp_path, "--against", "GlobalMagnitude")
    assert "| — (no baseline row of its training at this sparsity) |" in out
    assert "| — (a row of one run has no spread) |" in out


def test_a_row_is_set_beside_the_baseline_trained_alike_only(tmp_path, capsys):
    runs(tmp_path, FLIPOUT, options={"opt": "sgd", "lr": 0.05})
    runs(tmp_path, [50.0, 51.0, 52.0], options={"opt": "adamw", "lr": 1e-3})
    runs(
        tmp_path,
        MAGNITUDE,
        prune_criterion="global_magnitude",
        options={"opt": "adamw", "lr": 1e-3},
    )
    _, out, _ = report(capsys, tmp_path, "--against", "GlobalMagnitude")
    [sgd] = [line for line in out.splitlines() if "opt sgd" in line]
    [adamw] = [line for line in out.splitlines() if "opt adamw" in line and "FlipOut" in line]
    assert sgd.endswith("| — (no baseline row of its training at this sparsity) |")
    expected = stats.ttest_ind([50.0, 51.0, 52.0], MAGNITUDE, equal_var=False)
    assert adamw.endswith(f"p={expected.pvalue:.3g} |")


def test_an_unknown_baseline_or_one_the_csv_would_drop_is_refused_in_one_line(tmp_path, capsys):
    runs(tmp_path, FLIPOUT)
    code, out, err = report(capsys, tmp_path, "--against", "Magnitude")
    assert code == 2 and out == ""
    assert err.strip() == "error: --against Magnitude: no row of that method (the rows: FlipOut)"
    code, _, err = report(capsys, tmp_path, "--against", "FlipOut", "--paper", "--csv",
                          tmp_path / "x.csv")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "x.csv").exists()
