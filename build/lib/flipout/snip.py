"""SNIP's connection sensitivity (Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based
on Connection Sensitivity", ICLR 2019).

The sensitivity of weight w is |dL/dw * w| for the cross-entropy loss L, with gradients summed over
a few training batches. It is computed on the model as initialised, the very weights that then
train; the original FlipOut code instead scored a re-initialised copy with an NLL loss applied to
raw logits.

BatchNorm while scoring: the FlipOut code scored its copy in train mode, normalising with each
batch's statistics, and so does `train_mode=True`, the default. SNIP's authors (snip-public, in
TensorFlow) score with `is_train` False, BatchNorm normalising with its running statistics:
`train_mode=False`. Either way the model's own statistics are left as they were.
"""

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn


def connection_sensitivity(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    train_mode: bool = True,
) -> dict[str, torch.Tensor]:
    """|grad * w| per prunable tensor, with the model in train mode (BatchNorm on batch
    statistics) or, with `train_mode=False`, in eval mode (on its running statistics). The
    model's weights, BatchNorm statistics, `.grad` fields and train/eval mode are left exactly as
    they were. Under torchrun, `all_reduce_sum` adds up the gradients of all ranks' batches, so
    that every rank scores (and masks) alike."""
    # a train-mode forward updates the running statistics; the copies put them back afterwards
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train(train_mode)
    grads = {name: torch.zeros_like(p) for name, p in params.items()}
    seen = 0
    for inputs, targets in batches:
        inputs, targets = inputs.to(device), targets.to(device)
        loss = F.cross_entropy(model(inputs), targets)
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
