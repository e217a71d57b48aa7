"""Hostile input to the tools that take a run elsewhere (export.formats, export.inspect,
experiments.report) and to the paths of main.py: each fault ends in one line on stderr naming the
problem and the path, the exit code utils/errors.py documents for it, and nothing lost: no file
that was there changes, and no part of a file is left behind. Also what those tools print: a
network with no path left exports as a constant that still answers one row per image, a share
that is not 0 or 100% is never shown as one, a single run has no ± in the report, and a reader
that goes away (`| head`) ends every command quietly.

Read-only and full disks are real tmpfs mounts, which need root; without it those rows skip,
saying so. Everything runs on the CPU."""

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import fx, nn

import main as training
from experiments import report
from export import formats as export
from export import inspect as inspect_tool
from export.compact import Rewriter, compact
from models import build_model
from pruning.mask import percent
from tests.support import ROOT
from tests.support.blocks import README, code_block
from utils.checkpoint import CHECKPOINT, save_atomic
from utils.errors import UserError

LONG = "a" * 300  # file systems take names of 255 bytes at most
TOOLS = {"export": export.main, "inspect": inspect_tool.main, "report": report.main,
         "main": training.main}  # fmt: skip
# main.py's quickest run: one epoch, no worker processes, no progress bars
QUICK = ["-e", "1", "--num_workers", "0", "--quiet"]


# -- the places a command is pointed at ------------------------------------------------------


def mount_tmpfs(point: Path, size: str) -> None:
    point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a read-only or full disk is a tmpfs mount here, which needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")


@dataclass
class Places:
    tmp: Path
    run: Path  # the session's pruned LeNet-300-100 run (tests/conftest.py): only ever read
    readonly: Path | None = None  # a read-only tmpfs: a copy of that run as `run`, and `runs`
    full: Path | None = None  # a tmpfs with no byte left
    nm_run: Path | None = None  # a run pruned with --nm 2:4
    mounts: list[Path] = field(default_factory=list)

    @property
    def long(self) -> Path:
        return self.tmp / LONG

    @property
    def plain(self) -> Path:
        return self.tmp / "plain"  # a file, where a folder would have to be

    @property
    def runs(self) -> Path:
        return self.tmp / "runs"  # a folder of runs for the report

    def tokens(self) -> dict[str, Path | None]:
        return {"<tmp>": self.tmp, "<run>": self.run, "<ro>": self.readonly,
                "<full>": self.full, "<nm>": self.nm_run}  # fmt: skip

    def make_readonly(self) -> None:
        self.readonly = self.tmp / "readonly"
        mount_tmpfs(self.readonly, "32m")
        self.mounts.append(self.readonly)
        shutil.copytree(self.run, self.readonly / "run")
        # two sparsity levels of one method: the report would plot them into this folder
        summary = json.loads((self.run / "summary.json").read_text())
        for name, sparsity in (("a", 0.5), ("b", 0.75)):
            (self.readonly / "runs" / name).mkdir(parents=True)
            text = json.dumps({**summary, "final_sparsity": sparsity, "run_id": name})
            (self.readonly / "runs" / name / "summary.json").write_text(text)
        subprocess.run(["mount", "-o", "remount,ro", str(self.readonly)], check=True)

    def make_full(self) -> None:
        self.full = self.tmp / "full"
        mount_tmpfs(self.full, "64k")
        self.mounts.append(self.full)
        # ENOSPC, at the write or at the close: what the filler is for
        with contextlib.suppress(OSError), open(self.full / "filler", "wb") as filler:
            filler.write(bytes(1 << 20))


@pytest.fixture(scope="module")
def nm_run(tmp_path_factory) -> Path:
    """LeNet-300-100 pruned once to 2 of every 4 inputs, before its one epoch."""
    run_dir = tmp_path_factory.mktemp("nm") / "run"
    argv = ["--nm", "2:4", "--schedule", "oneshot", "--target_sparsity", "0.5",
            "--prune_start", "0", "--limit_batches", "1", *QUICK]  # fmt: skip
    assert training.main([*argv, "--run_dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture
def places(tmp_path, pruned_run, request):
    """A factory: the places a case needs (`needs` names the mounts and runs it uses)."""
    made: list[Places] = []

    def make(needs: tuple[str, ...]) -> Places:
        where = Places(tmp=tmp_path, run=pruned_run)
        made.append(where)
        where.plain.write_text("a file, not a folder\n")
        (where.runs / "r").mkdir(parents=True)
        shutil.copy(pruned_run / "summary.json", where.runs / "r" / "summary.json")
        (tmp_path / "cwd").mkdir()  # main.py makes runs/ in the working directory
        if "readonly" in needs:
            where.make_readonly()
        if "full" in needs:
            where.make_full()
        if "nm" in needs:
            where.nm_run = request.getfixturevalue("nm_run")
        return where

    yield make
    for where in made:
        for point in where.mounts:
            subprocess.run(["umount", "-l", str(point)], check=False)


def snapshot(*roots: Path) -> dict[Path, str]:
    """Every file and folder below `roots`, with a digest of each file's content."""
    entries = {}
    for root in roots:
        for path in root.rglob("*"):
            is_file = path.is_file()
            entries[path] = hashlib.sha256(path.read_bytes()).hexdigest() if is_file else "dir"
    return entries


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[Places], list]  # the tool's name, then its arguments
    code: int  # the exit code utils/errors.py documents
    line: str  # the one line on stderr, a regex; <tmp>, <run>, <ro>, <full>, <nm> stand for paths
    needs: tuple[str, ...] = ()  # "readonly", "full", "nm"


def train(*argv) -> list:
    return ["main", *argv, *QUICK]


def resume(run_dir: Path) -> list:
    # without -e, which a resume would take as a change of the run's options, and warn about
    return ["main", "--resume", run_dir, "--num_workers", "0", "--quiet"]


NOT_A_FOLDER = r"<tmp>/plain is a file, not a directory"
SEMI_STRUCTURED_LINE = (
    r"error: <nm>: no layer fits the 2:4 semi-structured kernels, which take Linear layers whose "
    r"outputs are a multiple of 32 and inputs a multiple of 64, with at most 2 of every 4 "
    r"consecutive weights live, as --nm 2:4 prunes: 1 \(300x1024\): 300 outputs not a multiple "
    r"of 32; 3 \(100x300\): 100 outputs not a multiple of 32, 300 inputs not a multiple of 64; "
    r"5 \(10x100\): 10 outputs not a multiple of 32, 100 inputs not a multiple of 64"
)

CASES = [
    # python -m export: OUT, and the run it reads
    Case("export into a read-only folder",
         lambda p: ["export", p.run, "--to", "compact", p.readonly / "out.pt"],
         4, r"error: cannot write <ro>/out\.pt: Read-only file system", ("readonly",)),
    Case("export onto a full disk",
         lambda p: ["export", p.run, "--to", "compact", p.full / "out.pt"],
         4, r"error: cannot write <full>/out\.pt: No space left on device", ("full",)),
    Case("export a state dict onto a full disk, into new folders",
         lambda p: ["export", p.run, "--to", "dense", p.full / "new" / "out.pt"],
         4, r"error: cannot write <full>/new/out\.pt: No space left on device", ("full",)),
    Case("export under a plain file",
         lambda p: ["export", p.run, "--to", "compact", p.plain / "out.pt"],
         2, rf"error: cannot write <tmp>/plain/out\.pt: {NOT_A_FOLDER}"),
    Case("export to a name too long",
         lambda p: ["export", p.run, "--to", "compact", p.tmp / f"{LONG}.pt"],
         2, r"error: cannot write <tmp>/a{300}\.pt: File name too long"),
    Case("export from a run directory whose name is too long",
         lambda p: ["export", p.long, "--to", "dense", p.tmp / "out.pt"],
         2, r"error: <tmp>/a{300}: File name too long"),
    Case("export a 2:4 run whose layers do not fit the kernels",
         lambda p: ["export", p.nm_run, "--to", "semi_structured", p.tmp / "out.pt"],
         2, SEMI_STRUCTURED_LINE, ("nm",)),
    # export.inspect
    Case("inspect a run directory whose name is too long", lambda p: ["inspect", p.long],
         2, r"error: <tmp>/a{300}: File name too long"),
    Case("inspect a run directory under a plain file", lambda p: ["inspect", p.plain / "run"],
         2, r"error: <tmp>/plain/run: no such run directory"),
    # experiments.report
    Case("report a folder whose name is too long", lambda p: ["report", p.long],
         2, r"error: <tmp>/a{300}: File name too long"),
    Case("report a read-only folder of runs: the plot it was not asked for is left out",
         lambda p: ["report", p.readonly / "runs"],
         0, r"note: cannot write <ro>/runs/accuracy_vs_sparsity\.png: Read-only file system",
         ("readonly",)),
    Case("report a CSV into a read-only folder",
         lambda p: ["report", p.runs, "--csv", p.readonly / "table.csv"],
         4, r"error: cannot write <ro>/table\.csv: Read-only file system", ("readonly",)),
    Case("report a CSV onto a full disk",
         lambda p: ["report", p.runs, "--csv", p.full / "table.csv"],
         4, r"error: cannot write <full>/table\.csv: No space left on device", ("full",)),
    Case("report a CSV under a plain file",
         lambda p: ["report", p.runs, "--csv", p.plain / "table.csv"],
         2, rf"error: cannot write <tmp>/plain/table\.csv: {NOT_A_FOLDER}"),
    # main.py's paths
    Case("--run_dir whose name is too long", lambda p: train("--run_dir", f"runs/h/{LONG}"),
         2, r"error: --run_dir runs/h/a{300}: cannot create it: File name too long"),
    Case("--run_dir under a plain file", lambda p: train("--run_dir", p.plain / "run"),
         2, rf"error: --run_dir <tmp>/plain/run: cannot create it: {NOT_A_FOLDER}"),
    Case("--run_dir on a read-only disk", lambda p: train("--run_dir", p.readonly / "new"),
         4, r"error: --run_dir <ro>/new: cannot create it: Read-only file system", ("readonly",)),
    Case("--run_dir on a full disk", lambda p: train("--run_dir", p.full / "new"),
         4, r"error: --run_dir <full>/new: cannot create it: No space left on device", ("full",)),
    Case("--logdir whose name is too long", lambda p: train("--logdir", p.long),
         2, r"error: cannot write runs under --logdir <tmp>/a{300}: File name too long"),
    Case("--logdir under a plain file", lambda p: train("--logdir", p.plain / "runs"),
         2, rf"error: cannot write runs under --logdir <tmp>/plain/runs: {NOT_A_FOLDER}"),
    Case("--logdir on a read-only disk", lambda p: train("--logdir", p.readonly),
         4, r"error: cannot write runs under --logdir <ro>: Read-only file system \(<ro>/[\w-]+\)",
         ("readonly",)),
    Case("--data_dir whose name is too long", lambda p: train("--data_dir", p.long),
         2, r"error: --data_dir <tmp>/a{300}: File name too long"),
    Case("--data_dir under a plain file, to download into",
         lambda p: train("-d", "mnist", "--data_dir", p.plain / "data"),
         2, rf"error: --data_dir <tmp>/plain/data: {NOT_A_FOLDER}"),
    Case("--data_dir on a read-only disk, to download into",
         lambda p: train("-d", "mnist", "--data_dir", p.readonly / "data"),
         4, r"error: --data_dir <ro>/data: Read-only file system", ("readonly",)),
    Case("--resume whose name is too long", lambda p: resume(p.long),
         2, r"error: --resume <tmp>/a{300}: File name too long"),
    Case("--resume of a run on a read-only disk", lambda p: resume(p.readonly / "run"),
         4, r"error: --resume <ro>/run: Read-only file system \(<ro>/run/\.lock\)", ("readonly",)),
    Case("--init_from whose name is too long", lambda p: train("--init_from", p.long),
         2, r"error: --init_from <tmp>/a{300}: File name too long"),
    Case("--init_from under a plain file", lambda p: train("--init_from", p.plain / "model.pt"),
         2, r"error: --init_from <tmp>/plain/model\.pt: no such file or directory"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_refused_path_is_one_line_its_exit_code_and_nothing_lost(
    case, places, capsys, monkeypatch
):
    where = places(case.needs)
    monkeypatch.chdir(where.tmp / "cwd")
    tool, *argv = [str(part) for part in case.argv(where)]
    before = snapshot(where.tmp, where.run)
    capsys.readouterr()

    code = TOOLS[tool](argv)

    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    expected = case.line
    for token, path in where.tokens().items():
        if path is not None:
            expected = expected.replace(token, re.escape(str(path)))
    assert re.fullmatch(expected, lines[0]), lines[0]
    assert code == case.code
    after = snapshot(where.tmp, where.run)
    # nothing that was there changed; nothing new but the empty lock of a run directory made
    # before its disk said it was full, and that directory
    assert {path: after.get(path) for path in before} == before
    new = {path for path in after if path not in before}
    locks = {path for path in new if path.name == ".lock" and path.stat().st_size == 0}
    assert new <= locks | {lock.parent for lock in locks}, new


# -- what the tool writes, it reads back -------------------------------------------------------


def run_of(template: Path, folder: Path, spec: dict, model: nn.Module, masks: dict) -> Path:
    """A run directory holding `model` (built from `spec`) pruned by `masks`: the template
    run's checkpoint with its network swapped, which is all python -m export reads of it."""
    state = torch.load(template / CHECKPOINT, weights_only=True)
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            parameters[name].mul_(mask)
    state["model_spec"] = spec
    state["model"] = model.state_dict()
    state["pruner"]["masks"] = masks
    state["pruner"]["flip_counts"] = {name: torch.zeros(mask.shape, dtype=torch.int32)
                                      for name, mask in masks.items()}  # fmt: skip
    folder.mkdir()
    save_atomic(state, folder / CHECKPOINT)
    return folder


def all_live(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in model.named_parameters()
            if p.dim() > 1}  # fmt: skip


def lenet300_without(layer: str, template: Path, folder: Path) -> Path:
    """The session's LeNet-300-100 with every weight of `layer` pruned: no path is left from
    the input to the output, which becomes a constant held in one buffer."""
    spec = torch.load(template / CHECKPOINT, weights_only=True)["model_spec"]
    model = build_model(**spec)
    masks = all_live(model)
    masks[layer][:] = False
    return run_of(template, folder, spec, model, masks)


def vgg11_without_its_first_conv(template: Path, folder: Path) -> Path:
    """VGG-11 whose first convolution lost every weight, with BatchNorm shifts that make the
    dead channels carry constants: the constant the classifier computes from them is folded
    into a buffer, which the network widens to the batch."""
    spec = {"name": "vgg11", "num_classes": 10, "in_channels": 3, "image_size": 32}
    model = build_model(**spec).eval()
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.bias.data.copy_(torch.rand(module.num_features, generator=generator) * 2 - 1)
    masks = all_live(model)
    masks["features.0.weight"][:] = False
    return run_of(template, folder, spec, model, masks)


CONSTANT_NETWORKS = {
    "lenet300, first layer dead": lambda t, f: lenet300_without("1.weight", t, f),
    "lenet300, last layer dead": lambda t, f: lenet300_without("5.weight", t, f),
    "vgg11, first conv dead": vgg11_without_its_first_conv,
}


@pytest.mark.parametrize("network", CONSTANT_NETWORKS)
@pytest.mark.parametrize("fmt", export.MODULE_FORMATS)
def test_a_constant_network_loads_back_and_answers_one_row_per_image(
    network, fmt, pruned_run, tmp_path
):
    run_dir = CONSTANT_NETWORKS[network](pruned_run, tmp_path / "run")
    out = tmp_path / f"{fmt}.pt"
    export.export(run_dir, fmt, out)
    model = export.load(out)
    assert model.export_info["params_after"] == 0  # a constant: nothing of the input is left
    reference = export.load_run(run_dir).model
    for batch in (1, 2, 5):
        inputs = torch.randn(batch, *export.load_run(run_dir).input_shape)
        with torch.no_grad():
            got, expected = model(inputs), reference(inputs)
        assert got.shape == expected.shape == (batch, 10)
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_compaction_refuses_an_output_that_ignores_the_batch(pruned_run, tmp_path, monkeypatch):
    """Were constants ever again left one example wide, compaction's own check refuses the
    network before export writes anything: a bug, with its traceback."""
    run_dir = lenet300_without("1.weight", pruned_run, tmp_path / "run")
    monkeypatch.setattr(Rewriter, "widened", lambda self, example: example)
    run = export.load_run(run_dir)
    shape = r"changed the output's shape from \(4, 10\) to \(1, 10\)"
    with pytest.raises(RuntimeError, match=shape):
        compact(run.model, run.input_shape, run.masks)
    out = tmp_path / "out.pt"
    with pytest.raises(RuntimeError, match="output's shape"):
        export.main([str(run_dir), "--to", "compact", str(out)])
    assert not out.exists() and list(tmp_path.glob(".out.pt.*")) == []


def constant_graph(rows: int) -> fx.GraphModule:
    """A network that answers `rows` rows of 10 whatever its input, as compaction wrote a network
    with no path left before it widened constants to the batch."""
    root = nn.Module()
    root.register_buffer("folded_0", torch.zeros(rows, 10))
    graph = fx.Graph()
    graph.placeholder("x")
    graph.output(graph.get_attr("folded_0"))
    module = fx.GraphModule(root, graph)
    module.export_info = {"format": "compact", "params_after": 0, "input_shape": [1, 32, 32]}
    return module


def test_read_back_refuses_what_export_could_not_load(tmp_path):
    good = constant_graph(1)
    with pytest.raises(RuntimeError, match="cannot be loaded back"):
        export.read_back(b"not a pickle", good, (1, 32, 32))
    with pytest.raises(RuntimeError, match=r"answers \(1, 10\) for 3 images"):
        export.read_back(export.saved(good), nn.Sequential(nn.Flatten(), nn.Linear(1024, 10)),
                         (1, 32, 32))  # fmt: skip


def test_load_refuses_a_constant_network_of_one_row_from_an_earlier_export(tmp_path):
    path = tmp_path / "old.pt"
    torch.save(constant_graph(1), path)
    with pytest.raises(UserError, match=r"answers one row for a batch of images.*export the run"):
        export.load(path)


# -- numbers as printed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fraction", "digits", "shown"),
    [
        (0.5, 2, "50.00%"),
        (1.0, 2, "100.00%"),
        (0.0, 2, "0.00%"),
        (1 - 14 / 307_200, 2, "99.995%"),  # a layer with 14 of 307,200 weights left
        (14 / 307_200, 2, "0.005%"),
        (14 / 307_200, 1, "0.005%"),
        (1 - 1 / 20_000_000, 4, "99.99999%"),
        (0.99996, 4, "99.9960%"),
        (1 - 1e-16, 2, ">99.99%"),  # closer to 1 than a float shows in percent
    ],
)
def test_a_share_is_never_shown_as_none_or_all_unless_it_is(fraction, digits, shown):
    assert percent(fraction, digits) == shown


def write_summary(folder: Path, seed: int, accuracy: float, sparsity: float = 0.999) -> None:
    folder.mkdir(parents=True)
    summary = {"model": "vgg19", "dataset": "cifar10", "prune_criterion": "flipout", "seed": seed,
               "status": "completed", "final_test_acc": accuracy, "best_test_acc": accuracy,
               "final_sparsity": sparsity, "options": {}}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))


def test_a_single_run_has_no_spread_and_a_sparse_level_is_not_shown_as_all(tmp_path, capsys):
    write_summary(tmp_path / "runs" / "a", 0, 87.0)
    write_summary(tmp_path / "runs" / "b", 0, 91.5, sparsity=1 - 14 / 307_200)
    table = tmp_path / "table.csv"
    assert report.main([str(tmp_path / "runs"), "--csv", str(table)]) == 0
    out = capsys.readouterr().out
    assert "| FlipOut | 99.90 | 87.00 (n=1) |" in out
    assert "| FlipOut | 99.995 | 91.50 (n=1) |" in out
    assert "±" not in out
    rows = list(csv.DictReader(table.open()))
    assert [row["accuracy_std"] for row in rows] == ["", ""]  # undefined for one run


def test_inspect_shows_a_nearly_empty_network_as_not_quite_all_pruned(pruned_run, tmp_path, capsys):
    spec = torch.load(pruned_run / CHECKPOINT, weights_only=True)["model_spec"]
    model = build_model(**spec)
    masks = {name: torch.zeros_like(mask) for name, mask in all_live(model).items()}
    for mask in masks.values():
        mask.view(-1)[0] = True  # one live weight per layer: 3 of 338,200
    run_dir = run_of(pruned_run, tmp_path / "run", spec, model, masks)
    assert inspect_tool.main([str(run_dir)]) == 0
    assert "sparsity 99.999% (3 of 338,200 prunable weights live)" in capsys.readouterr().out


# -- a reader that goes away -------------------------------------------------------------------


def test_every_command_ends_quietly_when_its_reader_has_gone(pruned_run, tmp_path):
    """Each command writes into a pipe whose reading end was closed before it started, so that
    every write fails, whatever the timing: it still does its work, says nothing on stderr and
    exits 0 (utils.errors.quiet_closed_pipes); an error keeps its exit code, even with stderr
    gone too."""
    (tmp_path / "runs" / "r").mkdir(parents=True)
    shutil.copy(pruned_run / "summary.json", tmp_path / "runs" / "r" / "summary.json")
    commands = {
        "report": ["-m", "experiments.report", str(tmp_path / "runs"),
                   "--csv", str(tmp_path / "t.csv")],
        "inspect": ["-m", "export.inspect", str(pruned_run)],
        "export": ["-m", "export", str(pruned_run), "--to", "compact",
                   str(tmp_path / "c.pt")],
        "main.py": ["main.py", *QUICK, "--run_dir", str(tmp_path / "run")],
    }  # fmt: skip
    reader, writer = os.pipe()
    os.close(reader)
    processes = {
        name: subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=writer,
                               stderr=subprocess.PIPE, text=True)
        for name, argv in commands.items()
    }  # fmt: skip
    failing = subprocess.Popen([sys.executable, "-m", "experiments.report",
                                str(tmp_path / "nothing")],
                               cwd=ROOT, stdout=writer, stderr=writer)  # fmt: skip
    os.close(writer)
    for name, process in processes.items():
        _, err = process.communicate(timeout=600)
        assert (name, process.returncode, err) == (name, 0, "")
    assert failing.wait(timeout=600) == 2
    # the work was done all the same
    assert next(csv.DictReader((tmp_path / "t.csv").open()))["model"] == "lenet300"
    assert isinstance(export.load(tmp_path / "c.pt"), nn.Module)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"


def test_the_quiet_stream_drops_writes_once_the_pipe_is_closed():
    from utils.errors import ReaderGone

    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            raise io.UnsupportedOperation("no descriptor")

    stream = ReaderGone(Closed())
    assert stream.write("lost\n") == 5 and stream.gone
    stream.flush()
    print("also lost", file=stream)


# -- the README's --init_from example ----------------------------------------------------------


def test_the_readmes_init_from_example_makes_the_file_it_starts_from(tmp_path, monkeypatch):
    page = README.parent / "docs" / "sparsity.md"
    block = code_block(page, "`--init_from PATH`", "bash").replace("\\\n", " ")
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert [command[:2] for command in commands] == [["python", "main.py"]] * 2
    monkeypatch.chdir(tmp_path)
    dense, pruned = (command[2:] + QUICK for command in commands)
    assert training.main(dense) == 0
    assert (tmp_path / "runs" / "dense" / "model.pt").is_file()
    assert training.main(pruned) == 0
