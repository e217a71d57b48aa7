"""Criteria that observe every training step, and Taylor (Molchanov et al., 2019), the one that
sums (dL/dw · w)² over the steps between prunes: the hook sees each step's masked gradient before
the noise, the score is the sum worked by hand, a prune starts it afresh, a resumed run equals a
straight one to the bit, a schedule that prunes before training is one line, and a criterion that
does not observe is never called."""

import io
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import main
from pruning import GlobalMagnitude, Noise, OneShot, Periodic, Pruner, Taylor
from pruning.registry import method_label
from tests.support.runs import (
    assert_identical,
    assert_one_error_line,
    assert_resumed_equals_straight,
    quick,
    stopped_before_training_forward,
    summary,
)
from utils.checkpoint import load_checkpoint

DIGITS = ["-m", "lenet300", "-d", "digits", "--limit_batches", "3", "--prune_criterion", "taylor"]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
        ],
    ),
]


def mlp(device="cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).to(device)


def step(pruner: Pruner, optimizer, batches: torch.Generator, hooks: bool = False) -> dict:
    """One training step of a library user's loop; the gradients as backward left them."""
    device = pruner.device
    inputs = torch.randn(8, 6, generator=batches).to(device)
    targets = torch.randint(0, 3, (8,), generator=batches).to(device)
    optimizer.zero_grad()
    F.cross_entropy(pruner.model(inputs), targets).backward()
    raw = {name: p.grad.clone() for name, p in pruner.params.items()}
    if not hooks:
        pruner.after_backward()
    optimizer.step()
    if not hooks:
        pruner.after_step()
    return raw


@dataclass
class Recording(GlobalMagnitude):
    """Global magnitude that records the gradients it observes."""

    observes = True

    def __post_init__(self):
        super().__post_init__()
        self.seen: list[dict[str, torch.Tensor]] = []

    def observe(self, params):
        self.seen.append({name: p.grad.clone() for name, p in params.items()})


@pytest.mark.parametrize("hooks", [False, True], ids=["called", "step_hooks"])
def test_the_hook_sees_each_steps_gradient_masked_and_before_the_noise(hooks):
    model = mlp()
    criterion = Recording()
    pruner = Pruner(model, criterion, Periodic(rate=0.5, every=1), noise=Noise(scale=1.0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner.attach_optimizer(optimizer, step_hooks=hooks)
    pruner.prune(sparsity=0.5)
    batches = torch.Generator().manual_seed(0)
    raws = [step(pruner, optimizer, batches, hooks) for _ in range(3)]
    assert len(criterion.seen) == 3
    for raw, seen in zip(raws, criterion.seen, strict=True):
        for name, mask in pruner.masks.items():
            assert torch.equal(seen[name], raw[name] * mask)  # the dead weights' entries zeroed
    # the step itself took the noisy gradient: the hook came before the noise
    last = pruner.params["0.weight"].grad
    assert not torch.equal(last, criterion.seen[-1]["0.weight"])


def test_the_score_is_g_times_w_squared_summed_by_hand_and_each_prune_starts_afresh():
    model = mlp()
    criterion = Taylor()
    pruner = Pruner(model, criterion, Periodic(rate=0.5, every=1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner.attach_optimizer(optimizer)
    batches = torch.Generator().manual_seed(0)
    by_hand = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in pruner.params.items()}
    for _ in range(4):
        weights = {name: p.detach().double().clone() for name, p in pruner.params.items()}
        raw = step(pruner, optimizer, batches)
        for name in by_hand:
            by_hand[name] += (raw[name].double() * weights[name]) ** 2
    for name, summed in by_hand.items():
        torch.testing.assert_close(criterion.importance[name].double(), summed, rtol=1e-6, atol=0)

    pruner.end_of_epoch()  # half of the live weights go: those of least summed score
    pruned = torch.cat([by_hand[n][~m] for n, m in pruner.masks.items()])
    kept = torch.cat([by_hand[n][m] for n, m in pruner.masks.items()])
    assert len(pruned) == len(kept) and pruned.max() <= kept.min() * (1 + 1e-5)
    assert criterion.importance == {}  # the next prune ranks by the steps after this one

    weights = {name: p.detach().clone() for name, p in pruner.params.items()}
    raw = step(pruner, optimizer, batches)
    for name, mask in pruner.masks.items():
        assert torch.all(criterion.importance[name][~mask] == 0)  # dead weights stay at 0
        expected = (raw[name] * weights[name]) ** 2 * mask
        torch.testing.assert_close(criterion.importance[name], expected, rtol=1e-6, atol=0)


def test_a_criterion_that_does_not_observe_is_never_called():
    @dataclass
    class Untouchable(GlobalMagnitude):
        def observe(self, params):
            raise AssertionError("observe called for a criterion that does not observe")

    model = mlp()
    pruner = Pruner(model, Untouchable(), Periodic(rate=0.5, every=1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner.attach_optimizer(optimizer, step_hooks=True)
    batches = torch.Generator().manual_seed(0)
    for _ in range(2):
        step(pruner, optimizer, batches, hooks=True)
    pruner.end_of_epoch()
    assert pruner.state_dict()["criterion"] == {}


@pytest.mark.parametrize("device", DEVICES)
def test_a_library_pruner_resumed_between_prunes_equals_a_straight_one(device):
    """The sum so far is in the pruner's state; a checkpoint, read onto the CPU, puts it back
    on the weights' device."""

    def built():
        model = mlp(device)
        pruner = Pruner(model, Taylor(), Periodic(rate=0.5, every=1))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        pruner.attach_optimizer(optimizer, step_hooks=True)
        return pruner, optimizer

    straight, straight_opt = built()
    batches = torch.Generator().manual_seed(0)
    for _ in range(2):
        step(straight, straight_opt, batches, hooks=True)
    saved = {
        "model": straight.model.state_dict(),
        "optimizer": straight_opt.state_dict(),
        "pruner": straight.state_dict(),
    }
    file = io.BytesIO()
    torch.save(saved, file)
    file.seek(0)
    saved = torch.load(file, map_location="cpu", weights_only=True)  # as a checkpoint is read
    assert saved["pruner"]["criterion"]["importance"]  # the sum of two steps goes with it
    resumed, resumed_opt = built()
    resumed.load_state_dict(saved["pruner"])
    resumed.model.load_state_dict(saved["model"])
    resumed_opt.load_state_dict(saved["optimizer"])
    assert resumed.criterion.importance["0.weight"].device == resumed.device
    generators = {"straight": batches, "resumed": torch.Generator()}
    generators["resumed"].set_state(batches.get_state())
    for pruner, optimizer, name in ((straight, straight_opt, "straight"),
                                    (resumed, resumed_opt, "resumed")):  # fmt: skip
        step(pruner, optimizer, generators[name], hooks=True)
        pruner.end_of_epoch()
    assert_identical(resumed.masks.state_dict(), straight.masks.state_dict())
    assert_identical(dict(resumed.model.state_dict()), dict(straight.model.state_dict()))


def test_a_damaged_or_foreign_state_is_refused_naming_the_tensor():
    pruner = Pruner(mlp(), Taylor(), Periodic(rate=0.5, every=1))
    state = pruner.state_dict()
    state["criterion"] = {"importance": {"0.weight": torch.zeros(3, 3)}}
    with pytest.raises(ValueError, match=r"importance of 0\.weight"):
        pruner.load_state_dict(state)
    magnitude = Pruner(mlp(), GlobalMagnitude(), Periodic(rate=0.5, every=1))
    with pytest.raises(ValueError, match="another criterion's"):
        magnitude.load_state_dict(state)
    del state["criterion"]  # the state of a release before observing criteria
    pruner.load_state_dict(state)
    assert pruner.criterion.importance == {}


def test_pruning_before_any_step_is_observed_says_how_to_call_the_hook():
    pruner = Pruner(mlp(), Taylor(), Periodic(rate=0.5, every=1))
    with pytest.raises(RuntimeError, match="after_backward"):
        pruner.prune(rate=0.5)


# -- main.py ------------------------------------------------------------------------------------


def test_a_run_reaches_its_sparsity_and_its_summary_names_taylor(tmp_path):
    assert main.main(quick(tmp_path, *DIGITS, "-e", "2", "--prune_freq", "1")) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    done = summary(run_dir)
    assert (done["prune_criterion"], done["method"]) == ("taylor", "Taylor")
    assert done["final_sparsity"] == 0.5
    assert [event["epoch"] for event in done["prune_events"]] == [1]
    assert method_label("taylor", {"schedule": "gradual"}) == "Taylor (gradual)"


@pytest.mark.parametrize(
    "flags",
    [
        ["--schedule", "oneshot", "--target_sparsity", "0.9"],
        ["--schedule", "gradual", "--target_sparsity", "0.9", "--start_sparsity", "0.5"],
    ],
    ids=["oneshot", "gradual"],
)
def test_a_schedule_that_prunes_before_training_is_one_line(tmp_path, capsys, flags):
    assert main.main(quick(tmp_path, *DIGITS, "-e", "4", *flags)) == 2
    assert_one_error_line(capsys, "--prune_criterion taylor", "before training", flags[1])
    with pytest.raises(ValueError, match="before training"):
        Pruner(mlp(), Taylor(), OneShot(sparsity=0.5))


def test_a_run_resumed_between_prunes_equals_a_straight_one_to_the_bit(tmp_path, capsys):
    """Stopped in epoch 2, resumed from epoch 1's checkpoint, whose sum of 3 steps the prune
    after epoch 2 ranks by with epoch 2's."""
    flags = [*DIGITS, "-e", "3", "--prune_freq", "2"]
    # epoch 1's 3 steps, then epoch 2's 2nd
    run_dir = stopped_before_training_forward(tmp_path, flags, forward=5)
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["epoch"] == 1 and checkpoint["pruner"]["criterion"]["importance"]
    assert_resumed_equals_straight(tmp_path, run_dir, flags)
    capsys.readouterr()
