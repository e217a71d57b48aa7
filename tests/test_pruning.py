"""Behaviour of the pruning engine (pruning/*.py) that training runs and reported results rely on:
which tensors are prunable, that pruned weights stay dead and exactly zero through any optimizer,
the exact masks every criterion produces on hand-made weights, the prune schedule behind the seed
README's sparsity table, gradient noise statistics, the Hoyer-Square penalty and prune events.

Expected masks and counts are worked out by hand from the paper's definitions (the comments show
the arithmetic), never read back from the code under test; random choices and gradient noise are
checked statistically with fixed seeds.
"""

import math
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning import CRITERIA, FlipOut, Masks, Periodic, Pruner, build_criterion, prunable_parameters
from pruning.flips import PENDING_LIMIT, FlipCounter
from pruning.hoyer import hoyer_square
from pruning.kernels import Kernels
from pruning.noise import GradientNoise, single_threaded_pool
from pruning.snip import connection_sensitivity
from tests.support.nets import CPU, ConvBnNet, make_pruner, snip_batches


@pytest.fixture(autouse=True)
def _seeded():
    # Tests that draw random weights or data must not depend on the order they run in.
    torch.manual_seed(0)


# -- helpers ---------------------------------------------------------------------------------


def linear_net(*weights) -> nn.Sequential:
    """Bias-free Linear layers holding exactly the given weights (1-D -> one output row). The
    layers are never called, so their shapes need not chain; parameter names are '0.weight',
    '1.weight', ..."""
    layers = []
    for w in weights:
        w = torch.as_tensor(w, dtype=torch.float32)
        if w.dim() == 1:
            w = w[None]
        layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            layer.weight.copy_(w)
        layers.append(layer)
    return nn.Sequential(*layers)


def live_flags(pruner: Pruner) -> dict[str, list[bool]]:
    return {name: m.flatten().tolist() for name, m in pruner.masks.items()}


def pruned_flags(pruner: Pruner) -> dict[str, list[bool]]:
    return {name: (~m).flatten().tolist() for name, m in pruner.masks.items()}


def flags(n: int, pruned: set[int]) -> list[bool]:
    return [i in pruned for i in range(n)]


def drive_flips(pruner: Pruner, param: torch.Tensor, flips: list[int]) -> None:
    """Give each element of `param` exactly flips[i] sign flips through the real step hook: negate
    the chosen elements, then `after_step`, as many times as needed. Magnitudes are unchanged."""
    wanted = torch.tensor(flips)
    for t in range(int(wanted.max())):
        with torch.no_grad():
            flat = param.view(-1)
            flat[wanted > t] *= -1
        pruner.after_step()


# -- masks and prunable tensors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("prune_bias", "prune_bnorm", "expected"),
    [
        (False, False, ["conv.weight", "fc.weight"]),
        (True, False, ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]),
        (False, True, ["conv.weight", "bn.weight", "fc.weight"]),
        (True, True, ["conv.weight", "conv.bias", "bn.weight", "fc.weight", "fc.bias"]),
    ],
)
def test_prunable_parameters_follow_flags(prune_bias, prune_bnorm, expected):
    model = ConvBnNet()
    found = prunable_parameters(model, prune_bias=prune_bias, prune_bnorm=prune_bnorm)
    # exact names in named_parameters order; BatchNorm biases are never prunable
    assert list(found) == expected
    # the very parameter objects, so that masking them masks the model
    params = dict(model.named_parameters())
    assert all(found[name] is params[name] for name in expected)


def test_one_bool_mask_per_prunable_tensor_all_live_at_start():
    model = ConvBnNet()
    pruner = make_pruner(model, prune_bias=True, prune_bnorm=True)
    assert list(pruner.masks) == list(pruner.params)
    for name, p in pruner.params.items():
        mask = pruner.masks[name]
        assert mask.dtype == torch.bool
        assert mask.shape == p.shape
        assert mask.device == p.device
        assert bool(mask.all())
    assert pruner.masks.num_total == sum(p.numel() for p in pruner.params.values())
    assert pruner.sparsity == 0.0


def test_sparsity_is_counted_from_masks_not_from_zero_weights():
    # A holds 1..20, B holds 21..30
    model = linear_net(torch.arange(1.0, 21.0).view(4, 5), torch.arange(21.0, 31.0).view(2, 5))
    pruner = make_pruner(model, prune_criterion="global_magnitude", prune_rate=0.5)
    with torch.no_grad():
        model[0].weight[0] = 0.0  # 1..5 become live weights that happen to be zero
    assert pruner.masks.num_live == 30
    assert pruner.sparsity == 0.0

    # floor(0.5 * 30) = 15 smallest: the five zeros and 6..15, all in A
    assert pruner.end_of_epoch(1).pruned == 15
    with torch.no_grad():
        for p in pruner.params.values():
            p.zero_()  # every remaining weight is now zero, and still live
    assert pruner.masks.num_live == 15
    assert pruner.sparsity == pytest.approx(0.5)
    assert pruner.masks.layer_sparsity() == pytest.approx({"0.weight": 0.75, "1.weight": 0.0})


def test_masks_prune_only_removes_and_rejects_malformed_updates():
    w = nn.Parameter(torch.randn(6))
    masks = Masks({"w": w})
    masks.prune("w", torch.tensor([True, True, False, False, False, False]))
    # an update that names the dead weights as kept must not bring them back
    masks.prune("w", torch.tensor([False, False, False, True, False, False]))
    masks.prune("w", torch.zeros(6, dtype=torch.bool))
    assert masks["w"].tolist() == [False, False, True, False, True, True]
    assert masks.num_live == 3

    with pytest.raises(ValueError):
        masks.prune("w", torch.zeros(6))  # float, not bool
    with pytest.raises(ValueError):
        masks.prune("w", torch.zeros(5, dtype=torch.bool))
    assert masks["w"].tolist() == [False, False, True, False, True, True]


# -- the step hooks: pruned weights stay exactly zero -----------------------------------------


class Drifting(torch.optim.SGD):
    """A subclass whose step moves every weight, zero or not: not trusted to keep zeros."""

    @torch.no_grad()
    def step(self, closure=None):
        super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(1e-3)


@pytest.mark.parametrize("attach", [True, False], ids=["attached", "no_optimizer"])
@pytest.mark.parametrize("noise", [False, True], ids=["no_noise", "noise"])
@pytest.mark.parametrize("opt", ["sgd", "adam", "drifting"])
def test_pruned_weights_stay_exactly_zero_through_training(opt, noise, attach):
    """Two ways to hold pruned weights at zero: with the optimizer attached, the prune zeroes its
    state and the step itself leaves them at zero (SGD, Adam), or after_step re-masks them (an
    optimizer whose exact type it does not know, or none attached)."""
    model = ConvBnNet()
    x, y = torch.randn(16, 1, 6, 6), torch.randint(0, 3, (16,))
    pruner = make_pruner(
        model, prune_criterion="flipout", prune_rate=0.5, prune_bias=True, noise=noise
    )
    if opt == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    elif opt == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=5e-4)
    else:
        optimizer = Drifting(model.parameters(), lr=0.05, momentum=0.9)
    if attach:
        pruner.attach_optimizer(optimizer)
    steps_keep_zeros = attach and opt != "drifting"
    assert pruner.remask_weights == (not steps_keep_zeros)

    def backward(epoch):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        pruner.after_backward(epoch)

    # Warm up so that momentum / Adam moments are non-zero for the weights about to be pruned:
    # exactly the state that would push them off zero again.
    for _ in range(5):
        backward(1)
        optimizer.step()
        pruner.after_step()
    assert pruner.end_of_epoch(1).pruned > 0
    dead = {name: ~m.clone() for name, m in pruner.masks.items()}
    before = {name: p.detach().clone() for name, p in pruner.params.items()}

    optimizer_moved_dead = False
    for _ in range(20):
        backward(2)
        for name, p in pruner.params.items():
            assert torch.equal(p.grad[dead[name]], torch.zeros(int(dead[name].sum())))
        optimizer.step()
        optimizer_moved_dead |= any(
            bool(p.detach()[dead[name]].ne(0).any()) for name, p in pruner.params.items()
        )
        pruner.after_step()
        for name, p in pruner.params.items():
            assert torch.equal(p.detach()[dead[name]], torch.zeros(int(dead[name].sum())))

    # Without cleared state the optimizer really did move pruned weights, so after_step is what
    # kept them at 0; with it, the step itself never moved them.
    assert optimizer_moved_dead == (not steps_keep_zeros)
    # ...while the live weights trained, and pruned weights never counted a flip.
    assert any(
        not torch.equal(p.detach()[~dead[name]], before[name][~dead[name]])
        for name, p in pruner.params.items()
    )
    for name in pruner.params:
        assert int(pruner.flips.counts[name][dead[name]].abs().sum()) == 0
        assert torch.equal(pruner.masks[name], ~dead[name])


def test_prune_and_restore_zero_the_optimizer_state_of_pruned_weights():
    torch.manual_seed(0)
    model = ConvBnNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner = make_pruner(model, prune_criterion="global_magnitude", prune_rate=0.5)
    pruner.attach_optimizer(optimizer)
    F.cross_entropy(model(torch.randn(8, 1, 6, 6)), torch.randint(0, 3, (8,))).backward()
    grads = {name: p.grad.clone() for name, p in pruner.params.items()}
    optimizer.step()  # the first step's momentum buffer is the gradient itself
    pruner.end_of_epoch(1)
    for name, p in pruner.params.items():
        buffer = optimizer.state[p]["momentum_buffer"]
        assert torch.equal(buffer, grads[name] * pruner.masks[name])  # zeroed only where pruned

    # A checkpoint whose optimizer state still moves pruned weights (for example one written
    # without this clearing): restoring the pruner clears it.
    for p in pruner.params.values():
        optimizer.state[p]["momentum_buffer"].fill_(1.0)
    fresh = make_pruner(model, prune_criterion="global_magnitude", prune_rate=0.5)
    fresh.attach_optimizer(optimizer)
    fresh.load_state_dict(pruner.state_dict())
    for name, p in fresh.params.items():
        assert torch.all(optimizer.state[p]["momentum_buffer"][~fresh.masks[name]] == 0)


# -- sign-flip counters ----------------------------------------------------------------------


def test_flip_counter_counts_changes_of_the_sign_bit_with_zero_as_not_negative():
    w = nn.Parameter(torch.tensor([1.0, -1.0, 0.0, 2.0, -3.0, 0.5]))
    still = nn.Parameter(torch.full((2, 3), -0.5))  # never changes: never flips
    counter = FlipCounter({"w": w, "still": still})
    for c, p in zip(counter.counts.values(), (w, still), strict=True):
        assert c.dtype == torch.int32
        assert c.device == p.device
        assert c.shape == p.shape

    steps = [
        # values after the step                  flips this step (negative or not)
        ([-1.0, -1.0, 0.5, 0.0, -2.0, -0.0], [1, 0, 0, 0, 0, 0]),  # 0.5 -> -0.0: no flip
        ([-2.0, 1.0, -0.5, 0.0, 0.0, 0.0], [0, 1, 1, 0, 1, 0]),  # -3 -> 0 -> 0: one flip
        ([3.0, 1.0, -0.5, -7.0, 0.0, 0.0], [1, 0, 0, 1, 0, 0]),  # 2 -> 0 -> -7: one flip
        ([3.0, 1.0, -0.5, -7.0, 0.0, -1e-30], [0, 0, 0, 0, 0, 1]),  # tiny is still negative
    ]
    expected = [0] * 6
    for values, flips in steps:
        with torch.no_grad():
            w.copy_(torch.tensor(values))
        counter.update()
        expected = [e + f for e, f in zip(expected, flips, strict=True)]
        assert counter.counts["w"].tolist() == expected
    assert expected == [2, 1, 1, 1, 1, 1]
    assert counter.counts["still"].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert counter.total() == 7
    assert counter.counts["w"].dtype == torch.int32


def test_flip_totals_catch_up_every_127_steps_and_whenever_read():
    w = nn.Parameter(torch.tensor([1.0, -1.0, 2.0]))
    counter = FlipCounter({"w": w})
    pending = 0
    for step in range(1, 301):  # the first two weights flip at every step, 300 times
        with torch.no_grad():
            w[:2] *= -1
        counter.update()
        pending = (pending + 1) % PENDING_LIMIT
        assert counter.pending_steps == pending
        if step == 200:
            assert counter.totals["w"].tolist() == [127, 127, 0]  # caught up at step 127
            assert pending == 73
            assert counter.counts["w"].tolist() == [200, 200, 0]  # reading catches up
            assert counter.pending_steps == 0
            pending = 0
    assert counter.counts["w"].tolist() == [300, 300, 0]
    assert counter.total() == 600
    # the sign bits followed the weights all along
    assert torch.equal(counter.packed["w"], (w < 0).to(torch.uint8))


def test_forget_pruned_zeroes_counters_and_pruned_weights_never_flip_again():
    w = nn.Parameter(torch.tensor([1.0, -2.0, 3.0, -4.0]))
    masks = Masks({"w": w})
    counter = FlipCounter({"w": w})
    for values in ([-1.0, 2.0, 3.0, 4.0], [1.0, -2.0, 3.0, -4.0]):
        with torch.no_grad():
            w.copy_(torch.tensor(values))
        counter.update()
    assert counter.counts["w"].tolist() == [2, 2, 0, 2]

    masks.prune("w", torch.tensor([False, True, False, True]))  # two negative weights die
    masks.apply_to_weights()
    counter.forget_pruned(masks)
    assert counter.counts["w"].tolist() == [2, 0, 0, 0]
    # They went from negative to zero when masked; that is no flip, now or at the next step.
    counter.update()
    assert counter.counts["w"].tolist() == [2, 0, 0, 0]
    assert counter.counts["w"].dtype == torch.int32


# -- criteria --------------------------------------------------------------------------------


def test_criteria_registry():
    expected = {"flipout", "global_magnitude", "magnitude", "none", "random", "snip", "threshold",
                "imp", "synflow", "grasp"}  # fmt: skip
    assert expected <= set(CRITERIA)  # among others: docs/library.md's recipe adds one
    with pytest.raises(ValueError, match="flipout"):
        build_criterion("lottery")


def test_flipout_prunes_most_flipped_among_equal_magnitudes():
    model = linear_net([1.0, -1.0, 1.0, -1.0])
    pruner = make_pruner(model, prune_criterion="flipout", prune_rate=0.5)
    drive_flips(pruner, model[0].weight, [0, 3, 1, 0])
    assert pruner.flips.counts["0.weight"].tolist() == [[0, 3, 1, 0]]
    # scores |w|^2 / (flips + 1) = 1, 1/4, 1/2, 1 -> the two flippers go
    event = pruner.end_of_epoch(1)
    assert event.pruned == 2
    assert pruned_flags(pruner) == {"0.weight": [False, True, True, False]}
    assert pruner.flips.counts["0.weight"].tolist() == [[0, 0, 0, 0]]


@pytest.mark.parametrize(
    ("criterion", "flipout_p", "pruned"),
    [
        # A0: 2^2 / (4 + 1) = 0.8 < B0: 1^2 / 1 = 1 -> the larger, flipping weight goes first
        ("flipout", 2.0, "A0"),
        # with p = 3, A0 scores 8 / 5 = 1.6 > 1, so the small stable one goes instead
        ("flipout", 3.0, "B0"),
        # plain magnitude ignores the flips
        ("global_magnitude", 2.0, "B0"),
    ],
)
def test_flipout_ranks_globally_by_magnitude_power_over_flips(criterion, flipout_p, pruned):
    model = linear_net([2.0, 5.0], [1.0, -4.0])
    pruner = make_pruner(model, prune_criterion=criterion, flipout_p=flipout_p, prune_rate=0.25)
    drive_flips(pruner, model[0].weight, [4, 0])
    assert pruner.end_of_epoch(1).pruned == 1  # floor(0.25 * 4)
    expected = {
        "0.weight": [pruned == "A0", False],
        "1.weight": [pruned == "B0", False],
    }
    assert pruned_flags(pruner) == expected


def test_flipout_default_power_is_two():
    assert FlipOut().p == 2.0


# Layer A has tiny weights, layer B large ones.
A = [0.3, -0.1, 0.4, -0.2]
B = [[-10.0, 40.0, 25.0], [20.0, -30.0, 50.0]]


def test_layerwise_and_global_magnitude_give_different_exact_masks():
    layer = make_pruner(linear_net(A, B), prune_criterion="magnitude", prune_rate=0.4)
    assert layer.end_of_epoch(1).pruned == 3
    # per layer floor(0.4 * live): A loses 1 (|-0.1|), B loses 2 (|-10|, |20|)
    assert pruned_flags(layer) == {
        "0.weight": flags(4, {1}),
        "1.weight": flags(6, {0, 3}),
    }

    glob = make_pruner(linear_net(A, B), prune_criterion="global_magnitude", prune_rate=0.4)
    assert glob.end_of_epoch(1).pruned == 4
    # floor(0.4 * 10) = 4 smallest |w| of the whole network: all of A, none of B
    assert pruned_flags(glob) == {"0.weight": flags(4, {0, 1, 2, 3}), "1.weight": flags(6, set())}


def test_prune_events_record_counts_and_collapsed_layers():
    pruner = make_pruner(linear_net(A, B), prune_criterion="global_magnitude", prune_rate=0.4)
    assert pruner.end_of_epoch(3) is not None
    assert pruner.end_of_epoch(5) is not None
    first, second = pruner.events
    assert first.as_dict() == {
        "epoch": 3,
        "pruned": 4,
        "live": 6,
        "total": 10,
        "sparsity": pytest.approx(0.4),
        "collapsed": ["0.weight"],
    }
    # then floor(0.4 * 6) = 2 of B's: |-10| and |20|
    assert second.as_dict() == {
        "epoch": 5,
        "pruned": 2,
        "live": 4,
        "total": 10,
        "sparsity": pytest.approx(0.6),
        "collapsed": ["0.weight"],
    }
    assert pruned_flags(pruner)["1.weight"] == flags(6, {0, 3})
    assert pruner.collapsed_layers() == ["0.weight"]


def random_pruner(seed: int, weights: list[torch.Tensor], global_seed: int = 0) -> Pruner:
    torch.manual_seed(global_seed)
    model = linear_net(*weights)
    return make_pruner(model, prune_criterion="random", prune_rate=0.5, seed=seed)


def test_random_is_seeded_uniform_and_only_picks_live_weights():
    weights = [torch.randn(40, 50), torch.randn(10, 50)]  # 2000 + 500
    a = random_pruner(7, weights, global_seed=1)
    b = random_pruner(7, weights, global_seed=2)  # the global RNG must not matter
    c = random_pruner(8, weights)
    for pruner in (a, b, c):
        assert pruner.end_of_epoch(1).pruned == 1250
    assert live_flags(a) == live_flags(b)
    assert live_flags(a) != live_flags(c)

    # uniform over the network: each layer loses about half (hypergeometric std ~ 10 weights)
    assert abs(int((~a.masks["1.weight"]).sum()) - 250) < 50
    assert abs(int((~a.masks["0.weight"]).sum()) - 1000) < 50
    # not a magnitude ranking in disguise: pruned and kept weights have the same size on average
    w = torch.cat([p.detach().flatten() for p in weights]).abs()
    dead = ~torch.cat([m.flatten() for m in a.masks.masks.values()])
    assert abs(float(w[dead].mean() - w[~dead].mean())) < 0.1

    # the second prune takes floor(0.5 * 1250) = 625 weights, all of them live before
    before = {name: m.clone() for name, m in a.masks.items()}
    assert a.end_of_epoch(2).pruned == 625
    removed = sum(int((before[n] & ~m).sum()) for n, m in a.masks.items())
    assert removed == 625
    assert all(not bool((m & ~before[n]).any()) for n, m in a.masks.items())


def test_random_choice_does_not_depend_on_gradient_noise():
    weights = [torch.randn(20, 10)]
    grads = torch.randn(20, 10)
    masks = []
    for noise in (False, True):
        model = linear_net(*weights)
        pruner = make_pruner(model, prune_criterion="random", prune_rate=0.5, seed=3, noise=noise)
        model[0].weight.grad = grads.clone()
        pruner.after_backward(1)
        pruner.end_of_epoch(1)
        masks.append(pruner.masks["0.weight"].clone())
    assert torch.equal(masks[0], masks[1])


def test_threshold_prunes_exactly_the_live_weights_below_it():
    model = linear_net([0.5, -0.125, 0.25, -0.375, 0.0, 0.0625, 2.0], [-0.01, 1.0, -0.2])
    # prune_rate plays no part: every weight under the threshold goes at once
    pruner = make_pruner(
        model, prune_criterion="threshold", magnitude_threshold=0.25, prune_rate=0.1
    )
    assert pruner.end_of_epoch(1).pruned == 5
    # strictly below: |0.25| stays; an exactly-zero live weight goes
    assert pruned_flags(pruner) == {
        "0.weight": flags(7, {1, 4, 5}),
        "1.weight": flags(3, {0, 2}),
    }
    # nothing new below the threshold: nothing pruned, dead weights are not counted again
    assert pruner.end_of_epoch(2).pruned == 0
    with torch.no_grad():
        model[0].weight[0, 6] = -0.2
    assert pruner.end_of_epoch(3).pruned == 1
    assert pruned_flags(pruner)["0.weight"] == flags(7, {1, 4, 5, 6})


@pytest.mark.parametrize("training", [True, False], ids=["train_mode", "eval_mode"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_snip_hits_its_sparsity_and_leaves_the_model_untouched(sparsity, training):
    model = ConvBnNet()
    # non-trivial BatchNorm statistics, so that "unchanged" is not "still at their defaults"
    with torch.no_grad():
        model(torch.randn(32, 1, 6, 6) * 3 + 1)
    model.train(training)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    batches = snip_batches(3, (1, 6, 6))

    pruner = make_pruner(model, prune_criterion="snip", snip_sparsity=sparsity, snip_batches=2)
    total = pruner.masks.num_total
    assert total == 36 + 192

    scores = connection_sensitivity(model, pruner.params, iter(batches), CPU)
    assert set(scores) == set(pruner.params)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), params[name])
        assert p.grad is None
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name])
    assert model.training == training

    pruner.attach_data(batches)
    event = pruner.before_training()
    assert pruner.masks.num_live == round((1 - sparsity) * total)
    assert event.live == pruner.masks.num_live and event.epoch == 0
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name])
    assert model.training == training
    # the kept weights are the initial weights; only the pruned ones were zeroed
    for name, p in pruner.params.items():
        m = pruner.masks[name]
        assert torch.equal(p.detach()[m], params[name][m])
        assert bool(p.detach()[~m].eq(0).all())
    # the mask is fixed from then on
    assert all(pruner.end_of_epoch(e) is None for e in range(1, 10))


def test_snip_keeps_the_top_weights_by_gradient_times_weight():
    model = nn.Linear(5, 3)
    batches = snip_batches(3, (5,), size=4)
    pruner = make_pruner(model, prune_criterion="snip", snip_sparsity=0.6, snip_batches=2)

    def hand_gradient(used):
        # d CE / d W for logits x W^T + b, mean over the batch: (softmax - onehot)^T x / N,
        # summed over the batches SNIP looks at
        grad = torch.zeros(3, 5)
        with torch.no_grad():
            for x, y in used:
                p = torch.softmax(x @ model.weight.T + model.bias, dim=1)
                grad += (p - F.one_hot(y, 3).float()).T @ x / len(y)
        return grad

    def top_mask(scores, keep):
        order = torch.argsort(scores.flatten(), descending=True)
        mask = torch.zeros(scores.numel(), dtype=torch.bool)
        mask[order[:keep]] = True
        return mask.view_as(scores)

    expected = (hand_gradient(batches[:2]) * model.weight.detach()).abs()
    keep = round(0.4 * 15)
    ranked = expected.flatten().sort(descending=True).values
    assert ranked[keep - 1] - ranked[keep] > 1e-4  # no near-tie at the cut in this seeded data
    # precondition: scoring all three batches would keep a different set, so the count matters
    all_three = (hand_gradient(batches) * model.weight.detach()).abs()
    assert not torch.equal(top_mask(all_three, keep), top_mask(expected, keep))

    scores = connection_sensitivity(model, pruner.params, iter(batches[:2]), CPU)
    torch.testing.assert_close(scores["weight"], expected, rtol=1e-5, atol=1e-7)

    pruner.attach_data(batches)
    pruner.before_training()  # snip_batches=2: the third is ignored
    assert pruner.masks.num_live == keep
    assert torch.equal(pruner.masks["weight"], top_mask(expected, keep))


def test_none_never_prunes_but_counts_flips():
    model = ConvBnNet()
    pruner = make_pruner(model, prune_criterion="none", prune_bias=True)
    pruner.attach_data(snip_batches(1, (1, 6, 6)))
    assert pruner.before_training() is None
    assert all(pruner.end_of_epoch(e) is None for e in range(1, 50))
    assert pruner.masks.num_live == pruner.masks.num_total
    assert pruner.events == []
    with torch.no_grad():
        model.fc.weight[0, 0] *= -1
    pruner.after_step()
    assert pruner.flips.total() == 1


@pytest.mark.parametrize("criterion", ["flipout", "global_magnitude", "magnitude", "random"])
def test_each_prune_removes_floor_rate_times_live_and_only_live(criterion):
    model = linear_net(torch.randn(7, 5), torch.randn(3, 11))  # 35 + 33 weights
    pruner = make_pruner(model, prune_criterion=criterion, prune_rate=0.3)
    for epoch in range(1, 6):
        # some training-like motion, so FlipOut has flips to rank by
        for _ in range(3):
            with torch.no_grad():
                for p in pruner.params.values():
                    p.add_(0.2 * torch.randn_like(p))
            pruner.after_step()
        before = {name: m.clone() for name, m in pruner.masks.items()}
        live = {name: int(m.sum()) for name, m in before.items()}
        if criterion == "magnitude":
            expected = sum(math.floor(0.3 * n) for n in live.values())
        else:
            expected = math.floor(0.3 * sum(live.values()))
        event = pruner.end_of_epoch(epoch)
        # dead weights are exactly zero, the lowest score of all: had they been candidates,
        # fewer live weights would have been removed
        removed = {name: int((before[name] & ~m).sum()) for name, m in pruner.masks.items()}
        assert sum(removed.values()) == expected == event.pruned
        if criterion == "magnitude":
            assert removed == {name: math.floor(0.3 * n) for name, n in live.items()}
        for name, m in pruner.masks.items():
            assert not bool((m & ~before[name]).any())  # nobody revived
            assert bool(pruner.params[name].detach()[~m].eq(0).all())


@pytest.mark.parametrize("criterion", ["flipout", "global_magnitude", "magnitude"])
def test_ties_are_broken_by_position(criterion):
    def run():
        # every |w| equal (signs alternate): all scores tie
        a = torch.tensor([1.0, -1.0] * 3 + [1.0])
        b = -torch.ones(2, 3)
        pruner = make_pruner(linear_net(a, b), prune_criterion=criterion, prune_rate=0.5)
        pruner.end_of_epoch(1)
        first = pruned_flags(pruner)
        pruner.end_of_epoch(2)
        return first, pruned_flags(pruner)

    first, second = run()
    assert run() == (first, second)
    if criterion == "magnitude":
        # per layer, floor(0.5 * 7) = 3 and floor(0.5 * 6) = 3, first by position
        assert first == {"0.weight": flags(7, {0, 1, 2}), "1.weight": flags(6, {0, 1, 2})}
        # then floor(0.5 * 4) = 2 and floor(0.5 * 3) = 1 of the still-live ones
        assert second == {"0.weight": flags(7, {0, 1, 2, 3, 4}), "1.weight": flags(6, {0, 1, 2, 3})}
    else:
        # globally, floor(0.5 * 13) = 6 in parameter order: the first six of layer 0
        assert first == {"0.weight": flags(7, {0, 1, 2, 3, 4, 5}), "1.weight": flags(6, set())}
        # then floor(0.5 * 7) = 3 live ones: the last of layer 0, then layer 1's first two
        assert second == {"0.weight": flags(7, set(range(7))), "1.weight": flags(6, {0, 1})}


# -- schedule --------------------------------------------------------------------------------

SEED_TABLE = [(117, 75.00), (70, 93.75), (50, 98.44), (39, 99.61), (32, 99.90)]


def prune_epochs(every: int, epochs: int, stop_at: int = -1) -> list[int]:
    return Periodic(every=every, epochs=epochs, stop_at=stop_at).epochs_pruned()


def test_prune_epoch_rules():
    assert prune_epochs(2, 6) == [2, 4]  # never after the last epoch
    assert prune_epochs(2, 7) == [2, 4, 6]
    assert prune_epochs(2, 10, stop_at=6) == [2, 4]  # stop_pruning_at itself excluded
    assert prune_epochs(2, 10, stop_at=7) == [2, 4, 6]
    assert prune_epochs(70, 350) == [70, 140, 210, 280]
    assert Periodic(every=70, epochs=350).step(350) is None
    assert Periodic(every=70, epochs=350, stop_at=-1).step(280) is not None
    assert Periodic(every=70, epochs=350, stop_at=280).step(280) is None


@pytest.mark.parametrize(("prune_freq", "percent"), SEED_TABLE)
def test_schedule_reproduces_seed_table(prune_freq, percent):
    schedule = Periodic(rate=0.5, every=prune_freq, epochs=350)
    assert round(100 * schedule.final_sparsity(), 2) == percent


def run_schedule(rate: float, prune_freq: int, stop_pruning_at: int = -1) -> Pruner:
    model = linear_net(torch.randn(256, 256))  # 2**16 weights
    pruner = make_pruner(
        model,
        prune_criterion="global_magnitude",
        prune_rate=rate,
        prune_freq=prune_freq,
        epochs=350,
        stop_pruning_at=stop_pruning_at,
    )
    for epoch in range(1, 351):
        pruner.end_of_epoch(epoch)
    return pruner


@pytest.mark.parametrize(
    ("rate", "prune_freq", "percent"),
    [(0.5, f, p) for f, p in SEED_TABLE] + [(0.3, 32, None), (0.37, 50, None)],
)
def test_real_pruner_follows_the_schedule(rate, prune_freq, percent):
    pruner = run_schedule(rate, prune_freq)
    # multiples of prune_freq, the last epoch (350) excluded
    epochs = list(range(prune_freq, 350, prune_freq))
    assert [event.epoch for event in pruner.events] == epochs
    live = 2**16
    for _ in epochs:
        live -= math.floor(rate * live)
    assert pruner.masks.num_live == live
    if percent is not None:
        assert round(100 * pruner.sparsity, 2) == percent


def test_stop_pruning_at_stops_the_real_pruner():
    pruner = run_schedule(0.5, 32, stop_pruning_at=96)
    assert [event.epoch for event in pruner.events] == [32, 64]
    assert pruner.masks.num_live == 2**14


# -- gradient noise --------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_noise_std_is_rms_gradient_times_scale_per_tensor(scale):
    big = nn.Parameter(torch.zeros(200_000))
    small = nn.Parameter(torch.zeros(50_000))
    # different RMS per tensor (about 2.06 and 100): the std must follow each tensor's own
    big.grad = torch.randn(200_000) * 2 + 0.5
    small.grad = torch.randn(50_000) * 100
    original = {"big": big.grad.clone(), "small": small.grad.clone()}
    GradientNoise([big, small], scale, seed=123).add()
    for name, p in (("big", big), ("small", small)):
        g = original[name]
        expected_std = float(g.norm()) / math.sqrt(g.numel()) * scale
        noise = (p.grad - g).double()
        assert float(noise.std()) == pytest.approx(expected_std, rel=0.02)
        assert abs(float(noise.mean())) < 0.02 * expected_std


def test_noise_is_reproducible_from_its_generator():
    def noisy(seed):
        p = nn.Parameter(torch.zeros(1000))
        p.grad = torch.linspace(-1, 1, 1000)
        GradientNoise([p], 1.0, seed).add()
        return p.grad

    assert torch.equal(noisy(5), noisy(5))
    assert not torch.equal(noisy(5), noisy(6))


@pytest.mark.parametrize("streams", [1, 4])
def test_noise_std_holds_for_one_stream_as_on_cuda_and_for_four(streams):
    p = nn.Parameter(torch.zeros(100_003))
    p.grad = torch.full((100_003,), 3.0)
    noise = GradientNoise([p], 0.5, seed=1, streams=streams)
    assert len(noise.generators) == streams
    noise.add()
    assert float((p.grad - 3.0).double().std()) == pytest.approx(1.5, rel=0.02)


def test_noise_handles_gradients_laid_out_unlike_their_masks():
    p = nn.Parameter(torch.zeros(300, 400))
    mask = torch.rand(300, 400, generator=torch.Generator().manual_seed(0)) > 0.5
    p.grad = torch.ones(400, 300).t()  # transposed: not dense in the mask's order
    GradientNoise([p], 1.0, seed=3, masks=[mask]).add()
    assert torch.all(p.grad[~mask] == 0)
    noise = (p.grad[mask] - 1).double()
    assert float(noise.std()) == pytest.approx(1.0, rel=0.02)


def test_noise_depends_on_the_seed_not_on_the_number_of_threads():
    sizes = (300_001, 70_000, 3, 1, 17)  # parallel-sized, small, and fewer elements than streams
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(n, generator=generator) for n in sizes]  # norms that depend on order
    masks = [torch.rand(n, generator=generator) > 0.3 for n in sizes]

    def noisy(threads, kernels="off"):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            params = [nn.Parameter(torch.zeros(n)) for n in sizes]
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            noise = GradientNoise(params, 1.0, seed=7, masks=masks, kernels=Kernels(kernels))
            assert len(noise.generators) == 4 and (noise._pool is None) == (threads == 1)
            noise.add()
            noise.add()
            return [p.grad for p in params], noise.get_state()
        finally:
            torch.set_num_threads(before)

    serial, serial_state = noisy(1)
    for threads, kernels in ((3, "off"), (2, "on")):
        grads_now, state = noisy(threads, kernels)
        assert all(torch.equal(a, b) for a, b in zip(serial_state, state, strict=True))
        for a, b in zip(serial, grads_now, strict=True):
            if kernels == "off":
                assert torch.equal(a, b)
            else:  # the compiled add may round differently (fused multiply-add)
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # the four streams' slices are not copies of one another
    quarters = (serial[0] - grads[0]).view(-1)[:300_000].view(4, -1)
    assert len({round(float(q.std()), 6) for q in quarters}) == 4


@pytest.mark.parametrize("streams", [1, 4])
def test_compiled_noise_kernels_compile_once_for_every_tensor(streams):
    sizes = (10, 100, 1000, 5000, 7, 3000, 20000, 90000, 123, 456, 7890, 11)
    params = [nn.Parameter(torch.zeros(n)) for n in sizes]
    masks = [torch.rand(n) > 0.5 if i % 2 else None for i, n in enumerate(sizes)]
    for p in params:
        p.grad = torch.randn(p.shape)
    noise = GradientNoise(params, 1.0, 0, masks=masks, kernels=Kernels("on"), streams=streams)
    # 12 tensors of 12 sizes, at most 2 compilations per kernel (static first, then dynamic)
    with torch._dynamo.config.patch(recompile_limit=2, fail_on_recompile_limit_hit=True):
        noise.add()


def test_noise_state_from_an_older_checkpoint_is_refused_in_one_line():
    noise = GradientNoise([nn.Parameter(torch.zeros(5))], 1.0, seed=0)
    with pytest.raises(ValueError, match="earlier version"):
        noise.set_state(torch.Generator().get_state())
    with pytest.raises(ValueError, match="1 gradient noise streams"):
        noise.set_state([torch.Generator().get_state()])


def test_noise_workers_run_single_threaded_and_leave_other_threads_alone():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pool = single_threaded_pool(2)

        def in_worker(_):
            torch.zeros(4).add_(1)
            return torch.get_num_threads()

        assert list(pool.map(in_worker, range(6))) == [1] * 6
        seen = []
        thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert seen == [2] and torch.get_num_threads() == 2
        pool.shutdown()
    finally:
        torch.set_num_threads(before)


ALL = {"conv.weight", "conv.bias", "bn.weight", "bn.bias", "fc.weight", "fc.bias"}


@pytest.mark.parametrize(
    ("only_prunable", "prune_bias", "noised"),
    [
        (True, False, {"conv.weight", "fc.weight"}),
        (True, True, {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}),
        (False, False, ALL),
    ],
)
def test_noise_targets(only_prunable, prune_bias, noised):
    model = ConvBnNet()
    pruner = make_pruner(
        model, noise=True, noise_only_prunable=only_prunable, prune_bias=prune_bias
    )
    grads = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.grad = grads[name].clone()
    pruner.after_backward(1)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.grad, grads[name])}
    assert changed == noised


def test_noise_never_reaches_pruned_gradients():
    model = linear_net(torch.randn(30, 20), torch.randn(10, 30))
    pruner = make_pruner(model, prune_criterion="global_magnitude", noise=True)
    pruner.end_of_epoch(1)
    grads = {name: torch.randn_like(p) for name, p in pruner.params.items()}
    for name, p in pruner.params.items():
        p.grad = grads[name].clone()
    pruner.after_backward(2)
    for name, p in pruner.params.items():
        dead = ~pruner.masks[name]
        assert torch.equal(p.grad[dead], torch.zeros(int(dead.sum())))
        # the live ones did get noise
        assert not torch.equal(p.grad[~dead], grads[name][~dead])


def test_noise_stops_at_stop_noise_at():
    model = linear_net(torch.randn(8, 8))
    pruner = make_pruner(model, noise=True, stop_noise_at=3)
    p = model[0].weight
    for epoch, noisy in ((1, True), (2, True), (3, False), (4, False)):
        g = torch.randn(8, 8)
        p.grad = g.clone()
        pruner.after_backward(epoch)
        assert torch.equal(p.grad, g) != noisy, epoch


# -- Hoyer-Square ----------------------------------------------------------------------------


def test_hoyer_square_values_and_gradient_by_hand():
    w = torch.tensor([3.0, -4.0, 0.0], requires_grad=True)
    value = hoyer_square([w])
    assert value.item() == pytest.approx(49 / 25)  # (3 + 4)^2 / (9 + 16)
    value.backward()
    # d/dw (l1^2 / l2^2) = 2 l1 sign(w) / l2^2 - 2 l1^2 w / l2^4 with l1 = 7, l2^2 = 25
    assert w.grad.tolist() == pytest.approx([14 / 25 - 294 / 625, -14 / 25 + 392 / 625, 0.0])
    # a sum over tensors; ones(4) gives 4^2 / 4 = 4
    assert hoyer_square([w, torch.ones(4)]).item() == pytest.approx(1.96 + 4.0)
    # scale-invariant
    assert hoyer_square([10 * w]).item() == pytest.approx(1.96)


def test_hoyer_square_of_all_zero_tensor_is_zero_with_zero_gradient():
    zero = torch.zeros(5, requires_grad=True)
    w = torch.tensor([3.0, -4.0, 0.0], requires_grad=True)
    value = hoyer_square([zero, w])
    assert value.item() == pytest.approx(1.96)
    value.backward()
    assert torch.equal(zero.grad, torch.zeros(5))
    assert bool(torch.isfinite(w.grad).all())
    alone = hoyer_square([torch.zeros(2, 3)])
    assert float(alone) == 0.0


def test_penalty_follows_add_hs_lambda_and_stop_hoyer_at():
    def pruner(**cfg):
        return make_pruner(linear_net([3.0, -4.0, 0.0], torch.ones(2, 2)), **cfg)

    stopped = pruner(add_hs=True, hoyer_lambda=0.5, stop_hoyer_at=3)
    for epoch in (1, 3):
        assert stopped.penalty(epoch).item() == pytest.approx(0.5 * (1.96 + 4.0))
    assert stopped.penalty(4) is None

    always = pruner(add_hs=True, hoyer_lambda=0.5, stop_hoyer_at=-1)
    penalty = always.penalty(10_000)
    assert penalty.item() == pytest.approx(2.98)
    penalty.backward()  # it is part of the loss: gradients reach the weights
    grad = always.params["0.weight"].grad
    assert grad.flatten().tolist() == pytest.approx([0.5 * 0.0896, 0.5 * 0.0672, 0.0])

    off = pruner(add_hs=False, hoyer_lambda=0.5)
    assert all(off.penalty(epoch) is None for epoch in (1, 100))
