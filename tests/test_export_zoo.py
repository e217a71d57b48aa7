"""The export room on networks of other libraries (issue 25): a timm vision transformer,
torchvision's VisionTransformer (nn.MultiheadAttention with a bare in_proj_weight), a ConvNeXt
with depthwise convolutions, and layers beyond Conv2d and Linear. FLOPs count every prunable
kind by hand; compaction cuts what it can and names what it leaves whole, or refuses in one line;
every format is written and loaded back with the masked network's outputs, in Python and from
the command line.
"""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import main
from export import formats as export
from export import inspect as inspect_tool
from export.artifacts import PrunedRun, load_run
from export.compact import NotCompactable, compact, compact_summary
from export.flops import flops_summary, layer_flops
from export.sparse_runtime import SparseLinear, sparsify
from models import build_model
from pruning import Pruner
from tests.support.runs import only_run_dir

pytest.importorskip("timm")

# fp32: the compacted network sums fewer terms in another order, and adds folded constants
TOLERANCE = 1e-5
TIMM_VIT = {"patch_size": 2, "depth": 2, "embed_dim": 32, "num_heads": 2}
TORCHVISION_VIT = {"patch_size": 2, "num_layers": 2, "num_heads": 2, "hidden_dim": 32,
                   "mlp_dim": 64}  # fmt: skip
# name -> build_model(**spec): small enough for a test, every kind of layer the issue names
SPECS = {
    "timm_vit": {"name": "timm:vit_tiny_patch16_224", "num_classes": 10, "in_channels": 1,
                 "image_size": 8, "model_kwargs": TIMM_VIT},
    "torchvision_vit": {"name": "torchvision:vit_b_16", "num_classes": 10, "in_channels": 3,
                        "image_size": 8, "model_kwargs": TORCHVISION_VIT},
    "convnext": {"name": "timm:convnext_atto", "num_classes": 10, "in_channels": 1,
                 "image_size": 32, "model_kwargs": {"dims": (8, 16, 16, 16),
                                                    "depths": (1, 1, 1, 1)}},
}  # fmt: skip
ATTENTION = "encoder.layers.encoder_layer_{}.self_attention"


def pruned_run(
    tmp_path: Path, network: str, sparsity: float = 0.8, spec: dict | None = None, **options
) -> PrunedRun:
    """The network of SPECS[network] (or `spec`) pruned by global magnitude, as load_run gives
    a run; `options` for the Pruner."""
    torch.manual_seed(0)
    spec = spec or SPECS[network]
    model = build_model(**spec)
    pruner = Pruner(model, "global_magnitude", **options)
    pruner.prune(sparsity=sparsity)
    masks = {name: mask.clone() for name, mask in pruner.masks.masks.items()}
    counts = {name: torch.zeros(mask.shape, dtype=torch.int32) for name, mask in masks.items()}
    return PrunedRun(model.eval(), masks, counts, spec, 1, tmp_path)


def inputs_for(shape, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(7))


def assert_same_outputs(network: nn.Module, reference: nn.Module, shape, exact=False) -> None:
    inputs = inputs_for(shape)
    with torch.no_grad():
        expected, got = reference(inputs), network(inputs)
    if exact:  # the same weights through the same operations
        assert torch.equal(got, expected)
    else:
        assert (got - expected).abs().max() <= TOLERANCE * expected.abs().max()


# -- FLOPs ----------------------------------------------------------------------------------


class CrossAttention(nn.Module):
    """Five query tokens of 16 attend to seven keys of 8 and values of 12: separate q, k and v
    projections, each used as often as its side has tokens."""

    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(16, 2, kdim=8, vdim=12, batch_first=True)
        self.keys = nn.Parameter(torch.randn(1, 7, 8))
        self.values = nn.Parameter(torch.randn(1, 7, 12))

    def forward(self, x):
        keys, values = self.keys, self.values  # by keyword: the count reads them either way
        return self.attention(query=x, key=keys, value=values, need_weights=False)[0]


class OwnLayer(nn.Module):
    """A layer of one's own that declares a prunable weight: nothing here knows how to count it."""

    prunable_weights = ("weight",)

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        return x @ self.weight


# (layer, input shape without the batch, MACs counted by hand)
KINDS = {
    # every one of 5 tokens: 6 x 8 weights each
    "linear on tokens": (nn.Linear(8, 6), (5, 8), 5 * 6 * 8),
    # 10 output positions x (4 in / 1 group) x 3 taps for each of 6 outputs
    "conv1d": (nn.Conv1d(4, 6, 3, padding=1), (4, 10), 6 * 10 * 4 * 3),
    # 8 outputs x 4x4 positions x (4 in / 2 groups) x 3x3
    "grouped conv2d": (nn.Conv2d(4, 8, 3, groups=2), (4, 6, 6), 8 * 16 * 2 * 9),
    # 4 outputs x 5x5 positions x (4 / 4) x 3x3
    "depthwise conv2d": (nn.Conv2d(4, 4, 3, padding=1, groups=4), (4, 5, 5), 4 * 25 * 1 * 9),
    # each of 3x3 input positions meets 4 in x 2 out x 2x2 weights
    "transposed conv2d": (nn.ConvTranspose2d(4, 2, 2, stride=2), (4, 3, 3), 9 * 4 * 2 * 4),
    "conv3d": (nn.Conv3d(2, 3, 2), (2, 3, 3, 3), 3 * 8 * 2 * 8),
}


@pytest.mark.parametrize("kind", KINDS)
def test_macs_of_every_prunable_kind_by_hand(kind):
    layer, shape, macs = KINDS[kind]
    model = nn.Sequential(layer)
    mask = torch.rand(layer.weight.shape, generator=torch.Generator().manual_seed(0)) < 0.3
    live = int(mask.sum())
    # every weight is used equally often: the live MACs are the dense ones scaled by the live share
    assert layer_flops(model, shape, {"0.weight": mask}) == {
        "0.weight": (macs, macs * live // layer.weight.numel())
    }


def test_macs_of_attention_count_each_projection_by_its_tokens():
    model = CrossAttention()
    masks = {"attention.k_proj_weight": torch.zeros(16, 8, dtype=torch.bool)}
    assert layer_flops(model, (5, 16), masks) == {
        "attention.q_proj_weight": (5 * 16 * 16, 5 * 16 * 16),
        "attention.k_proj_weight": (7 * 16 * 8, 0),
        "attention.v_proj_weight": (7 * 16 * 12, 7 * 16 * 12),
        # called by the attention through functions, never as a module: counted all the same
        "attention.out_proj.weight": (5 * 16 * 16, 5 * 16 * 16),
    }
    # torchvision's ViT: 16 patches and the class token, packed q, k, v of 3 x 32 x 32
    vit = build_model(**SPECS["torchvision_vit"])
    name = f"{ATTENTION.format(0)}.in_proj_weight"
    mask = torch.ones(96, 32, dtype=torch.bool)
    mask[32:64] = False  # the keys' rows
    assert layer_flops(vit, (3, 8, 8), {name: mask})[name] == (17 * 96 * 32, 17 * 64 * 32)


def test_macs_of_the_zoo_are_keyed_as_the_masks_and_own_layers_left_out(tmp_path):
    for network in SPECS:
        run = pruned_run(tmp_path, network)
        flops = layer_flops(run.model, run.input_shape, run.masks)
        assert list(flops) == list(run.masks)
        dense = layer_flops(run.model, run.input_shape)
        assert all(flops[name][0] == dense[name][0] >= flops[name][1] for name in flops)
        assert flops_summary(run.model, run.input_shape, run.masks) == {
            "flops_dense": sum(d for d, _ in flops.values()),
            "flops_remaining": sum(r for _, r in flops.values()),
            "theoretical_speedup": sum(d for d, _ in flops.values())
            / sum(r for _, r in flops.values()),
        }
    # timm's qkv: a linear layer on 16 patches and the class token
    vit = build_model(**SPECS["timm_vit"])
    assert layer_flops(vit, (1, 8, 8))["blocks.0.attn.qkv.weight"] == (17 * 96 * 32,) * 2
    model = nn.Sequential(nn.Linear(4, 4), OwnLayer())
    assert list(layer_flops(model, (4,))) == ["0.weight"]


# -- compaction -----------------------------------------------------------------------------


def test_a_vit_loses_the_mlp_neurons_pruning_cut_off(tmp_path):
    run = pruned_run(tmp_path, "timm_vit", sparsity=0.97)
    compacted, report = compact(run.model, run.input_shape, run.masks)
    fc1 = compacted.get_submodule("blocks.0.mlp.fc1")
    assert fc1.out_features < 128
    assert compacted.get_submodule("blocks.0.mlp.fc2").in_features == fc1.out_features
    assert report.params_after < report.params_before and not report.not_compacted
    assert_same_outputs(compacted, run.model, run.input_shape)
    # a first MLP layer with no weight left: its neurons are constants, folded into the second
    masks = dict(run.masks)
    masks["blocks.1.mlp.fc1.weight"] = torch.zeros_like(masks["blocks.1.mlp.fc1.weight"])
    model = copy.deepcopy(run.model)
    model.get_submodule("blocks.1.mlp.fc1").weight.data.zero_()
    compacted, report = compact(model, run.input_shape, masks)
    assert "blocks.1.mlp.fc1" not in dict(compacted.named_modules())
    assert_same_outputs(compacted, model, run.input_shape)


@pytest.mark.parametrize(
    "network, left",
    [("torchvision_vit", [f"{ATTENTION.format(i)} (nn.MultiheadAttention)" for i in (0, 1)]),
     ("convnext", [f"stages.{i}.blocks.0.conv_dw (depthwise nn.Conv2d)" for i in range(4)])],
)  # fmt: skip
def test_layers_compaction_does_not_cut_are_named_and_kept_masked(tmp_path, network, left):
    run = pruned_run(tmp_path, network, sparsity=0.95)
    compacted, report = compact(run.model, run.input_shape, run.masks)
    assert report.not_compacted == left
    assert report.params_after < report.params_before  # the MLPs around them shrink
    assert_same_outputs(compacted, run.model, run.input_shape)
    assert compact_summary(run.model, run.input_shape, run.masks)["not_compacted"] == left


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else x  # control flow on a tensor


def test_an_export_compaction_refuses_is_one_user_error(tmp_path):
    run = PrunedRun(Untraceable(), {}, {}, {"in_channels": 1, "image_size": 4}, 1, tmp_path)
    why = "compact: torch.fx cannot trace Untraceable"
    with pytest.raises(export.UserError, match=f"^{re.escape(f'{tmp_path}: {why}')}"):
        export.compact_module(run)
    made_from = "--to sparse_runtime is made from the compact network, and "
    with pytest.raises(export.UserError, match=f"^{re.escape(f'{tmp_path}: {made_from}{why}')}"):
        export.sparse_runtime_module(run, 1)


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x), x


@pytest.mark.parametrize(
    "model, message",
    [(Untraceable(), "compact: torch.fx cannot trace Untraceable (symbolically traced variables "
                     "cannot be used as inputs to control flow); --to dense, torch_prune or sparse "
                     "export it without compaction"),
     (TwoOutputs(), "compact: TwoOutputs answers a tuple, not one tensor; compaction checks its "
                    "work on one output tensor")],
)  # fmt: skip
def test_a_network_compaction_cannot_read_is_refused_in_one_line(model, message):
    with pytest.raises(NotCompactable) as error:
        compact(model, (4,))
    assert str(error.value) == message
    # a run's summary records why, instead of failing the run
    assert compact_summary(model, (4,), {}) == {"refused": message}


def test_other_convolutions_stay_whole():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 3)).eval()
    with torch.no_grad():
        model[0].weight[1] = 0.0  # a channel with no input left: kept, since Conv1d is not cut
    masks = {"0.weight": model[0].weight != 0, "3.weight": torch.ones(3, 24, dtype=torch.bool)}
    compacted, report = compact(model, (2, 8), masks)
    assert report.not_compacted == ["0 (nn.Conv1d)"]
    assert compacted.get_submodule("0").out_channels == 4
    assert_same_outputs(compacted, model, (2, 8))


# -- sparse kernels -------------------------------------------------------------------------


def test_a_sparse_linear_layer_runs_on_tokens():
    linear = nn.Linear(16, 8)
    with torch.no_grad():
        linear.weight.mul_(torch.rand_like(linear.weight) < 0.3)
        tokens = torch.randn(2, 5, 16)
        assert torch.allclose(SparseLinear(linear)(tokens), linear(tokens), atol=1e-6)


@pytest.mark.parametrize("network", ["timm_vit", "torchvision_vit"])
def test_sparse_runtime_runs_every_called_linear_layer_sparse_and_attention_dense(
    tmp_path, network
):
    run = pruned_run(tmp_path, network, sparsity=0.9)
    compacted, _ = compact(run.model, run.input_shape, run.masks)
    runtime, choices = sparsify(compacted, inputs_for(run.input_shape, 2), repeats=1, kernel="csr")
    linears = [name for name, m in runtime.named_modules() if isinstance(m, SparseLinear)]
    assert linears == [c.name for c in choices if "conv" not in c.name and "patch" not in c.name]
    assert not any("self_attention" in name for name in linears)  # out_proj: read by its MHA
    assert_same_outputs(runtime, run.model, run.input_shape)


# -- the formats ----------------------------------------------------------------------------


def written(payload, path: Path) -> Path:
    export.write(export.saved(payload), path)
    return path


@pytest.mark.parametrize("network", SPECS)
def test_every_format_loads_back_into_the_masked_network(tmp_path, network):
    run = pruned_run(tmp_path, network)
    for fmt in ("dense", "torch_prune", "sparse"):
        payload = export.FORMATS[fmt].make(run, 1).payload
        model = export.load(written(payload, tmp_path / f"{fmt}.pt"))
        assert_same_outputs(model, run.model, run.input_shape, exact=True)
    modules = {"compact": export.compact_module(run),
               "sparse_runtime": export.sparse_runtime_module(run, 1)[0]}  # fmt: skip
    for fmt, module in modules.items():
        model = export.load(written(module, tmp_path / f"{fmt}.pt"))
        assert model.export_info["format"] == fmt
        assert_same_outputs(model, run.model, run.input_shape)
    with pytest.raises(export.UserError, match="no layer fits the 2:4 semi-structured kernels"):
        export.semi_structured_payload(run)


def test_a_compact_vit_loads_without_timm(tmp_path):
    run = pruned_run(tmp_path, "timm_vit", sparsity=0.9)
    path = written(export.compact_module(run), tmp_path / "compact.pt")
    inputs = inputs_for(run.input_shape)
    torch.save(inputs, tmp_path / "inputs.pt")
    script = (
        "import sys, torch\n"
        "sys.modules['timm'] = None  # any import of it fails\n"
        f"model = torch.load({str(path)!r}, weights_only=False)\n"
        f"torch.save(model(torch.load({str(tmp_path / 'inputs.pt')!r})), 'outputs.pt')\n"
    )
    # from an empty folder, with nothing of this repository on the path
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, env={})
    with torch.no_grad():
        expected = run.model(inputs)
    got = torch.load(tmp_path / "outputs.pt")
    assert (got - expected).abs().max() <= TOLERANCE * expected.abs().max()


def test_torch_prune_keeps_attention_reparametrised(tmp_path):
    run = pruned_run(tmp_path, "torchvision_vit")
    model = export.load(written(export.torch_prune_payload(run), tmp_path / "torch_prune.pt"))
    attention = model.get_submodule(ATTENTION.format(0))
    # the packed projection is the attention's own parameter: pruned as torch.nn.utils.prune does
    assert {"in_proj_weight_orig", "in_proj_weight_mask"} <= set(attention.state_dict())
    with torch.no_grad():  # new weights: the masks still hold, out_proj's too
        attention.in_proj_weight_orig.add_(1.0)
        attention.out_proj.weight_orig.add_(1.0)
        model(inputs_for(run.input_shape))
    name = f"{ATTENTION.format(0)}.out_proj.weight"
    assert not attention.out_proj.weight[~run.masks[name]].any()
    assert not attention.in_proj_weight[~run.masks[f"{ATTENTION.format(0)}.in_proj_weight"]].any()


def test_semi_structured_takes_the_two_of_four_mlp_layers_not_attention(tmp_path):
    wide = {**TORCHVISION_VIT, "hidden_dim": 64, "mlp_dim": 128}
    spec = {**SPECS["torchvision_vit"], "model_kwargs": wide}
    run = pruned_run(tmp_path, "", sparsity=0.5, spec=spec, nm="2:4", nm_exclude="conv_proj")
    payload = export.semi_structured_payload(run)
    # fc layers of 128 x 64 and 64 x 128; the attention's out_proj is multiplied by its MHA
    assert payload["layers"] == [f"encoder.layers.encoder_layer_{i}.mlp.{j}" for i in (0, 1)
                                 for j in (0, 3)]  # fmt: skip
    model = export.load(written(payload, tmp_path / "semi.pt"))  # on the CPU: the masked network
    assert_same_outputs(model, run.model, run.input_shape, exact=True)


# -- from the command line ------------------------------------------------------------------


@pytest.fixture(scope="module", params=["timm_vit", "torchvision_vit"])
def cli_run(request, tmp_path_factory) -> Path:
    """A run of main.py on the network, pruned to 90% at the end of its first epoch."""
    spec = SPECS[request.param]
    kwargs = [f"{key}={value}" for key, value in spec["model_kwargs"].items()]
    logdir = tmp_path_factory.mktemp("runs")
    argv = ["-m", spec["name"], "--model_kwargs", *kwargs, "-d", "synthetic", "--image_size", "8",
            "-e", "2", "--limit_batches", "2", "--prune_criterion", "global_magnitude",
            "--schedule", "oneshot", "--target_sparsity", "0.9", "--prune_start", "1",
            "--num_workers", "0", "--quiet", "--logdir", str(logdir)]  # fmt: skip
    assert main.main(argv) == 0
    return only_run_dir(logdir)


def test_python_m_export_round_trips_every_format(cli_run, tmp_path, capsys):
    run = load_run(cli_run)
    for fmt in export.FORMATS:
        out = tmp_path / f"{fmt}.pt"
        code = export.main([str(cli_run), "--to", fmt, str(out)])
        printed = capsys.readouterr()
        if fmt == "semi_structured":  # pruned without --nm 2:4
            assert code == 2 and "no layer fits" in printed.err
            assert len(printed.err.strip().splitlines()) == 1
            continue
        assert code == 0 and f"wrote {out}" in printed.out
        # the dicts rebuild the registry's network; compaction and onnxruntime round
        exact = export.FORMATS[fmt] in export.state_formats()
        assert_same_outputs(export.load(out), run.model, run.input_shape, exact=exact)
    assert inspect_tool.main([str(cli_run)]) == 0
    assert "compact network (python -m export RUN_DIR --to compact OUT)" in capsys.readouterr().out
