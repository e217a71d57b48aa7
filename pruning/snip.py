"""SNIP's connection sensitivity (Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based
on Connection Sensitivity", ICLR 2019).

The sensitivity of weight w is |dL/dw * w| for a loss L, with gradients summed over a few
training batches. What is scored is SNIP's `score` (`--snip_score`, `SCORINGS`):

- "as_initialised" (the default): the model itself, the very weights that then train, with the
  cross-entropy loss (`connection_sensitivity`).
- "xavier_nll": as the FlipOut authors' code (snip.py there) scored, a deep copy of the model
  whose linear and convolution weights are drawn afresh from a Xavier normal distribution
  (biases, BatchNorm and every other tensor kept as they are), with `F.nll_loss` applied to the
  raw logits, that is the mean of minus the logit of the true class (`xavier_sensitivity`). The
  scores are |dL/dw' * w'| of the copy's weights w'; the model is left alone. The authors drew
  the copy from the global random state (torch's default generator of the model's device); here
  it comes from the pruner's seeded generator (`PruneInputs.generator`), so that the training
  run's random streams (initialisation, data order, augmentation, noise) are the same whichever
  score SNIP uses, and a resumed run that rescores on another schedule draws the same copy.

BatchNorm while scoring: the FlipOut code scored its copy in train mode (the model came fresh
from its constructor), normalising with each batch's statistics, and so does `train_mode=True`,
the default. SNIP's authors (snip-public, in TensorFlow) score with `is_train` False, BatchNorm
normalising with its running statistics: `train_mode=False`. Either way the model's own
statistics are left as they were.
"""

import copy
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from .options import Choice

SCORINGS = Choice("as_initialised", "xavier_nll")


def connection_sensitivity(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    train_mode: bool = True,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> dict[str, torch.Tensor]:
    """|grad * w| per prunable tensor for the loss `loss_fn(outputs, targets)`, with the model in
    train mode (BatchNorm on batch statistics) or, with `train_mode=False`, in eval mode (on its
    running statistics). The model's weights, BatchNorm statistics, `.grad` fields and
    train/eval mode are left exactly as they were. Under torchrun, `all_reduce_sum` adds up the
    gradients of all ranks' batches, so that every rank scores (and masks) alike."""
    # a train-mode forward updates the running statistics; the copies put them back afterwards
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train(train_mode)
    grads = {name: torch.zeros_like(p) for name, p in params.items()}
    seen = 0
    for inputs, targets in batches:
        inputs, targets = inputs.to(device), targets.to(device)
        loss = loss_fn(model(inputs), targets)
        for name, grad in zip(
            params, torch.autograd.grad(loss, list(params.values())), strict=True
        ):
            grads[name] += grad
        seen += 1
    if seen == 0:
        raise ValueError("SNIP needs at least one training batch")
    if all_reduce_sum is not None:
        for grad in grads.values():
            all_reduce_sum(grad)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    model.train(was_training)
    return {name: (grads[name] * p.detach()).abs() for name, p in params.items()}


@torch.no_grad()
def xavier_copy(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """A deep copy of `model` whose nn.Linear and convolution weights are drawn afresh from
    Xavier normal, in the order of `model.modules()`, from `generator`."""
    fresh = copy.deepcopy(model)
    for module in fresh.modules():
        if isinstance(module, nn.Linear | _ConvNd):
            nn.init.xavier_normal_(module.weight, generator=generator)
    return fresh


def xavier_sensitivity(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    generator: torch.Generator,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    train_mode: bool = True,
) -> dict[str, torch.Tensor]:
    """The FlipOut authors' SNIP score: |grad * w'| of a Xavier re-initialised copy of `model`
    (`xavier_copy`), for the NLL loss applied to its raw logits. Weights that `masks` (name ->
    bool, True = live) has pruned are zero in the copy, so that a later prune scores the network
    that is left. The model, its statistics and the global random state are left as they were."""
    fresh = xavier_copy(model, generator)
    weights = {name: fresh.get_parameter(name) for name in params}
    with torch.no_grad():
        for name, w in weights.items():
            w.mul_(masks[name])
    return connection_sensitivity(
        fresh, weights, batches, device, all_reduce_sum, train_mode, loss_fn=F.nll_loss
    )
