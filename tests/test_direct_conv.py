"""The direct sparse convolution (export/direct_conv.cpp, export/native.py, DirectConv2d in
export/sparse_runtime.py): it computes what the convolution does, with what it takes in after it
(a constant map, a shortcut, a ReLU, a 2x2 max pool); where it cannot be built it says so and
runs dense; and an export that holds it reads back safely."""

import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from export import native
from export.safe_load import read_module
from export.sparse_runtime import DirectConv2d, candidates, fuse_into_sparse, sparsify
from tests.support.kernels import assert_close, sparse_conv


def test_the_kernel_builds_here():
    # the machines this is tested on have a compiler and ninja: a kernel that does not build
    # there is a failure, not a skip
    assert native.direct_conv() is not None, native.why_not()


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation, bias, size",
    [(3, 1, 1, 1, True, (9, 11)), (3, 2, 1, 1, False, (9, 11)), (1, 1, 0, 1, True, (5, 7)),
     (1, 2, 0, 1, True, (8, 8)), (5, 1, 2, 1, True, (9, 11)), (3, 1, 2, 2, True, (9, 11)),
     (3, 2, 0, 1, True, (9, 11)), ((3, 1), (1, 2), (1, 0), 1, True, (9, 11)),
     (7, 2, 3, 1, True, (33, 31)), (3, 1, 1, 1, True, (1, 1)), (3, 1, 1, 1, True, (40, 40))],
)  # fmt: skip
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("density", [0.0, 0.1, 1.0])
def test_a_direct_convolution_computes_what_the_convolution_does(
    kernel, stride, padding, dilation, bias, size, batch, density
):
    conv = sparse_conv(6, 7, kernel, stride, padding, dilation, bias=bias, density=density)
    x = torch.randn(batch, 6, *size)
    direct = DirectConv2d(conv, *size)
    with torch.no_grad():
        assert_close(direct(x), conv(x))
    assert direct.values.numel() == int(conv.weight.count_nonzero())


class ConvBlock(nn.Module):
    """conv, a constant map added, ReLU, 2x2 max pool; `extra_reader`: the ReLU's input read
    again after the pool, so neither the ReLU nor the pool may be taken in."""

    def __init__(self, extra_reader: bool = False):
        super().__init__()
        self.conv = sparse_conv(3, 8, 3, padding=1)
        self.register_buffer("folded_0", torch.randn(1, 8, 7, 6))
        self.pool = nn.MaxPool2d(2)
        self.extra_reader = extra_reader

    def forward(self, x):
        y = self.conv(x) + self.folded_0
        out = self.pool(F.relu(y, inplace=False))  # as torch.fx writes a ReLU
        return out + y[..., :3, :3] if self.extra_reader else out


@pytest.mark.parametrize("extra_reader", [False, True])
def test_a_direct_convolution_takes_in_the_map_relu_and_pool_after_it(extra_reader):
    model = ConvBlock(extra_reader).eval()
    x = torch.randn(2, 3, 7, 6)  # an odd height: the pool leaves the last row out
    gm, choices = sparsify(fx.symbolic_trace(model), x, repeats=1, kernel="direct")
    assert [c.chosen for c in choices] == ["direct"]
    gone = fuse_into_sparse(gm)
    layer = gm.get_submodule("conv")
    with torch.no_grad():
        assert_close(gm(x), model(x))
    # the map always goes in; the ReLU and the pool only where nothing else reads their input
    assert gone == (1 if extra_reader else 3)
    assert layer.bias_map is not None
    assert (layer.relu, layer.pool) == ((False, False) if extra_reader else (True, True))


class Residual(nn.Module):
    """A ResNet basic block without BatchNorm: relu(conv2(relu(conv1(x))) + shortcut(x))."""

    def __init__(self, projection: bool):
        super().__init__()
        out = 6 if projection else 4  # the identity shortcut keeps the input's channels
        self.conv1 = sparse_conv(4, 6, 3, stride=2 if projection else 1, padding=1, seed=1)
        self.conv2 = sparse_conv(6, out, 3, padding=1, seed=2)
        self.shortcut = sparse_conv(4, 6, 1, stride=2, seed=3) if projection else nn.Identity()

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x))


@pytest.mark.parametrize("projection", [False, True])
def test_a_direct_convolution_takes_in_the_shortcut_added_to_it(projection):
    model = Residual(projection).eval()
    x = torch.randn(3, 4, 8, 8)
    gm, _ = sparsify(fx.symbolic_trace(model), x, repeats=1, kernel="direct")
    fuse_into_sparse(gm)
    with torch.no_grad():
        assert_close(gm(x), model(x))
    # conv2 is called with the shortcut and takes in the sum and the ReLU after it
    call = next(node for node in gm.graph.nodes if node.target == "conv2")
    assert len(call.args) == 2
    assert gm.get_submodule("conv2").relu
    assert not [node for node in gm.graph.nodes if node.op == "call_function"]


def test_a_direct_convolution_with_a_map_refuses_another_image_size_in_one_line():
    model = ConvBlock().eval()
    gm, _ = sparsify(fx.symbolic_trace(model), torch.randn(1, 3, 7, 6), repeats=1, kernel="direct")
    fuse_into_sparse(gm)
    line = r"^this sparse_runtime export took a constant .* 7x6, not 8x6: export the run again"
    with pytest.raises(ValueError, match=line + " for that size$"):
        gm(torch.randn(1, 3, 8, 6))


def test_without_the_kernel_the_layer_runs_dense_and_says_so(monkeypatch):
    conv = sparse_conv(6, 7, 3, padding=1)
    x = torch.randn(2, 6, 9, 11)
    direct = DirectConv2d(conv, 9, 11)
    direct.relu = direct.pool = True
    monkeypatch.setattr(native, "_built", lambda: (None, "it could not be compiled (no g++)"))
    native.warn_once.cache_clear()
    try:
        assert "direct" not in candidates(conv, x)  # never offered where it cannot run
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.no_grad():
                got, again = direct(x), direct(x)
        assert_close(got, F.max_pool2d(conv(x).relu(), 2))
        assert torch.equal(got, again)
        said = [str(w.message) for w in caught]
        assert len(said) == 1  # once a process, not once a layer call
        assert "not at hand: it could not be compiled (no g++)" in said[0]
        assert "run as dense convolutions" in said[0]
    finally:
        native.warn_once.cache_clear()


def test_the_kernel_can_be_turned_off_and_says_why(monkeypatch):
    monkeypatch.setenv(native.DISABLE, "1")
    module, why = native._built.__wrapped__()
    assert module is None and why == f"{native.DISABLE} is set"


def test_an_export_holding_direct_convolutions_reads_back_without_running_its_code():
    model = Residual(projection=True).eval()
    x = torch.randn(2, 4, 8, 8)
    gm, _ = sparsify(fx.symbolic_trace(model), x, repeats=1, kernel="direct")
    fuse_into_sparse(gm)
    buffer = io.BytesIO()
    torch.save(gm, buffer)
    buffer.seek(0)
    loaded = read_module(buffer)
    assert isinstance(loaded.get_submodule("conv2"), DirectConv2d)
    with torch.no_grad():
        assert torch.equal(loaded(x), gm(x))


def test_checkouts_of_one_kernel_share_one_build(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    name, staged = native.staged_source(["-O3"])
    assert staged.read_bytes() == native.SOURCE.read_bytes()
    assert staged.parent.parent == tmp_path and name.startswith("flipout_direct_conv_")
    before = staged.stat().st_mtime_ns
    assert native.staged_source(["-O3"]) == (name, staged)  # found, not written again
    assert staged.stat().st_mtime_ns == before
    assert native.staged_source(["-O2"])[0] != name  # other flags: another build
    assert not list(tmp_path.rglob("*.partial"))


def test_a_nan_goes_through_the_pool_taken_in_as_through_max_pool2d():
    conv = sparse_conv(3, 4, 3, padding=1, density=1.0)
    direct = DirectConv2d(conv, 6, 6)
    direct.relu = direct.pool = True
    x = torch.randn(1, 3, 6, 6)
    x[0, 0, 2, 3] = float("nan")
    with torch.no_grad():
        got, expected = direct(x), F.max_pool2d(conv(x).relu(), 2)
    assert torch.equal(got.isnan(), expected.isnan()) and got.isnan().any()
    assert_close(got.nan_to_num(), expected.nan_to_num())


def test_a_failed_build_is_told_in_one_short_line():
    said = RuntimeError(
        "Error building extension 'k': [1/2] c++ -MMD -O3 -c /src/k.cpp -o k.o\n"
        "FAILED: k.o \nc++ -MMD -O3 -c /src/k.cpp -o k.o\n"
        "/src/k.cpp:3:1: error: expected ';' before '}' token\nninja: build stopped: failed.\n"
    )
    assert native.failure(said) == (
        "Error building extension 'k': /src/k.cpp:3:1: error: expected ';' before '}' token"
    )
    assert native.failure(OSError()) == "OSError"


@pytest.mark.parametrize(
    "damage",
    ["starts past the weights", "a channel outside the layer", "a negative kernel row",
     "an index missing", "a zero stride"],
)  # fmt: skip
def test_a_damaged_layer_is_refused_before_anything_is_read(damage):
    # an export is a file someone may have sent: its indices must not send the kernel outside
    # its buffers
    direct = DirectConv2d(sparse_conv(3, 4, 3, padding=1, density=0.5), 6, 6)
    held = direct._buffers
    if damage == "starts past the weights":
        held["starts"][-1] += 1000
    elif damage == "a channel outside the layer":
        held["channels"][0] = 1000
    elif damage == "a negative kernel row":
        held["rows"][0] = -1
    elif damage == "an index missing":
        held["cols"] = held["cols"][1:]
    else:
        direct.stride = (0, 1)
    with pytest.raises(RuntimeError, match=r"^sparse_conv2d: "), torch.no_grad():
        direct(torch.randn(1, 3, 6, 6))
