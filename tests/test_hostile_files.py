"""No file runs code when this tool reads it (issue 30): every reader of a file a user may have
been sent (`export.load`, `--init_from` a file or a run, `--resume`, `python -m export` and
`python -m export.inspect` on a run, the report) meets each gadget of tests/support/hostile.py
(exec, eval, __import__ with getattr, os.system, subprocess, classes outside the allow-list,
torch's own fx loader, hooks, names printed into generated code), as a whole file and inside an
otherwise intact one. None may run (its marker file stays absent) and each ends in one line.
"""

import os
import pickle
import shutil

import pytest
import torch

import main
import models
from experiments import report
from export import formats as export
from export import inspect as inspect_tool
from export.safe_load import Refused, read_module
from tests.support.deadline import deadline
from tests.support.hostile import GADGETS, write_gadget
from tests.support.runs import assert_one_error_line, only_run_dir, quick

# the gadgets torch's fx loader would run: only a module export's reader meets them as such
FX_GADGETS = [name for name in GADGETS if name.startswith("fx ")]
PICKLE_GADGETS = [name for name in GADGETS if name not in FX_GADGETS]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A finished run with model.pt and checkpoint.pt, and a compact export of it."""
    tmp = tmp_path_factory.mktemp("hostile")
    argv = quick(tmp, "-m", "lenet300", "-e", "2", "--prune_freq", "1", "--limit_batches", "2")
    assert main.main([*argv, "--save_model"]) == 0
    run_dir = only_run_dir(tmp / "runs")
    export.export(run_dir, "compact", tmp / "compact.pt")
    return run_dir, tmp / "compact.pt"


@pytest.fixture
def run_copy(source_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(source_run[0], run_dir)
    return run_dir


def marker_of(tmp_path):
    marker = tmp_path / "ran"
    assert not marker.exists()
    return marker


@pytest.mark.parametrize("inside", [False, True], ids=["whole file", "inside an export"])
@pytest.mark.parametrize("gadget", list(GADGETS))
def test_load_runs_nothing(tmp_path, source_run, gadget, inside):
    marker, path = marker_of(tmp_path), tmp_path / "sent.pt"
    export.export(source_run[0], "dense", tmp_path / "dense.pt")
    intact = torch.load(tmp_path / "dense.pt", weights_only=True) if inside else None
    write_gadget(path, gadget, marker, intact)
    with pytest.raises(export.UserError) as refused:
        export.load(path)
    assert not marker.exists()
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("gadget", PICKLE_GADGETS)
def test_an_old_style_pickle_runs_nothing(tmp_path, gadget):
    """torch's legacy (not zip) format goes through another reader in torch: refused too."""
    marker, path = marker_of(tmp_path), tmp_path / "sent.pt"
    torch.save(GADGETS[gadget](marker), path, _use_new_zipfile_serialization=False)
    with pytest.raises(export.UserError):
        export.load(path)
    with pytest.raises(export.UserError):
        export.read_torch_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("gadget", PICKLE_GADGETS)
def test_run_files_run_nothing(tmp_path, capsys, run_copy, gadget):
    """A hostile checkpoint.pt or model.pt in a run directory someone sent: --resume,
    --init_from, python -m export, python -m export.inspect and the report read the run."""
    marker = marker_of(tmp_path)
    for name in ("checkpoint.pt", "model.pt"):
        intact = torch.load(run_copy / name, weights_only=True)
        write_gadget(run_copy / name, gadget, marker, intact)
    out = str(tmp_path / "out.pt")
    for argv in (
        ["--resume", str(run_copy), "--num_workers", "0"],
        ["--init_from", str(run_copy), "--num_workers", "0", "--run_dir", str(tmp_path / "a")],
        ["--init_from", str(run_copy / "checkpoint.pt"), "--run_dir", str(tmp_path / "b")],
    ):
        assert main.main(argv) == 2
        assert_one_error_line(capsys, "would call or build")
    assert export.main([str(run_copy), "--to", "dense", out]) == 2
    assert_one_error_line(capsys, "would call or build")
    assert inspect_tool.main([str(run_copy)]) == 2
    assert_one_error_line(capsys, "would call or build")
    report.main([str(run_copy.parent)])
    capsys.readouterr()
    assert not marker.exists()


def test_a_real_export_still_loads(source_run):
    """The allow-list admits what compaction writes: the export loads, reads back the same
    network, and its forward is what torch.fx generates again from the graph read."""
    network = export.load(source_run[1])
    reference = torch.load(source_run[1], weights_only=False)
    images = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(network(images), reference.eval()(images))
    assert network.code == reference.code


@pytest.mark.parametrize(
    "forward, reason",
    [
        ("def forward(self, x):\n    y = torch.load('f')\n    return y", "torch.load"),
        ("def forward(self, x):\n    y = operator.attrgetter('a')(x)\n    return y", "calls"),
        ("def forward(self, x):\n    y = x.__reduce__()\n    return y", "__reduce__"),
        ("def forward(self, x):\n    y = getattr(x, '__class__')\n    return y", "attribute"),
        ("def forward(self, x):\n    y = getattr(x, 'register_hook')\n    return y", "attribute"),
        ("def forward(self, x):\n    y = x.grad_fn\n    return y", "grad_fn"),
        ("def forward(self, x):\n    y = x.numpy()\n    return y", "numpy"),
        ("def forward(self, x):\n    y = x.untyped_storage()\n    return y", "untyped_storage"),
        ("def forward(self, x):\n    y = x.register_hook(x)\n    return y", "register_hook"),
        ("def forward(self, x):\n    y = open('f')\n    return y", "open"),
        ("def forward(self, x):\n    y = self(x)\n    return y", "not a layer"),
        ("def forward(self, x):\n    import os\n    return x", "Import"),
        ("def forward(self, x):\n    y = z\n    return y", "'z'"),
        ("def forward(self, x):\n    y = torch.from_file('f')\n    return y", "from_file"),
        ("def forward(self, *x):\n    return x", "arguments"),
        ("def forward(self, x):\n    y = [a for a in x]\n    return y", "ListComp"),
        ("def forward(self, x):\n    y = lambda: 0\n    return y", "Lambda"),
    ],
)
def test_a_forward_is_read_never_run(tmp_path, forward, reason):
    """Each construct torch.fx never writes, or a function no network calls, is refused by
    the reader of forwards, by name."""
    from tests.support.hostile import graph_module

    path = tmp_path / "sent.pt"
    torch.save(graph_module(f"\n{forward}\n"), path)
    with pytest.raises(Refused, match=reason.replace("(", r"\(")):
        read_module(path)


def timm_spec_rejected(payload: dict) -> None:
    """A spec timm asserts against (heads that do not divide the width)."""
    payload["spec"] = {"name": "timm:vit_tiny_patch16_224", "num_classes": 10, "in_channels": 1,
                       "image_size": 8, "model_kwargs": {"num_heads": 5}}  # fmt: skip


def timm_spec(**kwargs):
    def damage(payload: dict) -> None:
        payload["spec"] = {"name": "timm:vit_tiny_patch16_224", "num_classes": 10,
                           "in_channels": 1, "image_size": 8, "model_kwargs": kwargs}  # fmt: skip

    return damage


@pytest.mark.parametrize(
    "damage, says",
    [
        (timm_spec_rejected, "is not a network: AssertionError"),
        (timm_spec(depth=1000), "more than 50 layers"),
        (timm_spec(embed_dim=2**20, num_heads=1, depth=1, patch_size=2), "memory available"),
        (lambda payload: payload.update(spec={"name": "lenet300", "bogus": 1}), "not a network"),
        (lambda payload: payload.update(spec=["lenet300"]), "not a network"),
        (lambda payload: payload["state_dict"].pop("1.weight"), "a damaged dense export"),
        (lambda payload: payload["state_dict"].update({"1.weight": torch.zeros(2)}), "damaged"),
    ],
)
def test_a_damaged_export_is_one_line(tmp_path, source_run, monkeypatch, damage, says):
    """Nothing a spec asks is built before it is known to fit: layers counted as they are
    registered on the meta device (a limit of 50 here, for speed), memory weighed there."""
    monkeypatch.setattr(models, "MOST_LAYERS", 50)
    path = tmp_path / "dense.pt"
    export.export(source_run[0], "dense", path)
    payload = torch.load(path, weights_only=True)
    damage(payload)
    torch.save(payload, path)
    with pytest.raises(export.UserError, match=says) as refused:
        export.load(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


def test_load_never_waits_on_what_is_no_file(tmp_path):
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), (tmp_path, "a directory"), ("/dev/zero", "device")):
        with deadline(10, f"load({path})"), pytest.raises(export.UserError, match=kind):
            export.load(path)


def test_loading_never_runs_the_network(tmp_path):
    """Whether an old constant export answers one row per image is read off its graph: a file
    whose forward would allocate exabytes (or compute for minutes) loads without running it."""
    from tests.support.hostile import graph_module

    forward = "\ndef forward(self, x):\n    y = torch.empty(4611686018427387904)\n    return x\n"
    gadget = graph_module(forward)
    gadget.args[0]["export_info"] = {"format": "compact", "params_after": 0, "input_shape": [1]}
    path = tmp_path / "sent.pt"
    torch.save(gadget, path)
    network = export.load(path)
    with pytest.raises(RuntimeError):
        network(torch.zeros(2, 1))  # what loading did not do


def test_a_refusal_never_advises_loading_with_weights_only_false(tmp_path):
    """torch's own message for a file its weights-only reader refuses suggests
    weights_only=False, which would run what it refused: the one line gives torch's reason
    alone."""
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"1.weight": [0.5]}, protocol=4))
    with pytest.raises(export.UserError) as refused:
        export.read_torch_file(path)
    message = str(refused.value)
    assert "weights_only" not in message and "\n" not in message
    assert "not a file of tensors that torch.save wrote" in message
