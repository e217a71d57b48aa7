"""python -m export and export.inspect on a real run: every export format loads back into the same
network, the sparse file is far smaller at high sparsity, and inspect reports what the
checkpoint holds, collapsed layers included."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from export import compact as compaction
from export import formats as export
from export import inspect as inspect_tool
from export.artifacts import load_run
from export.flops import flops_summary
from tests.support import ROOT
from utils.checkpoint import CHECKPOINT, save_atomic


@pytest.fixture
def run_dir(pruned_run: Path) -> Path:
    return pruned_run  # tests/conftest.py


def masked_output(run_dir: Path, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return load_run(run_dir).model(inputs)


def random_inputs(run_dir: Path) -> torch.Tensor:
    return torch.randn(
        16, *load_run(run_dir).input_shape, generator=torch.Generator().manual_seed(0)
    )


# the dicts of tensors: the same network, bit for bit (tests/test_compact.py covers the others)
@pytest.mark.parametrize(
    ("fmt", "loader"),
    [
        ("dense", export.load_dense),
        ("torch_prune", export.load_torch_prune),
        ("sparse", export.load_sparse),
    ],
)
def test_each_format_loads_back_into_the_same_network(run_dir, tmp_path, fmt, loader, capsys):
    out = tmp_path / "nested" / f"{fmt}.pt"
    assert export.main([str(run_dir), "--to", fmt, str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model = loader(out)
    assert not model.training
    inputs = random_inputs(run_dir)
    with torch.no_grad():
        # the same weights and the same operations: bit for bit the same outputs
        assert torch.equal(model(inputs), masked_output(run_dir, inputs))
    # every export is readable without unpickling code, and records the run it came from
    payload = torch.load(out, weights_only=True)
    assert set(payload) == {*export.FORMATS[fmt].keys, export.RUN_KEY}
    assert payload[export.RUN_KEY] == str(run_dir.resolve())


def test_dense_export_has_exact_zeros_where_pruned(run_dir, tmp_path):
    out = tmp_path / "dense.pt"
    export.main([str(run_dir), "--to", "dense", str(out)])
    state = torch.load(out, weights_only=True)["state_dict"]
    for name, mask in load_run(run_dir).masks.items():
        assert not state[name][~mask].any()


def test_torch_prune_export_holds_orig_and_mask(run_dir, tmp_path):
    out = tmp_path / "torch_prune.pt"
    export.main([str(run_dir), "--to", "torch_prune", str(out)])
    payload = torch.load(out, weights_only=True)
    run = load_run(run_dir)
    assert payload["pruned"] == list(run.masks)
    state = payload["state_dict"]
    for name, mask in run.masks.items():
        assert name not in state
        assert torch.equal(state[f"{name}_mask"].bool(), mask)
        assert torch.equal(state[f"{name}_orig"], run.model.get_parameter(name).detach())
    # the loaded model keeps the reparametrisation, so prune-aware code can continue from it
    model = export.load_torch_prune(out)
    assert {f"{name}_mask" for name in run.masks} <= set(model.state_dict())


def test_sparse_file_is_at_least_ten_times_smaller_at_99_percent(run_dir, tmp_path, capsys):
    dense, sparse = tmp_path / "dense.pt", tmp_path / "sparse.pt"
    export.main([str(run_dir), "--to", "dense", str(dense)])
    export.main([str(run_dir), "--to", "sparse", str(sparse)])
    assert dense.stat().st_size >= 10 * sparse.stat().st_size
    assert "x smaller)" in capsys.readouterr().out
    # every prunable tensor of this run lost weights; the stored pattern is its mask: one value
    # per live weight
    run = load_run(run_dir)
    parts = torch.load(sparse, weights_only=True)["sparse"]
    assert {name: part["values"].numel() for name, part in parts.items()} == {
        name: int(mask.sum()) for name, mask in run.masks.items()
    }


def test_inspect_reports_layers_flips_and_flops(run_dir, capsys):
    assert inspect_tool.main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    run = load_run(run_dir)
    for name in run.masks:
        assert name in out
    live = torch.cat([run.flip_counts[name][mask] for name, mask in run.masks.items()])
    assert f"never flipped {float((live == 0).double().mean()):.2%}" in out
    flops = flops_summary(run.model, run.input_shape, run.masks)
    assert f"dense {flops['flops_dense']:,}" in out
    assert f"remaining {flops['flops_remaining']:,}" in out
    assert f"speed-up {flops['theoretical_speedup']:.2f}x" in out
    assert "collapsed layers: none" in out
    assert f"last epoch {run.epoch}" in out


def test_inspect_says_why_a_network_cannot_be_compacted(run_dir, capsys, monkeypatch):
    why = "compact: torch.fx cannot trace Net (control flow)"

    def refuse(*args, **kwargs):
        raise compaction.NotCompactable(why)

    monkeypatch.setattr(compaction, "compact", refuse)
    # the summary's "compact" entry says why in "refused"; "not_compacted" lists layers only
    assert compaction.compact_summary(nn.Linear(2, 2), (2,), {}) == {"refused": why}
    assert inspect_tool.main([str(run_dir)]) == 0
    assert f"compact network: cannot be made ({why})\n" in capsys.readouterr().out


def test_collapsed_and_unpruned_layers(run_dir, tmp_path, capsys):
    """A checkpoint edited so that 3.weight lost every weight and 5.weight none."""
    edited = tmp_path / "edited"
    edited.mkdir()
    shutil.copy(run_dir / CHECKPOINT, edited / CHECKPOINT)
    state = torch.load(edited / CHECKPOINT, weights_only=True)
    for table in (state["pruner"]["masks"], state["pruner"]["flip_counts"], state["model"]):
        table["3.weight"].zero_()
    state["pruner"]["masks"]["5.weight"].fill_(True)
    save_atomic(state, edited / CHECKPOINT)

    assert inspect_tool.main([str(edited)]) == 0
    assert "collapsed layers: 3.weight\n" in capsys.readouterr().out

    out = tmp_path / "sparse.pt"
    assert export.main([str(edited), "--to", "sparse", str(out)]) == 0
    payload = torch.load(out, weights_only=True)
    # the collapsed tensor is an empty CSR tensor; the unpruned one is cheaper stored dense
    assert payload["sparse"]["3.weight"]["values"].numel() == 0
    assert "5.weight" in payload["dense"] and "5.weight" not in payload["sparse"]
    inputs = random_inputs(edited)
    with torch.no_grad():
        assert torch.equal(export.load_sparse(out)(inputs), masked_output(edited, inputs))


def test_a_bad_run_dir_is_one_error_line_and_exit_2(tmp_path, capsys):
    # as users call them, so that `python -m export.inspect` is checked to import cleanly too
    commands = [
        ["export", str(tmp_path / "missing"), "--to", "dense", str(tmp_path / "o")],
        ["export.inspect", str(tmp_path / "missing")],
    ]
    # both at once: each pays for importing torch
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in commands
    ]
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 2
        assert stderr.splitlines() == [f"error: {tmp_path / 'missing'}: no such run directory"]
        assert stdout == ""
    assert not (tmp_path / "o").exists()

    # a directory without a checkpoint, in-process
    assert export.main([str(tmp_path), "--to", "sparse", str(tmp_path / "o")]) == 2
    assert inspect_tool.main([str(tmp_path)]) == 2
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == 2
    assert all(line.startswith(f"error: {tmp_path}: no {CHECKPOINT}") for line in errors)
    assert captured.out == ""


@pytest.mark.parametrize(
    ("tool", "argv"),
    [
        (export, ["RUN", "--to", "tflite", "OUT"]),
        (export, ["RUN", "OUT"]),
        (export, ["RUN", "--to", "dense"]),
        (inspect_tool, []),
        (inspect_tool, ["RUN", "--verbose"]),
    ],
)
def test_a_bad_command_line_is_one_error_line_and_exit_2(tmp_path, capsys, tool, argv):
    assert tool.main([str(tmp_path) if arg == "RUN" else arg for arg in argv]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith("error: ")
    assert captured.out == ""
    if "tflite" in argv:
        assert "invalid choice: 'tflite'" in line
