"""Every file of a real run directory damaged in many ways, and each tool that reads run
directories run on the result: experiments.report lists the problem (or did not need the file),
and python -m export and export.inspect either did not need the file or end with exit code 2 and
one line on stderr that names it. Never a traceback, never another exit code."""

import shutil
from pathlib import Path

import pytest

import main
from experiments import report
from export import formats as export
from export import inspect as inspect_tool
from tests.support.damage import (
    CHECKPOINT_DAMAGE,
    CONFIG_DAMAGE,
    METRICS_DAMAGE,
    SUMMARY_DAMAGE,
    Damage,
)
from utils.checkpoint import CHECKPOINT

SUMMARY, CONFIG, METRICS = "summary.json", "config.json", "metrics.jsonl"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A completed two-epoch LeNet-300-100 run on the bundled digits, pruned once."""
    logdir = tmp_path_factory.mktemp("runs")
    argv = ["-e", "2", "--prune_freq", "1", "--num_workers", "0", "--quiet"]
    assert main.main([*argv, "--logdir", str(logdir)]) == 0
    (run,) = logdir.iterdir()
    return run


# -- the cases: each run file, damaged in each way (tests/support/damage.py) --------------------

# damage after which the checkpoint may still load, and export and inspect succeed
MAY_LOAD = {"a byte flipped halfway"}
# (file, damage, the exit codes export and inspect may end with): of the run files they read only
# the checkpoint, so damage to any other file must leave them working
CASES = [
    pytest.param(
        CHECKPOINT, damage, {0, 2} if label in MAY_LOAD else {2}, id=f"checkpoint: {label}"
    )
    for label, damage in CHECKPOINT_DAMAGE.items()
] + [
    pytest.param(name, damage, {0}, id=f"{name}: {label}")
    for name, damages in (
        (SUMMARY, SUMMARY_DAMAGE),
        (CONFIG, CONFIG_DAMAGE),
        (METRICS, METRICS_DAMAGE),
    )
    for label, damage in damages.items()
    if not (name == SUMMARY and label == "deleted")  # a killed run: tested on its own below
]


# -- running the tools -----------------------------------------------------------------------


def run_tool(capsys, tool_main, *argv) -> tuple[int, str, str]:
    code = tool_main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(code: int, out: str, err: str, name: str) -> None:
    assert code == 2, err
    [line] = err.splitlines()
    assert line.startswith("error: ") and name in line, line
    assert out == ""


def assert_run_shown(out: str, run: str, name: str) -> None:
    """The report counts the run, lists it as incomplete, or lists its damaged file."""
    counted = "(n=1) |" in out
    incomplete = f"\n| {run} |" in out
    skipped = f"\n- {run}/{name}: " in out
    assert counted or incomplete or skipped, out


def damaged_copy(run_dir: Path, tmp_path: Path, name: str, damage: Damage) -> Path:
    run = tmp_path / "runs" / "run"
    shutil.copytree(run_dir, run)
    damage(run / name)
    return run


@pytest.mark.parametrize(("name", "damage", "tool_codes"), CASES)
def test_a_damaged_run_file_is_reported_or_one_error_line(
    run_dir, tmp_path, capsys, name, damage, tool_codes
):
    run = damaged_copy(run_dir, tmp_path, name, damage)

    code, out, err = run_tool(capsys, report.main, run.parent)
    assert (code, err) == (0, "")
    assert_run_shown(out, "run", name)
    if name in (CONFIG, METRICS):
        # as a killed run leaves it: the report must then read the damaged file itself
        (run / SUMMARY).unlink()
        code, out, err = run_tool(capsys, report.main, run.parent)
        assert (code, err) == (0, "")
        assert "\n| run | " in out and "no summary.json" in out

    outcomes = [run_tool(capsys, inspect_tool.main, run)]
    # (semi_structured refuses this run whatever its files: it was not pruned 2:4)
    for fmt in [f for f in export.FORMATS if f != "semi_structured"]:
        outcomes.append(run_tool(capsys, export.main, run, "--to", fmt, tmp_path / f"{fmt}.pt"))
    for code, out, err in outcomes:
        assert code in tool_codes, err
        assert "Traceback" not in err and "ran code" not in out + err
        if code != 0:
            assert_one_error_line(code, out, err, name)


def test_a_killed_run_is_listed_as_incomplete_never_counted(run_dir, tmp_path, capsys):
    logdir = tmp_path / "runs"
    shutil.copytree(run_dir, logdir / "killed")
    (logdir / "killed" / SUMMARY).unlink()  # what SIGKILL leaves: no summary.json

    code, out, err = run_tool(capsys, report.main, logdir)

    assert (code, err) == (0, "")
    assert "No completed runs." in out and "(n=" not in out
    killed = "| killed | FlipOut (no noise) | 0 | no summary.json (killed?) | 2/2 |"
    assert killed in out.splitlines()


def test_a_copied_run_is_counted_once_and_named_as_a_duplicate(run_dir, tmp_path, capsys):
    logdir = tmp_path / "runs"
    shutil.copytree(run_dir, logdir / "original")
    shutil.copytree(run_dir, logdir / "sweep" / "copy")

    code, out, _ = run_tool(capsys, report.main, logdir)

    assert code == 0
    assert "| FlipOut (no noise) | 50.00 |" in out and "(n=1) |" in out
    duplicates = out.split("### Duplicate runs")[1]
    assert "- sweep/copy duplicates original (same " in duplicates
