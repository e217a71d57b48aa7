"""Compaction: the small dense network that a pruned one really is.

At high sparsity whole output channels (and neurons) lose every incoming weight. Such a channel
no longer depends on the input: it carries a constant (its bias, shifted by BatchNorm, through
the activation), and a channel that no remaining layer reads is just as useless. `compact`
removes both kinds from every layer where it is exact to do so, and folds the constants into the
bias of the layers that read them, so that the outputs do not change. What is left is an
ordinary dense network with fewer channels: it runs faster on any device, with no sparse kernel.

The network is traced with torch.fx, so residual additions and concatenations are read from the
graph rather than assumed per architecture:

- channels that meet in an addition are tied: they stay or go together, and the sum is constant
  only where every operand is;
- a concatenation passes each input's channels through, at their offsets;
- BatchNorm, activations, pooling and flattening keep a channel's identity (flattening maps it to
  its H x W features); a BatchNorm scale of zero makes a channel constant too;
- a channel goes only if every layer that reads it, along every path, reads a constant there or
  has no nonzero weight on it; the network's input and output channels, and anything an
  operation outside this list reads, always stay.

A constant that a padded convolution reads is not uniform at the borders, where the padding
reads zeros instead: there the fold is a bias map for the run's image size rather than a bias
per channel (`CompactReport.fixed_size` says whether this happened). The result is an fx
GraphModule built only of torch.nn modules and torch functions, in eval mode, which
`torch.save` writes and `torch.load(path, weights_only=False)` reads back with no code from
this repository.
"""

import copy
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.conv import _ConvNd

from pruning.prunable import prunable_parameters

# modules and functions that act on each element alone, so that a constant channel stays constant
# and keeps its place, whichever dimension holds the channels
PER_CHANNEL_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Dropout,
    nn.Identity,
)
PER_CHANNEL_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.relu6,
    F.gelu,
    F.silu,
    torch.sigmoid,
    torch.tanh,
    F.dropout,
}
PER_CHANNEL_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}
# pooling over the spatial dimensions of (N, C, H, W): per channel only where C is dim 1, and
# average pools only without padding that averages zeros in (checked where they are met)
POOL_MODULES = (nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
POOL_FUNCTIONS = {F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
ADDITIONS = {operator.add, operator.iadd, torch.add}
# how much the compacted network may differ from the masked one before compaction refuses it
SELF_CHECK_TOLERANCE = 1e-4


class NotCompactable(ValueError):
    """A network compaction cannot read: one line that says why, starting with "compact:"."""


@dataclass
class CompactReport:
    """What compaction did: the sizes before and after, and the prunable layers it left whole."""

    params_before: int = 0
    params_after: int = 0
    channels_before: int = 0  # outputs of all conv and linear layers
    channels_after: int = 0
    fixed_size: bool = False  # a fold became a bias map: exact only at the traced image size
    max_difference: float = 0.0  # |compact - masked| on the check batch, relative to its scale
    # "layer (why)" for each prunable layer of a kind compaction does not cut: it stays at its
    # full size with the masks applied (nn.MultiheadAttention, grouped and depthwise
    # convolutions, convolutions of other dimensions than 2)
    not_compacted: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        # only where there is one: the paper's networks' summaries stay as they were
        left = {"not_compacted": self.not_compacted} if self.not_compacted else {}
        return {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "channels_before": self.channels_before,
            "channels_after": self.channels_after,
            "fixed_image_size": self.fixed_size,
            **left,
        }


class UnionFind:
    """Channel identities; those that meet in an addition become one."""

    def __init__(self):
        self.parent: list[int] = []

    def fresh(self, count: int) -> torch.Tensor:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return torch.arange(start, start + count)

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, first: int, second: int) -> None:
        self.parent[self.find(first)] = self.find(second)

    def roots(self) -> torch.Tensor:
        return torch.tensor([self.find(item) for item in range(len(self.parent))])


def is_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() >= 2


def reads(weight: torch.Tensor) -> torch.Tensor:
    """(out, in) bool: which inputs each output has a nonzero weight on, at any kernel tap."""
    nonzero = weight != 0
    return nonzero.flatten(2).any(-1) if nonzero.dim() > 2 else nonzero


def zero_padded(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and any(p != 0 for p in module.padding)


class Analysis:
    """For every node of the traced network whose value has channels: which identity each
    channel has, and whether it is a constant that does not depend on the input. The channels
    are along one dimension of the value, `axis`: dim 1 of what a convolution makes (N, C, H, W),
    the last one of what a linear layer makes, which may be (N, features), tokens (N, T,
    features) or channels-last pixels (N, H, W, features)."""

    def __init__(self, gm: fx.GraphModule, values: dict[fx.Node, object]):
        self.gm = gm
        self.values = values
        self.modules = dict(gm.named_modules())
        self.sets = UnionFind()
        self.ids: dict[fx.Node, torch.Tensor] = {}
        self.const: dict[fx.Node, torch.Tensor] = {}
        self.axis: dict[fx.Node, int] = {}
        self.pinned: set[int] = set()
        self.layers: list[fx.Node] = []  # the conv and linear nodes, which read and make channels
        # each layer's input channels (identities and constants) along the dimension it reads
        self.inputs: dict[fx.Node, tuple[torch.Tensor, torch.Tensor]] = {}
        for node in gm.graph.nodes:
            self.visit(node)
        self.roots = self.sets.roots()

    def module(self, node: fx.Node) -> nn.Module | None:
        return self.modules[node.target] if node.op == "call_module" else None

    def channel_args(self, node: fx.Node) -> list[fx.Node]:
        args = [*node.args, *node.kwargs.values()]
        flat = []
        for arg in args:
            flat += arg if isinstance(arg, (list, tuple)) else [arg]
        return [a for a in flat if isinstance(a, fx.Node) and a in self.ids]

    def fresh(
        self, node: fx.Node, const: torch.Tensor | None = None, pin: bool = False, axis: int = 1
    ) -> None:
        count = self.values[node].shape[axis]
        self.ids[node] = self.sets.fresh(count)
        self.const[node] = torch.zeros(count, dtype=torch.bool) if const is None else const
        self.axis[node] = axis
        if pin:
            self.pinned.update(self.ids[node].tolist())

    def same(self, node: fx.Node, source: fx.Node, const: torch.Tensor | None = None) -> None:
        self.ids[node] = self.ids[source]
        self.const[node] = self.const[source] if const is None else const
        self.axis[node] = self.axis[source]

    def channels_first(self, node: fx.Node | None) -> bool:
        """Whether `node` has channels along dim 1, as BatchNorm and pooling need them."""
        return node in self.ids and self.axis[node] == 1

    def unknown(self, node: fx.Node) -> None:
        """An operation this analysis does not model: what it reads stays, and what it makes is
        new and stays too."""
        for arg in self.channel_args(node):
            self.pinned.update(self.ids[arg].tolist())
        if is_tensor(self.values.get(node)):
            self.fresh(node, pin=True)

    def visit(self, node: fx.Node) -> None:
        value = self.values.get(node)
        if node.op == "placeholder":
            if is_tensor(value):
                self.fresh(node, pin=True)
            return
        if node.op == "output":
            self.unknown(node)
            return
        if not is_tensor(value):
            self.unknown(node)
            return
        module = self.module(node)
        source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if isinstance(module, (nn.Conv2d, nn.Linear)) and is_tensor(self.values.get(source)):
            self.layer(node, module, source)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and self.channels_first(source):
            scale_zero = (
                module.weight.detach() == 0
                if module.affine
                else torch.zeros_like(self.const[source])
            )
            self.same(node, source, self.const[source] | scale_zero)
        elif self.per_channel(node, module) and source in self.ids:
            self.same(node, source)
        elif self.flattens(node) and source in self.ids:
            self.flatten(node, source)
        elif node.op == "call_function" and node.target in ADDITIONS:
            self.addition(node)
        elif node.op == "call_function" and node.target is torch.cat:
            self.concatenation(node)
        else:
            self.unknown(node)

    def per_channel(self, node: fx.Node, module: nn.Module | None) -> bool:
        if self.pools(node, module):
            return self.channels_first(node.args[0])
        if module is not None:
            return isinstance(module, PER_CHANNEL_MODULES)
        if node.op == "call_function":
            return node.target in PER_CHANNEL_FUNCTIONS
        return node.op == "call_method" and node.target in PER_CHANNEL_METHODS

    def pools(self, node: fx.Node, module: nn.Module | None) -> bool:
        """A pooling over H and W that keeps each channel apart."""
        if module is not None:
            return isinstance(module, POOL_MODULES) or (
                isinstance(module, nn.AvgPool2d) and not any_padding(module.padding)
            )
        if node.op != "call_function":
            return False
        if node.target is F.avg_pool2d:
            padding = node.kwargs.get("padding", node.args[3] if len(node.args) > 3 else 0)
            return not any_padding(padding)
        return node.target in POOL_FUNCTIONS

    def flattens(self, node: fx.Node) -> bool:
        """A flatten of (N, C, H, W) into (N, C*H*W), as a module, function or method."""
        module = self.module(node)
        if isinstance(module, nn.Flatten):
            start, end = module.start_dim, module.end_dim
        elif (node.op == "call_function" and node.target is torch.flatten) or (
            node.op == "call_method" and node.target == "flatten"
        ):
            start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
            end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
        else:
            return False
        source = self.values[node.args[0]]
        return start == 1 and end in (-1, source.dim() - 1) and self.values[node].dim() == 2

    def flatten(self, node: fx.Node, source: fx.Node) -> None:
        """(N, ...) into (N, features): each channel becomes the features at its positions, in
        the order flattening lays them out (C x H x W channel by channel for (N, C, H, W))."""
        shape = self.values[source].shape[1:]
        along = [1] * len(shape)
        along[self.axis[source] - 1] = -1
        self.ids[node] = self.ids[source].view(along).expand(shape).flatten()
        self.const[node] = self.const[source].view(along).expand(shape).flatten()
        self.axis[node] = 1

    def layer(self, node: fx.Node, module: nn.Conv2d | nn.Linear, source: fx.Node) -> None:
        value_in = self.values[source]
        if isinstance(module, nn.Conv2d) and (
            module.groups != 1 or module.padding_mode != "zeros" or value_in.dim() != 4
        ):
            self.unknown(node)
            return
        # a convolution reads dim 1; a linear layer its last one, whatever comes before
        axis_in = 1 if isinstance(module, nn.Conv2d) else value_in.dim() - 1
        ids_in, const_in = self.read(source, axis_in)
        live = reads(module.weight.detach())
        # an output with no nonzero weight is its bias; one that reads only constants is constant
        # too, unless padding mixes zeros in at the borders
        reads_varying = live if zero_padded(module) else live & ~const_in
        const = ~reads_varying.any(1)
        self.fresh(node, const, axis=1 if isinstance(module, nn.Conv2d) else value_in.dim() - 1)
        self.inputs[node] = (ids_in, const_in)
        self.layers.append(node)

    def read(self, source: fx.Node, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The channels a layer reads from `source` along `axis`: those known there, or, where
        `source` has none there (its channels are along another dimension, or it has none),
        new ones that stay, as everything it holds does."""
        if source in self.ids and self.axis[source] == axis:
            return self.ids[source], self.const[source]
        if source in self.ids:
            self.pinned.update(self.ids[source].tolist())
        count = self.values[source].shape[axis]
        ids = self.sets.fresh(count)
        self.pinned.update(ids.tolist())
        return ids, torch.zeros(count, dtype=torch.bool)

    def addition(self, node: fx.Node) -> None:
        operands = [a for a in node.args if isinstance(a, fx.Node)]
        if not operands or any(a not in self.ids for a in operands):
            self.unknown(node)
            return
        shapes = {tuple(self.values[a].shape) for a in operands} | {tuple(self.values[node].shape)}
        axes = {self.axis[a] for a in operands}
        # broadcasting, or channels along different dimensions: they do not meet one to one
        if len(shapes) != 1 or len(axes) != 1:
            self.unknown(node)
            return
        first, *others = operands
        const = self.const[first].clone()
        for other in others:
            for a, b in zip(self.ids[first].tolist(), self.ids[other].tolist(), strict=True):
                self.sets.union(a, b)
            const &= self.const[other]
        self.same(node, first, const)

    def concatenation(self, node: fx.Node) -> None:
        parts = node.args[0]
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if not isinstance(dim, int) or any(p not in self.ids for p in parts):
            self.unknown(node)
            return
        dim %= self.values[node].dim()
        if any(self.axis[p] != dim for p in parts):  # joined along another dimension
            self.unknown(node)
            return
        self.ids[node] = torch.cat([self.ids[p] for p in parts])
        self.const[node] = torch.cat([self.const[p] for p in parts])
        self.axis[node] = dim

    def root_of(self, node: fx.Node) -> torch.Tensor:
        return self.roots[self.ids[node]]

    def input_roots(self, layer: fx.Node) -> torch.Tensor:
        return self.roots[self.inputs[layer][0]]


def any_padding(padding) -> bool:
    return any(p != 0 for p in padding) if isinstance(padding, (tuple, list)) else padding != 0


def removable_groups(analysis: Analysis) -> set[int]:
    """The channel identities that can go: every layer that reads one reads a constant there, or
    has no nonzero weight on it among the outputs that stay. Removing outputs can free further
    inputs, so this repeats until nothing changes."""
    roots = analysis.roots
    candidates = torch.ones(len(roots), dtype=torch.bool)
    candidates[roots[list(analysis.pinned)] if analysis.pinned else []] = False
    candidates &= roots == torch.arange(len(roots))  # one vote per group, at its root
    removed = torch.zeros(len(roots), dtype=torch.bool)
    layers = [(node, analysis.module(node).weight.detach()) for node in analysis.layers]
    while True:
        blocked = torch.zeros(len(roots), dtype=torch.bool)
        for node, weight in layers:
            staying = ~removed[analysis.root_of(node)]
            needed = reads(weight[staying]).any(0) & ~analysis.inputs[node][1]
            blocked[analysis.input_roots(node)[needed]] = True
        now = candidates & ~blocked
        if torch.equal(now, removed):
            return set(torch.nonzero(removed).flatten().tolist())
        removed = now


def constant_of(values: torch.Tensor, channel: int, axis: int) -> float:
    """The value a constant channel holds; it must be the same at every position and input."""
    column = values.select(axis, channel)
    high, low = column.amax().item(), column.amin().item()
    # vectorised and scalar code paths may round the same constant differently in the last bit
    if high - low > 1e-6 * max(abs(high), abs(low), 1e-30):
        raise RuntimeError(f"channel {channel} was taken for a constant but varies")
    return column.flatten()[0].item()


class Rewriter:
    """Cuts the removed channels out of the traced network, layer by layer."""

    def __init__(self, gm: fx.GraphModule, analysis: Analysis, removed: set[int]):
        self.gm = gm
        self.analysis = analysis
        self.values = analysis.values
        gone = torch.zeros(len(analysis.roots), dtype=torch.bool)
        gone[list(removed)] = True
        self.keep = {node: ~gone[analysis.root_of(node)] for node in analysis.ids}
        self.keep_in = {node: ~gone[analysis.input_roots(node)] for node in analysis.layers}
        self.report = CompactReport()
        self.batch_source = next(n for n in gm.graph.nodes if n.op == "placeholder")
        self.buffers = 0
        self.examples: set[fx.Node] = set()  # constant_output's buffers: one example each

    def run(self) -> CompactReport:
        for node in list(self.gm.graph.nodes):
            module = self.analysis.module(node)
            if node in self.analysis.layers:
                self.layer(node, module)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and node in self.keep:
                self.batchnorm(node, module)
            elif node.op == "call_function" and node.target is torch.cat and node in self.keep:
                self.concatenation(node)
        self.gm.graph.eliminate_dead_code()
        self.batch_wide()
        self.gm.recompile()
        self.precompute()
        self.gm.delete_all_unused_submodules()
        self.gm.recompile()
        return self.report

    def precompute(self) -> None:
        """Compute once what depends on constants alone, where it meets the batch."""
        if not self.frontier:
            return
        example = self.values[self.batch_source][:1]
        values = record_values(self.gm, example)
        for node in self.frontier:
            with self.gm.graph.inserting_before(node):
                constant = self.buffer(values[node])
            node.replace_all_uses_with(constant)
        self.gm.graph.eliminate_dead_code()

    def buffer(self, tensor: torch.Tensor) -> fx.Node:
        name = f"folded_{self.buffers}"
        self.buffers += 1
        self.gm.register_buffer(name, tensor)
        return self.gm.graph.get_attr(name)

    def layer(self, node: fx.Node, module: nn.Conv2d | nn.Linear) -> None:
        keep_out, keep_in = self.keep[node], self.keep_in[node]
        if not keep_out.any():
            return  # nothing reads it any more: dead code once its readers are rewritten
        weight = module.weight.detach()[keep_out]
        bias = module.bias.detach()[keep_out] if module.bias is not None else None
        fold = self.fold(node, module, weight, keep_in)
        if not keep_in.any():
            # nothing of the input is left: the output is the fold alone, the same for any input
            self.constant_output(node, keep_out)
            return
        if fold is not None and fold.dim() == 1:
            bias = fold if bias is None else bias + fold
            fold = None
        new = self.smaller(module, weight[:, keep_in], bias)
        self.gm.add_submodule(node.target, new)
        if fold is not None:  # a bias map: the fold through a padded convolution
            graph = self.gm.graph
            with graph.inserting_after(node):
                constant = self.buffer(fold.unsqueeze(0))
            with graph.inserting_after(constant):
                shifted = graph.call_function(operator.add, (node, constant))
            node.replace_all_uses_with(shifted, delete_user_cb=lambda user: user is not shifted)
            self.alias(shifted, node)
            self.report.fixed_size = True

    def alias(self, new: fx.Node, old: fx.Node) -> None:
        """`new` now stands where `old` stood: later layers look up what was known of `old`."""
        analysis = self.analysis
        for table in (self.keep, self.values, analysis.ids, analysis.const, analysis.axis):
            table[new] = table[old]

    def fold(self, node: fx.Node, module, weight, keep_in: torch.Tensor) -> torch.Tensor | None:
        """What the removed constant inputs add to each output that stays: a bias per output, or
        a (out, H, W) map where zero padding makes it vary near the borders; None for nothing."""
        const = self.analysis.inputs[node][1] & ~keep_in
        channels = torch.nonzero(const & reads(weight).any(0))
        if channels.numel() == 0:
            return None
        # an input with a constant is one whose channels the analysis knows along this axis
        source = node.args[0]
        values, axis = self.values[source], self.analysis.axis[source]
        scale = torch.zeros(weight.shape[1], dtype=weight.dtype)
        for channel in channels.flatten().tolist():
            scale[channel] = constant_of(values, channel, axis)
        if not scale.any():  # constants of zero, such as a ReLU of a negative shift
            return None
        if isinstance(module, nn.Linear):
            return weight @ scale
        kernel = (weight * scale.view(1, -1, 1, 1)).sum(1, keepdim=True)  # out x 1 x kh x kw
        if not zero_padded(module):
            return kernel.sum((1, 2, 3))
        ones = torch.ones(1, 1, *values.shape[2:], dtype=weight.dtype)
        shifts = F.conv2d(ones, kernel, None, module.stride, module.padding, module.dilation)[0]
        flat = shifts.flatten(1)
        if torch.equal(flat.amax(1), flat.amin(1)):  # no kernel tap reaches the padding
            return flat[:, 0]
        return shifts

    def smaller(self, module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
        if isinstance(module, nn.Linear):
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        else:
            new = nn.Conv2d(
                weight.shape[1],
                weight.shape[0],
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                bias=bias is not None,
            )
        new.weight = nn.Parameter(weight.clone())
        if bias is not None:
            new.bias = nn.Parameter(bias.clone())
        return new.to(module.weight.device).eval()

    def constant_output(self, node: fx.Node, keep_out: torch.Tensor) -> None:
        """Replace a layer that reads nothing any more by its output, which is the same for any
        input: one example of it, as the traced batch computed it, that broadcasting or
        `batch_wide` widens to the batch."""
        axis = self.analysis.axis[node]
        value = self.values[node][:1].index_select(axis, torch.nonzero(keep_out).flatten())
        if value.dim() > 2:  # a map over positions, or tokens: their number is the traced one
            self.report.fixed_size = True
        with self.gm.graph.inserting_before(node):
            constant = self.buffer(value)
        node.replace_all_uses_with(constant)
        self.alias(constant, node)
        self.examples.add(constant)
        self.gm.graph.erase_node(node)

    def batch_wide(self) -> None:
        """What `constant_output` left, and whatever is computed from it alone, holds one
        example, not a batch. Sums broadcast it; anything else that reads it, a concatenation
        or the output, gets it widened to the batch first, so that the network answers one row
        per image even when nothing of the input reaches the output. Other attributes (the bias
        maps of `layer`) never stand for a batch and are left as they are."""
        graph = self.gm.graph
        single: set[fx.Node] = set()
        self.frontier: set[fx.Node] = set()
        for node in list(graph.nodes):
            inputs = node.all_input_nodes
            held = [a for a in inputs if a in single]
            alone = all(a in single or a.op == "get_attr" for a in inputs)
            if node in self.examples or (held and alone and node.op != "output"):
                single.add(node)
            elif held:
                self.frontier.update(a for a in held if a.op != "get_attr")
                if node.op == "call_function" and node.target in ADDITIONS:
                    continue
                with graph.inserting_before(node):
                    for arg in held:
                        node.replace_input_with(arg, self.widened(arg))

    def widened(self, example: fx.Node) -> fx.Node:
        """`example` plus zeros of the input's batch size, which broadcasts it to the batch
        exactly. Not `example.expand(batch, ...)`: by the time the network is saved `example`
        is a buffer, and torch.load rebuilds a GraphModule by tracing its code again, where a
        buffer's method called with a traced size fails (a TypeError inside torch.fx)."""
        graph = self.gm.graph
        batch = graph.call_method("size", (self.batch_source, 0))
        ones = (1,) * (self.values[example].dim() - 1)
        zeros = graph.call_method("new_zeros", (self.batch_source, (batch, *ones)))
        return graph.call_function(operator.add, (zeros, example))

    def batchnorm(self, node: fx.Node, module: nn.Module) -> None:
        keep = self.keep[node]
        if keep.all() or not keep.any():
            return
        new = copy.deepcopy(module)
        new.num_features = int(keep.sum())
        for name in ("weight", "bias"):
            if getattr(module, name) is not None:
                setattr(new, name, nn.Parameter(getattr(module, name).detach()[keep].clone()))
        for name in ("running_mean", "running_var"):
            if getattr(module, name) is not None:
                setattr(new, name, getattr(module, name)[keep].clone())
        self.gm.add_submodule(node.target, new)

    def concatenation(self, node: fx.Node) -> None:
        """Drop the parts of a concatenation that have no channel left."""
        parts = [p for p in node.args[0] if self.keep[p].any()]
        node.args = (parts, *node.args[1:])


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def channel_count(module: nn.Module) -> int:
    """Outputs of all conv and linear layers: channels and neurons."""
    return sum(
        m.out_features if isinstance(m, nn.Linear) else m.out_channels
        for m in module.modules()
        if isinstance(m, (nn.Linear, _ConvNd))
    )


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of the network's parameters and buffers, as stored."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


@torch.no_grad()
def compact(
    model: nn.Module,
    input_shape: tuple[int, ...],
    masks: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
) -> tuple[fx.GraphModule, CompactReport]:
    """The compacted copy of `model` (left untouched) for inputs of `input_shape` (C, H, W), in
    eval mode, with `masks` (parameter name -> bool, True = live) applied first; and what
    compaction did. Its outputs equal the masked network's up to rounding; this is checked on
    a random batch before it is returned. NotCompactable, one line, for a network torch.fx
    cannot trace or whose output is not one tensor."""
    model = copy.deepcopy(model).cpu().float().eval()
    parameters = dict(model.named_parameters())
    for name, mask in (masks or {}).items():
        parameters[name].mul_(mask.to(parameters[name].device))
    gm = traced(model)
    generator = torch.Generator().manual_seed(seed)
    example = torch.randn(2, *input_shape, generator=generator)
    values = record_values(gm, example)
    (output,) = (node for node in gm.graph.nodes if node.op == "output")
    answer = values[output.args[0]] if isinstance(output.args[0], fx.Node) else output.args[0]
    if not isinstance(answer, torch.Tensor):
        raise NotCompactable(
            f"compact: {type(model).__name__} answers a {type(answer).__name__}, not one tensor; "
            "compaction checks its work on one output tensor"
        )
    analysis = Analysis(gm, values)
    removed = removable_groups(analysis)
    leaves = {node.target for node in gm.graph.nodes if node.op == "call_module"}
    cut = {node.target for node in analysis.layers}
    # the weight matrices pruned: biases, BatchNorm scales and what prune_include adds are cut
    # with their layers or are no layer's
    names = [n for n in prunable_parameters(model) if masks is None or n in masks]
    whole = whole_layers(model, names, leaves, cut)
    report = Rewriter(gm, analysis, removed).run()
    report.not_compacted = whole
    report.params_before = parameter_count(model)
    report.params_after = parameter_count(gm)
    report.channels_before, report.channels_after = channel_count(model), channel_count(gm)
    # several images: an output that broadcasts one row would pass a comparison of values alone
    check = torch.randn(4, *input_shape, generator=generator)
    expected, got = model(check), gm(check)
    if got.shape != expected.shape:
        raise RuntimeError(
            f"compaction changed the output's shape from {tuple(expected.shape)} to "
            f"{tuple(got.shape)}; this is a bug, please report it with the network"
        )
    report.max_difference = float(
        (got - expected).abs().max() / expected.abs().max().clamp_min(1e-30)
    )
    if report.max_difference > SELF_CHECK_TOLERANCE:
        raise RuntimeError(
            f"compaction changed the outputs by {report.max_difference:.2e} relative; this is a "
            "bug, please report it with the network"
        )
    return gm.eval(), report


def traced(model: nn.Module) -> fx.GraphModule:
    """`model` as torch.fx reads it, or NotCompactable saying why it cannot."""
    try:
        return fx.symbolic_trace(model)
    except Exception as error:  # control flow on tensors, unsupported calls: any of them
        why = " ".join(str(error).split()) or type(error).__name__
        raise NotCompactable(
            f"compact: torch.fx cannot trace {type(model).__name__} ({why[:200]}); --to dense, "
            "torch_prune or sparse export it without compaction"
        ) from error


def uncut(module: nn.Module) -> str:
    """What kind of layer compaction leaves whole, in a few words."""
    kind = type(module).__name__
    kind = f"nn.{kind}" if type(module).__module__.startswith("torch.nn") else kind
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        if module.groups == module.in_channels:
            return f"depthwise {kind}"
        return f"{kind} with groups={module.groups}"
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        return f"{kind} with padding_mode={module.padding_mode!r}"
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return f"{kind} whose input has no channels to follow"
    return kind


def whole_layers(model: nn.Module, names, leaves: set[str], cut: set[str]) -> list[str]:
    """Each layer holding one of the tensors `names` that compaction leaves at its full size,
    as "layer (why)": a layer of the traced graph (`leaves`) it does not cut, or a layer torch.fx
    traced into functions. The layers it cuts are `cut`."""
    modules = dict(model.named_modules())
    whole: dict[str, str] = {}
    for name in names:
        path = name.rpartition(".")[0]
        parts = path.split(".") if path else []
        prefixes = [".".join(parts[:end]) for end in range(1, len(parts) + 1)]
        holder = next((prefix for prefix in prefixes if prefix in leaves), None)
        if holder is None:  # torch.fx went into it: its weights are read by functions
            whole[path] = f"{uncut(modules[path])}, traced into functions"
        elif holder not in cut:
            whole[holder] = uncut(modules[holder])
    return [f"{path or 'the network'} ({why})" for path, why in whole.items()]


def record_values(gm: fx.GraphModule, example: torch.Tensor) -> dict[fx.Node, object]:
    """Every node's value on `example`."""
    values: dict[fx.Node, object] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            # a copy: an in-place activation later on would overwrite what this node made
            values[node] = result.clone() if isinstance(result, torch.Tensor) else result
            return result

    Recorder(gm).run(example)
    return values


def compact_summary(
    model: nn.Module, input_shape: tuple[int, ...], masks: dict[str, torch.Tensor]
) -> dict:
    """A run's "compact" entry: the compacted network's parameters, bytes and channels (and the
    prunable layers left whole as "not_compacted", where there are any), or {"refused": why}
    where it cannot be made (a network torch.fx cannot trace); the run's results stand either
    way."""
    try:
        gm, report = compact(model, input_shape, masks)
    except NotCompactable as error:
        return {"refused": str(error)}
    except Exception as error:  # a bug of compaction must not cost the run its summary
        return {"refused": f"compact: {type(error).__name__}: {' '.join(str(error).split())}"}
    return {**report.as_dict(), "bytes": tensor_bytes(gm)}
