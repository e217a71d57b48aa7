"""The pruning library as the README shows it: FlipOut with gradient noise on a model this project
does not define, inside a loop the user writes."""

import pytest
import torch
from torch import nn

from pruning import FlipOut, Periodic, Pruner
from tests.support.blocks import README, code_block, in_repository


def readme_block(heading: str) -> str:
    """The README's own-loop example, importing the library by its name inside the repository
    (`pruning`) rather than installed (`flipout`; tests/test_packaging.py runs it so)."""
    return in_repository(code_block(README, f"## {heading}"))


def test_readme_library_block_prunes_a_torchvision_resnet():
    code = readme_block("FlipOut in your own training loop")
    assert len(code.strip().splitlines()) <= 15
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(code, "README.md", "exec"), namespace)
    pruner, model = namespace["pruner"], namespace["model"]
    assert type(model).__module__.startswith("torchvision")
    # two prunes of half the live weights, to the weight, none after the last epoch
    total = pruner.masks.num_total
    live = total - total // 2
    live -= live // 2
    assert pruner.masks.num_live == live
    assert [event.epoch for event in pruner.events] == [1, 2]
    # pruned weights are exactly zero after the steps that followed the first prune
    for name, param in pruner.params.items():
        assert not param.detach()[~pruner.masks[name]].any(), name
    assert pruner.flips.total() > 0
    assert pruner.noise is not None


def test_a_model_without_weight_matrices_is_refused():
    with pytest.raises(ValueError, match="nothing to prune: no layer with a weight matrix"):
        Pruner(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), FlipOut(), Periodic())


def test_explicit_hooks_and_step_hooks_give_the_same_network():
    """step_hooks=True is the explicit hook sequence, run from inside optimizer.step()."""

    def train(step_hooks: bool) -> dict:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        pruner = Pruner(model, FlipOut(), Periodic(rate=0.3, every=1), noise_scale=0.5, seed=4)
        pruner.attach_optimizer(optimizer, step_hooks=step_hooks)
        data = torch.randn(5, 8, 6), torch.randint(3, (5, 8))
        for _ in range(3):
            for inputs, targets in zip(*data, strict=True):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(inputs), targets).backward()
                if not step_hooks:
                    pruner.after_backward()
                optimizer.step()
                if not step_hooks:
                    pruner.after_step()
            pruner.end_of_epoch()
        return {**model.state_dict(), **{f"flips/{k}": v for k, v in pruner.flips.counts.items()}}

    hooked, explicit = train(True), train(False)
    assert all(torch.equal(hooked[name], explicit[name]) for name in explicit)
