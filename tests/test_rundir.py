"""The run directory's room (utils/rundir.py): the one module that spells its files' names, and
the one way a damaged record is reported, whichever tool reads it."""

import ast
import json
import os
import shutil
from pathlib import Path

import pytest

import main
from experiments import report
from experiments.runs import config_of
from tests.support import ROOT
from tests.support.runs import assert_one_error_line, quick_run
from utils import rundir

NAMES = {*rundir.NAMES, rundir.LOCK, rundir.CLAIM, rundir.EVENTS}
ROOMS = [
    path
    for path in ROOT.rglob("*.py")
    if path.relative_to(ROOT).parts[0] not in {".venv", "tests", "runs", "build", "docs"}
]


def spelled_names(path: Path) -> list[str]:
    """The run files' names that `path` writes as a string of their own, docstrings aside."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.value}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in NAMES and id(node) not in docstrings
    ]


def test_only_the_room_spells_the_run_files_names():
    assert len(ROOMS) > 50
    spelled = [found for path in ROOMS for found in spelled_names(path)]
    assert [found for found in spelled if not found.startswith("utils/rundir.py")] == []
    assert spelled, "the room itself names them"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return quick_run(tmp_path_factory.mktemp("run"))


DAMAGE = {
    "a list": ("[1, 2]", "a list, not options"),
    "not JSON": ("{not json", "unreadable: Expecting property name"),
    "not UTF-8": (b"\xff\xfe{}", "unreadable: 'utf-8' codec can't decode"),
    "nested too deeply": ("[" * 100_000, "unreadable: nested too deeply"),
    "a FIFO": (None, "unreadable: a FIFO, not a file"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_config_json_reads_alike_in_every_tool(case, run_dir, tmp_path, capsys):
    """main.py's --resume, the launcher's plan and the report each say what is wrong with the
    same words."""
    content, reason = DAMAGE[case]
    damaged = tmp_path / "runs" / "damaged"
    shutil.copytree(run_dir, damaged)
    config = damaged / rundir.CONFIG
    config.unlink()
    (damaged / rundir.SUMMARY).unlink()
    if content is None:
        os.mkfifo(config)
    else:
        config.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(rundir.Damaged) as error:
        rundir.read_config(damaged)
    assert error.value.reason.startswith(reason)
    assert str(error.value) == f"config.json is {error.value.reason}"
    # the launcher: the run is damaged, for this reason
    assert config_of(damaged) == (None, str(error.value))
    # main.py: one line naming the file and the reason
    capsys.readouterr()
    assert main.main(["--resume", str(damaged), "--quiet"]) == 2
    assert_one_error_line(capsys, f"{config} is {reason}")
    # the report: the file skipped, for this reason
    assert report.main([str(tmp_path / "runs")]) in (0, 1)
    assert f"- damaged/config.json: {reason}" in capsys.readouterr().out


def test_a_record_that_is_not_there_is_none_and_a_summary_of_its_own_kind(tmp_path):
    assert rundir.read_config(tmp_path) is None and rundir.read_summary(tmp_path) is None
    (tmp_path / rundir.SUMMARY).write_text(json.dumps(["done"]))
    with pytest.raises(rundir.Damaged, match=r"^summary.json is a list, not a record$"):
        rundir.read_summary(tmp_path)
    rundir.write_summary(tmp_path, {"status": "completed"})
    assert rundir.read_summary(tmp_path) == {"status": "completed"}
