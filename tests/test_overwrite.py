"""No command overwrites a file it did not make (issue 30): `python -m export RUN --to FMT OUT`
refuses in one line, exit 2, to write onto a run's own files, onto a directory, device, FIFO or
socket (also through a link), and onto a file that is not an export; it replaces an export of the
same run and network, and one of another run or network only with --force. A refused target is
left byte for byte as it was, and no file it reads runs code.

Also the messages around: export.inspect given a file, a damaged spec that timm rejects with an
AssertionError or a KeyError (in --init_from, python -m export and export.inspect), --init_from a
compact or sparse_runtime export, and a Pruner given a network on the meta device."""

import hashlib
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
from torch import nn

import main as training
from export import formats as export
from export import inspect as inspect_tool
from export.formats import RUN_KEY, export_header
from pruning import Pruner
from tests.support.runs import assert_one_error_line
from utils.checkpoint import CHECKPOINT

# a quick run on digits: one epoch of one batch, pruned to half before it
QUICK = ["-d", "digits", "-e", "1", "--limit_batches", "1", "--num_workers", "0", "--quiet",
         "--schedule", "oneshot", "--target_sparsity", "0.5", "--prune_start", "0",
         "--save_model"]  # fmt: skip
# a timm ViT cut small, and the keyword arguments timm rejects with an AssertionError or KeyError
VIT = ["-m", "timm:vit_tiny_patch16_224", "--model_kwargs", "patch_size=2", "depth=1",
       "embed_dim=16", "num_heads=2"]  # fmt: skip
REJECTED = {
    "AssertionError": ({"num_heads": 3}, "AssertionError: dim should be divisible by num_heads"),
    "KeyError": ({"act_layer": "no_such_activation"}, "KeyError: 'no_such_activation'"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A pruned LeNet-300-100 run ("run"), a copy of it elsewhere, which is another run
    ("other"), and the compact export of that copy."""
    root = tmp_path_factory.mktemp("overwrite")
    assert training.main([*QUICK, "--run_dir", str(root / "run")]) == 0
    shutil.copytree(root / "run", root / "other")
    assert export.main([str(root / "other"), "--to", "compact", str(root / "other.pt")]) == 0
    return {"run": root / "run", "other": root / "other", "other compact": root / "other.pt"}


@pytest.fixture(scope="module")
def vit_runs(tmp_path_factory) -> dict[str, Path]:
    """A run of a small timm ViT, and a copy of it per rejected spec, whose model.pt and
    checkpoint.pt ask timm for keyword arguments it rejects."""
    pytest.importorskip("timm")
    root = tmp_path_factory.mktemp("vit")
    assert training.main([*VIT, *QUICK, "--run_dir", str(root / "vit")]) == 0
    made = {"vit": root / "vit"}
    for name, (kwargs, _) in REJECTED.items():
        made[name] = root / name
        shutil.copytree(root / "vit", made[name])
        for file, key in (("model.pt", "spec"), (CHECKPOINT, "model_spec")):
            state = torch.load(made[name] / file, weights_only=True)
            state[key]["model_kwargs"].update(kwargs)
            torch.save(state, made[name] / file)
    return made


def digests(*roots: Path) -> dict[Path, str]:
    """Each file below (or at) `roots` with a digest of its bytes; a link as where it leads."""
    entries = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            if path.is_symlink():
                entries[path] = f"link to {os.readlink(path)}"
            elif path.is_file():
                entries[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def refused(capsys, argv: list, *names: str) -> str:
    """Runs python -m export with `argv`: exit 2 and one error line naming `names`."""
    capsys.readouterr()
    assert export.main([str(part) for part in argv]) == 2
    return assert_one_error_line(capsys, *names)


# -- the run's own files ----------------------------------------------------------------------


RUN_FILES = ["checkpoint.pt", "config.json", "model.pt", "summary.json", "metrics.jsonl", ".lock",
             "events.out.tfevents.*", "output.log", "slurm.json"]  # fmt: skip


@pytest.mark.parametrize("name", RUN_FILES)
def test_an_export_never_replaces_a_file_of_a_run(runs, name, capsys):
    run = runs["run"]
    (out,) = run.glob(name) if "*" in name else [run / name]  # output.log: not there yet
    before = digests(run)
    line = refused(capsys, [run, "--to", "dense", out], str(out), "no export replaces")
    assert f"keeps its {out.name}" in line
    assert digests(run) == before


def test_a_link_into_a_run_is_followed_to_the_file_it_would_replace(runs, tmp_path, capsys):
    link = tmp_path / "out.pt"
    link.symlink_to(runs["run"] / CHECKPOINT)
    before = digests(runs["run"], link)
    refused(capsys, [runs["run"], "--to", "dense", link], f"a link to {runs['run'] / CHECKPOINT}")
    assert digests(runs["run"], link) == before


# -- what is no regular file --------------------------------------------------------------------


def fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "fifo")
    return tmp_path / "fifo"


def unix_socket(tmp_path: Path) -> Path:
    path = tmp_path / "socket"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.close()  # the socket file stays
    return path


def link_to(target: str):
    def make(tmp_path: Path) -> Path:
        (tmp_path / "link.pt").symlink_to(target)
        return tmp_path / "link.pt"

    return make


NOT_FILES = {
    "/dev/null": (lambda tmp_path: Path(os.devnull), "is a character device"),
    "a link to /dev/null": (link_to(os.devnull), "(a link to /dev/null) is a character device"),
    "a FIFO": (fifo, "is a FIFO"),
    "a link to a FIFO": (lambda tmp_path: link_to(str(fifo(tmp_path)))(tmp_path), "is a FIFO"),
    "a socket": (unix_socket, "is a socket"),
    "a directory": (lambda tmp_path: tmp_path, "is a directory"),
}


@pytest.mark.parametrize("case", NOT_FILES)
def test_an_export_is_never_written_onto_what_is_no_regular_file(runs, tmp_path, case, capsys):
    make, says = NOT_FILES[case]
    out = make(tmp_path)
    kind = os.stat(out).st_mode
    refused(
        capsys, [runs["run"], "--to", "dense", out], f"{out} ", says, "OUT is the file to write"
    )
    assert os.stat(out).st_mode == kind  # /dev/null is still a device, the FIFO a FIFO
    assert not list(tmp_path.glob(".*.tmp"))


# -- files that are not exports ---------------------------------------------------------------


class Calls:
    """Pickles as a call of `function` with `args`: what a hostile file would do."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


def saved(payload_of):
    """A maker of OUT: torch.save of `payload_of(runs, the folder a call may make)`."""

    def make(runs: dict[str, Path], tmp_path: Path) -> Path:
        torch.save(payload_of(runs, tmp_path / "ran"), tmp_path / "out.pt")
        return tmp_path / "out.pt"

    return make


def raw(content: bytes):
    def make(runs: dict[str, Path], tmp_path: Path) -> Path:
        (tmp_path / "out.pt").write_bytes(content)
        return tmp_path / "out.pt"

    return make


FOREIGN = {
    "a text file": raw(b"notes\n"),
    "an empty file": raw(b""),
    "a dict of tensors": saved(lambda runs, ran: {"weights": torch.zeros(3)}),
    "a tensor": saved(lambda runs, ran: torch.zeros(3)),
    # a dense export's keys and the masks besides
    "a model.pt copied out of its run": saved(
        lambda runs, ran: torch.load(runs["run"] / "model.pt", weights_only=True)
    ),
    "a dict whose pickle would run code": saved(
        lambda runs, ran: {"weights": Calls(os.mkdir, str(ran))}
    ),
    "a pickle of exec, as a module export's is of torch.fx": saved(
        lambda runs, ran: Calls(exec, f"import os; os.mkdir({str(ran)!r})")
    ),
}


@pytest.mark.parametrize("case", FOREIGN)
def test_a_file_that_is_no_export_is_never_replaced(runs, tmp_path, case, capsys):
    out = FOREIGN[case](runs, tmp_path)
    before = digests(out)
    for force in ([], ["--force"]):
        refused(capsys, [runs["run"], "--to", "dense", out, *force], f"{out} exists and is not an "
                "export of python -m export, which no export replaces")  # fmt: skip
    assert digests(out) == before
    assert not (tmp_path / "ran").exists()  # no code of the file ran
    assert export_header(out) is None


# -- exports: of the same run replaced, of another only with --force ----------------------------


def test_an_export_of_the_same_run_is_replaced(runs, tmp_path, capsys):
    out = tmp_path / "out.pt"
    for fmt in ("dense", "sparse", "compact", "torch_prune"):
        assert export.main([str(runs["run"]), "--to", fmt, str(out)]) == 0
        assert f"wrote {out} ({fmt}" in capsys.readouterr().out
        header = export_header(out)
        assert (header.format, header.run_dir) == (fmt, str(runs["run"].resolve()))


def test_a_link_to_an_export_is_written_through(runs, tmp_path):
    target = tmp_path / "exports" / "dense.pt"
    target.parent.mkdir()
    assert export.main([str(runs["run"]), "--to", "dense", str(target)]) == 0
    link = tmp_path / "latest.pt"
    link.symlink_to(target)
    assert export.main([str(runs["run"]), "--to", "sparse", str(link)]) == 0
    assert link.is_symlink() and export_header(target).format == "sparse"


def older_export(run: Path):
    """A dense export as python -m export wrote it before exports recorded their run."""

    def make(tmp_path: Path) -> Path:
        state = torch.load(run / "model.pt", weights_only=True)
        torch.save({"spec": state["spec"], "state_dict": state["state_dict"]}, tmp_path / "o.pt")
        return tmp_path / "o.pt"

    return make


def another_network(run: Path):
    """A dense export recorded as of `run`'s directory, but of another network."""

    def make(tmp_path: Path) -> Path:
        spec = {**torch.load(run / "model.pt", weights_only=True)["spec"], "num_classes": 7}
        payload = {"spec": spec, "state_dict": {}, RUN_KEY: str(run.resolve())}
        torch.save(payload, tmp_path / "o.pt")
        return tmp_path / "o.pt"

    return make


def copied(name: str):
    return lambda runs: lambda tmp_path: Path(shutil.copy(runs[name], tmp_path / "o.pt"))


OTHER_EXPORTS = {
    "compact export of another run": (copied("other compact"), "a compact export of another run"),
    "export of an earlier version": (lambda runs: older_export(runs["run"]),
                                     "a dense export written by an earlier version"),
    "export of another network": (lambda runs: another_network(runs["run"]),
                                  "a dense export of another network of that run directory"),
}  # fmt: skip


@pytest.mark.parametrize("case", OTHER_EXPORTS)
@pytest.mark.parametrize("fmt", ["dense", "compact"])
def test_an_export_of_another_run_or_network_is_replaced_only_with_force(
    runs, tmp_path, case, fmt, capsys
):
    make, says = OTHER_EXPORTS[case]
    out = make(runs)(tmp_path)
    before = digests(out)
    refused(capsys, [runs["run"], "--to", fmt, out], str(out), says, "--force replaces it")
    assert digests(out) == before
    assert export.main([str(runs["run"]), "--to", fmt, str(out), "--force"]) == 0
    header = export_header(out)
    assert (header.format, header.run_dir) == (fmt, str(runs["run"].resolve()))


def test_the_run_of_another_export_is_named(runs, tmp_path, capsys):
    out = Path(shutil.copy(runs["other compact"], tmp_path / "o.pt"))
    line = refused(capsys, [runs["run"], "--to", "dense", out])
    assert f"({runs['other'].resolve()})" in line


# -- export.inspect and python -m export given a file for RUN_DIR -------------------------------


GIVEN_FILES = {
    "a compact export": (lambda runs, tmp_path: runs["other compact"],
                         "{path} is a compact export of python -m export, not a run directory; "
                         "give the run directory it was exported from ({other})"),
    "a file of a run": (lambda runs, tmp_path: runs["run"] / CHECKPOINT,
                        "{path} is a file of the run directory {run}; give the directory itself"),
    "a text file": (lambda runs, tmp_path: raw(b"notes\n")(runs, tmp_path),
                    "{path} is a file, not a run directory"),
    "a FIFO": (lambda runs, tmp_path: fifo(tmp_path), "{path} is a FIFO, not a run directory"),
}  # fmt: skip


@pytest.mark.parametrize("tool", ["inspect", "export"])
@pytest.mark.parametrize("case", GIVEN_FILES)
def test_a_file_given_for_a_run_directory_is_named_for_what_it_is(
    runs, tmp_path, case, tool, capsys
):
    make, says = GIVEN_FILES[case]
    path = make(runs, tmp_path)
    argv = [str(path)] if tool == "inspect" else [str(path), "--to", "dense", str(tmp_path / "o")]
    capsys.readouterr()
    assert {"inspect": inspect_tool.main, "export": export.main}[tool](argv) == 2
    line = assert_one_error_line(capsys)
    assert line.startswith(
        "error: " + says.format(path=path, run=runs["run"], other=runs["other"].resolve())
    )
    assert "no such run directory" not in line


# -- a spec that timm rejects -----------------------------------------------------------------


@pytest.mark.parametrize("rejected", REJECTED)
@pytest.mark.parametrize("entry", ["--init_from", "export", "inspect"])
def test_a_spec_timm_rejects_is_one_line_naming_the_file(vit_runs, tmp_path, rejected, entry,
                                                         capsys):  # fmt: skip
    damaged = vit_runs[rejected]
    _, why = REJECTED[rejected]
    capsys.readouterr()
    if entry == "--init_from":
        argv = [*VIT, *QUICK, "--init_from", str(damaged), "--run_dir", str(tmp_path / "r")]
        code, file = training.main(argv), "model.pt: its spec"
    elif entry == "export":
        code = export.main([str(damaged), "--to", "dense", str(tmp_path / "out.pt")])
        file = f"{damaged / CHECKPOINT}: its model_spec"
    else:
        code, file = inspect_tool.main([str(damaged)]), f"{damaged / CHECKPOINT}: its model_spec"
    assert code == 2
    line = assert_one_error_line(capsys, str(damaged), file, "timm:vit_tiny_patch16_224")
    assert line.endswith(f"is not a network: {why}")


# -- --init_from a module export --------------------------------------------------------------


@pytest.mark.parametrize("fmt", export.MODULE_FORMATS)
def test_init_from_a_module_export_says_what_to_start_from(runs, tmp_path, fmt, capsys):
    out = tmp_path / f"{fmt}.pt"
    assert export.main([str(runs["run"]), "--to", fmt, str(out)]) == 0
    capsys.readouterr()
    argv = [*QUICK, "--init_from", str(out), "--run_dir", str(tmp_path / "r")]
    assert training.main(argv) == 2
    line = assert_one_error_line(capsys, f"--init_from {out}: a {fmt} export is a whole network")
    assert "not weights to start from" in line and "unreadable" not in line
    assert f"a run directory (this one was exported from {runs['run'].resolve()})" in line
    assert "model.pt or checkpoint.pt, or a dense, torch_prune or sparse export" in line


# -- the meta device --------------------------------------------------------------------------


def test_a_pruner_refuses_a_network_on_the_meta_device():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"^model is on the meta device.*cpu, cuda"):
        Pruner(model)
