"""Dynamic sparse training (pruning/dynamic.py): RigL and SET start sparse, move weights every few
optimizer steps and keep each layer's count exactly; GraNet's updates reach its cubic schedule's
sparsity exactly; a grown weight starts at zero with no
optimizer state; a run resumed mid-cycle equals a straight one to the bit."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import main
from pruning import SET, GraNet, Noise, Pruner, RigL, Tensors
from pruning.dynamic import cosine_fraction, erk_densities, keep_counts
from tests.support.runs import (
    assert_identical,
    assert_one_error_line,
    assert_resumed_equals_straight,
    quick,
    stopped_before_training_forward,
    summary,
)
from utils.checkpoint import load_checkpoint


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)
    )


def train(pruner: Pruner, optimizer, steps: int, seed: int = 0, each=None) -> None:
    """`steps` steps of a library user's loop, the pruner's hooks run by the optimizer; `each`
    called after every step."""
    batches = torch.Generator().manual_seed(seed)
    pruner.attach_optimizer(optimizer, step_hooks=True)
    for _ in range(steps):
        inputs = torch.randn(8, 6, generator=batches)
        targets = torch.randint(0, 3, (8,), generator=batches)
        optimizer.zero_grad()
        F.cross_entropy(pruner.model(inputs), targets).backward()
        optimizer.step()
        if each is not None:
            each()


def by_hand(pruner: Pruner, optimizer, steps: int, seed: int = 0, before=None, between=None):
    """`steps` steps of a loop that calls the pruner's hooks itself: `before(step)` after backward
    and before after_backward, `between(step)` after it and before the optimizer's step, given
    the step's number in the run (from 1)."""
    batches = torch.Generator().manual_seed(seed)
    pruner.attach_optimizer(optimizer)  # no step hooks: the gradients can be seen between them
    for _ in range(steps):
        inputs = torch.randn(8, 6, generator=batches)
        targets = torch.randint(0, 3, (8,), generator=batches)
        optimizer.zero_grad()
        F.cross_entropy(pruner.model(inputs), targets).backward()
        if before is not None:
            before(pruner.steps + 1)
        pruner.after_backward()
        if between is not None:
            between(pruner.steps + 1)
        optimizer.step()
        pruner.after_step()


def started(criterion, opt=torch.optim.SGD, seed: int = 0, **pruner_options):
    model = mlp()
    pruner = Pruner(model, criterion, seed=seed, **pruner_options)
    optimizer = opt(
        model.parameters(), lr=0.1, **({"momentum": 0.9} if opt is torch.optim.SGD else {})
    )
    pruner.before_training()
    return pruner, optimizer


# -- densities --------------------------------------------------------------------------------


def test_erk_densities_are_the_authors_formula_worked_by_hand():
    shapes = {"a": (8, 4), "b": (2, 8)}  # raw (8 + 4) / 32 = 0.375, (2 + 8) / 16 = 0.625
    # s = 0.5: eps = (16 + 8) / (0.375 * 32 + 0.625 * 16) = 24 / 22
    densities = erk_densities(shapes, 0.5)
    assert densities["a"] == pytest.approx(0.375 * 24 / 22)
    assert densities["b"] == pytest.approx(0.625 * 24 / 22)
    # s = 0.2: eps = 39 / 22 puts b above 1, so b is dense and a takes the rest:
    # eps = (26 - 3) / (0.375 * 32), a's density 23 / 32
    densities = erk_densities(shapes, 0.2)
    assert densities == {"a": pytest.approx(23 / 32), "b": 1.0}
    # power scale 0: every raw density 1, which is uniform
    assert erk_densities(shapes, 0.5, power_scale=0.0) == {"a": 0.5, "b": 0.5}
    # a custom (dense first) layer is left out of the budget
    assert erk_densities(shapes, 0.5, custom=frozenset({"a"})) == {"a": 1.0, "b": 0.5}


def test_keep_counts_hit_the_budget_exactly_with_the_largest_remainders():
    shapes = {"a": (8, 4), "b": (2, 8)}
    densities = erk_densities(shapes, 0.5)  # 13.09 and 10.91 weights
    assert keep_counts(densities, {"a": 32, "b": 16}, 24) == {"a": 13, "b": 11}


# -- the sparse start and every update --------------------------------------------------------


@pytest.mark.parametrize("criterion", [RigL, SET])
@pytest.mark.parametrize("distribution", ["erk", "uniform"])
def test_every_update_keeps_each_layers_count_and_the_total_exact(criterion, distribution):
    pruner, optimizer = started(
        criterion(init_sparsity=0.7, update_every=2, end=1.0, total_steps=20,
                  distribution=distribution)
    )  # fmt: skip
    start = pruner.masks.live_counts()
    assert sum(live for live, _ in start.values()) == round(0.3 * pruner.masks.num_total)
    seen = []
    train(pruner, optimizer, 20, each=lambda: seen.append(pruner.masks.live_counts()))
    assert all(counts == start for counts in seen)
    updates = [e for e in pruner.events if e.step is not None]
    assert [e.step for e in updates] == [2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert all(e.dropped == e.grown > 0 and e.pruned == 0 for e in updates[:3])
    assert all(d == g for e in updates for d, g in e.layers.values())


@pytest.mark.parametrize("criterion", [RigL, SET])
def test_rigl_and_set_default_to_the_authors_settings(criterion):
    chosen = criterion(init_sparsity=0.9)
    assert chosen.update_every == 100 and chosen.drop_fraction == 0.3 and chosen.end == 0.75
    assert chosen.distribution == "erk" and chosen.erk_power_scale == 1.0
    assert not chosen.dense_first_layer


def test_the_drop_fraction_is_cosine_annealed_to_zero_at_the_end():
    assert cosine_fraction(0.3, 0, 100) == pytest.approx(0.3)
    assert cosine_fraction(0.3, 50, 100) == pytest.approx(0.15)
    assert cosine_fraction(0.3, 25, 100) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
    assert cosine_fraction(0.3, 100, 100) == 0.0 and cosine_fraction(0.3, 150, 100) == 0.0
    rigl = RigL(init_sparsity=0.9, update_every=100)
    # T_end is 75% of 1,000 steps; the update at 700 is the last, 800 is past the end
    due = [step for step in range(1, 1001) if rigl.update_due(step, 1000)]
    assert due == [100, 200, 300, 400, 500, 600, 700]
    assert rigl.drop_fraction_at(100, 1000) == pytest.approx(0.15 * (1 + math.cos(math.pi / 7.5)))


@pytest.mark.parametrize("opt", [torch.optim.SGD, torch.optim.Adam])
def test_a_grown_weight_starts_at_zero_with_no_optimizer_state_or_flips(opt):
    pruner, optimizer = started(RigL(init_sparsity=0.7, update_every=3, total_steps=40), opt)
    before = {}
    train(pruner, optimizer, 2)
    before = {name: mask.clone() for name, mask in pruner.masks.items()}
    train(pruner, optimizer, 1)  # step 3: an update
    (event,) = [e for e in pruner.events if e.step == 3]
    assert event.grown > 0
    for name, p in pruner.params.items():
        grown = pruner.masks[name] & ~before[name]
        assert torch.all(p[grown] == 0)
        assert torch.all(pruner.flips.counts[name][grown] == 0)
        for value in optimizer.state[p].values():
            if torch.is_tensor(value) and value.shape == p.shape:
                assert torch.all(value[grown] == 0)
        dropped = before[name] & ~pruner.masks[name]
        assert torch.all(p[dropped] == 0)
    # from the next step on a grown weight trains: some move off zero
    grown = {name: pruner.masks[name] & ~before[name] for name in pruner.params}
    train(pruner, optimizer, 1, seed=1)
    assert any(bool((p[grown[name]] != 0).any()) for name, p in pruner.params.items())


@pytest.mark.parametrize("criterion", [RigL, SET])
def test_a_weight_grown_and_later_dropped_is_dead_and_zero_again(criterion):
    pruner, optimizer = started(criterion(init_sparsity=0.5, update_every=1, drop_fraction=0.9,
                                          end=1.0, total_steps=30))  # fmt: skip
    grown_at: dict = {}
    cases = []

    def watch():
        event = pruner.events[-1]
        if event.step != pruner.steps:
            return
        for name, mask in pruner.masks.items():
            was = grown_at.setdefault(name, torch.zeros_like(mask))
            dropped_again = was & ~mask
            if dropped_again.any():
                cases.append(name)
                assert torch.all(pruner.params[name][dropped_again] == 0)
                momentum = optimizer.state[pruner.params[name]]["momentum_buffer"]
                assert torch.all(momentum[dropped_again] == 0)
            was.copy_(mask)

    train(pruner, optimizer, 10, each=watch)
    assert cases  # it happened, and each time the weight was dead and zero


@pytest.mark.parametrize("criterion", [RigL, SET])
def test_a_grown_weight_gets_gradient_noise_from_the_next_step_and_dead_ones_none(criterion):
    """The noise treats a grown weight as live from the step after its update on: even with its
    true gradient taken away its gradient is noise, while every dead weight's is exactly 0."""
    model = mlp()
    pruner = Pruner(model, criterion(init_sparsity=0.7, update_every=2, total_steps=20),
                    noise=Noise(scale=1.0))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner.before_training()
    by_hand(pruner, optimizer, 1)
    before = {name: mask.clone() for name, mask in pruner.masks.items()}
    by_hand(pruner, optimizer, 1, seed=1)  # step 2: an update
    assert pruner.events[-1].step == 2 and pruner.events[-1].grown > 0
    grown = {name: pruner.masks[name] & ~before[name] for name in pruner.masks.masks}
    noised = []

    def take_away_the_true_gradient(step):
        for name, p in pruner.params.items():
            assert bool((p.grad[~pruner.masks[name]] != 0).any())  # autograd's dense gradient
            p.grad[grown[name]] = 0

    def look(step):
        for name, p in pruner.params.items():
            assert torch.all(p.grad[~pruner.masks[name]] == 0)
            assert torch.all(p.grad[grown[name]] != 0)
            noised.append(int(grown[name].sum()))

    by_hand(pruner, optimizer, 1, seed=2, before=take_away_the_true_gradient, between=look)
    assert sum(noised) == pruner.events[-1].grown
    assert pruner.steps == 3 and pruner.events[-1].step == 2  # step 3 moved no mask


@pytest.mark.parametrize("criterion", [RigL, SET])
def test_the_dead_weights_gradients_are_kept_only_for_an_update_step(criterion):
    """RigL's dense gradient is kept only after the backward of an update step and consumed by
    its update; SET, which grows at random, never keeps it."""
    pruner, optimizer = started(criterion(init_sparsity=0.7, update_every=3, end=1.0,
                                          total_steps=12))  # fmt: skip
    kept = []

    def look(step):
        if pruner._gradients is not None:
            kept.append(step)
            # the dense gradient: the dead weights' too, before the masking zeroed them
            assert any(bool((g[~pruner.masks[n]] != 0).any())
                       for n, g in pruner._gradients.items())  # fmt: skip

    by_hand(pruner, optimizer, 12, between=look)
    assert [e.step for e in pruner.events if e.step is not None] == [3, 6, 9]
    assert kept == ([3, 6, 9] if criterion is RigL else [])
    assert pruner._gradients is None


def test_set_grows_from_the_pruners_seeded_generator():
    def masks_after(seed):
        pruner, optimizer = started(
            SET(init_sparsity=0.6, update_every=2, total_steps=20), seed=seed
        )
        train(pruner, optimizer, 6)
        return {name: mask.clone() for name, mask in pruner.masks.items()}

    assert_identical(masks_after(3), masks_after(3))
    assert any(
        not torch.equal(a, b)
        for a, b in zip(masks_after(3).values(), masks_after(4).values(), strict=True)
    )


# -- what it refuses, and what it honours ------------------------------------------------------


def test_without_the_length_of_training_the_first_step_says_how_to_give_it():
    pruner, optimizer = started(RigL(init_sparsity=0.5))
    with pytest.raises(ValueError, match=r"RigL\(total_steps=\.\.\.\)"):
        train(pruner, optimizer, 1)


@pytest.mark.parametrize(
    "criterion",
    [
        lambda: RigL(init_sparsity=0.7, update_every=1, total_steps=10),
        lambda: SET(init_sparsity=0.7, update_every=1, total_steps=10),
        lambda: GraNet(init_sparsity=0.5, sparsity=0.8, update_every=1, total_steps=10),
    ],
    ids=["RigL", "SET", "GraNet"],
)
def test_prune_exclude_is_honoured_the_excluded_layer_stays_dense_and_still(criterion):
    pruner, optimizer = started(criterion(), tensors=Tensors(exclude="4"))
    assert "4.weight" in pruner.excluded and "4.weight" not in pruner.masks.masks
    train(pruner, optimizer, 5)
    updates = [e for e in pruner.events if e.step is not None]
    assert len(updates) == 5 and all("4.weight" not in e.layers for e in updates)


def test_first_layer_dense_keeps_it_whole_through_the_updates():
    pruner, optimizer = started(
        RigL(init_sparsity=0.7, update_every=1, total_steps=10, dense_first_layer=True)
    )
    train(pruner, optimizer, 5)
    assert bool(pruner.masks["0.weight"].all())
    rest = [n for n in pruner.params if n != "0.weight"]
    live = sum(int(pruner.masks[n].sum()) for n in rest)
    assert live == round(0.3 * sum(pruner.params[n].numel() for n in rest))


DIGITS = ["-m", "lenet300", "-d", "digits", "--limit_batches", "3", "--init_sparsity", "0.9"]


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--nm", "2:4"], ["--prune_criterion rigl", "--nm 2:4"]),
        (["--schedule", "periodic"], ["--prune_criterion rigl", "periodic"]),
        (["--rigl_drop_fraction", "1"], ["--rigl_drop_fraction", "less than 1"]),
    ],
)
def test_what_rigl_cannot_do_is_one_line(tmp_path, capsys, flags, names):
    argv = quick(tmp_path, *DIGITS, "--prune_criterion", "rigl", "-e", "2", *flags)
    assert main.main(argv) == 2
    assert_one_error_line(capsys, *names)


@pytest.mark.parametrize(
    ("criterion", "flags"),
    [("set", ["--init_sparsity", "0.9"]),
     ("granet", ["--init_sparsity", "0.5", "--granet_sparsity", "0.9"])],
)  # fmt: skip
def test_set_and_granet_refuse_nm_in_one_line(tmp_path, capsys, criterion, flags):
    argv = quick(tmp_path, *DIGITS[:-2], *flags, "--prune_criterion", criterion, "-e", "2",
                 "--nm", "2:4")  # fmt: skip
    assert main.main(argv) == 2
    assert_one_error_line(capsys, f"--prune_criterion {criterion}", "--nm 2:4")


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.parametrize("criterion", ["rigl", "set"])
def test_a_run_records_each_mask_update_in_its_summary(tmp_path, criterion):
    argv = quick(tmp_path, *DIGITS, "--prune_criterion", criterion, "-e", "2",
                 "--rigl_update_every", "2", "--rigl_end", "1")  # fmt: skip
    assert main.main(argv) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    done = summary(run_dir)
    assert done["method"] == {"rigl": "RigL", "set": "SET"}[criterion]
    updates = [e for e in done["prune_events"] if "step" in e]
    assert [e["step"] for e in updates] == [2, 4]
    assert all(e["dropped"] == e["grown"] > 0 and e["sparsity"] == 0.9 for e in updates)
    assert done["final_sparsity"] == 0.9
    # per tensor [dropped, grown], every pruned tensor named, adding up to the update's totals
    tensors = {"1.weight", "3.weight", "5.weight"}
    for update in updates:
        assert set(update["layers"]) == tensors
        assert all(dropped == grown for dropped, grown in update["layers"].values())
        assert sum(d for d, _ in update["layers"].values()) == update["dropped"]
        assert sum(g for _, g in update["layers"].values()) == update["grown"]
    # each epoch's updates in all, in metrics.jsonl and TensorBoard's regrowth/ tags
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(e["dropped"], e["grown"]) for e in epochs] == [
        (sum(u["dropped"] for u in updates if u["epoch"] == e["epoch"]),) * 2 for e in epochs
    ]
    events = EventAccumulator(str(run_dir))
    events.Reload()
    for key in ("dropped", "grown"):
        assert [e.value for e in events.Scalars(f"regrowth/{key}")] == [e[key] for e in epochs]
        for tensor in tensors:  # and tensor by tensor, as the summary's updates add up
            by_epoch = [e["regrowth"][tensor][key] for e in epochs]
            assert [e.value for e in events.Scalars(f"regrowth/{key}/{tensor}")] == by_epoch
            assert by_epoch == [
                sum(u["layers"][tensor][key == "grown"] for u in updates if u["epoch"] == epoch)
                for epoch in (1, 2)
            ]


def assert_resumed_mid_cycle_equals_straight(tmp_path, flags) -> None:
    """A run stopped after its 3rd step (between the updates at 2 and 4) and resumed ends
    identical to a straight run: records, model, optimizer and pruner."""
    # the 3 steps of epoch 1, then epoch 2's 2nd
    run_dir = stopped_before_training_forward(tmp_path, flags, forward=5)
    assert load_checkpoint(run_dir)["pruner"]["steps"] == 3
    assert_resumed_equals_straight(tmp_path, run_dir, flags)


@pytest.mark.parametrize("criterion", ["rigl", "set"])
def test_a_run_resumed_mid_cycle_equals_a_straight_one_to_the_bit(tmp_path, capsys, criterion):
    flags = [*DIGITS, "--prune_criterion", criterion, "-e", "2", "--rigl_update_every", "2",
             "--rigl_end", "1", "--opt", "adam"]  # fmt: skip
    assert_resumed_mid_cycle_equals_straight(tmp_path, flags)
    capsys.readouterr()


# -- GraNet ------------------------------------------------------------------------------------


def test_granet_is_at_its_cubic_schedules_sparsity_after_every_update():
    granet = GraNet(init_sparsity=0.5, sparsity=0.9, update_every=2, total_steps=20)
    pruner, optimizer = started(granet)
    total = pruner.masks.num_total
    train(pruner, optimizer, 20)
    updates = [e for e in pruner.events if e.step is not None]
    assert [e.step for e in updates] == list(range(2, 21, 2))
    for event in updates:
        # the cubic curve from 0.5 at step 0 to 0.9 at half of the 20 steps, then flat
        progress = min(1.0, event.step / 10)
        expected = 0.9 + (0.5 - 0.9) * (1 - progress) ** 3
        assert event.live == round((1 - expected) * total)
        assert event.pruned == event.dropped - event.grown >= 0
        assert all(d >= g for d, g in event.layers.values())
    assert updates[-1].live == round(0.1 * total) and updates[-1].grown > 0


def test_granet_regrowth_fraction_is_cosine_annealed_from_half_to_the_end_value():
    granet = GraNet(init_sparsity=0.5, sparsity=0.9)
    assert granet.update_every == 1000 and granet.prune_end == 0.5
    assert granet.regrow_fraction_at(0, 1000) == pytest.approx(0.5)
    assert granet.regrow_fraction_at(500, 1000) == pytest.approx(0.005 + 0.495 / 2)
    assert granet.regrow_fraction_at(1000, 1000) == pytest.approx(0.005)
    assert granet.sparsity_at(250, 1000) == pytest.approx(0.9 - 0.4 * 0.5**3)


@pytest.mark.parametrize("opt", [torch.optim.SGD, torch.optim.Adam])
def test_a_weight_granet_regrows_starts_at_zero_with_no_optimizer_state(opt):
    pruner, optimizer = started(GraNet(init_sparsity=0.5, sparsity=0.8, update_every=3,
                                       total_steps=30), opt)  # fmt: skip
    train(pruner, optimizer, 2)
    before = {name: mask.clone() for name, mask in pruner.masks.items()}
    train(pruner, optimizer, 1)  # step 3: an update
    assert pruner.events[-1].step == 3 and pruner.events[-1].grown > 0
    for name, p in pruner.params.items():
        grown = pruner.masks[name] & ~before[name]
        assert torch.all(p[grown] == 0)
        for value in optimizer.state[p].values():
            if torch.is_tensor(value) and value.shape == p.shape:
                assert torch.all(value[grown] == 0)


GRANET = [*DIGITS[:-2], "--init_sparsity", "0.5", "--prune_criterion", "granet",
          "--granet_sparsity", "0.9", "--granet_update_every", "2", "-e", "2"]  # fmt: skip


def test_a_granet_run_records_each_update_in_its_summary_and_metrics(tmp_path):
    assert main.main(quick(tmp_path, *GRANET)) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    done = summary(run_dir)
    assert done["method"] == "GraNet" and done["final_sparsity"] == 0.9
    updates = [e for e in done["prune_events"] if "step" in e]
    assert [e["step"] for e in updates] == [2, 4, 6]
    assert updates[0]["pruned"] > 0 and updates[-1]["sparsity"] == 0.9
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(e["dropped"], e["grown"]) for e in epochs] == [
        tuple(
            sum(u[key] for u in updates if u["epoch"] == e["epoch"]) for key in ("dropped", "grown")
        )
        for e in epochs
    ]
    # an epoch's sign flips are those it counted, not fewer for the counters its updates cleared
    assert all(e["flips"] >= 0 for e in epochs) and epochs[-1]["flips"] > 0


def test_a_granet_run_resumed_between_updates_equals_a_straight_one_to_the_bit(tmp_path, capsys):
    assert_resumed_mid_cycle_equals_straight(tmp_path, [*GRANET, "--opt", "adam"])
    capsys.readouterr()
