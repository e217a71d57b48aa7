"""The compact network as an ONNX model, checked by onnxruntime, and read back as a network.

    python -m export RUN_DIR --to onnx OUT      # export/formats.py registers the format

`onnx_bytes` converts the compact network (export/compact.py) with torch's TorchScript exporter
at opset OPSET, the batch dimension dynamic, and records in the model's metadata_props what
export/formats.py tells an export by: its format, the network's spec and the run directory
(METADATA). `check` runs the bytes with onnxruntime on the CPU against the masked network at
batch 1 and CHECK_BATCH. `metadata` and `read` read a file by parsing its protobuf, which runs
nothing of the file, and `OnnxNetwork` runs an export with onnxruntime as an nn.Module.

onnx and onnxruntime are imported when an ONNX file is written or read, so that the other
formats neither wait for them nor need them installed.
"""

import contextlib
import io
import json
import os
import stat
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from utils.errors import UserError

# recent enough for every operator of the built-in networks and the vision transformers
# (LayerNorm came in 17), and read by every onnxruntime release since early 2023
OPSET = 18
# the metadata_props keys of an export: its format, spec (JSON) and resolved run directory
METADATA = {"format": "flipout.format", "spec": "flipout.spec", "run_dir": "flipout.run_dir"}
CHECK_BATCH = 8
# onnxruntime against the masked network: |got - expected| <= ATOL * max|expected| + RTOL *
# |expected|, the absolute part scaled so that it means the same for logits of any size
RTOL = 1e-4
ATOL = 1e-5
# far more than the ONNX model of any built-in network; protobuf refuses 2 GiB anyway
MOST_BYTES = 2 << 30
INPUT, OUTPUT = "input", "output"
CPU = torch.device("cpu")


def libraries():
    """The onnx and onnxruntime modules, or one line saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise UserError(
            f"ONNX export needs onnx and onnxruntime ({error}): pip install -r requirements.txt"
        ) from None
    return onnx, onnxruntime


@contextlib.contextmanager
def quiet():
    """Silences stdout and stderr for the block, the files and Python's streams: when the
    TorchScript exporter fails, it prints its whole graph from C++ whatever its `verbose` says,
    and torch.fx the generated forward; the one line of the refusal says what failed."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for descriptor, kept in enumerate(saved, start=1):
            os.dup2(kept, descriptor)
            os.close(kept)


class OneInput(nn.Module):
    """`network` called with its input alone: the TorchScript exporter would pass a traced
    network's other arguments (timm's is_causal) as tensors, where their defaults are due."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs)


def onnx_bytes(module: nn.Module, input_shape: tuple[int, ...], fields: dict[str, str]) -> bytes:
    """`module` as a serialized ONNX model for inputs of `input_shape` and any batch size, with
    `fields` (METADATA's keys -> text) in its metadata_props. A network the exporter cannot
    express at OPSET (an operator with no ONNX counterpart) is a UserError saying which."""
    onnx, _ = libraries()
    buffer = io.BytesIO()
    example = torch.zeros(1, *input_shape)
    try:
        # the TorchScript exporter: under a second a network, where the dynamo exporter took
        # 4-5 s and needs onnxscript; its deprecation notice says nothing to the user
        with warnings.catch_warnings(), quiet():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                OneInput(module),
                (example,),
                buffer,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            )
    except Exception as error:  # an unsupported operator, a symbolic that fails: any of them
        first = str(error).strip().splitlines()
        raise UserError(
            f"the network cannot be written as ONNX opset {OPSET}: "
            f"{first[0] if first else type(error).__name__}"
        ) from None
    model = onnx.load_from_string(buffer.getvalue())
    for field, value in fields.items():
        model.metadata_props.add(key=METADATA[field], value=value)
    return model.SerializeToString()


def session(data: bytes, device: torch.device = CPU, threads: int = 0, spinning: bool = True):
    """An onnxruntime InferenceSession of the model `data` on `device` (CPU or CUDA), on
    `threads` threads (0: onnxruntime's choice). Without `spinning` its threads sleep as soon as
    a run ends, instead of spinning for the next one while other code wants the cores."""
    _, onnxruntime = libraries()
    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if provider not in onnxruntime.get_available_providers():
        raise UserError(
            f"onnxruntime {onnxruntime.__version__} has no {provider}; load the ONNX export on "
            "the CPU (device='cpu')"
        )
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are raised to us as exceptions
    options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(data, options, providers=[provider])


def difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest |got - expected| in units of what is allowed there (<= 1 passes)."""
    allowed = ATOL * expected.abs().max().clamp_min(1e-30) + RTOL * expected.abs()
    return float(((got - expected).abs() / allowed).max())


@torch.no_grad()
def check(data: bytes, masked: nn.Module, input_shape: tuple[int, ...]) -> str:
    """Runs the ONNX model `data` with onnxruntime on the CPU against the masked network in
    eval mode at batch 1 and CHECK_BATCH; the line to report, or a UserError naming the batch
    whose outputs differ."""
    runner = OnnxNetwork(session(data))
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch in (1, CHECK_BATCH):
        inputs = torch.randn(batch, *input_shape, generator=generator)
        expected, got = masked(inputs), runner(inputs)
        if got.shape != expected.shape:
            raise UserError(
                f"onnxruntime answers {tuple(got.shape)} at batch {batch}, where the masked "
                f"network answers {tuple(expected.shape)}: not written"
            )
        worst = max(worst, difference(got, expected))
        if worst > 1:
            raise UserError(
                f"onnxruntime's outputs at batch {batch} differ from the masked network's by "
                f"{worst:.1f}x the tolerance (rtol {RTOL:g}, atol {ATOL:g} x the largest "
                "output): not written"
            )
    return (
        f"onnxruntime (CPU) agrees with the masked network at batch 1 and {CHECK_BATCH} "
        f"(rtol {RTOL:g}, atol {ATOL:g} x the largest output; opset {OPSET}, any batch size)"
    )


def model_bytes(path: str | Path) -> bytes | None:
    """The bytes of `path` when it is a regular file that may be an ONNX model; None otherwise.
    A serialized model begins with its ir_version (field 1, a varint: byte 0x08), so any other
    file (a torch archive begins with "PK") is told apart by its first byte, without reading
    the rest. Opened without waiting, so that a FIFO given by mistake neither blocks nor is
    read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or file.read(1) != b"\x08":
            return None
        data = b"\x08" + file.read(MOST_BYTES)
    return data if len(data) <= MOST_BYTES else None


def model_at(path: str | Path):
    """The ModelProto at `path`, or None when it is no regular file holding an ONNX model.
    Protobuf parsing runs nothing of the file."""
    data = model_bytes(path)
    if data is None:
        return None
    onnx, _ = libraries()
    try:
        return onnx.load_from_string(data)
    except Exception:  # protobuf's DecodeError, or whatever else a foreign file makes it raise
        return None


def recorded(model) -> dict | None:
    """What an ONNX export of python -m export records (METADATA's fields, the spec parsed);
    None for an ONNX model without our metadata."""
    props = {prop.key: prop.value for prop in model.metadata_props}
    if props.get(METADATA["format"]) != "onnx":
        return None
    try:
        spec = json.loads(props.get(METADATA["spec"], "null"))
    except ValueError:
        spec = None
    return {"format": "onnx", "spec": spec, "run_dir": props.get(METADATA["run_dir"])}


def metadata(path: str | Path) -> dict | None:
    """recorded() of the file at `path`, read without running anything of it; None for any
    file that is not an ONNX export of ours."""
    model = model_at(path)
    return None if model is None else recorded(model)


def external_data(model) -> bool:
    """Whether a tensor of `model` is stored in another file, which onnxruntime would read from
    wherever the model says: an export of ours never is."""
    onnx, _ = libraries()
    external = onnx.TensorProto.EXTERNAL
    return any(t.data_location == external for t in model.graph.initializer)


def read(path: str | Path) -> bytes | None:
    """The bytes of `path` when it is an ONNX export of python -m export; None when it is not an
    ONNX model at all; a UserError for an ONNX model this tool did not write."""
    model = model_at(path)
    if model is None:
        return None
    if recorded(model) is None:
        raise UserError(f"{path} is an ONNX model, but not an export of python -m export")
    if external_data(model):
        raise UserError(f"{path}: an ONNX export whose tensors are in other files; not loaded")
    return model.SerializeToString()


class OnnxNetwork(nn.Module):
    """An ONNX export run by onnxruntime: forward takes a float tensor of any batch size and
    returns the output tensor, on the device of its input. It has no parameters to train."""

    def __init__(self, runner):
        super().__init__()
        self.runner = runner
        self.eval()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        array = inputs.detach().to("cpu", torch.float32).numpy()
        (output,) = self.runner.run([OUTPUT], {INPUT: array})
        return torch.from_numpy(output).to(inputs.device)


def network(path: str | Path, data: bytes, device: torch.device) -> nn.Module:
    """The ONNX export `data`, read from `path`, as an OnnxNetwork on `device`; one line for a
    model onnxruntime refuses."""
    try:
        runner = session(data, device)
    except UserError:
        raise
    except Exception as error:  # onnxruntime's Fail, InvalidGraph, InvalidProtobuf
        why = " ".join(str(error).split())[:300] or type(error).__name__
        raise UserError(f"{path}: a damaged onnx export: {why}") from None
    return OnnxNetwork(runner)
