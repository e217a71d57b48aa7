"""BatchNorm folded into the convolution before it, in a network that only infers.

In eval mode a BatchNorm is an affine map per channel, y = s x + t with s = gamma / sqrt(var + eps)
and t = beta - s mean. After a convolution it can be absorbed: scaling each output channel's
weights by s and its bias by s, then adding t to the bias, gives the same outputs with one layer
fewer (the network's shape of computation on the CPU is many small layers, where each layer's call
costs as much as its arithmetic). Scaling keeps a pruned weight at zero, so the sparsity is kept.

Compaction (export/compact.py) may have put the constant of a removed channel between the two,
as `conv(x) + folded`; the BatchNorm then folds through it: s (conv(x) + F) + t = (s conv)(x) + s F
+ t. Anything else between them (an activation, a second reader of the convolution's output)
stops the fold, and that BatchNorm stays as it is.
"""

import operator

import torch
from torch import fx, nn

from export.sparse_runtime import module_calls

ADDITIONS = {operator.add, torch.add}


def scale_and_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The BatchNorm's eval-mode map per channel: y = scale * x + shift."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale = scale * bn.weight
        shift = bn.weight * shift + bn.bias
    return scale.detach(), shift.detach()


def sole_user(node: fx.Node) -> bool:
    return len(node.users) == 1


def foldable(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node, fx.Node | None] | None:
    """For a BatchNorm node: the convolution node it folds into and the constant addition
    between them (or None), where the fold is exact; None where it is not."""
    if node.op != "call_module" or type(gm.get_submodule(node.target)) is not nn.BatchNorm2d:
        return None
    bn = gm.get_submodule(node.target)
    if bn.training or bn.running_mean is None or len(node.args) != 1 or node.kwargs:
        return None
    source, addition = node.args[0], None
    if not isinstance(source, fx.Node) or not sole_user(source):
        return None
    if source.op == "call_function" and source.target in ADDITIONS and not source.kwargs:
        conv, constant = source.args
        if not (isinstance(constant, fx.Node) and constant.op == "get_attr"):
            return None
        value = getattr(gm, constant.target)
        # the constant must hold one value per channel (or a map of them) to be scaled per channel
        if not sole_user(constant) or value.dim() < 3 or value.shape[-3] != bn.num_features:
            return None
        source, addition = conv, source
        if not isinstance(source, fx.Node) or not sole_user(source):
            return None
    if source.op != "call_module" or type(gm.get_submodule(source.target)) is not nn.Conv2d:
        return None
    return source, addition


@torch.no_grad()
def fold_batchnorm(gm: fx.GraphModule) -> int:
    """Every BatchNorm of `gm` (an fx GraphModule in eval mode, changed in place) that follows a
    convolution, folded into it; how many were."""
    folded = 0
    calls = module_calls(gm)
    for node in list(gm.graph.nodes):
        found = foldable(gm, node)
        if found is None:
            continue
        conv_node, addition = found
        if calls[conv_node.target] != 1 or calls[node.target] != 1:
            continue  # a layer called twice: scaling it for one call would change the other
        conv = gm.get_submodule(conv_node.target)
        scale, shift = scale_and_shift(gm.get_submodule(node.target))
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.bias = nn.Parameter(bias, requires_grad=False)
        if addition is not None:
            constant = addition.args[1].target
            setattr(gm, constant, getattr(gm, constant) * scale.view(-1, 1, 1))
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
        gm.delete_submodule(node.target)
        folded += 1
    if folded:
        gm.graph.lint()
        gm.recompile()
    return folded
