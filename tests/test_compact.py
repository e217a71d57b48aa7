"""Compaction and the sparse runtime (export/compact.py, export/sparse_runtime.py), and the export
formats built on them: every network they make computes what the masked network computes."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import fx, nn

from export import formats as export
from export.compact import compact
from export.sparse_runtime import (
    SparseConv2d,
    SparseLinear,
    UnrolledConv2d,
    fuse_into_sparse,
    sparsify,
)
from models import build_model
from pruning.select import lowest_k

# fp32: the compacted network sums fewer terms in another order, and adds folded constants
TOLERANCE = 1e-5
SHAPES = {"lenet300": (1, 28, 28), "vgg19": (3, 32, 32), "resnet18": (3, 32, 32),
          "densenet121": (3, 32, 32)}  # fmt: skip


def uneven_masks(model: nn.Module, sparsity: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per layer, `sparsity` of the weights pruned, more of them in some output rows than in
    others (a random factor per row), so that some channels lose everything and others keep a
    few: the structure a real prune leaves. The classifier keeps half."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    layers = [(n, p) for n, p in model.named_parameters() if p.dim() > 1]
    for index, (name, weight) in enumerate(layers):
        rows = torch.randn(weight.shape[0], generator=generator).mul(0.5).exp()
        noise = torch.rand(weight.shape, generator=generator)
        scores = noise * rows.view(-1, *[1] * (weight.dim() - 1))
        share = 0.5 if index == len(layers) - 1 else sparsity
        masks[name] = ~lowest_k(scores.flatten(), int(share * weight.numel())).view_as(weight)
    return masks


def with_batchnorm_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking BatchNorm: nonzero shifts, so that dead channels carry constants."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) * 2 - 1)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) * 2 - 1)
    return model.eval()


def masked(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            parameters[name].mul_(mask)
    return model


def assert_same_outputs(network: nn.Module, reference: nn.Module, shape, batch: int = 3) -> None:
    inputs = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected, got = reference(inputs), network(inputs)
    assert got.shape == expected.shape
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= TOLERANCE * scale, (got - expected).abs().max() / scale


@pytest.mark.parametrize("name", ["vgg19", "resnet18", "densenet121"])
@pytest.mark.parametrize("sparsity, kernel", [(0.99, "csr"), (0.999, "csr"), (0.999, "unrolled")])
def test_compact_and_sparse_networks_compute_what_the_masked_one_does(name, sparsity, kernel):
    shape = SHAPES[name]
    model = with_batchnorm_statistics(build_model(name))
    masks = uneven_masks(model, sparsity)
    compacted, report = compact(model, shape, masks)
    reference = masked(model, masks)
    assert not compacted.training
    assert report.params_after < report.params_before
    assert report.channels_after < report.channels_before
    assert_same_outputs(compacted, reference, shape)
    example = torch.randn(2, *shape)
    runtime, choices = sparsify(compact(model, shape, masks)[0], example, repeats=1, kernel=kernel)
    # random masks at 99.9% can leave no path from the input to the output: then the network is
    # a constant, and there is no layer left to run sparse
    kinds = (SparseConv2d, SparseLinear, UnrolledConv2d)
    layers = sum(isinstance(m, kinds) for m in runtime.modules())
    # the unrolled kernel is for convolutions only: linear layers keep the one chosen by timing
    assert all(c.chosen == kernel for c in choices if kernel in c.times)
    assert layers == sum(c.sparse for c in choices) and (layers > 0 or report.params_after == 0)
    fuse_into_sparse(runtime)
    assert_same_outputs(runtime, reference, shape)


def test_lenet300_keeps_only_connected_neurons():
    model = build_model("lenet300", in_channels=1, image_size=28).eval()
    masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in model.named_parameters()
             if p.dim() > 1}  # fmt: skip
    masks["1.weight"][:250] = False  # 250 of the 300 hidden neurons lose every input
    masks["3.weight"][:, 280:] = False  # and 20 more are read by no one
    compacted, report = compact(model, (1, 28, 28), masks)
    assert compacted.get_submodule("1").out_features == 30
    assert compacted.get_submodule("3").in_features == 30
    assert report.channels_after == 30 + 100 + 10
    # what a neuron with no input still contributes (its bias, through the ReLU) is kept exactly
    assert_same_outputs(compacted, masked(model, masks), (1, 28, 28))
    assert not report.fixed_size  # linear layers fold into a bias: any input size


def test_a_collapsed_layer_leaves_a_network_that_still_computes_the_same():
    model = with_batchnorm_statistics(build_model("vgg19"))
    masks = uneven_masks(model, 0.9)
    masks["features.10.weight"][:] = False  # the fourth conv loses every weight
    compacted, report = compact(model, (3, 32, 32), masks)
    # nothing of the input reaches the output any more: one constant, widened to the batch
    assert report.params_after == 0
    assert_same_outputs(compacted, masked(model, masks), (3, 32, 32), batch=5)


def test_a_collapsed_residual_branch_keeps_the_shortcut():
    model = with_batchnorm_statistics(build_model("resnet18"))
    masks = uneven_masks(model, 0.9)
    masks["layers.1.0.conv2.weight"][:] = False
    masks["layers.2.1.conv1.weight"][:] = False
    compacted, report = compact(model, (3, 32, 32), masks)
    names = dict(compacted.named_modules())
    assert "layers.1.0.conv2" not in names and "layers.2.1.conv2" not in names
    assert "layers.1.0.shortcut.0" in names  # the identity path carries on
    assert report.fixed_size  # a constant through a padded conv: a bias map for 32x32
    assert_same_outputs(compacted, masked(model, masks), (3, 32, 32))


def test_channels_tied_by_a_residual_sum_go_only_together():
    model = with_batchnorm_statistics(build_model("resnet18"))
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()
             if p.dim() > 1}  # fmt: skip
    # channel 5 of the first stage's stream loses its input in the stem and in one block only:
    # the other block still writes to it, so it stays everywhere
    masks["stem.0.weight"][5] = False
    masks["layers.0.0.conv2.weight"][5] = False
    compacted, _ = compact(model, (3, 32, 32), masks)
    assert compacted.get_submodule("stem.0").out_channels == 64
    masks["layers.0.1.conv2.weight"][5] = False  # now every writer of channel 5 is dead
    compacted, _ = compact(model, (3, 32, 32), masks)
    assert compacted.get_submodule("stem.0").out_channels == 63
    assert compacted.get_submodule("layers.0.1.conv2").out_channels == 63
    assert_same_outputs(compacted, masked(model, masks), (3, 32, 32))


@pytest.mark.parametrize(
    "options",
    [dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, padding=1, bias=False),
     dict(kernel_size=1), dict(kernel_size=5, dilation=2, padding=3), dict(kernel_size=(1, 3))],
)  # fmt: skip
def test_sparse_convolution_equals_the_dense_one(options):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, **options)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) < 0.3)
    inputs = torch.randn(3, 8, 11, 13)
    with torch.no_grad():
        expected = conv(inputs)
        assert torch.allclose(SparseConv2d(conv)(inputs), expected, atol=1e-6, rtol=1e-5)
        linear = nn.Linear(20, 7)
        linear.weight.mul_(torch.rand_like(linear.weight) < 0.3)
        features = torch.randn(5, 20)
        assert torch.allclose(SparseLinear(linear)(features), linear(features), atol=1e-6)


# -- the export formats on a real run ------------------------------------------------------


@pytest.fixture
def run_dir(pruned_run: Path) -> Path:
    return pruned_run  # tests/conftest.py


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_load_gives_a_ready_network_for_every_format(run_dir, tmp_path, fmt):
    out = tmp_path / f"{fmt}.pt"
    if fmt == "semi_structured":
        with pytest.raises(export.UserError, match="--nm 2:4"):
            export.export(run_dir, fmt, out)
        return
    export.export(run_dir, fmt, out)
    model = export.load(out)
    assert isinstance(model, nn.Module) and not model.training
    run = export.load_run(run_dir)
    assert_same_outputs(model, run.model, run.input_shape, batch=8)


def test_compact_export_loads_without_this_repository(run_dir, tmp_path):
    out = tmp_path / "compact.pt"
    assert export.main([str(run_dir), "--to", "compact", str(out)]) == 0
    inputs = torch.randn(4, *export.load_run(run_dir).input_shape)
    torch.save(inputs, tmp_path / "inputs.pt")
    script = (
        "import sys, torch\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('models') is None  # not this repository's\n"
        f"model = torch.load({str(out)!r}, weights_only=False)\n"
        "assert not model.training\n"
        f"inputs = torch.load({str(tmp_path / 'inputs.pt')!r})\n"
        f"torch.save(model(inputs), {str(tmp_path / 'outputs.pt')!r})\n"
    )
    # run from an empty folder with nothing of this repository on the path
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, env={})
    with torch.no_grad():
        expected = export.load_run(run_dir).model(inputs)
    got = torch.load(tmp_path / "outputs.pt")
    assert (got - expected).abs().max() <= TOLERANCE * expected.abs().max()


def test_sparse_runtime_export_reports_its_choice_per_layer(run_dir, tmp_path, capsys):
    out = tmp_path / "sparse_runtime.pt"
    assert export.main([str(run_dir), "--to", "sparse_runtime", str(out), "--batch", "4"]) == 0
    printed = capsys.readouterr().out
    assert "kernels chosen by timing at batch 4" in printed
    assert "parameters: 338,610 -> " in printed
    model = export.load(out)
    assert model.export_info["format"] == "sparse_runtime"


def test_a_sparse_runtime_export_written_before_the_export_room_still_loads(tmp_path, monkeypatch):
    """Exports made when the sparse runtime lived in utils/ pickle its classes under that name."""
    from export import sparse_runtime

    network = fx.symbolic_trace(nn.Sequential(nn.Linear(6, 3)))
    network.add_submodule("0", SparseLinear(network.get_submodule("0")))
    network.export_info = {"format": "sparse_runtime"}
    inputs = torch.randn(2, 6)
    expected = network(inputs)
    old = tmp_path / "old.pt"
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "utils.sparse_runtime", sparse_runtime)
        patch.setattr(SparseLinear, "__module__", "utils.sparse_runtime")
        torch.save(network, old)
    assert b"utils.sparse_runtime" in old.read_bytes()
    assert torch.equal(export.load(old)(inputs), expected)


@pytest.mark.parametrize(
    "argv, message",
    [(["--to", "tflite"], "argument --to: invalid choice: 'tflite'"),
     (["--to", "sparse_runtime", "--batch", "0"], "argument --batch")],
)  # fmt: skip
def test_bad_export_arguments_end_in_one_line(run_dir, tmp_path, capsys, argv, message):
    assert export.main([str(run_dir), *argv, str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_an_unpruned_run_is_refused_for_the_formats_that_shrink(tmp_path, capsys):
    import main

    argv = ["-e", "1", "--prune_criterion", "none", "--num_workers", "0", "--quiet"]
    assert main.main([*argv, "--logdir", str(tmp_path / "runs")]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    for fmt in ("compact", "sparse_runtime", "semi_structured"):
        assert export.main([str(run), "--to", fmt, str(tmp_path / "out.pt")]) == 2
        err = capsys.readouterr().err
        assert "nothing was pruned" in err and len(err.strip().splitlines()) == 1
    assert export.main([str(run), "--to", "dense", str(tmp_path / "out.pt")]) == 0


def test_load_refuses_a_pickle_of_foreign_code(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"model": subprocess.CompletedProcess(args=[], returncode=0)}, path)
    with pytest.raises(export.UserError, match=r"would call or build subprocess.CompletedProcess"):
        export.load(path)


# -- 2:4 semi-structured ---------------------------------------------------------------------


def two_of_four(model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks keeping the 2 largest of every 4 consecutive inputs of each linear layer."""
    masks = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            weight = module.weight.detach()
            groups = weight.abs().reshape(weight.shape[0], -1, 4)
            keep = groups.argsort(-1, descending=True)[..., :2]
            mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
            masks[f"{name}.weight"] = mask.reshape(weight.shape)
    return masks


def test_semi_structured_layers_are_those_with_two_of_every_four():
    model = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    masked(model, two_of_four(model))
    # the classifier's 10 outputs are too few for the sparse kernels
    assert export.semi_structured_layers(model) == ["0"]
    with torch.no_grad():
        model[0].weight[0, :3] = 1.0  # three of the first four
    assert export.semi_structured_layers(model) == []


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: semi-structured kernels run only there"
)
def test_semi_structured_linear_layers_run_on_cuda():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    masked(model, two_of_four(model))

    inputs = torch.randn(64, 256)
    with torch.no_grad():
        expected = model.half().cuda()(inputs.half().cuda()).float()
    converted = export.to_semi_structured(model, ["0"])
    assert type(converted[0].weight).__name__.startswith("SparseSemiStructured")
    with torch.no_grad():
        got = converted(inputs.half().cuda()).float()

    assert (got - expected).abs().max() <= 1e-2 * expected.abs().max()
