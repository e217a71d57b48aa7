"""Sparse execution on the CPU: conv and linear layers that multiply only their live weights.

After compaction (export/compact.py) the channels that are left are still sparse inside. Here
each remaining layer's weight becomes a compressed sparse row (CSR) matrix, one row per output,
and the layer a sparse-times-dense product: a linear layer multiplies its input directly, every
row of it (the tokens of a transformer, the pixels of a channels-last block); a convolution
(nn.Conv2d, groups 1) first unfolds its input into columns (im2col), so that the convolution is
the same product. Sparse kernels beat dense ones only when the weight is sparse enough and the
product large enough, so `sparsify` times both versions of each layer on that layer's real
input, at the batch size asked for, and keeps whichever is faster. Every other layer stays dense:
grouped and depthwise convolutions, convolutions of other dimensions, nn.MultiheadAttention and
the layers inside it, which it reads the weights of itself.

Only the two module classes here are needed to load such a network back; `torch.load(path,
weights_only=False)` finds them when this repository is on the Python path.
"""

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

# a sparse layer must be this much faster than the dense one to replace it: closer calls are
# within the timing noise, and the dense layer is the simpler one
MARGIN = 0.9


@contextmanager
def quiet_csr():
    """Torch warns that sparse CSR tensors are in beta; that warning tells a user of these
    layers (or of python -m export's CSR files) nothing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


def csr(weight: torch.Tensor) -> torch.Tensor:
    """The weight as an (out, rest) CSR matrix of its nonzero entries."""
    with quiet_csr():
        return weight.detach().reshape(weight.shape[0], -1).to_sparse_csr()


class SparseLinear(nn.Module):
    """nn.Linear with a CSR weight: y = x W^T + b as (W x^T)^T, for inputs (..., in)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", csr(linear.weight))
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # (batch, tokens, in) -> (batch * tokens, in)
        out = torch.sparse.mm(self.weight, rows.t()).t()
        out = out if self.bias is None else out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, live={self.weight.values().numel()}"


class SparseConv2d(nn.Module):
    """nn.Conv2d (groups 1, zero padding) with a CSR weight of shape (out, in * kh * kw),
    applied to the unfolded input."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        # a 1x1 convolution without stride or padding reads its input as it is: no unfolding
        self.pointwise = (
            self.kernel_size == (1, 1) and self.stride == (1, 1) and not any(self.padding)
        )
        self.register_buffer("weight", csr(conv.weight))
        bias = None if conv.bias is None else conv.bias.detach().clone()
        self.register_buffer("bias", bias)

    def output_size(self, side: int, dim: int) -> int:
        span = self.dilation[dim] * (self.kernel_size[dim] - 1) + 1
        return (side + 2 * self.padding[dim] - span) // self.stride[dim] + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        height, width = self.output_size(x.shape[2], 0), self.output_size(x.shape[3], 1)
        if self.pointwise:
            columns = x.flatten(2)
        else:
            columns = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        # (batch, in*k*k, positions) -> (in*k*k, batch*positions): one product for the batch
        columns = columns.transpose(0, 1).reshape(columns.shape[1], -1)
        out = torch.sparse.mm(self.weight, columns)
        # back to (batch, out, positions) in memory too: the next layer's dense kernels would
        # otherwise read a transposed layout, slowly
        out = out.view(self.out_channels, batch, -1).transpose(0, 1).contiguous()
        if self.bias is not None:
            out += self.bias.view(1, -1, 1)
        return out.view(batch, self.out_channels, height, width)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, live={self.weight.values().numel()}"
        )


SPARSE = {nn.Linear: SparseLinear, nn.Conv2d: SparseConv2d}


@dataclass
class LayerChoice:
    name: str
    live: int
    total: int
    dense_ms: float
    sparse_ms: float

    @property
    def sparse(self) -> bool:
        return self.sparse_ms < MARGIN * self.dense_ms


def seconds_per_call(module: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of `module(x)` over `repeats` calls, after one to warm up."""
    module(x)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        module(x)
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def layer_inputs(gm: fx.GraphModule, example: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each conv and linear layer's input on `example`, by module name: those the graph calls
    itself, not the ones inside a layer that reads their weights directly (nn.MultiheadAttention's
    out_proj, say), which a sparse module in their place would break."""
    inputs: dict[str, torch.Tensor] = {}
    hooks = []
    called = {node.target for node in gm.graph.nodes if node.op == "call_module"}
    for name, module in gm.named_modules():
        if type(module) in SPARSE and name in called:

            def keep(module, args, name=name):
                inputs[name] = args[0].detach()

            hooks.append(module.register_forward_pre_hook(keep))
    try:
        gm(example)
    finally:
        for hook in hooks:
            hook.remove()
    return inputs


def supported(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.padding_mode == "zeros"
    return isinstance(module, nn.Linear)


@torch.no_grad()
def sparsify(
    gm: fx.GraphModule, example: torch.Tensor, repeats: int = 7, always: bool = False
) -> tuple[fx.GraphModule, list[LayerChoice]]:
    """`gm` (a compacted network, changed in place) with each conv and linear layer replaced by
    its sparse version where that runs faster on its input from `example`, whose batch size is
    the one to decide for (or everywhere, `always`); and what was measured per layer."""
    gm.eval()
    choices = []
    for name, x in layer_inputs(gm, example).items():
        dense = gm.get_submodule(name)
        if not supported(dense):
            continue
        sparse = SPARSE[type(dense)](dense).eval()
        choice = LayerChoice(
            name=name,
            live=int(sparse.weight.values().numel()),
            total=dense.weight.numel(),
            dense_ms=seconds_per_call(dense, x, repeats) * 1e3,
            sparse_ms=seconds_per_call(sparse, x, repeats) * 1e3,
        )
        if choice.sparse or always:
            gm.add_submodule(name, sparse)
        choices.append(choice)
    return gm, choices


def choice_table(choices: list[LayerChoice]) -> str:
    """Per layer: density, dense and sparse time, and which one runs."""
    # here, not at the top: loading a sparse_runtime export imports this module, and needs no
    # more than torch for it
    from pruning.mask import percent

    width = max([len("layer"), *(len(c.name) for c in choices)])
    lines = [f"{'layer':<{width}}  {'live':>7}  {'dense ms':>8}  {'sparse ms':>9}  runs"]
    for c in choices:
        density = percent(c.live / c.total, 1) if c.total else "-"
        lines.append(
            f"{c.name:<{width}}  {density:>7}  {c.dense_ms:>8.3f}  {c.sparse_ms:>9.3f}  "
            f"{'sparse' if c.sparse else 'dense'}"
        )
    return "\n".join(lines)
