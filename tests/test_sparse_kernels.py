"""The sparse runtime's kernels and graph rewrites (export/sparse_runtime.py, export/fold.py): each
computes what the dense layers it replaces compute, and each refuses to rewrite what it cannot
rewrite exactly."""

import operator

import pytest
import torch
from torch import fx, nn

from export.fold import fold_batchnorm
from export.sparse_runtime import (
    MaxPool2x2,
    UnrolledConv2d,
    compressed,
    faster_pools,
    fuse_into_sparse,
    sparsify,
)
from tests.support.kernels import assert_close, sparse_conv


def trained_batchnorm(channels: int, seed: int = 0) -> nn.BatchNorm2d:
    generator = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels).eval()
    bn.running_mean.copy_(torch.rand(channels, generator=generator) * 2 - 1)
    bn.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
        bn.bias.copy_(torch.rand(channels, generator=generator) * 2 - 1)
    return bn


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation, bias",
    [(3, 1, 1, 1, True), (3, 2, 1, 1, False), (1, 1, 0, 1, True), (5, 1, 2, 1, True),
     (3, 1, 2, 2, True), (3, 2, 0, 1, True), ((3, 1), (1, 2), (1, 0), 1, True)],
)  # fmt: skip
@pytest.mark.parametrize("batch", [1, 5])
def test_an_unrolled_convolution_computes_what_the_convolution_does(
    kernel, stride, padding, dilation, bias, batch
):
    conv = sparse_conv(6, 7, kernel, stride, padding, dilation, bias=bias)
    x = torch.randn(batch, 6, 9, 11)
    unrolled = UnrolledConv2d(conv, 9, 11)
    with torch.no_grad():
        assert_close(unrolled(x), conv(x))
    # one entry per live weight and output position it reaches: padding reads nothing
    assert unrolled.weight.values().numel() <= int(conv.weight.count_nonzero()) * 9 * 11


def test_csr_matrices_carry_32_bit_indices():
    matrix = compressed(torch.eye(4))
    assert matrix.crow_indices().dtype == matrix.col_indices().dtype == torch.int32
    assert torch.equal(matrix.to_dense(), torch.eye(4))


class ConvThen(nn.Module):
    """conv, then `between` (a constant map added, an activation, or nothing), then BatchNorm."""

    def __init__(self, between: str, bias: bool = True):
        super().__init__()
        self.conv = sparse_conv(3, 8, 3, padding=1, bias=bias)
        self.bn = trained_batchnorm(8)
        self.register_buffer("folded_0", torch.randn(1, 8, 6, 6))
        self.between = between

    def forward(self, x):
        y = self.conv(x)
        if self.between == "map":
            y = y + self.folded_0
        elif self.between == "relu":
            y = torch.relu(y)
        return self.bn(y)


def batchnorms(gm: fx.GraphModule) -> int:
    return sum(isinstance(module, nn.BatchNorm2d) for module in gm.modules())


@pytest.mark.parametrize("between, bias", [("nothing", True), ("nothing", False), ("map", True)])
def test_batchnorm_folds_into_the_convolution_before_it(between, bias):
    model = ConvThen(between, bias).eval()
    gm = fx.symbolic_trace(model)
    pruned = model.conv.weight == 0
    x = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        expected = model(x)
        assert fold_batchnorm(gm) == 1
        assert_close(gm(x), expected)
    assert batchnorms(gm) == 0
    assert torch.all(gm.get_submodule("conv").weight[pruned] == 0)  # the sparsity is kept


def test_batchnorm_stays_where_the_fold_would_change_the_outputs():
    model = ConvThen("relu").eval()
    gm = fx.symbolic_trace(model)
    assert fold_batchnorm(gm) == 0 and batchnorms(gm) == 1
    # the convolution's output read twice: scaling it would change its other reader
    twice = fx.symbolic_trace(model)
    conv = next(node for node in twice.graph.nodes if node.target == "conv")
    output = next(node for node in twice.graph.nodes if node.op == "output")
    with twice.graph.inserting_before(output):
        both = twice.graph.call_function(operator.add, (output.args[0], conv))
    output.args = (both,)
    twice.recompile()
    assert fold_batchnorm(twice) == 0
    model.train()
    assert fold_batchnorm(fx.symbolic_trace(model)) == 0  # training mode: batch statistics


class UnrolledThen(nn.Module):
    def __init__(self, extra_reader: bool = False):
        super().__init__()
        self.conv = sparse_conv(3, 8, 3, padding=1)
        self.register_buffer("folded_0", torch.randn(1, 8, 6, 6))
        self.extra_reader = extra_reader

    def forward(self, x):
        y = self.conv(x) + self.folded_0
        out = torch.relu(y)
        return out + y if self.extra_reader else out


@pytest.mark.parametrize("extra_reader", [False, True])
def test_an_unrolled_convolution_takes_in_the_bias_map_and_relu_after_it(extra_reader):
    model = UnrolledThen(extra_reader).eval()
    x = torch.randn(2, 3, 6, 6)
    gm, choices = sparsify(fx.symbolic_trace(model), x, repeats=1, kernel="unrolled")
    assert [c.chosen for c in choices] == ["unrolled"]
    gone = fuse_into_sparse(gm)
    kinds = [node.op for node in gm.graph.nodes]
    with torch.no_grad():
        assert_close(gm(x), model(x))
    # the map always folds in; the ReLU only where nothing else reads what it reads
    assert gone == (1 if extra_reader else 2)
    assert kinds.count("call_function") == (2 if extra_reader else 0)
    assert gm.get_submodule("conv").relu is not extra_reader


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (2, 2)])
def test_the_faster_max_pool_pools_as_max_pool2d_does(size):
    x = torch.randn(3, 5, *size)
    x[0, 0, 0, 0] = float("nan")  # carried through, as max_pool2d carries it
    expected = nn.MaxPool2d(2)(x)
    assert torch.equal(MaxPool2x2()(x).isnan(), expected.isnan())
    assert torch.equal(MaxPool2x2()(x).nan_to_num(), expected.nan_to_num())


def test_only_plain_2x2_max_pools_are_replaced():
    model = nn.Sequential(nn.MaxPool2d(2), nn.MaxPool2d(3), nn.MaxPool2d(2, ceil_mode=True),
                          nn.MaxPool2d(2, padding=1), nn.AvgPool2d(2))  # fmt: skip
    gm = fx.symbolic_trace(model)
    assert faster_pools(gm) == 1
    assert [type(m).__name__ for m in gm.children()] == [
        "MaxPool2x2", "MaxPool2d", "MaxPool2d", "MaxPool2d", "AvgPool2d"
    ]  # fmt: skip


def test_an_unrolled_convolution_refuses_another_image_size_in_one_line():
    unrolled = UnrolledConv2d(sparse_conv(6, 7, 3, padding=1), 9, 11)
    line = r"^this sparse_runtime export unrolled .* 6x9x11, not 6x10x11: export the run again"
    with pytest.raises(ValueError, match=line + " for that size$"):
        unrolled(torch.randn(1, 6, 10, 11))


class SharedConv(nn.Module):
    """One convolution called twice, each call followed by its own BatchNorm and ReLU."""

    def __init__(self):
        super().__init__()
        self.conv = sparse_conv(3, 3, 3, padding=1)
        self.bn1, self.bn2 = trained_batchnorm(3, seed=1), trained_batchnorm(3, seed=2)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv(torch.relu(self.bn1(self.conv(x))))))


def test_a_layer_called_twice_is_neither_folded_into_nor_fused():
    model = SharedConv().eval()
    x = torch.randn(1, 3, 6, 6)
    gm = fx.symbolic_trace(model)
    assert fold_batchnorm(gm) == 0
    gm, _ = sparsify(gm, x, repeats=1, kernel="unrolled")
    assert fuse_into_sparse(gm) == 0
    with torch.no_grad():
        assert_close(gm(x), model(x))
