"""What is prunable (pruning/prunable.py): the default set decided by each layer, the paper's set
unchanged on the paper's networks, and the tensors a researcher includes or keeps dense, in the
library and on the command line."""

import pytest
import torch
from torch import nn

import main
from models import MODELS, build_model
from pruning import PRUNABLE, Pruner, prunable_parameters, register_prunable
from tests.support.runs import assert_one_error_line, quick, quick_run, summary


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_paper_networks_keep_the_paper_set(name):
    """Conv2d and Linear weights, in parameter order: what the paper pruned, and what every
    recorded run's masks are keyed by."""
    model = build_model(name)
    paper = [
        f"{path}.weight" if path else "weight"
        for path, module in model.named_modules()
        if type(module) in (nn.Conv2d, nn.Linear)
    ]
    assert list(prunable_parameters(model)) == paper


def test_every_kind_of_convolution_and_attention_is_prunable_and_nothing_else():
    model = nn.ModuleDict(
        {
            "conv1d": nn.Conv1d(4, 8, 3),
            "grouped": nn.Conv2d(8, 8, 3, groups=4),
            "depthwise": nn.Conv2d(8, 8, 3, groups=8),
            "conv3d": nn.Conv3d(2, 2, 1),
            "transposed": nn.ConvTranspose2d(8, 4, 2),
            "attention": nn.MultiheadAttention(8, 2),
            "linear": nn.Linear(8, 2),
            "embedding": nn.Embedding(10, 8),
            "norm": nn.LayerNorm(8),
            "batchnorm": nn.BatchNorm2d(8),
        }
    )
    assert list(prunable_parameters(model)) == [
        "conv1d.weight", "grouped.weight", "depthwise.weight", "conv3d.weight",
        "transposed.weight", "attention.in_proj_weight", "attention.out_proj.weight",
        "linear.weight",
    ]  # fmt: skip
    with_flags = prunable_parameters(model, prune_bias=True, prune_bnorm=True)
    assert {"attention.in_proj_bias", "linear.bias", "batchnorm.weight"} <= set(with_flags)
    assert "norm.weight" not in with_flags and "embedding.weight" not in with_flags


class Scaled(nn.Module):
    """A layer of one's own, with a bare weight matrix."""

    prunable_weights = ("kernel",)

    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(4, 4))
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return x @ self.kernel * self.scale


class Bare(Scaled):
    prunable_weights = None


def test_a_layer_says_what_is_prunable_in_it_or_is_registered():
    assert list(prunable_parameters(nn.Sequential(Scaled()))) == ["0.kernel"]
    assert list(prunable_parameters(nn.Sequential(Bare(), nn.Linear(4, 4)))) == ["1.weight"]
    register_prunable(Bare, ["kernel", "scale"])
    try:
        assert list(prunable_parameters(nn.Sequential(Bare()))) == ["0.kernel", "0.scale"]
    finally:
        del PRUNABLE[Bare]


def net() -> nn.Module:
    torch.manual_seed(0)
    return build_model("lenet5", 10, 1, 8)  # 0, 3: conv; 7, 9, 11: linear


def test_include_and_exclude_take_names_modules_and_globs():
    def chosen(**kwargs):
        return list(Pruner(net(), "global_magnitude", **kwargs).params)

    assert chosen(prune_exclude="0") == ["3.weight", "7.weight", "9.weight", "11.weight"]
    assert chosen(prune_exclude=["0.weight", "1?.*"]) == ["3.weight", "7.weight", "9.weight"]
    assert chosen(prune_include="[79].weight") == ["7.weight", "9.weight"]
    # a module or a glob selects from the default set; a parameter outside it, by its exact name
    assert chosen(prune_include=["3", "7", "7.bias"]) == ["3.weight", "7.weight", "7.bias"]
    assert chosen(prune_include=["*"], prune_exclude="3") == [
        "0.weight", "7.weight", "9.weight", "11.weight"
    ]  # fmt: skip
    assert chosen(prune_include="3", prune_bias=True) == ["3.weight", "3.bias"]


def test_a_tied_weight_is_one_tensor_found_by_any_of_its_names():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.Linear(8, 10))
    model[2].weight = nn.Parameter(torch.randn(10, 8))
    model[0].weight = model[2].weight  # the classifier reads out through the embedding
    assert list(prunable_parameters(model)) == ["0.weight", "1.weight"]
    pruner = Pruner(model, "global_magnitude", prune_exclude="2")
    assert list(pruner.params) == ["1.weight"] and list(pruner.excluded) == ["0.weight"]


def test_weight_standardised_convolutions_are_not_prunable():
    timm_layers = pytest.importorskip("timm.layers")
    model = nn.Sequential(timm_layers.StdConv2d(3, 8, 3), nn.Conv2d(8, 8, 1))
    assert list(prunable_parameters(model)) == ["1.weight"]


def test_excluded_tensors_stay_dense_and_are_shown_as_excluded():
    model = net()
    pruner = Pruner(model, "global_magnitude", prune_exclude=["0", "11"])
    assert list(pruner.excluded) == ["0.weight", "11.weight"]
    before = model[0].weight.detach().clone()
    pruner.prune(sparsity=0.9)
    assert torch.equal(model[0].weight, before)
    assert pruner.masks.num_live == round(0.1 * pruner.masks.num_total)
    table = pruner.layer_table().splitlines()
    assert any(line.split()[0] == "0.weight" and line.endswith("excluded") for line in table)
    assert table[-1].startswith("with excluded")
    assert pruner.summary()["prune_exclude"] == ["0", "11"]
    assert "prune_exclude" not in Pruner(net(), "flipout").summary()


def test_a_pattern_that_matches_nothing_is_named():
    with pytest.raises(ValueError, match=r"^prune_exclude head: no prunable tensor matches it; "
                       r"they are 0\.weight, 3\.weight"):  # fmt: skip
        Pruner(net(), "flipout", prune_exclude=["0", "head"])
    with pytest.raises(ValueError, match=r"^prune_include \*\.qkv\.\*: no prunable tensor"):
        Pruner(net(), "flipout", prune_include="*.qkv.*")
    with pytest.raises(ValueError, match="nothing to prune"):
        Pruner(net(), "flipout", prune_exclude="*")


def test_nm_exclude_matches_as_prune_exclude_does():
    pruner = Pruner(net(), "flipout", nm="2:4", nm_exclude=["0", "[3]"])
    assert pruner.nm_exclude == ("0.weight", "3.weight")
    # a tensor kept dense may be named too: it is left alone anyway
    both = Pruner(net(), "flipout", nm="2:4", prune_exclude="0", nm_exclude=["0", "3"])
    assert both.nm_exclude == ("3.weight",)
    with pytest.raises(ValueError, match="nm_exclude 5: no prunable tensor"):
        Pruner(net(), "flipout", nm="2:4", nm_exclude=["0", "5"])


def test_the_command_line_keeps_layers_dense(tmp_path, capsys):
    run_dir = quick_run(
        tmp_path, "-m", "lenet5", "--prune_freq", "1", "--prune_rate", "0.5",
        "--prune_exclude", "0", "11.weight",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "(990 more excluded, kept dense)" in out
    assert "0.weight" in out and "excluded" in out
    result = summary(run_dir)
    assert result["excluded_layers"] == ["0.weight", "11.weight"]
    assert result["layer_sparsity"]["0.weight"] == 0.0
    assert result["layer_sparsity"]["7.weight"] > 0
    assert result["final_sparsity"] == 0.5  # one prune, after epoch 1
    # a run is one experiment: resuming with other tensors kept dense is refused
    code = main.main(["--resume", str(run_dir), "-e", "3", "--prune_exclude", "0"])
    assert code == 2
    assert_one_error_line(capsys, "--prune_exclude")


def test_the_command_line_names_a_pattern_that_matches_nothing(tmp_path, capsys):
    argv = quick(tmp_path, "-m", "lenet5", "-e", "1", "--prune_exclude", "'*.head.*'")
    assert main.main(argv) == 2
    assert_one_error_line(capsys, "--prune_exclude", "*.head.*", "no prunable tensor")
