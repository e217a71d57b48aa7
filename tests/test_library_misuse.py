"""The library refuses nonsense with a ValueError or TypeError naming the argument, and changes
nothing then: schedules out of bounds, epochs outside the schedule, masks that are not boolean,
another model's optimizer, a sparsity below the current one; and the pruner's state loads before
or after the model's to the same network as a run that never stopped."""

import copy

import pytest
import torch
from torch import nn

from pruning import FlipOut, Gradual, OneShot, Periodic, Pruner, Rounds


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def live_masks(pruner: Pruner) -> bool:
    return all(bool(mask.all()) for _, mask in pruner.masks.items())


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Periodic(rate=0.5, every=1, epochs=-3), "epochs must be at least 1, got -3"),
        (lambda: Periodic(epochs=2.5), "epochs must be an integer"),
        (lambda: Periodic(every=0), "every must be at least 1"),
        (lambda: Periodic(rate=1.0), "rate must be less than 1"),
        (lambda: Periodic(rate=0), "rate must be greater than 0"),
        (lambda: Periodic(stop_at=0), r"stop_at must be at least 1 \(or -1\)"),
        (lambda: OneShot(sparsity=0.5, epochs=0), "epochs must be at least 1, got 0"),
        (lambda: OneShot(sparsity=-0.1), "sparsity must be at least 0"),
        (lambda: OneShot(sparsity=0.5, epoch=4, epochs=4), "epoch 4 must be before the last"),
        (lambda: Gradual(sparsity=0.5, epochs=0), "epochs must be at least 1, got 0"),
        (lambda: Gradual(sparsity=0.5, start=5, end=3, epochs=9), "end 3 is before start 5"),
        (lambda: Gradual(sparsity=0.5, initial_sparsity=0.6, epochs=9), "initial_sparsity 0.6"),
        (lambda: Gradual(sparsity=0.5, every=0, epochs=9), "every must be at least 1"),
        (lambda: Rounds(epochs=0), "epochs must be at least 1, got 0"),
        (lambda: Rounds(rounds=0, epochs=3), "rounds must be at least 1"),
        (lambda: Rounds(rewind_epoch=3, epochs=3), "rewind_epoch 3 must be before the end"),
    ],
)  # fmt: skip
def test_schedule_arguments_out_of_bounds_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    ("schedule", "last"),
    [
        (Periodic(rate=0.5, every=1, epochs=3), 3),
        (Gradual(sparsity=0.5, start=0, end=2, every=1, epochs=4), 4),
        (Rounds(rate=0.5, rounds=2, rewind_epoch=1, epochs=3), 5),  # 3 epochs, then 2 replayed
    ],
)
def test_end_of_epoch_refuses_an_epoch_after_the_schedule(schedule, last):
    pruner = Pruner(net(), "global_magnitude", schedule)
    pruner.before_training()
    for _ in range(last):
        pruner.end_of_epoch()
    sparsity = pruner.sparsity
    with pytest.raises(ValueError, match=f"epoch {last + 1} is past the schedule's last epoch, "
                                         f"{last} .*epochs={schedule.epochs}"):  # fmt: skip
        pruner.end_of_epoch()
    with pytest.raises(ValueError, match=f"epoch {last} has ended already"):
        pruner.end_of_epoch(last)
    assert pruner.sparsity == sparsity and pruner.epoch == last + 1  # nothing pruned, nor counted


@pytest.mark.parametrize(
    ("epoch", "error", "message"),
    [(0, ValueError, "epoch must be at least 1, got 0"), (1.0, TypeError, "epoch must be an int")],
)
def test_end_of_epoch_counts_from_one(epoch, error, message):
    pruner = Pruner(net(), "global_magnitude", Periodic(rate=0.5, every=1, epochs=3))
    with pytest.raises(error, match=message):
        pruner.end_of_epoch(epoch)
    assert live_masks(pruner)


@pytest.mark.parametrize(
    ("masks", "error", "message"),
    [
        ({"0.weight": torch.full((16, 6), 0.5)}, TypeError,
         r"masks\['0.weight'\] must be a bool tensor .* got torch.float32"),
        ({"0.weight": torch.ones(16, 6)}, TypeError, r"masks\['0.weight'\] must be a bool tensor"),
        ({"0.weight": [[True] * 6] * 16}, TypeError, r"masks\['0.weight'\] .* got list"),
        ({"2.weight": torch.zeros(3, 15, dtype=torch.bool)}, ValueError,
         r"masks\['2.weight'\] has shape \(3, 15\), its parameter \(3, 16\)"),
        ({"0.bias": torch.zeros(16, dtype=torch.bool)}, ValueError, "masks for 0.bias"),
        ([torch.zeros(16, 6, dtype=torch.bool)], TypeError, "masks must map parameter names"),
    ],
)  # fmt: skip
def test_adopt_masks_takes_only_boolean_masks_of_prunable_parameters(masks, error, message):
    pruner = Pruner(net(), "global_magnitude", Periodic(rate=0.5, every=1, epochs=3))
    # a valid mask given alongside is not adopted either
    given = {"0.weight": torch.zeros(16, 6, dtype=torch.bool), **masks} if isinstance(masks, dict) \
        else masks  # fmt: skip
    with pytest.raises(error, match=message):
        pruner.adopt_masks(given)
    assert live_masks(pruner)
    if isinstance(masks, dict) and "0.bias" not in masks:  # a checkpoint's masks alike
        state = pruner.state_dict()
        state["masks"] = {**state["masks"], **masks}
        with pytest.raises(error, match=message):
            pruner.load_state_dict(state)
        assert live_masks(pruner)


def test_attach_optimizer_takes_only_an_optimizer_of_the_pruners_parameters():
    model = net()
    pruner = Pruner(model, "global_magnitude", Periodic(rate=0.5, every=1, epochs=3))
    other = torch.optim.SGD(net().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer does not step 2 of the 2 prunable parameters, "
                                         r"0.weight \(and 1 more\)"):  # fmt: skip
        pruner.attach_optimizer(other)
    with pytest.raises(ValueError, match=r"optimizer does not step 1 of the 2 .*, 2.weight:"):
        pruner.attach_optimizer(torch.optim.SGD([model[0].weight, model[2].bias], lr=0.1))
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer, got list"):
        pruner.attach_optimizer(list(model.parameters()))
    assert pruner.optimizer is None and not pruner._hooks
    # a frozen layer may be left out of the optimizer; the others' parameters are enough
    model[0].weight.requires_grad_(False)
    pruner.attach_optimizer(torch.optim.SGD(model[2].parameters(), lr=0.1))


def test_prune_refuses_a_sparsity_below_the_current_one():
    pruner = Pruner(net(), "global_magnitude", Periodic(rate=0.5, every=1, epochs=3))
    pruner.prune(sparsity=0.75)
    live = pruner.masks.num_live
    with pytest.raises(ValueError, match=r"sparsity 0.5 is below the current sparsity, 0.75\d*:"):
        pruner.prune(sparsity=0.5)
    assert pruner.prune(sparsity=0.75).pruned == 0  # the current one: nothing to remove
    for kwargs, message in [({}, "either sparsity or rate"),
                            ({"sparsity": 0.9, "rate": 0.5}, "either sparsity or rate"),
                            ({"rate": 1.5}, "rate must be less than 1"),
                            ({"sparsity": 1.0}, "sparsity must be less than 1")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            pruner.prune(**kwargs)
    assert pruner.masks.num_live == live


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda m: Pruner(m.state_dict()), TypeError, "model must be a torch.nn.Module"),
        (lambda m: Pruner(nn.Sequential(nn.ReLU())), ValueError, "nothing to prune"),
        (lambda m: Pruner(m, FlipOut), TypeError, "criterion must be a Criterion"),
        (lambda m: Pruner(m, "flipout", Periodic), TypeError, "schedule must be a Schedule"),
        (lambda m: Pruner(m, noise_scale=-1.0), ValueError, "noise_scale must be at least 0"),
        (lambda m: Pruner(m, hoyer_lambda=float("inf")), ValueError, "hoyer_lambda must be a fin"),
        (lambda m: Pruner(m, stop_noise_at=-2), ValueError, "stop_noise_at must be at least 0"),
        (lambda m: Pruner(m, stop_hoyer_at=1.5), ValueError, "stop_hoyer_at must be an integer"),
    ],
)  # fmt: skip
def test_a_pruner_of_the_wrong_parts_is_refused(make, error, message):
    with pytest.raises(error, match=message):
        make(net())


# -- state loaded in any order ------------------------------------------------------------------


def build(seed: int):
    model = net(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    schedule = Periodic(rate=0.3, every=1, epochs=4)
    pruner = Pruner(model, FlipOut(), schedule, noise_scale=0.5, seed=4)
    pruner.attach_optimizer(optimizer, step_hooks=True)
    return {"model": model, "optimizer": optimizer, "pruner": pruner}


def train(parts: dict, epochs: range, data) -> None:
    model, optimizer = parts["model"], parts["optimizer"]
    for epoch in epochs:
        for inputs, targets in zip(*data[epoch - 1], strict=True):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
        parts["pruner"].end_of_epoch()


def outcome(parts: dict) -> dict:
    pruner = parts["pruner"]
    return {
        **parts["model"].state_dict(),
        **{f"mask/{name}": mask for name, mask in pruner.masks.items()},
        **{f"flips/{name}": count.clone() for name, count in pruner.flips.counts.items()},
    }


@pytest.mark.parametrize(
    "order",
    [("model", "optimizer", "pruner"), ("pruner", "model", "optimizer"),
     ("optimizer", "pruner", "model")],
)  # fmt: skip
def test_state_loads_before_or_after_the_models_to_the_straight_runs_network(order):
    generator = torch.Generator().manual_seed(1)
    data = [(torch.randn(4, 8, 6, generator=generator), torch.randint(3, (4, 8),
             generator=generator)) for _ in range(4)]  # fmt: skip
    straight = build(0)
    train(straight, range(1, 3), data)
    saved = copy.deepcopy({name: part.state_dict() for name, part in straight.items()})
    train(straight, range(3, 5), data)

    resumed = build(7)  # other initial weights, whose signs the flip counter must not keep
    for name in order:
        resumed[name].load_state_dict(copy.deepcopy(saved[name]))
    train(resumed, range(3, 5), data)

    expected, got = outcome(straight), outcome(resumed)
    assert [name for name in expected if not torch.equal(expected[name], got[name])] == []
    assert resumed["pruner"].events == straight["pruner"].events
    with pytest.raises(ValueError, match="epoch 5 is past the schedule's last epoch, 4"):
        resumed["pruner"].end_of_epoch()


def test_adopt_masks_only_before_training_and_never_to_an_empty_network():
    """After a prune (or once training began) the masks would silently combine with the
    pruner's own; masks with no live weight leave a network of zeros."""
    pruner = Pruner(net(), "global_magnitude", Periodic(rate=0.5, every=1, epochs=3))
    dead = {name: torch.zeros_like(mask) for name, mask in pruner.masks.items()}
    with pytest.raises(ValueError, match="masks leave no weight live"):
        pruner.adopt_masks(dead)
    assert live_masks(pruner)
    pruner.prune(rate=0.5)
    half = {name: mask.clone() for name, mask in pruner.masks.items()}
    with pytest.raises(ValueError, match="adopt_masks starts from masks before training"):
        pruner.adopt_masks(half)


def test_a_mask_for_a_tensor_kept_dense_names_the_option_that_keeps_it():
    pruner = Pruner(net(), "global_magnitude", Periodic(rate=0.5, every=1, epochs=3),
                    prune_exclude="2")  # fmt: skip
    with pytest.raises(ValueError, match=r"2\.weight.*prune_exclude or prune_include keeps it"):
        pruner.adopt_masks({"2.weight": torch.ones(3, 16, dtype=torch.bool)})
