"""SynFlow (Tanaka et al., 2020, pruning/synflow.py): its scores against a network worked by hand,
exact final sparsity in its iterative rounds with the model left as it was, the rounds avoiding
the layer collapse of one-shot scoring, and a run from the command line."""

import pytest
import torch
from torch import nn

from pruning import OneShot, Periodic, Pruner
from pruning.schedule import Step
from pruning.synflow import SynFlow
from utils.runtime import batchnorm_in_fp32


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def pruner_for(model: nn.Module, criterion: SynFlow, shape: tuple[int, ...], **kwargs) -> Pruner:
    """A pruner whose one training batch holds random data of `shape`: SynFlow reads its shape
    only."""
    data = [(torch.randn(2, *shape), torch.zeros(2, dtype=torch.long))]
    return Pruner(model, criterion, data=data, **kwargs)


def two_layer_net() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
        model[1].weight.copy_(torch.tensor([[-1.0, 2.0]]))
    return model


def test_scores_match_the_synaptic_flow_worked_by_hand():
    model = two_layer_net()
    pruner = pruner_for(model, SynFlow(init_sparsity=0.5, iterations=1), (2,))
    scores = pruner.criterion.scores(pruner.prune_inputs())
    # |W1| = [[1, 2], [3, 0.5]], |W2| = [[1, 2]], input 1 = [1, 1]
    # h = |W1| 1 = [3, 3.5];  R = |W2| h = 1*3 + 2*3.5 = 10
    # dR/d|W2|_j = h_j                -> |W2| scores h_j |W2_j|   = [3*1, 3.5*2]  = [3, 7]
    # dR/d|W1|_ij = |W2|_i * 1        -> |W1| scores |W2_i||W1_ij| = [[1, 2], [2*3, 2*0.5]]
    # each layer's scores add up to R = 10: the flow is conserved layer by layer
    assert scores["0.weight"].tolist() == [[1.0, 2.0], [6.0, 1.0]]
    assert scores["1.weight"].tolist() == [[3.0, 7.0]]
    assert scores["0.weight"].dtype == torch.float64

    # the masks decide, not the weights: W1[1, 0] pruned but (here) left non-zero
    pruner.masks.prune("0.weight", torch.tensor([[False, False], [True, False]]))
    scores = pruner.criterion.scores(pruner.prune_inputs())
    # h = [1 + 2, 0 + 0.5] = [3, 0.5];  R = 1*3 + 2*0.5 = 4
    # W2: [3*1, 0.5*2] = [3, 1];  W1: [[1*1, 1*2], [2*0, 2*0.5]]
    assert scores["0.weight"].tolist() == [[1.0, 2.0], [0.0, 1.0]]
    assert scores["1.weight"].tolist() == [[3.0, 1.0]]


def test_one_round_keeps_the_top_scores():
    model = two_layer_net()
    pruner = pruner_for(model, SynFlow(init_sparsity=0.5, iterations=1), (2,))
    pruner.before_training()
    # scores [[1, 2], [6, 1]] and [[3, 7]]: keep round(0.5 * 6) = 3, the 6, 3 and 7
    assert pruner.masks["0.weight"].tolist() == [[False, False], [True, False]]
    assert pruner.masks["1.weight"].tolist() == [[True, True]]


class ConvBnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def used_conv_bn_net() -> ConvBnNet:
    """Running statistics of real (negative and positive) batches, mixed train/eval modes and
    gradients in .grad: everything SynFlow must leave as it found it."""
    model = ConvBnNet()
    model(torch.randn(4, 3, 8, 8)).sum().backward()
    model.features[4].eval()
    return model


@pytest.mark.parametrize("sparsity", [0.9, 0.99])
def test_reaches_the_exact_target_and_leaves_the_model_as_it_was(sparsity):
    model = used_conv_bn_net()
    pruner = pruner_for(model, SynFlow(init_sparsity=sparsity), (3, 8, 8))
    assert pruner.criterion.iterations == 100
    state = {name: t.clone() for name, t in model.state_dict().items()}
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    modes = [m.training for m in model.modules()]

    remove = pruner.criterion.select(pruner.prune_inputs(), Step(sparsity=sparsity))
    for name, tensor in model.state_dict().items():  # BatchNorm's running statistics included
        assert torch.equal(tensor, state[name]), name
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, grads[name]), name
    assert [m.training for m in model.modules()] == modes

    total = pruner.masks.num_total
    assert total - sum(int(r.sum()) for r in remove.values()) == round((1 - sparsity) * total)
    event = pruner.before_training()
    assert event.live == round((1 - sparsity) * total)
    assert event.collapsed == []


def test_periodic_rates_rescore_and_never_revive():
    model = used_conv_bn_net()
    schedule = Periodic(rate=0.5, every=1, epochs=4)
    pruner = pruner_for(model, SynFlow(iterations=10), (3, 8, 8), schedule=schedule)
    before = {name: mask.clone() for name, mask in pruner.masks.items()}
    for epoch in (1, 2, 3):
        live = pruner.masks.num_live
        pruner.end_of_epoch(epoch)
        assert pruner.masks.num_live == live - int(0.5 * live)
        for name, mask in pruner.masks.items():
            assert not (mask & ~before[name]).any(), name  # a pruned weight stays pruned
            before[name] = mask.clone()


def test_rounds_avoid_the_layer_collapse_of_one_shot_scoring():
    def pruned(iterations: int) -> Pruner:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)
        )
        schedule = OneShot(sparsity=0.99)
        pruner = pruner_for(model, SynFlow(iterations=iterations), (64,), schedule=schedule)
        pruner.before_training()
        return pruner

    # per-layer scores add up to the same R, so one shot takes the big layers' small scores
    # first, all of them: nothing flows through the network any more
    assert pruned(1).collapsed_layers() == ["0.weight", "2.weight"]
    iterative = pruned(100)
    assert iterative.collapsed_layers() == []
    assert iterative.masks.num_live == round(0.01 * iterative.masks.num_total)


def test_scores_in_float64_under_mixed_precision_batchnorm():
    model = used_conv_bn_net()
    batchnorm_in_fp32(model)  # as main.py does with --amp
    pruner = pruner_for(model, SynFlow(init_sparsity=0.9, iterations=3), (3, 8, 8))
    assert pruner.before_training().live == round(0.1 * pruner.masks.num_total)
