"""`python -m experiments list` from its cache (experiments/cost_cache.py): a hit shows what a miss
shows without resolving a command, anything that decides the numbers changes the digest, a
damaged cache of ours is written afresh and anyone else's file is left alone, a cache that cannot
be written costs only the speed, and torch is asked for the GPU only where an epoch was timed."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from experiments import __main__ as launcher
from experiments import cost, cost_cache, runs
from experiments.sweeps import SWEEPS
from tests.support import ROOT
from tests.support.damage import BYTE_DAMAGE, field, json_edited

SWEEP = "smoke"  # its 4 commands resolve in a blink


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """The cache file of a user cache folder of this test's, where `list` shows the smoke sweep
    alone and no epoch was ever timed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(launcher, "SWEEPS", {SWEEP: SWEEPS[SWEEP]})
    monkeypatch.setattr(cost, "EPOCH_TIMES", tmp_path / "BENCHMARKS.json")
    return tmp_path / "cache" / "flipout" / cost_cache.CACHE_NAME


@pytest.fixture
def resolved(monkeypatch) -> list[int]:
    """How many commands each resolution of a sweep with main.py's parser was given."""
    calls, resolve_all = [], runs.resolve_all

    def counted(commands, *args, **kwargs):
        calls.append(len(commands))
        return resolve_all(commands, *args, **kwargs)

    monkeypatch.setattr(runs, "resolve_all", counted)
    return calls


def listed(capsys) -> str:
    """What `list` prints, checked to end well and quietly."""
    code = launcher.main(["list"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    return out


def test_a_hit_lists_what_the_miss_did_without_resolving_a_command(cache, resolved, capsys):
    missed = listed(capsys)
    assert missed.splitlines()[1].split()[:3] == [SWEEP, "4", "24"]
    assert resolved == [4]
    assert cache.read_bytes().startswith(cost_cache.MARK)
    assert listed(capsys) == missed
    assert resolved == [4]


def test_a_changed_digest_resolves_the_sweeps_again_and_keeps_both(
    cache, resolved, capsys, monkeypatch
):
    first = listed(capsys)
    monkeypatch.setattr(cost_cache, "installed_version", lambda distribution: "0.0.1")
    assert listed(capsys) == first
    assert resolved == [4, 4]
    assert len(cost_cache.read_tables(cache)) == 2


TREE = ["main.py", "pkg/__init__.py", "pkg/mod.py", "pkg/results.json", "pkg/sub/__init__.py",
        "pkg/sub/deep.py", "tests/test_mod.py", "data/__init__.py", "data/cifar.tar.gz",
        "data/imagenette/classes.json", "docs/example.py"]  # fmt: skip


@pytest.mark.parametrize(
    "path, decides",
    [
        ("main.py", True),
        ("pkg/mod.py", True),
        ("pkg/results.json", True),  # as experiments/paper_results.json makes sweeps
        ("pkg/sub/deep.py", True),
        ("pkg/new.py", True),  # a module added
        ("tests/test_mod.py", False),
        ("data/cifar.tar.gz", False),  # a dataset data/ holds
        ("data/imagenette/classes.json", False),
        ("docs/example.py", False),  # no package's
    ],
)
def test_the_tree_s_modules_and_data_decide_the_digest(tmp_path, monkeypatch, path, decides):
    for name in TREE:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    monkeypatch.setattr(cost_cache, "ROOT", tmp_path)
    before = cost_cache.digest(())
    (tmp_path / path).write_text("changed = True\n")
    assert (cost_cache.digest(()) != before) == decides


def test_the_plugin_modules_loaded_decide_the_digest(tmp_path, monkeypatch):
    source = tmp_path / "my_sweeps.py"
    source.write_text("SIZE = 1\n")
    module = types.ModuleType("my_sweeps")
    module.__file__ = str(source)
    monkeypatch.setitem(sys.modules, "my_sweeps", module)
    without = cost_cache.digest(())
    named = cost_cache.digest(["my_sweeps"])
    source.write_text("SIZE = 2\n")
    assert len({without, named, cost_cache.digest(["my_sweeps"])}) == 3
    assert cost_cache.digest(()) == without


def with_counts_as_text(cache: dict) -> None:
    for table in cache["tables"].values():
        table[SWEEP]["runs"] = str(table[SWEEP]["runs"])


def with_epochs_in_one(cache: dict) -> None:
    for table in cache["tables"].values():
        table[SWEEP]["epochs"] = 24


DAMAGE = {
    **BYTE_DAMAGE,
    "a count as text": json_edited(with_counts_as_text),
    "tables a list": field("tables", []),
    "epochs in one number": json_edited(with_epochs_in_one),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE)
def test_a_damaged_cache_is_ignored_and_only_ours_written_afresh(cache, capsys, damage):
    expected = listed(capsys)
    damage(cache)
    left = cache.read_bytes() if cache.exists() else None
    assert listed(capsys) == expected
    if left is not None and not left.startswith(cost_cache.MARK):
        assert cache.read_bytes() == left  # not ours: never replaced
    else:
        assert cost_cache.read_tables(cache)[cost_cache.digest(())][SWEEP].runs == 4


@pytest.mark.parametrize("kind", ["a user's own file", "a FIFO", "a directory"])
def test_what_is_not_our_cache_is_left_as_it_is(cache, capsys, kind):
    cache.parent.mkdir(parents=True)
    if kind == "a FIFO":
        os.mkfifo(cache)
    elif kind == "a directory":
        cache.mkdir()
    else:
        cache.write_text("my notes\n")
    assert listed(capsys).splitlines()[1].split()[:3] == [SWEEP, "4", "24"]
    assert {"a FIFO": cache.is_fifo, "a directory": cache.is_dir}.get(kind, cache.is_file)()
    assert kind != "a user's own file" or cache.read_text() == "my notes\n"


def test_a_cache_that_cannot_be_written_costs_only_the_speed(cache, resolved, capsys):
    cache.parents[1].write_text("a file where the cache folder would be\n")
    first = listed(capsys)
    assert listed(capsys) == first
    assert resolved == [4, 4]


NO_EPOCH = "GPU-hours: no epoch timed yet; on a GPU, `python -m bench --sections epoch` times"
NO_GPU = "GPU-hours: no GPU here; on one, `python -m bench --sections epoch` times"
NOT_THIS_GPU = "GPU-hours: no epoch timed on the Other GPU yet; `python -m bench"


@pytest.mark.parametrize(
    "times, gpu, last",
    [
        (None, "torch not asked", NO_EPOCH),
        ({"epoch": {}}, "torch not asked", NO_EPOCH),
        ({"epoch": {"Some GPU": {"vgg19/cifar10": {"seconds": 36.0}}}}, None, NO_GPU),
        ({"epoch": {"Some GPU": {"vgg19/cifar10": {"seconds": 36.0}}}}, "Other GPU", NOT_THIS_GPU),
    ],
)
def test_torch_is_asked_for_the_gpu_only_where_an_epoch_was_timed(
    cache, capsys, monkeypatch, times, gpu, last
):
    if times is not None:
        cost.EPOCH_TIMES.write_text(json.dumps(times))

    def gpu_at_hand():
        assert gpu != "torch not asked"
        return gpu

    monkeypatch.setattr(cost, "gpu_at_hand", gpu_at_hand)
    lines = listed(capsys).splitlines()
    assert lines[0].split() == ["sweep", "runs", "epochs", "what"]
    assert lines[-1].startswith(last)


def test_a_warm_list_imports_neither_torch_nor_timm(tmp_path):
    if cost.epoch_times():
        pytest.skip("an epoch is timed in BENCHMARKS.json: list asks torch for the GPU")
    # the cache a cold list would leave here, with numbers of its own, which a hit shows
    costs = {name: cost.Cost(1, {"lenet300/digits": 7}) for name in SWEEPS}
    path = tmp_path / "flipout" / cost_cache.CACHE_NAME
    cost_cache.write_tables(path, {cost_cache.digest(()): costs})
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "experiments", "list"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = done.stdout.splitlines()[1 : len(SWEEPS) + 1]
    assert {row.split()[0]: row.split()[1:3] for row in rows} == {n: ["1", "7"] for n in SWEEPS}
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "experiments" in imported
    assert not imported & {"torch", "timm"}
