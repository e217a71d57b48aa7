"""Model zoo for the FlipOut experiments (Apostol, Stol & Forré, 2020).

Maps command-line names to factories sharing one signature, so training and pruning code can
build any network from (num_classes, in_channels, image_size). The built-ins are made of plain
nn.Conv2d and nn.Linear layers, the paper's prunable set (pruning/prunable.py decides what is
prunable in any network, and masks are keyed by parameter name). Beside these built-ins,
`timm:NAME` and `torchvision:NAME` name any model of those libraries, built by
models/external.py. `build_for_run` builds a run's network once it is known to fit: on the meta
device first (no memory), then for real, checked on images of the run's size.
"""

import contextlib
import difflib
import inspect
from collections.abc import Callable

import torch
from torch import nn

from utils.errors import UserError
from utils.runtime import available_memory

from .densenet import densenet121
from .external import (
    SOURCES,
    PatchSizeError,
    build_external,
    check_name,
    foreign_state,
    is_external,
    short_reason,
)
from .lenet import conv6, lenet5, lenet300
from .resnet import resnet18
from .vgg import vgg11, vgg13, vgg16, vgg19

MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet300": lenet300,
    "lenet5": lenet5,
    "conv6": conv6,
    "vgg11": vgg11,
    "vgg13": vgg13,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "resnet18": resnet18,
    "densenet121": densenet121,
}


def build_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    model_kwargs: dict | None = None,
    pretrained: bool = False,
) -> nn.Module:
    """Instantiate the network called `name`: a built-in of MODELS, or timm:NAME or
    torchvision:NAME with `model_kwargs` for its constructor. `pretrained` (timm and torchvision
    only) loads the library's published weights; it is not part of a spec, which describes the
    network, not its initial weights."""
    if is_external(name):
        return build_external(name, num_classes, in_channels, image_size, model_kwargs, pretrained)
    if name not in MODELS:
        raise ValueError(unknown_model(name))
    if model_kwargs:
        raise ValueError(f"the built-in {name} takes no model_kwargs")
    if pretrained:
        raise ValueError("the built-in models have no pretrained weights")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size)


def unknown_model(name: str) -> str:
    close = difflib.get_close_matches(name, MODELS)
    return (
        f"unknown model {name!r}{f' (did you mean {close[0]}?)' if close else ''}; choose one of: "
        f"{', '.join(sorted(MODELS))}, or {' or '.join(f'{p}:NAME' for p in SOURCES)} for any "
        "model of those libraries (python -m models list [GLOB] lists the names)"
    )


def check_model_name(name: str) -> str:
    """`name` when build_model knows it, else a ValueError that suggests close matches."""
    if is_external(name):
        check_name(name)
    elif name not in MODELS:
        raise ValueError(unknown_model(name))
    return name


def input_problem(model: nn.Module, in_channels: int, side: int, batch: int = 0) -> str | None:
    """Why `model` cannot take side x side images (too small for its pooling, say), or None. The
    default batch of no images checks every layer's shapes without arithmetic, which suffices for
    the built-ins; a network of timm or torchvision may reshape by the batch's size, so it is
    given `batch` real images."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(batch, in_channels, side, side))
    # timm's shape checks are assertions, and another library's network may raise anything
    except Exception as error:
        return " ".join(str(error).split()) or type(error).__name__
    finally:
        model.train(was_training)
    return None


def build_for_run(spec: dict, pretrained: bool = False, check: bool = False) -> nn.Module:
    """The network of a run, built once: build_model(**spec), with any reason it cannot serve the
    run's images as one UserError. A built-in is checked first, on the meta device, when `check`
    says its images may not fit (every dataset's own size fits every built-in); a network of timm
    or torchvision is always checked, on itself (`check_built`)."""
    if not is_external(spec["name"]):
        if check:
            check_input_size(spec)
        return build_model(**spec)
    check_skeleton(spec)
    model = checked_build(spec, cannot_take(spec), pretrained)
    check_built(model, spec)
    return model


def check_skeleton(spec: dict) -> None:
    """Raise UserError for what the network of `spec` (timm:, torchvision:) shows before any of
    its memory exists: built on the meta device, patches that do not tile its images (timm's
    vit_huge on digits is refused before its 2.5 GB are built), more layers than any network
    has (`layer_budget`) and parameters that do not fit in memory. A constructor that cannot
    run on the meta device (one that reads a tensor's values) is left to the real build, which
    says what fails."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), layer_budget():
            skeleton = build_model(**spec)
    except PatchSizeError as error:
        raise UserError(f"{cannot_take(spec)}: {error}; {patch_advice(error)}") from None
    except TooManyLayers as error:
        raise UserError(f"-m {spec['name']}{kwargs_given(spec)} {error}") from None
    except UserError:
        raise
    except Exception:  # the real build reports it, or succeeds where the meta device cannot
        return
    check_memory(skeleton, spec)


# Far more layers than any network has (timm's largest have about 1,500 modules): a spec with
# more (depth=100000) is a typo or a damaged file, and building it, even on the meta device,
# would take minutes to hours.
MOST_LAYERS = 10_000


class TooManyLayers(ValueError):
    """A network being built registered more than MOST_LAYERS modules."""


@contextlib.contextmanager
def layer_budget():
    """Inside the block, building a network of more than MOST_LAYERS modules stops with
    TooManyLayers as the next one is registered, before the minutes the rest would take."""
    count, most = 0, MOST_LAYERS

    def counted(module, name, submodule):
        nonlocal count
        count += 1
        if count > most:
            raise TooManyLayers(f"has more than {most:,} layers, more than any network has")

    handle = torch.nn.modules.module.register_module_module_registration_hook(counted)
    try:
        yield
    finally:
        handle.remove()


def memory_problem(skeleton: nn.Module) -> str | None:
    """Why the parameters and buffers of `skeleton` (on the meta device) cannot be built here:
    more memory than the system has available; None when they fit."""
    tensors = [*skeleton.parameters(), *skeleton.buffers()]
    size = sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    free = available_memory()
    if free is None or size <= free:
        return None
    count = sum(parameter.numel() for parameter in skeleton.parameters())
    return (
        f"would take {in_bytes(size)} for its {count:,} parameters alone, more than the "
        f"{in_bytes(free)} of memory available"
    )


def check_memory(skeleton: nn.Module, spec: dict) -> None:
    """Raise UserError when the network of `spec`, as `skeleton` on the meta device, does not
    fit in the memory available."""
    problem = memory_problem(skeleton)
    if problem:
        raise UserError(f"-m {spec['name']}{kwargs_given(spec)} {problem}")


def in_bytes(size: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} bytes"


def kwargs_given(spec: dict) -> str:
    """The --model_kwargs of `spec` as a command line gives them, or ""."""
    kwargs = spec.get("model_kwargs") or {}
    given = "".join(f" {key}={value!r}" for key, value in kwargs.items())
    return f" --model_kwargs{given}" if given else ""


def cannot_take(spec: dict) -> str:
    side = spec.get("image_size", 32)
    return f"-m {spec['name']} cannot take {side}x{side} images"


def check_input_size(spec: dict) -> None:
    """Raise UserError when the network of `spec` cannot be built, cannot take its images, or
    (timm:, torchvision:) does not answer logits in training. A built-in is built on the meta
    device and given uninitialised memory, so no random number is drawn and the real network's
    initial weights are unaffected. A network of another library may read index tables that such
    memory leaves unset, so a throwaway copy is built on the CPU with the random streams put back
    afterwards, and checked as `check_built` checks."""
    cannot = cannot_take(spec)
    if not is_external(spec["name"]):
        with torch.device("meta"):
            model = checked_build(spec, cannot)
        check_memory(model, spec)
        problem = input_problem(model.to_empty(device="cpu"), spec.get("in_channels", 3),
                                spec.get("image_size", 32))  # fmt: skip
        if problem:
            raise UserError(f"{cannot}: {problem}")
        return
    check_skeleton(spec)
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        check_built(checked_build(spec, cannot), spec)


def check_built(model: nn.Module, spec: dict) -> None:
    """Raise UserError when `model`, the network of `spec` (timm:, torchvision:), cannot take its
    images: one image to evaluate, two to train on. The random streams and the buffers (BatchNorm's
    statistics) are as they were afterwards, so that a run's network can be checked on itself."""
    side, in_channels = spec.get("image_size", 32), spec.get("in_channels", 3)
    buffers, was_training = [buffer.clone() for buffer in model.buffers()], model.training
    with torch.random.fork_rng(devices=[]):
        problem = input_problem(model, in_channels, side, batch=1)
        if problem:
            raise UserError(f"{cannot_take(spec)}: {problem}")
        try:
            check_training_output(model, spec, in_channels, side)
        finally:
            model.train(was_training)
            with torch.no_grad():
                for buffer, saved in zip(model.buffers(), buffers, strict=True):
                    buffer.copy_(saved)


def checked_build(spec: dict, cannot: str, pretrained: bool = False) -> nn.Module:
    """build_model(**spec), or a UserError that says why the network cannot be built."""
    try:
        return build_model(**spec, pretrained=pretrained)
    except PatchSizeError as error:
        raise UserError(f"{cannot}: {error}; {patch_advice(error)}") from None
    except UserError:
        raise
    except Exception as error:  # a library's constructor refusing --model_kwargs: KeyError, ...
        raise UserError(
            f"-m {spec['name']}{kwargs_given(spec)} cannot be built: {short_reason(error)}"
        ) from None


def check_training_output(model: nn.Module, spec: dict, in_channels: int, side: int) -> None:
    """Raise UserError when `model` fails on a batch in training mode, or answers something
    other than a tensor of logits there (torchvision's googlenet and inception_v3 add their
    auxiliary classifiers' logits)."""
    try:
        with torch.no_grad():
            output = model.train()(torch.zeros(2, in_channels, side, side))
    except Exception as error:
        raise UserError(
            f"-m {spec['name']} cannot train on {side}x{side} images: {short_reason(error)}"
        ) from None
    if isinstance(output, torch.Tensor):
        return
    takes_aux = "aux_logits" in inspect.signature(type(model)).parameters
    given_aux = (spec.get("model_kwargs") or {}).get("aux_logits", True)
    remedy = (
        "give it --model_kwargs aux_logits=False"
        if takes_aux and given_aux is not False
        else "such a network is not supported"
    )
    raise UserError(
        f"-m {spec['name']} returns {type(output).__name__} in training, not logits; {remedy}"
    )


def patch_advice(error: PatchSizeError) -> str:
    """Which image sizes a vision transformer takes, and how to change its patches instead."""
    patch, side = error.patch, error.side
    fitting = [n for n in range(1, side + 1) if side % n == 0]
    return (
        f"it takes sides that are multiples of {patch}; give it --model_kwargs patch_size=N with "
        f"N dividing {side} ({', '.join(map(str, fitting))}), or, with -d synthetic, an "
        f"--image_size that is a multiple of {patch}"
    )


__all__ = [
    "MODELS",
    "SOURCES",
    "build_for_run",
    "build_model",
    "check_input_size",
    "check_model_name",
    "foreign_state",
    "input_problem",
    "is_external",
]
