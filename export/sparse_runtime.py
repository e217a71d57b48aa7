"""Sparse execution on the CPU: conv and linear layers that multiply only their live weights.

After compaction (export/compact.py) the channels that are left are still sparse inside. Each
remaining conv and linear layer gets the fastest of several kernels, timed on that layer's real
input at the batch size asked for (`sparsify`); the dense layer stays unless one beats it:

- csr: the weight as a compressed sparse row (CSR) matrix, one row per output, and the layer a
  sparse-times-dense product: a linear layer multiplies its input directly, every row of it (the
  tokens of a transformer, the pixels of a channels-last block); a convolution (nn.Conv2d,
  groups 1) first unfolds its input into columns (im2col), so that the convolution is the same
  product. The unfolding costs as much as a dense convolution at 10% density, so this kernel
  wins for linear layers and for convolutions sparser than that.
- direct, for convolutions: export/direct_conv.cpp (compiled on first use, export/native.py),
  each output value summed over its channel's live weights straight from the padded input, no
  unfolding: about a live weight's worth of arithmetic per live weight, from 12% density (where
  it runs 3-4x faster than oneDNN's dense convolution) to a few weights a layer. It takes in
  what follows it (a constant map, a ResNet block's shortcut, the ReLU, a 2x2 max pool), so
  those cost no pass of their own.
- unrolled, for convolutions deep in a network, where the images are small (8x8, 4x4 and 2x2 in
  a VGG on 32x32 inputs) and each layer keeps a few hundred live weights, so that the calls
  around the arithmetic cost more than it does: the layer as the linear map it is from one
  flattened image to the next, one CSR matrix with a row per output value and a nonzero per
  live weight and output position it reaches, applied in a single product. That fixes the layer
  to its input's height and width, so an export with such a layer is exact at its run's image
  size only, and says so.

Every other layer stays dense: grouped and depthwise convolutions, convolutions of other
dimensions, nn.MultiheadAttention and the layers inside it, which it reads the weights of itself.

Only the module classes here are needed to load such a network back (export/safe_load.py reads
it without running the file's code).
"""

import operator
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from export import native

# a sparse layer must be this much faster than the dense one to replace it: closer calls are
# within the timing noise, and the dense layer is the simpler one
MARGIN = 0.9
# an unrolled convolution holds a nonzero per live weight and output position: beyond this many
# (16M: 128 MiB with their indices) the image is too large for it to pay
UNROLLED_LIMIT = 1 << 24
ADDITIONS = {operator.add, operator.iadd, torch.add}


@contextmanager
def quiet_csr():
    """Torch warns that sparse CSR tensors are in beta; that warning tells a user of these
    layers (or of python -m export's CSR files) nothing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


def compressed(matrix: torch.Tensor) -> torch.Tensor:
    """A 2-d tensor (dense or sparse COO) as CSR, with 32-bit indices where they fit: the
    product would otherwise convert 64-bit ones to 32 bits on every call."""
    with quiet_csr():
        matrix = matrix.to_sparse_csr()
        if max(matrix.shape) < 2**31 and matrix.values().numel() < 2**31:
            matrix = torch.sparse_csr_tensor(
                matrix.crow_indices().int(), matrix.col_indices().int(), matrix.values(),
                matrix.shape, check_invariants=False,  # to_sparse_csr made them valid
            )  # fmt: skip
        return matrix


def csr(weight: torch.Tensor) -> torch.Tensor:
    """The weight as an (out, rest) CSR matrix of its nonzero entries."""
    return compressed(weight.detach().reshape(weight.shape[0], -1))


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
        if rows.shape[0] == 1:  # a matrix-vector product: faster than a product with one column
            out = torch.mv(self.weight, rows[0])
        else:
            out = torch.sparse.mm(self.weight, rows.t()).t()
        out = out if self.bias is None else out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, live={self.weight.values().numel()}"


def output_side(conv: nn.Module, side: int, dim: int) -> int:
    """The output's size along spatial dimension `dim` of a convolution whose input is `side`."""
    span = conv.dilation[dim] * (conv.kernel_size[dim] - 1) + 1
    return (side + 2 * conv.padding[dim] - span) // conv.stride[dim] + 1


def columns(conv: nn.Module, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The input unfolded for a product with the weight, (in * kh * kw, batch * height * width)
    for an output of that size: F.unfold's columns with the batch moved inside, made as one copy
    of a strided view of the padded input, several times faster than F.unfold's im2col on the
    CPU (0.12 against 0.82 ms for 125 channels of 16x16, 3x3)."""
    pad_h, pad_w = conv.padding
    if pad_h or pad_w:
        x = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    batch, channels = x.shape[:2]
    at = x.stride()
    view = x.as_strided(
        (channels, kh, kw, batch, height, width),
        (at[1], at[2] * dh, at[3] * dw, at[0], at[2] * sh, at[3] * sw),
    )
    return view.reshape(channels * kh * kw, batch * height * width)


def take_geometry(layer: nn.Module, conv: nn.Conv2d) -> None:
    """`conv`'s channels, kernel size, stride, padding and dilation, as attributes of `layer`."""
    layer.in_channels, layer.out_channels = conv.in_channels, conv.out_channels
    layer.kernel_size, layer.stride = conv.kernel_size, conv.stride
    layer.padding, layer.dilation = conv.padding, conv.dilation


class SparseConv2d(nn.Module):
    """nn.Conv2d (groups 1, zero padding) with a CSR weight of shape (out, in * kh * kw),
    applied to the unfolded input."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        take_geometry(self, conv)
        self.register_buffer("weight", csr(conv.weight))
        bias = None if conv.bias is None else conv.bias.detach().clone()
        self.register_buffer("bias", bias)
        self.relu = False

    def output_size(self, side: int, dim: int) -> int:
        return output_side(self, side, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        height, width = self.output_size(x.shape[2], 0), self.output_size(x.shape[3], 1)
        unfolded = columns(self, x, height, width)
        if self.bias is None:
            out = torch.sparse.mm(self.weight, unfolded)
        else:
            out = torch.addmm(self.bias.view(-1, 1), self.weight, unfolded)
        if getattr(self, "relu", False):  # exports written before it had no ReLU to take in
            out = out.relu_()
        # back to (batch, out, positions) in memory too (a view at batch 1): the next layer's
        # dense kernels would otherwise read a transposed layout, slowly
        out = out.view(self.out_channels, batch, -1).transpose(0, 1).contiguous()
        return out.view(batch, self.out_channels, height, width)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, live={self.weight.values().numel()}"
        )


def unrolled_entries(conv: nn.Conv2d, height: int, width: int) -> tuple:
    """The nonzeros of `conv` unrolled for (in, height, width) inputs: their rows (out channel,
    output position), columns (in channel, input position) and values, those that read the
    padding left out; and the output's (height, width)."""
    weight = conv.weight.detach()
    out_h, out_w = output_side(conv, height, 0), output_side(conv, width, 1)
    o, c, i, j = weight.nonzero(as_tuple=True)
    oy, ox = torch.meshgrid(torch.arange(out_h), torch.arange(out_w), indexing="ij")
    oy, ox = oy.reshape(1, -1), ox.reshape(1, -1)
    # one row per live weight, one column per output position
    iy = oy * conv.stride[0] - conv.padding[0] + (i * conv.dilation[0]).view(-1, 1)
    ix = ox * conv.stride[1] - conv.padding[1] + (j * conv.dilation[1]).view(-1, 1)
    inside = (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)
    rows = o.view(-1, 1) * (out_h * out_w) + oy * out_w + ox
    columns = c.view(-1, 1) * (height * width) + iy * width + ix
    values = weight[o, c, i, j].view(-1, 1).expand_as(inside)
    return rows[inside], columns[inside], values[inside], (out_h, out_w)


def unrolled_size(conv: nn.Conv2d, height: int, width: int) -> int:
    """At most how many nonzeros the unrolled matrix holds."""
    positions = output_side(conv, height, 0) * output_side(conv, width, 1)
    return int(conv.weight.count_nonzero()) * positions


class UnrolledConv2d(nn.Module):
    """nn.Conv2d (groups 1, zero padding) on (in, height, width) inputs only, as one CSR matrix
    from the flattened input image to the flattened output image. Its bias is one value per
    output value, so that a bias map added after it folds in (`fuse_into_sparse`), as can a ReLU."""

    def __init__(self, conv: nn.Conv2d, height: int, width: int):
        super().__init__()
        take_geometry(self, conv)
        self.input_size = (height, width)
        rows, columns, values, self.output_hw = unrolled_entries(conv, height, width)
        positions = self.output_hw[0] * self.output_hw[1]
        shape = (conv.out_channels * positions, conv.in_channels * height * width)
        entries = torch.sparse_coo_tensor(
            torch.stack([rows, columns]), values, shape, check_invariants=False
        )  # in bounds by construction
        self.register_buffer("weight", compressed(entries.coalesce()))
        bias = torch.zeros(conv.out_channels) if conv.bias is None else conv.bias.detach()
        # a column: added to every image of the batch by the product itself
        self.register_buffer("bias", bias.repeat_interleave(positions).view(-1, 1))
        self.relu = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (self.in_channels, *self.input_size):
            raise ValueError(
                f"this sparse_runtime export unrolled a convolution for inputs of "
                f"{self.in_channels}x{self.input_size[0]}x{self.input_size[1]}, not "
                f"{'x'.join(map(str, x.shape[1:]))}: export the run again for that size"
            )
        batch = x.shape[0]
        if batch == 1:  # a matrix-vector product: 2-3x faster than a product with one column
            out = torch.addmv(self.bias.view(-1), self.weight, x.reshape(-1))
        else:  # (batch, in * h * w) as columns
            out = torch.addmm(self.bias, self.weight, x.reshape(batch, -1).t()).t()
        if self.relu:
            out = out.relu_()
        return out.reshape(batch, self.out_channels, *self.output_hw)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, input_size={self.input_size}, "
            f"entries={self.weight.values().numel()}, relu={self.relu}"
        )


# what the C++ kernel takes for a tensor a layer has not
NOTHING = torch.empty(0)


class DirectConv2d(nn.Module):
    """nn.Conv2d (groups 1, zero padding) as a direct sparse convolution (export/direct_conv.cpp):
    each output value summed over its channel's live weights straight from the padded input, no
    unfolding, so that a layer at 12% density costs about 12% of the dense one's arithmetic. The
    live weights are kept grouped by output channel (`starts`), each with its input channel,
    kernel row and column. What follows the convolution can be taken into it
    (`fuse_into_sparse`): a constant added per output value (`bias_map`, which fixes the layer to
    its input size), a shortcut added (`forward`'s `residual`), a ReLU and a 2x2 max pool. Where
    the C++ kernel cannot be built (export/native.py says why) the layer runs as torch's dense
    convolution of the same weights, with a warning that says so."""

    def __init__(self, conv: nn.Conv2d, height: int, width: int):
        super().__init__()
        take_geometry(self, conv)
        # the sizes it was made for: only a bias map taken in holds it to them
        self.input_size = (height, width)
        self.output_hw = (output_side(conv, height, 0), output_side(conv, width, 1))
        weight = conv.weight.detach()
        out, channel, row, col = weight.nonzero(as_tuple=True)  # in order of output channel
        starts = torch.zeros(self.out_channels + 1, dtype=torch.int64)
        starts[1:] = torch.bincount(out, minlength=self.out_channels).cumsum(0)
        self.register_buffer("starts", starts)
        self.register_buffer("channels", channel.int())
        self.register_buffer("rows", row.int())
        self.register_buffer("cols", col.int())
        self.register_buffer("values", weight[out, channel, row, col].float().contiguous())
        bias = None if conv.bias is None else conv.bias.detach().float().clone()
        self.register_buffer("bias", bias)
        self.register_buffer("bias_map", None)  # (out, height, width) once one is taken in
        self.relu = False
        self.pool = False

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The layer on `x`, plus `residual` (of the output's shape) before the ReLU where one
        was taken in."""
        # the buffers read from their dict: nn.Module's attribute lookup of seven of them would
        # cost a small layer as much as its arithmetic
        held = self._buffers
        if held["bias_map"] is not None and tuple(x.shape[2:]) != self.input_size:
            raise ValueError(
                f"this sparse_runtime export took a constant per output value into a "
                f"convolution for inputs of {self.input_size[0]}x{self.input_size[1]}, not "
                f"{x.shape[2]}x{x.shape[3]}: export the run again for that size"
            )
        kernel = native.direct_conv()
        values = held["values"]
        plain = x.dtype == values.dtype == torch.float32 and x.device.type == "cpu"
        if kernel is None or not plain:
            return self.dense(x, residual)
        bias, bias_map = held["bias"], held["bias_map"]
        if residual is not None and residual.dtype != torch.float32:
            residual = residual.float()
        return kernel.sparse_conv2d(
            x, held["starts"], held["channels"], held["rows"], held["cols"], values,
            NOTHING if bias is None else bias,
            NOTHING if bias_map is None else bias_map,
            NOTHING if residual is None else residual,
            self.out_channels, *self.kernel_size, *self.stride, *self.padding, *self.dilation,
            self.relu, self.pool,
        )  # fmt: skip

    def dense_weight(self) -> torch.Tensor:
        """The dense weight these live weights are of."""
        weight = self.values.new_zeros(self.out_channels, self.in_channels, *self.kernel_size)
        out = torch.repeat_interleave(
            torch.arange(self.out_channels, device=self.values.device), self.starts.diff()
        )
        weight[out, self.channels.long(), self.rows.long(), self.cols.long()] = self.values
        return weight

    def dense(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The same layer by torch's dense kernels: where the C++ kernel is not at hand."""
        if x.device.type == "cpu" and native.direct_conv() is None:
            native.warn_once()
        bias = None if self.bias is None else self.bias.to(x)
        out = F.conv2d(x, self.dense_weight().to(x), bias, self.stride, self.padding, self.dilation)
        if self.bias_map is not None:
            out = out + self.bias_map.to(x)
        if residual is not None:
            out = out + residual
        if self.relu:
            out = out.relu_()
        return F.max_pool2d(out, 2) if self.pool else out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"live={self.values.numel()}, bias_map={self.bias_map is not None}, "
            f"relu={self.relu}, pool={self.pool}"
        )


class MaxPool2x2(nn.Module):
    """nn.MaxPool2d(2) as two maxima of halves: rows in pairs, then columns in pairs. On the CPU
    at batch 1 it is 5-10x faster than max_pool2d (37 against 380 us on 64 channels of 32x32),
    which would otherwise cost a sparse VGG as much as its convolutions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        rows, cols = height // 2, width // 2
        if height % 2 or width % 2:  # the last row or column is left out, as max_pool2d does
            x = x[..., : 2 * rows, : 2 * cols]
        pairs = x.reshape(batch, channels, rows, 4 * cols)  # two input rows in each row
        tall = torch.maximum(pairs[..., : 2 * cols], pairs[..., 2 * cols :])
        return torch.maximum(tall[..., 0::2], tall[..., 1::2])


def plain_2x2(pool: nn.Module) -> bool:
    """Whether `pool` is a max pool over 2x2 windows at stride 2, with nothing else asked of it."""
    return (
        type(pool) is nn.MaxPool2d
        and pool.kernel_size in (2, (2, 2))
        and pool.stride in (2, (2, 2))
        and pool.padding in (0, (0, 0))
        and pool.dilation in (1, (1, 1))
        and not pool.ceil_mode
        and not pool.return_indices
    )


def faster_pools(gm: fx.GraphModule) -> int:
    """Each 2x2 max pool of `gm` (changed in place) replaced by MaxPool2x2; how many were."""
    swapped = 0
    for name, module in list(gm.named_modules()):
        if name and plain_2x2(module):
            gm.add_submodule(name, MaxPool2x2())
            swapped += 1
    return swapped


RELUS = {F.relu, torch.relu}


def fuse_into_sparse(gm: fx.GraphModule) -> int:
    """Each sparse convolution of `gm` (changed in place) takes in what follows it where the
    layer's output has no other reader: a direct or unrolled one the bias map added to it, a
    direct one the shortcut added after that, each the ReLU after those, and a direct one the
    2x2 max pool after the ReLU; how many nodes went."""
    gone = 0
    calls = module_calls(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or calls[node.target] != 1:
            continue  # a layer called twice would take in what follows one call into both
        layer = gm.get_submodule(node.target)
        if isinstance(layer, (UnrolledConv2d, SparseConv2d, DirectConv2d)):
            gone += fuse_after(gm, node, layer, calls)
    if gone:
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return gone


def sole_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def fuse_after(gm: fx.GraphModule, node: fx.Node, layer: nn.Module, calls: dict[str, int]) -> int:
    """What follows `node`, a call of the sparse `layer`, taken into it (`calls`: how many nodes
    call each submodule); how many nodes went."""
    gone = 0

    def take(user: fx.Node) -> fx.Node | None:
        nonlocal gone
        user.replace_all_uses_with(node)
        gm.graph.erase_node(user)
        gone += 1
        return sole_user(node)

    user = sole_user(node)
    mappable = isinstance(layer, (UnrolledConv2d, DirectConv2d))
    added = bias_map(gm, user, node, layer) if user is not None and mappable else None
    if added is not None:
        if isinstance(layer, UnrolledConv2d):
            layer.bias += added.reshape(-1, 1)
        else:
            layer.bias_map = added[0].clone(memory_format=torch.contiguous_format)
        user = take(user)
    other = shortcut(user, node) if isinstance(layer, DirectConv2d) and user is not None else None
    if other is not None:
        # the layer is called where the sum was, after the shortcut is computed
        user.prepend(node)
        node.args = (node.args[0], other)
        user = take(user)
    if user is not None and is_relu(gm, user) and user.args[0] is node:
        layer.relu = True
        user = take(user)
    if isinstance(layer, DirectConv2d) and user is not None and pooled(gm, user, layer, calls):
        layer.pool = True
        take(user)
    return gone


def shortcut(node: fx.Node, layer_node: fx.Node) -> fx.Node | None:
    """The tensor that `node` adds to the output of `layer_node` (a residual block's sum); None
    where `node` is no such sum."""
    if node.op != "call_function" or node.target not in ADDITIONS or node.kwargs:
        return None
    if len(node.args) != 2 or len(layer_node.args) != 1 or layer_node.kwargs:
        return None
    first, second = node.args
    other = second if first is layer_node else first if second is layer_node else None
    if not isinstance(other, fx.Node) or other is layer_node or other.op == "get_attr":
        return None
    return other


def pooled(gm: fx.GraphModule, node: fx.Node, layer: "DirectConv2d", calls: dict) -> bool:
    """Whether `node` is a plain 2x2 max pool, called once, of `layer`'s output only."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return False
    return (
        plain_2x2(gm.get_submodule(node.target))
        and calls[node.target] == 1
        and min(layer.output_hw) >= 2
    )


def module_calls(gm: fx.GraphModule) -> dict[str, int]:
    """How many nodes of `gm`'s graph call each submodule, by name."""
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


def bias_map(gm: fx.GraphModule, node: fx.Node, layer_node: fx.Node, layer) -> torch.Tensor | None:
    """The constant that `node` adds to the output of `layer_node`, as one value per output value
    of `layer`; None where `node` is not such an addition."""
    if node.op != "call_function" or node.target not in ADDITIONS or node.kwargs:
        return None
    first, second = node.args
    if first is not layer_node or not isinstance(second, fx.Node) or second.op != "get_attr":
        return None
    value = getattr(gm, second.target)
    shape = (1, layer.out_channels, *layer.output_hw)
    try:
        return value.expand(shape)
    except RuntimeError:  # not one value per channel, or per output value
        return None


def is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)) is nn.ReLU
    if node.op == "call_method":
        return node.target in ("relu", "relu_") and not node.kwargs and len(node.args) == 1
    # F.relu(x, inplace=...), as torch.fx writes it: in place or not, the same values
    plain = len(node.args) == 1 and set(node.kwargs) <= {"inplace"}
    return node.op == "call_function" and node.target in RELUS and plain


SPARSE = {nn.Linear: SparseLinear, nn.Conv2d: SparseConv2d}
KERNELS = ("dense", "csr", "unrolled", "direct")


def fastest(times: dict[str, float]) -> str:
    """The fastest kernel of those timed, but dense unless a sparse one beats it by the margin."""
    best = min(times, key=times.get)
    return best if times[best] < MARGIN * times["dense"] else "dense"


@dataclass
class LayerChoice:
    """What was timed for one layer (milliseconds per call of each kernel tried), and what runs."""

    name: str
    live: int
    total: int
    times: dict[str, float]
    chosen: str

    @property
    def sparse(self) -> bool:
        return self.chosen != "dense"


def thread_counts() -> tuple[int, ...]:
    """One thread and all of them: at batch 1 a sparse network's layers are too small to share
    out, and one thread can be the faster."""
    return tuple(sorted({1, torch.get_num_threads()}))


@contextmanager
def threads(count: int):
    """torch's intra-op thread count set to `count` inside, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def candidates(dense: nn.Module, x: torch.Tensor) -> dict[str, nn.Module]:
    """The kernels that can run `dense` on inputs shaped as `x`, by name."""
    kernels = {"dense": dense, "csr": SPARSE[type(dense)](dense)}
    if isinstance(dense, nn.Conv2d) and unrolled_size(dense, *x.shape[2:]) <= UNROLLED_LIMIT:
        kernels["unrolled"] = UnrolledConv2d(dense, *x.shape[2:])
    if isinstance(dense, nn.Conv2d) and native.direct_conv() is not None:
        kernels["direct"] = DirectConv2d(dense, *x.shape[2:])
    return kernels


@torch.no_grad()
def sparsify(
    gm: fx.GraphModule, example: torch.Tensor, repeats: int = 7, kernel: str | None = None
) -> tuple[fx.GraphModule, list[LayerChoice]]:
    """`gm` (a compacted network, changed in place) with each conv and linear layer replaced by
    the fastest of its kernels on its input from `example`, whose batch size is the one to decide
    for (or by `kernel` wherever that kernel applies); and what was measured per layer."""
    gm.eval()
    choices = []
    for name, x in layer_inputs(gm, example).items():
        dense = gm.get_submodule(name)
        if not supported(dense):
            continue
        kernels = {key: module.eval() for key, module in candidates(dense, x).items()}
        times = {key: seconds_per_call(module, x, repeats) * 1e3 for key, module in kernels.items()}
        chosen = kernel if kernel in kernels else fastest(times)
        if chosen != "dense":
            gm.add_submodule(name, kernels[chosen])
        live, total = int(dense.weight.count_nonzero()), dense.weight.numel()
        choices.append(LayerChoice(name, live, total, times, chosen))
    return gm, choices


def fixed_size(gm: nn.Module) -> bool:
    """Whether some layer of `gm` was unrolled for one input size. (A direct convolution that
    took in a constant per output value is held to one size too, but only where compaction
    folded that constant through zero padding, which holds the whole export to it already.)"""
    return any(isinstance(module, UnrolledConv2d) for module in gm.modules())


def choice_table(choices: list[LayerChoice]) -> str:
    """Per layer: density, each kernel's time, and which one runs."""
    # here, not at the top: loading a sparse_runtime export imports this module, and needs no
    # more than torch for it
    from pruning.mask import percent

    width = max([len("layer"), *(len(c.name) for c in choices)])
    heads = "  ".join(f"{name + ' ms':>11}" for name in KERNELS)
    lines = [f"{'layer':<{width}}  {'live':>7}  {heads}  runs"]
    for c in choices:
        density = percent(c.live / c.total, 1) if c.total else "-"
        times = "  ".join(
            f"{c.times[name]:>11.3f}" if name in c.times else f"{'-':>11}" for name in KERNELS
        )
        lines.append(f"{c.name:<{width}}  {density:>7}  {times}  {c.chosen}")
    return "\n".join(lines)
