"""SNIP's BatchNorm mode (`--snip_bn`, pruning/snip.py): train mode, the FlipOut paper's SNIP,
normalises with each batch's statistics; eval mode, SNIP's authors' (snip-public scores with
`is_train` False), with the running statistics. Both leave the model's state as it was."""

import json

import pytest
import torch
from torch import nn

import main
from cli import parse_args
from pruning.criteria import Snip
from pruning.snip import connection_sensitivity
from tests.support.nets import CPU, ConvBnNet, make_pruner, snip_batches
from tests.support.runs import assert_one_error_line, quick

MODES = ["train", "eval"]


def conv_bn_net_with_statistics() -> ConvBnNet:
    """A ConvBnNet whose running statistics are far from those of the batches SNIP sees, so
    that the two modes normalise very differently."""
    torch.manual_seed(0)
    model = ConvBnNet()
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.tensor([2.0, -1.5, 0.5, 3.0]))
        model.bn.running_var.copy_(torch.tensor([9.0, 0.05, 4.0, 0.2]))
        model.bn.num_batches_tracked.fill_(7)
    return model


def snip_masks(model: nn.Module, bn_mode: str, batches) -> dict[str, torch.Tensor]:
    pruner = make_pruner(model, prune_criterion="snip", snip_sparsity=0.8, snip_bn=bn_mode)
    pruner.attach_data(batches)
    pruner.before_training()
    return {name: mask.clone() for name, mask in pruner.masks.items()}


def test_eval_and_train_mode_choose_different_weights_under_batchnorm():
    torch.manual_seed(1)
    batches = snip_batches(2, (1, 6, 6))
    train = snip_masks(conv_bn_net_with_statistics(), "train", batches)
    evaluated = snip_masks(conv_bn_net_with_statistics(), "eval", batches)
    live = [sum(int(m.sum()) for m in masks.values()) for masks in (train, evaluated)]
    assert live == [round(0.2 * 228)] * 2
    # far more than a near-tie at the cut could account for
    differ = sum(int((train[name] != evaluated[name]).sum()) for name in train)
    assert differ >= 20, differ


def test_without_batchnorm_the_modes_score_and_prune_alike():
    torch.manual_seed(2)
    batches = snip_batches(2, (8,))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    params = {name: p for name, p in model.named_parameters() if name.endswith("weight")}
    train = connection_sensitivity(model, params, batches, CPU, train_mode=True)
    evaluated = connection_sensitivity(model, params, batches, CPU, train_mode=False)
    for name in params:
        assert torch.equal(train[name], evaluated[name]), name

    twin = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    twin.load_state_dict(model.state_dict())
    train_masks, eval_masks = snip_masks(model, "train", batches), snip_masks(twin, "eval", batches)
    for name in train_masks:
        assert torch.equal(train_masks[name], eval_masks[name]), name


@pytest.mark.parametrize("training", [True, False], ids=["model_in_train", "model_in_eval"])
@pytest.mark.parametrize("bn_mode", MODES)
def test_scoring_leaves_the_models_state_as_it_was(bn_mode, training):
    model = conv_bn_net_with_statistics()
    model.train(training)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    batches = snip_batches(2, (1, 6, 6))
    # precondition: a train-mode forward moves the statistics, so "unchanged" has teeth
    probe = conv_bn_net_with_statistics()
    probe(batches[0][0])
    assert not torch.equal(probe.bn.running_mean, before["bn.running_mean"])
    assert probe.bn.num_batches_tracked.item() == 8

    params = {name: p for name, p in model.named_parameters() if name.endswith("weight")}
    connection_sensitivity(model, params, batches, CPU, train_mode=bn_mode == "train")
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, value in before.items():  # running_mean, running_var, num_batches_tracked too
        assert torch.equal(after[name], value), name
    assert model.training == training
    assert all(p.grad is None for p in model.parameters())

    # and through the Pruner, which then zeroes only the pruned weights
    pruner = make_pruner(model, prune_criterion="snip", snip_sparsity=0.8, snip_bn=bn_mode)
    pruner.attach_data(batches)
    pruner.before_training()
    after = model.state_dict()
    for name, value in before.items():
        kept = pruner.masks[name] if name in pruner.params else torch.ones_like(value, dtype=bool)
        assert torch.equal(after[name][kept], value[kept]), name
    assert model.training == training


def test_the_flag_defaults_to_train_mode_and_refuses_other_words(tmp_path, capsys):
    snip = ["--prune_criterion", "snip", "--snip_sparsity", "0.9"]
    assert Snip(sparsity=0.9).bn_mode == parse_args(snip).value("snip_bn") == "train"
    assert parse_args([*snip, "--snip_bn", "eval"]).value("snip_bn") == "eval"
    with pytest.raises(ValueError, match="bn_mode must be 'train' or 'eval', got 'batch'"):
        Snip(sparsity=0.9, bn_mode="batch")

    assert main.main(quick(tmp_path, *snip, "--snip_bn", "batch")) == 2
    line = assert_one_error_line(capsys, "--snip_bn")
    assert "choose train or eval, got 'batch'" in line
    assert not (tmp_path / "runs").exists()


def test_an_eval_mode_run_is_a_method_of_its_own(tmp_path):
    run_dir = tmp_path / "eval"
    snip = ["--prune_criterion", "snip", "--snip_sparsity", "0.9", "--snip_bn", "eval"]
    argv = quick(tmp_path, *snip, "-e", "1", "--limit_batches", "2", "--run_dir", str(run_dir))
    assert main.main(argv) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "SNIP (BatchNorm in eval mode)"
    assert summary["options"]["snip_bn"] == "eval"
