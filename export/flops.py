"""Multiply-accumulates (MACs) of a network's prunable weight matrices, dense and with only the
live weights of its masks: the compute saving pruning buys in theory.

A weight is used once for every position its layer slides over, so a layer's MACs are the sum
over its weights of their uses, and with masks only live weights count:

- a linear layer uses each weight once per row of its input: once per input for (batch, in),
  once per token for (batch, tokens, in), once per pixel for channels-last (batch, H, W, in);
- a convolution of any dimension uses each weight once per output position, grouped and
  depthwise ones included: output elements x (in_channels / groups) x kernel size in all; a
  transposed convolution once per input position;
- nn.MultiheadAttention's packed input projection (`in_proj_weight`, 3E x E) uses its query rows
  once per query token and its key and value rows once per key and value token (tokens x 3E x E
  in self-attention); separate `q_proj_weight`, `k_proj_weight` and `v_proj_weight` likewise. Its
  `out_proj` is an nn.Linear, counted once per query token.

Biases, normalisation, activations and attention's own products (queries with keys, weights
with values) are left out, as is usual for pruning papers. Results are keyed by the prunable
parameter's name, as `pruning.prunable_parameters` and the masks name it; a tensor of a layer
counted here that is shared by several layers is counted once per use. Tensors of layers not
listed above (a layer of one's own that declares `prunable_weights`, or an embedding added by
`prune_include`) are left out, not guessed at.

`TrainingFlops` counts from these what training costs, as the RigL papers count it: each
example's forward and backward passes through the masks in force at its step, and the dense
gradient of a mask update that grows by it; main.py records it per epoch and in all.
"""

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from pruning import prunable_parameters

# uses of each weight of a tensor: one count for all of them, or a tensor that broadcasts to the
# weight's shape where its parts are used unequally often (attention's projections)
Uses = int | torch.Tensor


def rows(tensor: object, width: int) -> int | None:
    """How many vectors of `width` `tensor` holds, whatever its layout (batch first or not);
    None for something that is not a tensor."""
    if not isinstance(tensor, torch.Tensor) or not width:
        return None
    return tensor.numel() // width


def argument(args: tuple, kwargs: dict, index: int, name: str) -> object:
    """A forward call's argument, given by position or by keyword."""
    return args[index] if len(args) > index else kwargs.get(name)


def linear_uses(module: nn.Linear, args, kwargs, output) -> dict[str, Uses | None]:
    return {"weight": rows(output, module.out_features)}


def conv_uses(module: _ConvNd, args, kwargs, output) -> dict[str, Uses | None]:
    # (batch 1) positions per channel: of the output for a convolution, of the input for a
    # transposed one, whose weight is (in, out / groups, *kernel)
    if isinstance(module, _ConvTransposeNd):
        return {"weight": rows(argument(args, kwargs, 0, "input"), module.in_channels)}
    return {"weight": rows(output, module.out_channels)}


def attention_uses(module: nn.MultiheadAttention, args, kwargs, output) -> dict[str, Uses | None]:
    queries = rows(argument(args, kwargs, 0, "query"), module.embed_dim)
    keys = rows(argument(args, kwargs, 1, "key"), module.kdim)
    values = rows(argument(args, kwargs, 2, "value"), module.vdim)
    # multiplied by the attention itself, never by calling out_proj: counted here
    uses: dict[str, Uses | None] = {"out_proj.weight": queries}
    if module.in_proj_weight is None:
        return uses | {"q_proj_weight": queries, "k_proj_weight": keys, "v_proj_weight": values}
    if None in (queries, keys, values):
        return uses
    per_row = torch.tensor([queries, keys, values]).repeat_interleave(module.embed_dim)
    return uses | {"in_proj_weight": per_row.view(-1, 1)}


# the layers counted, each with its tensors' uses per weight from one forward call (None where
# the call does not say)
COUNTERS = {
    nn.MultiheadAttention: attention_uses,
    nn.Linear: linear_uses,
    _ConvNd: conv_uses,
}


def counter_of(module: nn.Module):
    for cls in type(module).__mro__:
        if cls in COUNTERS:
            return COUNTERS[cls]
    return None


def uses_per_weight(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Uses]:
    """Prunable parameter name -> how often one forward pass of one input of `input_shape`
    (C, H, W) uses each of its weights: a count, or a tensor that broadcasts to the weight."""
    named = {id(p): name for name, p in prunable_parameters(model).items()}
    counters = {module: counter_of(module) for module in model.modules()}
    uses: dict[str, Uses] = {}

    def record(module, args, kwargs, output):
        for attribute, count in counters[module](module, args, kwargs, output).items():
            path, _, leaf = attribute.rpartition(".")
            name = named.get(id(getattr(module.get_submodule(path), leaf, None)))
            if name is not None and count is not None:  # called twice: its weights used twice
                uses[name] = uses[name] + count if name in uses else count

    hooks = [
        module.register_forward_hook(record, with_kwargs=True)
        for module, counter in counters.items()
        if counter is not None
    ]
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
    return {name: uses[name] for name in named.values() if name in uses}  # in the masks' order


def layer_flops(
    model: nn.Module, input_shape: tuple[int, ...], masks: dict[str, torch.Tensor] | None = None
) -> dict[str, tuple[int, int]]:
    """Prunable parameter name -> (dense MACs, remaining MACs) for every tensor counted here."""
    return counted_macs(uses_per_weight(model, input_shape), dict(model.named_parameters()), masks)


def counted_macs(
    weight_uses: dict[str, Uses],
    parameters: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor] | None = None,
) -> dict[str, tuple[int, int]]:
    """(dense MACs, remaining MACs) by tensor, from the uses `uses_per_weight` measured: the
    count of `layer_flops` without a forward pass."""
    result = {}
    for name, uses in weight_uses.items():
        weight = parameters[name]
        if isinstance(uses, int):
            total = weight.numel()
            live = int(masks[name].sum()) if masks is not None and name in masks else total
            result[name] = (total * uses, live * uses)
            continue
        live = masks[name] if masks is not None and name in masks else torch.ones_like(weight)
        dense = uses.to(torch.int64).expand(weight.shape)
        result[name] = (int(dense.sum()), int((dense * live.to(dense.device)).sum()))
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
        # a network with nothing counted here has no saving to show, not an infinite one
        "theoretical_speedup": dense / remaining if remaining else float("inf") if dense else 1.0,
    }


class TrainingFlops:
    """The FLOPs of training a network's prunable weight matrices (the tensors counted above), as
    the RigL papers count them (Evci et al., "Rigging the Lottery", 2020, and its appendix on
    FLOPs): an example costs a forward pass f and a backward pass 2f (the gradients of the
    activations and of the weights), f the live MACs of the masks in force at its step; a step
    that reads the dense gradient to grow weights by it (RigL's and GraNet's mask updates)
    computes the weights' gradient densely: f_D - f more per example. Two FLOPs per MAC. The
    uses per weight are measured once, by one forward pass; an epoch then costs none."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]):
        self.parameters = dict(model.named_parameters())
        self.weight_uses = uses_per_weight(model, input_shape)
        per_tensor = counted_macs(self.weight_uses, self.parameters)
        self.dense_macs = sum(dense for dense, _ in per_tensor.values())
        # the MACs a live weight adds: its tensor's mean, exact where all its weights are used
        # alike (all but a packed attention projection whose keys and queries differ in length),
        # and an integer where it is one, so that the counts stay exact however large
        self.macs_per_weight: dict[str, int | float] = {}
        for name, (dense, _) in per_tensor.items():
            size = self.parameters[name].numel()
            self.macs_per_weight[name] = dense // size if dense % size == 0 else dense / size

    def layer_macs(self, masks: dict[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
        """What `layer_flops` counts with `masks` in force, without its forward pass."""
        return counted_macs(self.weight_uses, self.parameters, masks)

    def live_macs(self, masks: dict[str, torch.Tensor]) -> int:
        """The MACs of one input's forward pass with `masks` in force."""
        return sum(live for _, live in self.layer_macs(masks).values())

    def change(self, layers: dict[str, list[int]]) -> int | float:
        """How much a mask update that dropped and grew these weights (name -> [dropped, grown],
        as its PruneEvent records them) changed the live MACs."""
        return sum(
            (grown - dropped) * self.macs_per_weight.get(name, 0)
            for name, (dropped, grown) in layers.items()
        )

    def epoch(
        self,
        start_macs: int,
        examples: int,
        batch_size: int,
        updates: list[tuple[int, dict[str, list[int]]]],
        dense_gradient: bool,
    ) -> int:
        """The FLOPs of an epoch that trained `examples` in steps of `batch_size` (its last
        smaller), from masks of `start_macs` live MACs. `updates`: each mask update of the
        epoch, the step it followed (counted from 1 in the epoch: that step trained with the
        masks before it) and its weights dropped and grown by tensor; `dense_gradient`: whether
        their steps computed the dense gradient."""
        macs, done, total = start_macs, 0, 0
        for step, layers in updates:
            through = min(step * batch_size, examples)
            total += 3 * macs * (through - done)
            if dense_gradient:
                batch = through - min((step - 1) * batch_size, examples)
                total += (self.dense_macs - macs) * batch
            macs, done = macs + self.change(layers), through
        total += 3 * macs * (examples - done)
        return round(2 * total)

    def dense(self, examples: int) -> int:
        """The FLOPs of training `examples` with every weight live."""
        return 6 * self.dense_macs * examples
