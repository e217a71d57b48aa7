"""Model zoo for the FlipOut experiments (Apostol, Stol & Forré, 2020).

Maps command-line names to factories sharing one signature, so training and pruning code can
build any network from (num_classes, in_channels, image_size). Every prunable layer is a plain
nn.Conv2d or nn.Linear, which lets pruning code find them by type and key masks by parameter
name.
"""

from collections.abc import Callable

import torch
from torch import nn

from utils.errors import UserError

from .densenet import densenet121
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
    name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32
) -> nn.Module:
    """Instantiate the registered model called ``name``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size)


def input_problem(model: nn.Module, in_channels: int, side: int) -> str | None:
    """Why `model` cannot take side x side images (too small for its pooling, say), or None. A
    batch of no images checks every layer's shapes without arithmetic."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(0, in_channels, side, side))
    except (RuntimeError, ValueError) as error:
        return " ".join(str(error).split()) or type(error).__name__
    finally:
        model.train(was_training)
    return None


def check_input_size(spec: dict) -> None:
    """Raise UserError when the network of `spec` cannot take its images. The network is built on
    the meta device and given uninitialised memory, so no random number is drawn and the real
    network's initial weights are unaffected."""
    side = spec.get("image_size", 32)
    with torch.device("meta"):
        model = build_model(**spec)
    problem = input_problem(model.to_empty(device="cpu"), spec.get("in_channels", 3), side)
    if problem:
        raise UserError(f"-m {spec['name']} cannot take {side}x{side} images: {problem}")


__all__ = ["MODELS", "build_model", "check_input_size", "input_problem"]
