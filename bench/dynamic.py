"""What dynamic sparse training adds to a training step, timed beside bench/bookkeeping.py's dense
step: RigL (Evci et al., "Rigging the Lottery", 2020) and SET (Mocanu et al., 2018) at 90%
sparsity, RigL's usual setting, with ERK layer densities, each on its own copy of the network.

A step between two mask updates masks the gradients and counts flips, as FlipOut's does. An
update step of RigL also copies the dense gradient in after_backward (autograd computed every
weight's gradient anyway) and, in after_step, drops the live weights of least |w| and grows the
dead ones of largest |gradient|; SET grows at random and copies nothing. The update pruners here
update at every step (`update_every=1`), so that each timed step is an update; RigL's mean step
over one update cycle is then computed from the two timings, not by running the cycle. The
pruner's work is timed inside each step (`Parts`), on the step's own gradients and weights: a
mask update repeated without the optimizer's step between would rank weights grown at zero and
gradients already masked, not what a run ranks.
"""

import math

import torch
import torch.nn.functional as F

from bench.timing import Parts
from models import build_model
from pruning import SET, Criterion, Pruner, RigL

SPARSITY = 0.9
# the paper's 350 CIFAR-10 epochs at batch 128: the drop fraction stays near its initial 0.3
# over the few updates timed, as in the first updates of a real run
TOTAL_STEPS = 350 * math.ceil(50_000 / 128)


class DynamicCase:
    """A copy of `source` trained under a dynamic sparse `criterion`, started sparse."""

    def __init__(self, criterion: Criterion, source: torch.nn.Module, model_name: str, device):
        self.model = build_model(model_name).to(device)
        self.model.load_state_dict(source.state_dict())
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4
        )
        self.pruner = Pruner(self.model, criterion)
        self.pruner.attach_optimizer(self.optimizer)
        self.pruner.before_training()
        self.work = Parts(self.pruner.device)

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(self.model(inputs), targets).backward()
        with self.work.part():
            self.pruner.after_backward(epoch=1)
        self.optimizer.step()
        with self.work.part():
            self.pruner.after_step()
        self.work.end_call()

    @property
    def updates(self) -> int:
        """Mask updates made so far (the sparse start not counted)."""
        return sum(event.step is not None for event in self.pruner.events)


def cases(source: torch.nn.Module, model_name: str, device) -> dict[str, DynamicCase]:
    """RigL between updates (its default ΔT, never reached by the few steps timed), RigL and
    SET updating at every step."""
    criteria = {
        "rigl": RigL(init_sparsity=SPARSITY, total_steps=TOTAL_STEPS),
        "rigl_update": RigL(init_sparsity=SPARSITY, update_every=1, total_steps=TOTAL_STEPS),
        "set_update": SET(init_sparsity=SPARSITY, update_every=1, total_steps=TOTAL_STEPS),
    }
    return {
        name: DynamicCase(chosen, source, model_name, device) for name, chosen in criteria.items()
    }


def cycle(between: DynamicCase) -> int:
    """ΔT: the optimizer steps of one update cycle of the RigL timed between updates."""
    return between.pruner.criterion.update_every


def check_between(between: DynamicCase) -> None:
    """RuntimeError if the timings reached an update of the RigL meant to time the steps between
    them (more repetitions than its ΔT)."""
    if between.updates:
        raise RuntimeError(
            f"the RigL timed between mask updates made {between.updates} update(s): its "
            f"{between.pruner.steps} steps reached ΔT = {cycle(between)}; time fewer repetitions"
        )


def cycle_mean(update: float, between: float, steps: int) -> float:
    """The mean over one cycle of `steps` steps: one update step and `steps - 1` others."""
    return (update + (steps - 1) * between) / steps
