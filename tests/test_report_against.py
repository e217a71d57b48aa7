"""report --against METHOD: each row beside the baseline's row at the same sparsity, the
difference of the means and Welch's two-sided test of it (experiments/against.py)."""

import csv

import pytest
from scipy import stats

from tests.test_report import report, write_summary

FLIPOUT = [70.1, 72.4, 69.0]
MAGNITUDE = [66.0, 65.2, 67.9]


def runs(root, accuracies, sparsity=0.9375, **fields):
    name = f"{fields.get('prune_criterion', 'flipout')}_{sparsity}_{len(fields)}"
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
    assert "| — (no baseline row at this sparsity) |" in out
    assert "| — (a row of one run has no spread) |" in out


def test_an_unknown_baseline_or_one_the_csv_would_drop_is_refused_in_one_line(tmp_path, capsys):
    runs(tmp_path, FLIPOUT)
    code, out, err = report(capsys, tmp_path, "--against", "Magnitude")
    assert code == 2 and out == ""
    assert err.strip() == "error: --against Magnitude: no row of that method (the rows: FlipOut)"
    code, _, err = report(capsys, tmp_path, "--against", "FlipOut", "--paper", "--csv",
                          tmp_path / "x.csv")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "x.csv").exists()
