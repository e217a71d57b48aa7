"""Multiply-accumulates (MACs) of a network's convolutions and linear layers, dense and with only
the live weights of its masks: the compute saving pruning buys in theory.

Each weight of a conv is used once per output position, each weight of a linear layer once per
input row, so a layer's MACs are (weights) x (output positions); with masks, only live weights
count. Biases, normalisation and activations are left out, as is usual for pruning papers.
"""

import torch
from torch import nn

LAYERS = (nn.Conv2d, nn.Linear)


def uses_per_weight(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Parameter name of each conv / linear weight -> how often one forward pass of one input of
    `input_shape` (C, H, W) uses each of its weights."""
    uses: dict[str, int] = {}
    names = {module: name for name, module in model.named_modules()}

    def record(module, inputs, output):
        # (batch 1) conv output: (1, C_out, H, W) -> H*W uses; linear: (1, ..., out) -> rows
        positions = (
            output[0, 0].numel() if isinstance(module, nn.Conv2d) else output[0, ..., 0].numel()
        )
        prefix = names[module]
        uses[f"{prefix}.weight" if prefix else "weight"] = positions

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, LAYERS)]
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, dtype=parameter.dtype, device=parameter.device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return uses


def layer_flops(
    model: nn.Module, input_shape: tuple[int, ...], masks: dict[str, torch.Tensor] | None = None
) -> dict[str, tuple[int, int]]:
    """Weight name -> (dense MACs, remaining MACs) for every conv and linear weight."""
    parameters = dict(model.named_parameters())
    result = {}
    for name, uses in uses_per_weight(model, input_shape).items():
        total = parameters[name].numel()
        live = int(masks[name].sum()) if masks is not None and name in masks else total
        result[name] = (total * uses, live * uses)
    return result


def flops_summary(
    model: nn.Module, input_shape: tuple[int, ...], masks: dict[str, torch.Tensor] | None = None
) -> dict:
    """`flops_dense`, `flops_remaining` and `theoretical_speedup` (their ratio) for a run."""
    per_layer = layer_flops(model, input_shape, masks)
    dense = sum(d for d, _ in per_layer.values())
    remaining = sum(r for _, r in per_layer.values())
    return {
        "flops_dense": dense,
        "flops_remaining": remaining,
        "theoretical_speedup": dense / remaining if remaining else float("inf"),
    }
