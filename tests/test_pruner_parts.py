"""The Pruner's parts (pruning/parts.py): gradient noise, the Hoyer-Square penalty and the choice
of tensors passed as objects, the keywords they replace kept for one release with a warning."""

import math
import warnings

import pytest
import torch
from torch import nn

from pruning import FlipOut, HoyerSquare, Noise, Periodic, Pruner, Tensors
from tests.support.nets import make_pruner

OLD = {
    "noise_scale": 0.5,
    "noise_only_prunable": True,
    "stop_noise_at": 3,
    "hoyer_lambda": 1e-3,
    "stop_hoyer_at": -1,
    "hoyer_scope": "all",
    "prune_bias": True,
    "prune_exclude": "4",
}
NEW = {
    "noise": Noise(scale=0.5, only_prunable=True, stop_at=3),
    "penalty": HoyerSquare(strength=1e-3, scope="all"),
    "tensors": Tensors(bias=True, exclude="4"),
}


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 3)
    )


def short_run(**parts) -> tuple[Pruner, nn.Module]:
    """Four epochs of two steps each, pruning a quarter of the live weights after each but the
    last."""
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner = Pruner(model, FlipOut(), Periodic(rate=0.25, every=1, epochs=4), seed=5, **parts)
    pruner.attach_optimizer(optimizer, step_hooks=True)
    generator = torch.Generator().manual_seed(1)
    for _ in range(4):
        for _ in range(2):
            inputs = torch.randn(8, 1, 4, 4, generator=generator)
            targets = torch.randint(3, (8,), generator=generator)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs), targets)
            penalty = pruner.penalty()
            (loss if penalty is None else loss + penalty).backward()
            optimizer.step()
        pruner.end_of_epoch()
    return pruner, model


def test_the_parts_train_to_the_bit_as_the_keywords_did():
    with pytest.warns(DeprecationWarning):
        old, old_model = short_run(**OLD)
    new, new_model = short_run(**NEW)
    for name, weight in old_model.state_dict().items():
        assert torch.equal(weight, new_model.state_dict()[name]), name
    old_state, new_state = old.state_dict(), new.state_dict()
    assert old_state.keys() == new_state.keys()  # the checkpoint's format is unchanged
    for name in ("masks", "flip_counts"):
        for tensor, mask in old_state[name].items():
            assert torch.equal(mask, new_state[name][tensor]), (name, tensor)
    assert old_state["events"] == new_state["events"] and len(new.events) == 3
    assert all(map(torch.equal, old_state["noise_generator"], new_state["noise_generator"]))
    assert "1.bias" in new.params and "4.weight" in new.excluded
    assert old.summary() == new.summary()


def test_the_keywords_warn_once_naming_the_new_form_at_the_callers_line():
    with pytest.warns(DeprecationWarning) as caught:
        Pruner(net(), "flipout", noise_scale=1.0, stop_noise_at=-1, prune_bias=True)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "Pruner(noise_scale=, stop_noise_at=, prune_bias=) is deprecated and goes in the next "
        "release: pass noise=Noise(scale=1.0, stop_at=None), tensors=Tensors(bias=True)"
    )
    assert caught[0].filename == __file__


def test_a_keyword_that_turned_a_part_off_reads_as_none():
    with pytest.warns(DeprecationWarning, match=r"pass noise=None, penalty=None$"):
        pruner = Pruner(net(), "flipout", noise_scale=None, hoyer_lambda=0.0)
    assert pruner.noise is None and pruner.penalty() is None and not pruner.penalty_enabled


def test_the_command_line_builds_the_parts_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        pruner = make_pruner(net(), noise=True, add_hs=True, hoyer_lambda=0.5, prune_bnorm=True)
    assert pruner.noise_part == Noise(scale=1.0)
    assert pruner.hoyer == HoyerSquare(strength=0.5)
    assert pruner.tensors == Tensors(bnorm=True) and "2.weight" in pruner.params


@pytest.mark.parametrize(
    ("keyword", "part"),
    [("noise_scale", "noise"), ("stop_hoyer_at", "penalty"), ("prune_include", "tensors")],
)
def test_a_keyword_beside_its_part_is_refused_naming_both(keyword, part):
    given = {"noise": Noise(), "penalty": HoyerSquare(strength=1.0), "tensors": Tensors()}
    with pytest.raises(TypeError, match=rf"both {part}= and {keyword}="):
        Pruner(net(), "flipout", **{part: given[part], keyword: OLD.get(keyword, "1")})


def test_an_unknown_keyword_is_refused_as_python_would():
    with pytest.raises(TypeError, match="unexpected keyword argument 'noise_factor'"):
        Pruner(net(), "flipout", noise_factor=1.0)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Noise(scale=-1.0), ValueError, "Noise.scale must be at least 0, got -1.0"),
        (lambda: Noise(scale=math.inf), ValueError, "Noise.scale must be a finite number"),
        (lambda: Noise(only_prunable=1), TypeError, "Noise.only_prunable must be True or False"),
        (lambda: Noise(stop_at=-1), ValueError, "Noise.stop_at must be at least 0, got -1"),
        (lambda: HoyerSquare(strength="6e-5"), ValueError, "HoyerSquare.strength must be a num"),
        (lambda: HoyerSquare(1.0, last_epoch=1.5), ValueError, "HoyerSquare.last_epoch must be an"),
        (lambda: HoyerSquare(1.0, scope="every"), ValueError,
         "HoyerSquare.scope must be 'prunable' or 'all', got 'every'"),
        (lambda: Tensors(bias="yes"), TypeError, "Tensors.bias must be True or False"),
        (lambda: Tensors(bnorm=None), TypeError, "Tensors.bnorm must be True or False"),
        (lambda: Tensors(include=["0", 4]), TypeError, "Tensors.include takes a name or glob"),
        (lambda: Pruner(net(), noise=Noise), TypeError, "noise must be a Noise, such as"),
        (lambda: Pruner(net(), penalty=0.1), TypeError, "penalty must be a HoyerSquare"),
        (lambda: Pruner(net(), tensors=["1"]), TypeError, "tensors must be a Tensors"),
    ],
)  # fmt: skip
def test_each_part_refuses_a_wrong_field_naming_it(make, error, message):
    with pytest.raises(error, match=f"^{message}"):
        make()


def test_a_pattern_of_the_new_form_is_named_by_its_field():
    with pytest.raises(ValueError, match=r"^Tensors\.exclude head: no prunable tensor matches it"):
        Pruner(net(), "flipout", tensors=Tensors(exclude=["1", "head"]))
    pruner = Pruner(net(), "flipout", tensors=Tensors(exclude="1"))
    with pytest.raises(ValueError, match=r"Tensors\.exclude or Tensors\.include keeps it dense"):
        pruner.adopt_masks({"1.weight": torch.ones(12, 16, dtype=torch.bool)})


def test_a_part_is_a_value_whatever_iterable_it_was_given():
    assert Tensors(include=["0", "3"]) == Tensors(include=("0", "3"))
    assert Tensors(exclude="fc").exclude == ("fc",) and Tensors(include=None).include == ()
    assert len({Noise(), Noise(scale=1.0)}) == 1
    # a generator is read once, not used up by the check of its items
    assert Tensors(exclude=(name for name in ["1", "4"])).exclude == ("1", "4")
    with pytest.warns(DeprecationWarning):
        pruner = Pruner(net(), "flipout", prune_exclude=(name for name in ["1"]))
    assert list(pruner.params) == ["4.weight"]


def test_the_release_befores_attributes_read_the_parts():
    pruner = Pruner(net(), "flipout", **NEW)
    assert (pruner.hoyer_lambda, pruner.stop_hoyer_at, pruner.hoyer_scope) == (1e-3, None, "all")
    assert (pruner.stop_noise_at, pruner.prune_include, pruner.prune_exclude) == (3, (), ("4",))
    bare = Pruner(net(), "flipout")
    assert (bare.hoyer_lambda, bare.stop_hoyer_at, bare.stop_noise_at) == (0.0, None, None)
