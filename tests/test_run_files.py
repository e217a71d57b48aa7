"""Every file of a real run directory damaged in many ways, and each tool that reads run
directories run on the result: experiments.report lists the problem (or did not need the file),
and python -m export and export.inspect either did not need the file or end with exit code 2 and
one line on stderr that names it. Never a traceback, never another exit code."""

import copy
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import main
from experiments import report
from export import formats as export
from export import inspect as inspect_tool
from models import build_model
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


# -- damage: each takes the file's path and spoils it in place -------------------------------

Damage = Callable[[Path], None]


def rewritten(transform: Callable[[bytes], bytes]) -> Damage:
    def damage(path: Path) -> None:
        path.write_bytes(transform(path.read_bytes()))

    return damage


def deleted(path: Path) -> None:
    path.unlink()


def random_bytes(size: int | None = None) -> Damage:
    # seeded, so that a failure comes back on the next run
    return rewritten(lambda data: random.Random(size).randbytes(size or len(data)))


def flipped_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


BYTE_DAMAGE: dict[str, Damage] = {
    "deleted": deleted,
    "empty": rewritten(lambda data: b""),
    "first byte only": rewritten(lambda data: data[:1]),
    "first 100 bytes only": rewritten(lambda data: data[:100]),
    "first half only": rewritten(lambda data: data[: len(data) // 2]),
    # JSON files end in a newline: two bytes off spoil them too
    "last two bytes missing": rewritten(lambda data: data[:-2]),
    "random bytes": random_bytes(),
    "64 random bytes": random_bytes(64),
    "not UTF-8": rewritten(lambda data: b"\xff\xfe\x80" + data),
}


def json_replaced(value_of: Callable[[object], object]) -> Damage:
    """The file's JSON replaced by `value_of(its parsed content)`."""

    def damage(path: Path) -> None:
        path.write_text(json.dumps(value_of(json.loads(path.read_text()))))

    return damage


def json_edited(edit: Callable[[dict], None]) -> Damage:
    def value_of(content):
        edit(content)
        return content

    return json_replaced(value_of)


def field(key: str, value) -> Damage:
    def edit(content: dict) -> None:
        content[key] = value

    return json_edited(edit)


def option(key: str, value) -> Damage:
    return json_edited(lambda content: content["options"].__setitem__(key, value))


def without(key: str) -> Damage:
    return json_edited(lambda content: content.pop(key))


JSON_DAMAGE: dict[str, Damage] = {
    **BYTE_DAMAGE,
    "a list": json_replaced(lambda content: [content]),
    "a string": json_replaced(lambda content: "a run"),
    "a number": json_replaced(lambda content: 42),
    "null": json_replaced(lambda content: None),
    "NaN": rewritten(lambda data: b"NaN"),
    "nested too deeply to parse": rewritten(lambda data: b"[" * 100_000),
}

SUMMARY_DAMAGE: dict[str, Damage] = {
    **JSON_DAMAGE,
    "status missing": without("status"),
    "status a number": field("status", 1),
    "model a number": field("model", 5),
    "prune_criterion a list": field("prune_criterion", ["flipout"]),
    "status unknown": field("status", "paused\n| forged | row |"),
    "options a list": field("options", ["add_hs"]),
    "hoyer_lambda a string": option("hoyer_lambda", "a lot"),
    "hoyer_lambda infinite": option("hoyer_lambda", float("inf")),
    "final_test_acc a string": field("final_test_acc", "87%"),
    "final_test_acc NaN": field("final_test_acc", float("nan")),
    "final_test_acc true": field("final_test_acc", True),
    "final_sparsity above 1": field("final_sparsity", 5),
    "final_sparsity too large for a float": field("final_sparsity", 10**400),
    "flops_dense a string": field("flops_dense", "many"),
    "run_id a number": field("run_id", 7),
    "seed an object": field("seed", {"value": 0}),
}

CONFIG_DAMAGE: dict[str, Damage] = {
    **JSON_DAMAGE,
    "prune_criterion missing": without("prune_criterion"),
    "prune_criterion a number": field("prune_criterion", 3),
    "hoyer_lambda a string": field("hoyer_lambda", "a lot"),
    "epochs a list": field("epochs", [1, 2]),
    "seed an object": field("seed", {"value": 0}),
    "run_id a number": field("run_id", 7),
}

METRICS_DAMAGE: dict[str, Damage] = {
    **BYTE_DAMAGE,
    "lists for lines": rewritten(lambda data: b"[1]\n[2]\n"),
    "strings for lines": rewritten(lambda data: b'"epoch"\n"epoch"\n'),
    "a last line cut short": rewritten(lambda data: data + b'{"epoch": 3, "tr'),
    "blank lines": rewritten(lambda data: b"\n\n" + data + b"\n\n"),
}


def saved(value_of: Callable[[dict], object]) -> Damage:
    """checkpoint.pt replaced by a torch.save of `value_of(a copy of its state)`."""

    def damage(path: Path) -> None:
        state = copy.deepcopy(torch.load(path, weights_only=True))
        torch.save(value_of(state), path)

    return damage


def edited(edit: Callable[[dict], None]) -> Damage:
    def value_of(state: dict) -> dict:
        edit(state)
        return state

    return saved(value_of)


def spec(**changes) -> Damage:
    return edited(lambda state: state["model_spec"].update(changes))


class RunsCode:
    """Pickles as a call of print: what a malicious checkpoint would do with a worse function."""

    def __reduce__(self):
        return (print, ("a checkpoint ran code",))


def images_too_small(state: dict) -> None:
    """A consistent VGG-11 checkpoint, but for 4-pixel images: its weights do not depend on the
    image size, and its five poolings need at least 32 pixels."""
    spec = {"name": "vgg11", "num_classes": 10, "in_channels": 1, "image_size": 4}
    model = build_model(**spec)
    weights = {name: p for name, p in model.named_parameters() if name.endswith("weight")}
    state["model_spec"] = spec
    state["model"] = model.state_dict()
    state["pruner"]["masks"] = {
        name: torch.ones_like(p, dtype=torch.bool) for name, p in weights.items()
    }
    state["pruner"]["flip_counts"] = {
        name: torch.zeros_like(p, dtype=torch.int32) for name, p in weights.items()
    }


def shrunk(part: str) -> Callable[[dict], None]:
    def edit(state: dict) -> None:
        state["pruner"][part]["1.weight"] = state["pruner"][part]["1.weight"][:10]

    return edit


CHECKPOINT_DAMAGE: dict[str, Damage] = {
    **{name: damage for name, damage in BYTE_DAMAGE.items() if name != "not UTF-8"},
    "a text file": rewritten(lambda data: b"not a checkpoint\n"),
    "a list": saved(lambda state: [state]),
    "a tensor": saved(lambda state: torch.zeros(3)),
    "a dict that is not a checkpoint": saved(lambda state: {"weights": torch.zeros(3)}),
    "a pickle that runs code": saved(lambda state: {**state, "epoch": RunsCode()}),
    "format_version 2": edited(lambda state: state.update(format_version=2)),
    "model missing": edited(lambda state: state.pop("model")),
    "model_spec missing": edited(lambda state: state.pop("model_spec")),
    "pruner missing": edited(lambda state: state.pop("pruner")),
    "epoch a string": edited(lambda state: state.update(epoch="2")),
    "model a list": edited(lambda state: state.update(model=list(state["model"].values()))),
    "masks a list": edited(lambda state: state["pruner"].update(masks=[])),
    "unknown model": spec(name="lenet3000"),
    "wrong number of classes": spec(num_classes=7),
    "an enormous number of classes": spec(num_classes=10**12),
    "a negative number of classes": spec(num_classes=-1),
    "a negative image size": spec(image_size=-32),
    "an enormous image size": spec(image_size=10**6),
    "images too small for the network": edited(images_too_small),
    "an unknown model_spec key": spec(depth=3),
    "a weight missing": edited(lambda state: state["model"].pop("5.bias")),
    "an extra weight": edited(lambda state: state["model"].update(extra=torch.zeros(1))),
    "a weight of the wrong shape": edited(
        lambda state: state["model"].update({"5.weight": torch.zeros(7, 100)})
    ),
    "masks of the wrong shape": edited(shrunk("masks")),
    "flip counts of the wrong shape": edited(shrunk("flip_counts")),
    "float masks": edited(
        lambda state: state["pruner"]["masks"].update({"1.weight": torch.ones(300, 1024)})
    ),
    "float flip counts": edited(
        lambda state: state["pruner"]["flip_counts"].update({"1.weight": torch.ones(300, 1024)})
    ),
    "a mask for a parameter the network lacks": edited(
        lambda state: state["pruner"]["masks"].update({"9.weight": torch.ones(2, dtype=bool)})
    ),
    "flip counts for fewer parameters": edited(
        lambda state: state["pruner"]["flip_counts"].pop("5.weight")
    ),
    "no masks at all": edited(lambda state: state["pruner"].update(masks={}, flip_counts={})),
    # may land inside a tensor's data, where it changes a weight and nothing else
    "a byte flipped halfway": rewritten(flipped_middle_byte),
}
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
    assert "| killed | FlipOut | 0 | no summary.json (killed?) | 2/2 |" in out.splitlines()


def test_a_copied_run_is_counted_once_and_named_as_a_duplicate(run_dir, tmp_path, capsys):
    logdir = tmp_path / "runs"
    shutil.copytree(run_dir, logdir / "original")
    shutil.copytree(run_dir, logdir / "sweep" / "copy")

    code, out, _ = run_tool(capsys, report.main, logdir)

    assert code == 0
    assert "| FlipOut | 50.00 |" in out and "(n=1) |" in out
    duplicates = out.split("### Duplicate runs")[1]
    assert "- sweep/copy duplicates original (same " in duplicates
