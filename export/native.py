"""The export room's one C++ kernel, compiled on first use: the direct sparse convolution.

PyTorch has no CPU kernel that skips a convolution's zero weights (its CSR products need the
input unfolded first, which at 12% density costs as much as the dense convolution it replaces),
so export/direct_conv.cpp is one: about two hundred lines that torch.utils.cpp_extension
compiles with the machine's C++ compiler and ninja the first time a process asks for it (half a
minute here), into torch's extension cache (~/.cache/torch_extensions, or TORCH_EXTENSIONS_DIR),
where later processes find it built (in half a second). The build is named by the CPU's vector
width and a digest of the source, so a cache shared between machines never hands one a binary
its CPU cannot run, and every checkout of the same kernel shares one build. torch guards a build
with an OS lock, which a killed build releases.

Where it cannot be built (no compiler, no ninja, a read-only cache) `direct_conv()` is None and
`why_not()` says why in one line: sparse_runtime then never offers the kernel, and an export
holding it runs those layers as dense convolutions, with a warning that says so.
"""

import hashlib
import logging
import os
import re
import shutil
import sys
import warnings
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("direct_conv.cpp")
# flags by the vector width torch itself dispatches to on this CPU (ATEN_CPU_CAPABILITY included)
FLAGS = {
    "avx512": ["-mavx2", "-mfma"],  # 8-float vectors: AVX2 is what the kernel is written for
    "avx2": ["-mavx2", "-mfma"],
    "default": [],
}
# never the default: a built-in that is off must say so, not fall back in silence
DISABLE = "FLIPOUT_NO_NATIVE"


def capability() -> str:
    found = torch.backends.cpu.get_cpu_capability().lower()
    return found if found in FLAGS else "default"


@contextmanager
def ninja_on_path():
    """torch runs `ninja` from PATH; the one requirements.txt installs sits beside this Python,
    which is not on PATH when the environment's python runs without being activated."""
    before = os.environ.get("PATH", "")
    if shutil.which("ninja") is None:
        try:
            import ninja  # the PyPI package: a binary and where it is
        except ImportError:
            pass
        else:
            os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, before])
    try:
        yield
    finally:
        os.environ["PATH"] = before


@cache
def _built():
    """(the compiled module or None, why it is None)."""
    if os.environ.get(DISABLE):
        return None, f"{DISABLE} is set"
    # importing it logs "No CUDA runtime is found" on this CUDA build of torch: the kernel is
    # CPU only, and the line would be noise in every export
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level_before = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load
    except ImportError as error:  # pragma: no cover - part of every torch
        return None, f"torch.utils.cpp_extension is missing ({error})"
    finally:
        quiet.setLevel(level_before)
    # -ffp-contract=fast: multiply and add fused where the CPU can, as oneDNN's kernels do
    flags = ["-O3", "-ffp-contract=fast", *FLAGS[capability()]]
    try:
        name, source = staged_source(flags)
        if not compiled_before(name):
            print(
                "compiling the direct sparse convolution (export/direct_conv.cpp), once per "
                "machine: about half a minute",
                file=sys.stderr,
                flush=True,
            )
        with warnings.catch_warnings(), ninja_on_path():
            # "No CUDA runtime is found": this torch is a CUDA build; the kernel is CPU only
            warnings.filterwarnings("ignore")
            module = load(name, [str(source)], extra_cflags=flags)
    except Exception as error:  # a compiler's failure is any of several types; all mean 'no'
        return None, f"it could not be compiled ({failure(error)})"
    return module, ""


def failure(error: Exception) -> str:
    """A failed build in one short line: what failed, and the line of the compiler's output
    that says why, not the command lines torch's message holds."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    head = lines[0].split(": [")[0]  # "Error building extension 'name'"
    said = [line for line in lines[1:] if re.search(r"error|not found|No such file", line)]
    said = said or [line for line in lines[1:] if not line.startswith(("ninja:", "FAILED:", "["))]
    text = f"{head}: {said[0]}" if said else head
    return text if len(text) <= 300 else text[:297] + "..."


def build_root() -> Path:
    """Where torch builds extensions: TORCH_EXTENSIONS_DIR, else its default."""
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())


def staged_source(flags: list[str]) -> tuple[str, Path]:
    """The build's name and where its source is staged: named by a digest of the source and
    the flags, in the build root. torch's build file names the source by its absolute path, so
    two checkouts building from their own copies would each rebuild the other's (a minute each
    time one runs after the other); from the staged copy, every checkout with this kernel shares
    one build, and a changed kernel is another name."""
    text = SOURCE.read_bytes()
    digest = hashlib.sha256(text + " ".join(flags).encode()).hexdigest()[:12]
    name = f"flipout_direct_conv_{capability()}_{digest}"
    staged = build_root() / "sources" / f"{name}.cpp"
    if not staged.is_file() or staged.read_bytes() != text:
        staged.parent.mkdir(parents=True, exist_ok=True)
        # written whole under another name first: a process reading it meanwhile sees it all
        partial = staged.with_name(f"{staged.name}.{os.getpid()}.partial")
        partial.write_bytes(text)
        os.replace(partial, staged)
    return name, staged


def compiled_before(name: str) -> bool:
    """Whether torch's extension cache holds a build of `name` (torch rebuilds it all the same
    where the source changed: this only decides whether to say that a build is coming)."""
    root = build_root()
    return any(root.glob(f"*/{name}/{name}*.so")) or any(root.glob(f"{name}/{name}*.so"))


def direct_conv():
    """The compiled module, whose `sparse_conv2d(input, starts, channels, rows, cols, values,
    bias, bias_map, residual, out_channels, kh, kw, sh, sw, ph, pw, dh, dw, relu, pool)` is the
    kernel (empty tensors for what a layer has not), or None where it cannot be built."""
    return _built()[0]


def why_not() -> str:
    """Why direct_conv() is None, in a few words; empty where it is not."""
    return _built()[1]


@cache
def warn_once() -> None:
    """Said once a process: an export's direct sparse convolutions run dense here."""
    warnings.warn(
        f"the direct sparse convolution (export/direct_conv.cpp) is not at hand: {why_not()}; "
        "the layers exported with it run as dense convolutions of the same weights, exact but "
        "slower",
        stacklevel=3,
    )
