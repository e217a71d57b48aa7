"""SynFlow (Tanaka, Kunin, Yamins & Ganguli, "Pruning neural networks without any data by
iteratively conserving synaptic flow", NeurIPS 2020).

SynFlow prunes without looking at data. Every parameter and buffer of the network is replaced by
its absolute value, an input of all ones goes through it (BatchNorm in eval mode, on its running
statistics) and R, the sum of the outputs, is the "synaptic flow". A weight scores |dR/dw * w|.
Pruning by these scores once can empty a whole layer (layer collapse); SynFlow avoids it by
pruning in n rounds, rescoring the network masked by the previous round, and keeping
density^(k/n) of the weights after round k.

Pruned weights are never revived: their masked value is zero, so they carry no flow, and every
round chooses among the live weights only.

Compared with the authors' code (ganguli-lab/Synaptic-Flow, `Pruners/pruners.py` class SynFlow
and `Pruner._global_mask`, `prune.py` `prune_loop`), on purpose:

- R and the scores are computed in float64 (the authors' is float32, their `model.double()`
  commented out). The flow grows with depth: this repository's DenseNet-121 at initialisation has
  R = 4.7e107, inf in float32 (VGG-19: 3e21, ResNet-18: 2e22). The ranking (pruning/select.py,
  in float32) sees the scores divided by the largest, so that their range fits there too.
- The model is not modified: the absolute values are copies handed to `torch.func.functional_call`,
  so weights, buffers, `.grad` and each module's train/eval mode stay exactly as they were. The
  authors take absolute values in place and multiply the signs back, leave the gradients zeroed
  and the model in eval mode.
- Each round keeps an exact count, ties broken by position as everywhere in this repository, and
  the last reaches `Step.keep` exactly: round((1 - sparsity) * total). The authors' `_global_mask`
  removes every weight scoring at or below the k-th lowest score, k = int(pruned fraction *
  total), so ties can remove more, and `prune_loop` accepts a result a few weights off target.
- From a network that is already sparse (another schedule, a second prune), the rounds go
  geometrically from the live count to the target: live * (keep / live)^(k/n) after round k. From
  a dense network that is the authors' exponential schedule, density^(k/n) of all weights.
- Under an N:M constraint (pruning/nm.py) the first round also removes what the constraint
  forces, on that round's scores; the later rounds then only have the rest of the way to go.

Under torchrun every rank computes the same scores from the same weights and the same input (no
data is involved), so no all-reduce is needed; cuDNN runs deterministically while scoring so that
ranks, and reruns, agree to the bit. The pruner's `check_identical` after the prune would catch a
difference.
"""

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from .criteria import AtInitialisation, PruneInputs
from .mask import Masks
from .options import Bounded, option
from .schedule import Step
from .select import prune_lowest_global


@contextlib.contextmanager
def scoring(model: nn.Module):
    """Inside: `model` in eval mode (BatchNorm on its running statistics, as the authors score),
    gradients on, cuDNN deterministic so that every rank and every rerun scores alike. Each
    module's mode and cuDNN's settings are restored after."""
    modes = {module: module.training for module in model.modules()}
    cudnn = torch.backends.cudnn
    settings = cudnn.deterministic, cudnn.benchmark
    model.eval()
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        with torch.enable_grad():
            yield
    finally:
        cudnn.deterministic, cudnn.benchmark = settings
        for module, training in modes.items():
            module.training = training


@torch.no_grad()
def absolute_values(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of `model` by name, as float64 copies of their absolute values
    (integer buffers, BatchNorm's batch counter, which eval mode does not use, as they are)."""
    return {
        name: tensor.detach().abs().double() if tensor.is_floating_point() else tensor
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
    }


def synaptic_flow(
    model: nn.Module,
    absolute: dict[str, torch.Tensor],
    params: dict[str, torch.Tensor],
    masks: Masks,
    ones: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """|dR/dw * w| for each tensor of `params`, where R is the summed output of `model` run on
    `absolute` (`absolute_values`) with the weights of `params` masked by `masks`, for the
    all-ones input `ones`. Call inside `scoring(model)`."""
    values = dict(absolute)
    for name in params:
        values[name] = (absolute[name] * masks[name]).requires_grad_()
    flow = functional_call(model, values, (ones,)).sum()
    if not torch.isfinite(flow):
        raise ValueError(
            f"SynFlow's synaptic flow R is {flow.item()} even in float64: this network's "
            "absolute weights carry too large a signal to score"
        )
    grads = torch.autograd.grad(flow, [values[name] for name in params], allow_unused=True)
    with torch.no_grad():
        return {
            # a tensor the output does not depend on carries no flow
            name: torch.zeros_like(absolute[name])
            if grad is None
            else grad.mul_(values[name]).abs_()
            for name, grad in zip(params, grads, strict=True)
        }


@dataclass
class SynFlow(AtInitialisation):
    """Iterative synaptic flow |dR/dw * w| on all-ones input, no data (Tanaka et al., 2020). By
    default once, before training, to `init_sparsity`, in `iterations` rounds of rescoring; on
    another schedule it runs its rounds afresh at each prune. See pruning/synflow.py."""

    iterations: int = option(
        "synflow_iterations",
        Bounded(int, low=1, high=100_000),
        100,
        "synflow: rounds of rescoring in which it reaches its target, keeping density^(k/n) "
        "after round k of n (1: one shot)",
    )

    label = "SynFlow"

    def batches_needed(self):
        # one batch, for its shape only: the input is all ones
        return 1

    def ones(self, inputs: PruneInputs) -> torch.Tensor:
        """One all-ones input shaped like a training example."""
        if not inputs.batches:
            raise ValueError("SynFlow takes the input's shape from a training batch; none came")
        shape = inputs.batches[0][0].shape[1:]
        return torch.ones((1, *shape), dtype=torch.float64, device=inputs.device)

    def scores(self, inputs):
        """One round's scores, in float64, on the network as masked now."""
        model = inputs.model
        with scoring(model):
            return synaptic_flow(
                model, absolute_values(model), inputs.params, inputs.masks, self.ones(inputs)
            )

    def select(self, inputs: PruneInputs, step: Step) -> dict[str, torch.Tensor]:
        masks, model = inputs.masks, inputs.model
        live = masks.num_live
        keep = step.keep(live, masks.num_total)
        # an N:M constraint may force weights out even when the step keeps them all
        if live == 0 or (keep >= live and inputs.nm is None):
            return {}
        # the rounds prune a copy of the masks; the pruner applies the difference
        kept = Masks(inputs.params)
        kept.load_state_dict(masks.state_dict())
        kept_live = live
        ones = self.ones(inputs)
        with scoring(model):
            absolute = absolute_values(model)
            for round_ in range(1, self.iterations + 1):
                target = (
                    keep
                    if round_ == self.iterations
                    else round(live * (keep / live) ** (round_ / self.iterations))
                )
                # the first round also removes what an N:M constraint forces, none left after
                if target >= kept_live and (round_ > 1 or inputs.nm is None):
                    continue
                scores = fit_float32(synaptic_flow(model, absolute, inputs.params, kept, ones))
                forced = inputs.forced(scores, kept)
                chosen = prune_lowest_global(scores, kept, kept_live - target, forced)
                for name, remove in chosen.items():
                    kept.prune(name, remove)
                kept_live = target if forced is None else kept.num_live
        return {name: masks[name] & ~kept[name] for name in masks}


def fit_float32(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The scores divided by the largest, so that ranking them in float32 (pruning/select.py)
    neither overflows nor loses the small ones to zero before it has to."""
    largest = float(torch.stack([s.max() for s in scores.values()]).max())
    return {name: s / largest for name, s in scores.items()} if largest > 0 else scores
