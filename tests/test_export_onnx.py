"""`python -m export RUN_DIR --to onnx OUT`: the compact network as ONNX, checked by onnxruntime
against the masked network before it is written, loaded back by export.load, and refused in one
line, with nothing left at OUT, where it cannot be written or differs; like every export it
replaces only an export of the same run."""

import dataclasses
import shutil
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from export import formats as export
from export import inspect as inspect_tool
from export import onnx as onnx_export
from export.compact import compact
from models import build_model
from tests.support.runs import assert_one_error_line


def masked_outputs(run_dir: Path, inputs: torch.Tensor) -> torch.Tensor:
    """The run's own network, its pruned weights zero, in eval mode."""
    with torch.no_grad():
        return export.load_run(run_dir).model.eval()(inputs)


def onnxruntime_outputs(path: Path, inputs: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    return torch.from_numpy(output)


@pytest.fixture(scope="module")
def onnx_export_of(pruned_run, tmp_path_factory) -> Path:
    """The ONNX export of the LeNet-300-100 pruned_run (tests/conftest.py). Read only."""
    out = tmp_path_factory.mktemp("onnx") / "lenet300.onnx"
    export.export(pruned_run, "onnx", out)
    return out


def test_an_onnx_export_is_checked_and_reported(pruned_run, tmp_path, capsys):
    out = tmp_path / "deep" / "net.onnx"
    assert export.main([str(pruned_run), "--to", "onnx", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"wrote {out} (onnx, ")
    assert lines[1].startswith("parameters: ")  # the compact network's size, as --to compact
    assert lines[2].startswith("onnxruntime (CPU) agrees with the masked network at batch 1 and 8")


@pytest.mark.parametrize("batch", [1, 5])
def test_onnxruntime_answers_what_the_masked_network_does(pruned_run, onnx_export_of, batch):
    shape = export.load_run(pruned_run).input_shape
    inputs = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
    got = onnxruntime_outputs(onnx_export_of, inputs)
    torch.testing.assert_close(got, masked_outputs(pruned_run, inputs), rtol=1e-4, atol=1e-5)


def test_the_model_records_its_format_run_and_network_and_any_batch(pruned_run, onnx_export_of):
    model = onnx.load(onnx_export_of, load_external_data=False)
    props = {prop.key: prop.value for prop in model.metadata_props}
    assert props["flipout.format"] == "onnx"
    assert props["flipout.run_dir"] == str(pruned_run.resolve())
    assert model.opset_import[0].version == onnx_export.OPSET
    (batch, *_) = model.graph.input[0].type.tensor_type.shape.dim
    assert batch.dim_param and not batch.dim_value  # a named, dynamic batch dimension
    header = export.export_header(onnx_export_of)
    assert (header.format, header.run_dir) == ("onnx", str(pruned_run.resolve()))
    assert header.spec == export.load_run(pruned_run).spec


def test_an_onnx_export_given_for_a_run_directory_is_named_with_its_run(
    pruned_run, onnx_export_of, capsys
):
    assert inspect_tool.main([str(onnx_export_of)]) == 2
    assert_one_error_line(
        capsys,
        f"{onnx_export_of} is an onnx export of python -m export, not a run directory",
        f"({pruned_run.resolve()})",
    )


@pytest.mark.parametrize("odd", [{"module": True}, {"keys": ("spec",)}, {"read": None}])
def test_a_format_of_its_own_file_has_a_reader_and_neither_keys_nor_a_module(odd):
    fields = {"header": export.onnx_header, "read": onnx_export.read, **odd}
    with pytest.raises(ValueError, match="'odd': a format of its own file"):
        export.ExportFormat("odd", "", make=export.onnx_made, load=export.onnx_network, **fields)


def test_load_gives_a_network_in_eval_mode_that_answers_as_the_masked_one(
    pruned_run, onnx_export_of
):
    model = export.load(onnx_export_of)
    assert isinstance(model, nn.Module) and not model.training
    shape = export.load_run(pruned_run).input_shape
    inputs = torch.randn(3, *shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        model(inputs), masked_outputs(pruned_run, inputs), rtol=1e-4, atol=1e-5
    )


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
    reason="this onnxruntime has the CUDA provider",
)
def test_loading_on_cuda_without_its_provider_is_one_line(onnx_export_of):
    with pytest.raises(export.UserError, match=r"has no CUDAExecutionProvider; load the ONNX"):
        export.load(onnx_export_of, device="cuda")


class Residual(nn.Module):
    """ResNet's basic block in small: convolutions with BatchNorm, and a sum with the shortcut."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width))
        self.branch = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        stream = torch.relu(self.stem(inputs))
        return self.head(torch.relu(stream + self.branch(stream)))


def test_a_conv_network_with_batchnorm_and_residuals_converts_and_agrees():
    model = Residual().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():  # trained-looking BatchNorm: dead channels carry constants
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1, generator=generator)
                module.bias.uniform_(-1, 1, generator=generator)
        masks = {
            name: torch.rand(p.shape, generator=generator) > 0.5
            for name, p in model.named_parameters()
            if p.dim() > 1
        }
        masks["branch.0.weight"][:3] = False  # channels that lose every input fold into biases
    compacted, report = compact(model, (3, 8, 8), masks)
    assert report.channels_after < report.channels_before
    data = onnx_export.onnx_bytes(compacted, (3, 8, 8), {"format": "onnx"})
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.mul_(masks.get(name, 1))
    assert "agrees with the masked network" in onnx_export.check(data, model, (3, 8, 8))


# -- what is refused --------------------------------------------------------------------------


class Singular(nn.Module):
    """A network whose forward calls an operator ONNX has no counterpart for."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svdvals(inputs.flatten(1)[:, :4].reshape(-1, 2, 2))


def off_by_a_little(run) -> nn.Module:
    """The masked network with one bias moved, as a wrong conversion would answer."""
    model = build_model(**run.spec)
    model.load_state_dict(run.model.state_dict())
    with torch.no_grad():
        model.get_submodule("5").bias[0] += 0.5  # the classifier's, in LeNet-300-100
    return model.eval()


@pytest.mark.parametrize(
    ("patched", "replacement", "said"),
    [
        ("compact_module", lambda run, fmt: Singular(), "cannot be written as ONNX opset 18: "
         "Exporting the operator 'aten::linalg_svdvals'"),
        ("masked_network", off_by_a_little, "onnxruntime's outputs at batch 1 differ from the "
         "masked network's"),
    ],
    ids=["an operator ONNX cannot express", "outputs that differ"],
)  # fmt: skip
def test_a_network_onnx_cannot_carry_is_refused_and_nothing_written(
    pruned_run, tmp_path, capsys, monkeypatch, patched, replacement, said
):
    monkeypatch.setattr(export, patched, replacement)
    out = tmp_path / "net.onnx"
    assert export.main([str(pruned_run), "--to", "onnx", str(out)]) == 2
    line = assert_one_error_line(capsys, said, str(pruned_run), "--to onnx")
    assert "not written" in line or "opset" in line
    assert list(tmp_path.iterdir()) == []  # no OUT, no temporary file beside it


def plain_onnx(source: Path, target: Path) -> None:
    """An ONNX model that python -m export did not write: ours without its metadata."""
    model = onnx.load(source, load_external_data=False)
    del model.metadata_props[:]
    onnx.save(model, target)


def of_another_run(source: Path, target: Path) -> None:
    model = onnx.load(source, load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == "flipout.run_dir":
            prop.value = "/elsewhere/run"
    onnx.save(model, target)


def some_text(source: Path, target: Path) -> None:
    target.write_text("my notes\n")


@pytest.mark.parametrize(
    ("make", "said", "forced"),
    [
        (some_text, "exists and is not an export of python -m export", False),
        (plain_onnx, "exists and is not an export of python -m export", False),
        (of_another_run, "is an onnx export of another run (/elsewhere/run); --force", True),
    ],
    ids=["a text file", "an ONNX model of someone else", "another run's ONNX export"],
)
def test_what_an_onnx_export_does_not_replace(
    pruned_run, onnx_export_of, tmp_path, capsys, make, said, forced
):
    out = tmp_path / "net.onnx"
    make(onnx_export_of, out)
    before = out.read_bytes()
    assert export.main([str(pruned_run), "--to", "onnx", str(out)]) == 2
    assert_one_error_line(capsys, said)
    assert out.read_bytes() == before
    if forced:
        assert export.main([str(pruned_run), "--to", "onnx", str(out), "--force"]) == 0
        assert export.export_header(out).run_dir == str(pruned_run.resolve())


def test_a_spec_read_back_from_json_is_the_same_network(pruned_run):
    # an ONNX file records the spec in JSON, where a tuple of model_kwargs comes back a list
    run = export.load_run(pruned_run)
    run = dataclasses.replace(run, spec={**run.spec, "model_kwargs": {"dims": (8, 16)}})
    header = export.ExportHeader("onnx", export.as_json(run.spec), str(pruned_run.resolve()))
    assert header.spec != run.spec and export.other_export(header, run) is None


def test_an_onnx_export_of_the_same_run_is_replaced_and_replaces_a_compact_one(
    pruned_run, onnx_export_of, tmp_path
):
    out = tmp_path / "net.onnx"
    shutil.copy(onnx_export_of, out)
    assert export.main([str(pruned_run), "--to", "compact", str(out)]) == 0
    assert export.export_header(out).format == "compact"
    assert export.main([str(pruned_run), "--to", "onnx", str(out)]) == 0
    assert export.export_header(out).format == "onnx"


def truncated(source: Path, target: Path) -> None:
    target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])


def unknown_operator(source: Path, target: Path) -> None:
    model = onnx.load(source, load_external_data=False)
    model.graph.node[0].op_type = "NoSuchOperator"
    onnx.save(model, target)


def external_tensors(source: Path, target: Path) -> None:
    model = onnx.load(source, load_external_data=False)
    tensor = model.graph.initializer[0]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="/etc/passwd")
    target.write_bytes(model.SerializeToString())  # onnx.save would refuse to write it


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (truncated, "unreadable, truncated or not a file of tensors"),
        (unknown_operator, "a damaged onnx export: "),
        (plain_onnx, "is an ONNX model, but not an export of python -m export"),
        (external_tensors, "an ONNX export whose tensors are in other files; not loaded"),
    ],
    ids=["truncated", "an unknown operator", "no metadata", "tensors in other files"],
)
def test_a_damaged_or_foreign_onnx_file_is_one_line_at_load(onnx_export_of, tmp_path, damage, said):
    path = tmp_path / "damaged.onnx"
    damage(onnx_export_of, path)
    with pytest.raises(export.UserError) as caught:
        export.load(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and said in message and "\n" not in message
