"""Networks of other libraries by name: `-m timm:NAME` builds any model of timm (Wightman,
PyTorch Image Models), `-m torchvision:NAME` any classification model of torchvision.

SOURCES maps the prefix to the library's adapter. An adapter builds a network for the run's
classes, channels and image size, with `model_kwargs` for its constructor (`--model_kwargs`)
and optionally the library's published weights (`--pretrained`); it lists the library's names
(`python -m models list`); and it fits a state dict the library saved (a published checkpoint
for 1,000 ImageNet classes, say) to a network of other classes or channels (`--init_from`), as
the library itself would. The libraries are imported only when one of their models is asked
for: timm takes seconds to import.

What the libraries print of their own while a network is built ends in the one line of the
command: their loggers are quiet, a warning about a future release's defaults is not shown, and
the published weights are downloaded only once their host is known to answer (an offline machine
is told so at once, not after the hub's minute of retries), torch's "Downloading" line shown only
once the download succeeded.
"""

import contextlib
import difflib
import io
import logging
import math
import socket
import sys
import urllib.request
import warnings
from pathlib import Path
from typing import ClassVar, Protocol
from urllib.parse import urlparse

import torch
from torch import nn

from utils.errors import UserError

TIMM_PIN = "timm==1.0.31"
# how many close matches the error about an unknown name suggests
CLOSE_MATCHES = 5
# how much of a library's error a one-line message quotes
REASON_CHARS = 160
# How long the check that a download's host answers waits. An offline machine fails it at once
# (no name resolves); without it the Hugging Face hub retries for about a minute, printing each.
REACH_SECONDS = 5
# the loggers of the libraries that print lines of their own while a network is built (timm's
# "No checkpoint found", the hub's retries): what they say, the one error line says
LIBRARY_LOGGERS = ("timm", "huggingface_hub")
# the hub's errors for a file that is not in the local cache, when it may not look online
NOT_CACHED = ("LocalEntryNotFoundError", "OfflineModeIsEnabled")


class PatchSizeError(ValueError):
    """A vision transformer whose patches do not tile the images."""

    def __init__(self, patch: int, side: int):
        self.patch, self.side = patch, side
        super().__init__(f"its patch size {patch} does not divide the image side {side}")


def check_patches(model: nn.Module, side: int) -> None:
    """Raise PatchSizeError when the patches of `model` (a vision transformer: torchvision's
    keep their size in `patch_size`, timm's in `patch_embed.patch_size`) do not tile side x side
    images; timm's would silently drop the pixels beyond the last whole patch."""
    for owner in (model, getattr(model, "patch_embed", None)):
        patch = getattr(owner, "patch_size", None)
        for size in patch if isinstance(patch, tuple | list) else (patch,):
            if isinstance(size, int) and size > 0 and side % size:
                raise PatchSizeError(size, side)


def names_in(value: str | tuple | list | None) -> list[str]:
    """A timm pretrained_cfg entry that names one module or several, as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The network's first convolution (its stem or patch embedding) by name, or None."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    return None


class Source(Protocol):
    """What a library of models gives: its names, its networks, and its conventions for the
    state dicts it saves."""

    # constructor arguments that the run sets itself -> where their values come from
    reserved: dict[str, str]

    def names(self, pattern: str = "*") -> list[str]: ...

    def knows(self, arch: str) -> bool: ...

    def build(
        self, arch: str, num_classes: int, in_channels: int, image_size: int, kwargs: dict,
        pretrained: bool,
    ) -> nn.Module: ...  # fmt: skip

    def fit_state(self, model: nn.Module, arch: str, state: dict) -> dict:
        """`state` with the library's own conversions for `model` (renamed keys, resampled
        position embeddings, a first convolution for other channels)."""
        ...

    def classifier(self, model: nn.Module, num_classes: int) -> list[str]:
        """The names of the modules that make the network's class scores."""
        ...


class Timm:
    """timm: every name of `timm.list_models()`, also with a pretrained tag (NAME.TAG)."""

    reserved: ClassVar[dict[str, str]] = {
        "num_classes": "the dataset's classes",
        "in_chans": "the dataset's channels",
        "img_size": "the dataset's image size",
        "pretrained": "--pretrained",
        # weights to start from are read, checked and fitted by --init_from; a spec (which
        # exports rebuild their network from) would also read the file again each time
        "checkpoint_path": "--init_from FILE",
    }

    @staticmethod
    def library():
        try:
            import timm
        except ImportError:
            raise UserError(
                f"-m timm:NAME needs timm, which is not installed: pip install {TIMM_PIN}"
            ) from None
        return timm

    def names(self, pattern: str = "*") -> list[str]:
        return self.library().list_models(pattern)

    def knows(self, arch: str) -> bool:
        return self.library().is_model(arch)

    def build(self, arch, num_classes, in_channels, image_size, kwargs, pretrained):
        timm = self.library()
        if pretrained and not self.has_weights(arch):
            raise UserError(f"--pretrained: timm publishes no weights for {arch}")
        offline = self.offline(arch) if pretrained else None
        kwargs = {"pretrained": pretrained, "num_classes": num_classes, "in_chans": in_channels,
                  **kwargs}  # fmt: skip
        with quiet_loggers(LIBRARY_LOGGERS), hub_offline(offline is not None):
            try:
                model = self.create(timm, arch, image_size, kwargs)
            except Exception as error:
                if offline is not None and caused_by(error, NOT_CACHED):
                    raise UserError(out_of_reach(f"timm:{arch}", offline)) from None
                raise
        check_patches(model, image_size)
        return model

    @staticmethod
    def create(timm, arch: str, image_size: int, kwargs: dict) -> nn.Module:
        try:
            return timm.create_model(arch, img_size=image_size, **kwargs)
        except TypeError as error:
            if "img_size" not in str(error):
                raise
            # a network without a fixed image size: convolutions and global pooling
            return timm.create_model(arch, **kwargs)

    def offline(self, arch: str) -> str | None:
        """Why the published weights of `arch` cannot be downloaded now (the hub cannot be
        reached), or None. Checked once, before timm asks the hub, which would retry for a
        minute; offline, the hub is asked for its local cache only. Weights timm names by a URL
        are refused here at once when they are not in torch's cache either."""
        cfg = self.library().models.get_pretrained_cfg(arch)
        if cfg.hf_hub_id:
            from huggingface_hub import constants

            if constants.HF_HUB_OFFLINE:
                return "HF_HUB_OFFLINE is set"
            return None if reachable(constants.ENDPOINT) else unreachable(constants.ENDPOINT)
        if cfg.url and not cached_download(cfg.url) and not reachable(cfg.url):
            raise UserError(out_of_reach(f"timm:{arch}", unreachable(cfg.url)))
        return None

    def has_weights(self, arch: str) -> bool:
        cfg = self.library().models.get_pretrained_cfg(arch)
        return cfg is not None and any((cfg.url, cfg.hf_hub_id, cfg.file, cfg.state_dict))

    def fit_state(self, model, arch, state):
        timm = self.library()
        # the conversions of the module that defines the model's entry point, as
        # timm.create_model(pretrained=True) applies them
        entry = timm.models.model_entrypoint(timm.models.get_arch_name(arch))
        convert = getattr(sys.modules[entry.__module__], "checkpoint_filter_fn", None)
        if convert is not None:
            state = convert(state, model)
        own = model.state_dict()
        for conv in names_in(getattr(model, "pretrained_cfg", {}).get("first_conv")):
            key = f"{conv}.weight"
            if key in state and key in own and state[key].shape[1] != own[key].shape[1]:
                state[key] = timm.models.adapt_input_conv(own[key].shape[1], state[key])
        return state

    def classifier(self, model, num_classes):
        return names_in(getattr(model, "pretrained_cfg", {}).get("classifier"))


# torchvision's ViT builders fix the shape inside; `model_kwargs` may change any of it
VIT_SHAPES = {
    "vit_b_16": {"patch_size": 16, "num_layers": 12, "num_heads": 12, "hidden_dim": 768,
                 "mlp_dim": 3072},
    "vit_b_32": {"patch_size": 32, "num_layers": 12, "num_heads": 12, "hidden_dim": 768,
                 "mlp_dim": 3072},
    "vit_l_16": {"patch_size": 16, "num_layers": 24, "num_heads": 16, "hidden_dim": 1024,
                 "mlp_dim": 4096},
    "vit_l_32": {"patch_size": 32, "num_layers": 24, "num_heads": 16, "hidden_dim": 1024,
                 "mlp_dim": 4096},
    "vit_h_14": {"patch_size": 14, "num_layers": 32, "num_heads": 16, "hidden_dim": 1280,
                 "mlp_dim": 5120},
}  # fmt: skip


class Torchvision:
    """torchvision: every classification model of `torchvision.models.list_models`. Its networks
    take three channels; for others the first convolution is replaced by one of the right
    channels, at PyTorch's default initialisation."""

    reserved: ClassVar[dict[str, str]] = {
        "num_classes": "the dataset's classes",
        "image_size": "the dataset's image size",
        "weights": "--pretrained",
    }

    @staticmethod
    def library():
        import torchvision.models

        return torchvision.models

    def names(self, pattern: str = "*") -> list[str]:
        models = self.library()
        return models.list_models(module=models, include=pattern)

    def knows(self, arch: str) -> bool:
        return arch in self.names()

    def build(self, arch, num_classes, in_channels, image_size, kwargs, pretrained):
        with warnings.catch_warnings():
            # googlenet and inception_v3 warn that a future torchvision initialises them
            # otherwise; this one initialises them as it always has
            warnings.filterwarnings(
                "ignore", "The default weight initialization of", category=FutureWarning
            )
            model = self.network(arch, num_classes, in_channels, image_size, kwargs)
        if pretrained:
            state, _ = fitted(self, model, arch, self.published_state(arch), num_classes)
            model.load_state_dict(state)
        return model

    def network(self, arch, num_classes, in_channels, image_size, kwargs):
        models = self.library()
        if arch in VIT_SHAPES:
            shape = {**VIT_SHAPES[arch], **kwargs}
            patch = shape["patch_size"]
            # checked before the builder, which asserts it without saying what to change
            if isinstance(patch, int) and patch > 0 and image_size % patch:
                raise PatchSizeError(patch, image_size)
            model = models.VisionTransformer(image_size=image_size, num_classes=num_classes,
                                             **shape)  # fmt: skip
        else:
            model = models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
        if in_channels != 3:
            self.take_channels(model, arch, in_channels)
        return model

    @staticmethod
    def take_channels(model: nn.Module, arch: str, in_channels: int) -> None:
        found = first_conv(model)
        if found is None or found[1].in_channels != 3 or found[1].groups != 1:
            raise UserError(
                f"-m torchvision:{arch} takes 3-channel images, and its first convolution, which "
                f"would take {in_channels}, was not found; use a dataset of 3-channel images"
            )
        name, conv = found
        parent, _, attribute = name.rpartition(".")
        replacement = nn.Conv2d(
            in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode,
        )  # fmt: skip
        setattr(model.get_submodule(parent), attribute, replacement)

    def published_state(self, arch: str) -> dict:
        """torchvision's weights of `arch`, from torch's cache or downloaded. Offline, and not
        in the cache, a UserError at once; torch's "Downloading" line is shown only once the
        weights are had, as a failure's one line says what happened."""
        weights = self.library().get_model_weights(arch).DEFAULT
        if not cached_download(weights.url) and not reachable(weights.url):
            raise UserError(out_of_reach(f"torchvision:{arch}", unreachable(weights.url)))
        said = io.StringIO()
        with contextlib.redirect_stderr(said):
            state = weights.get_state_dict(progress=False, check_hash=True)
        sys.stderr.write(said.getvalue())
        return state

    def fit_state(self, model, arch, state):
        found = first_conv(model)
        if found is not None:
            key, channels = f"{found[0]}.weight", found[1].in_channels
            weight = state.get(key)
            if torch.is_tensor(weight) and weight.dim() == 4 and weight.shape[1] != channels:
                state[key] = input_conv_adapted(weight, channels)
        return state

    def classifier(self, model, num_classes):
        # the last layer that makes num_classes outputs: fc, classifier.6, heads.head, ...
        heads = [
            name
            for name, module in model.named_modules()
            if (isinstance(module, nn.Linear) and module.out_features == num_classes)
            or (isinstance(module, nn.Conv2d) and module.out_channels == num_classes)
        ]
        return heads[-1:]


def input_conv_adapted(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first convolution's RGB weights for `in_channels` channels, as timm's adapt_input_conv
    makes them: summed for one channel, else repeated and scaled to keep the output's size."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def reachable(url: str) -> bool:
    """Whether the host of `url` (or the proxy that reaches it) accepts a connection within
    REACH_SECONDS."""
    parts = urlparse(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=REACH_SECONDS):
            return True
    except (OSError, ValueError):  # no such name, refused, timed out; a malformed address
        return False


def unreachable(url: str) -> str:
    return f"{urlparse(url).hostname} cannot be reached (offline?)"


def out_of_reach(name: str, why: str) -> str:
    return (
        f"--pretrained: the weights of {name} could not be downloaded: {why}, and they are not "
        "in the local cache; download the file where the hub is reachable and give it with "
        "--init_from FILE instead"
    )


def cached_download(url: str) -> bool:
    """Whether torch.hub has the file of `url` in its cache (where it would download it)."""
    return (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name).is_file()


def caused_by(error: BaseException, names: tuple[str, ...]) -> bool:
    """Whether `error`, or an exception it was raised from or while handling, is of a type
    called one of `names` (a library's own, which it need not be imported to recognise)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if type(error).__name__ in names:
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def quiet_loggers(names: tuple[str, ...]):
    """The libraries' loggers (and their children) silent inside the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def hub_offline(offline: bool):
    """Inside the block, with `offline`, the Hugging Face hub reads its local cache only."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


SOURCES: dict[str, Source] = {"timm": Timm(), "torchvision": Torchvision()}


def source_of(name: str) -> tuple[Source, str] | None:
    """The library and the library's own name of `-m name`; None for a name without a known
    prefix (a built-in, or a mistake)."""
    prefix, colon, arch = name.partition(":")
    return (SOURCES[prefix], arch) if colon and prefix in SOURCES else None


def is_external(name: str) -> bool:
    """Whether `-m name` names a model of timm or torchvision."""
    return source_of(name) is not None


def check_name(name: str) -> None:
    """Raise ValueError, with close matches, when the library of `name` has no such model."""
    source, arch = source_of(name)
    if not source.knows(arch):
        prefix = name.partition(":")[0]
        close = difflib.get_close_matches(arch, source.names(), CLOSE_MATCHES)
        suggestion = (
            f"; close matches: {', '.join(f'{prefix}:{c}' for c in close)}" if close else ""
        )
        raise ValueError(
            f"{prefix} has no model {arch!r}{suggestion} (python -m models list '{prefix}:GLOB' "
            "lists them)"
        )


def build_external(
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    model_kwargs: dict | None = None,
    pretrained: bool = False,
) -> nn.Module:
    """The network `name` (timm:NAME or torchvision:NAME) for these classes, channels and image
    size, with `model_kwargs` for its constructor; with `pretrained`, the library's published
    weights, or a UserError that says they could not be had and how to give them instead."""
    check_name(name)
    source, arch = source_of(name)
    kwargs = dict(model_kwargs or {})
    taken = sorted(kwargs.keys() & source.reserved.keys())
    if taken:
        raise ValueError(
            f"model_kwargs cannot set {taken[0]}: it comes from {source.reserved[taken[0]]}"
        )
    if not pretrained:
        return source.build(arch, num_classes, in_channels, image_size, kwargs, False)
    try:
        return source.build(arch, num_classes, in_channels, image_size, kwargs, True)
    except UserError:
        raise
    except Exception as error:  # no network, a hub refusing, a damaged download, another shape
        raise UserError(
            f"--pretrained: the weights of {name} could not be downloaded or loaded "
            f"({short_reason(error)}); download the file where the hub is reachable and give "
            "it with --init_from FILE instead"
        ) from error


def short_reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if len(text) > REASON_CHARS:
        text = text[: REASON_CHARS - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def fitted(
    source: Source, model: nn.Module, arch: str, state: dict, num_classes: int
) -> tuple[dict, list[str]]:
    """`state` with the library's conversions for `model`, and with the model's own tensors for
    those of its classifier that are for another number of classes; and their names."""
    state = source.fit_state(model, arch, dict(state))
    own = model.state_dict()
    heads = tuple(f"{head}." for head in source.classifier(model, num_classes))
    fresh = [
        key
        for key in own
        if heads and key.startswith(heads) and key in state and state[key].shape != own[key].shape
    ]
    state.update({key: own[key] for key in fresh})
    return state, fresh


def foreign_state(model: nn.Module, spec: dict, state: dict) -> tuple[dict, list[str]]:
    """`state`, a state dict that timm or torchvision saved, fitted to `model`, the network of
    `spec`, as the library would fit its published weights: its own conversions (timm's
    checkpoint_filter_fn renames keys and resamples position embeddings to the model's grid),
    the first convolution adapted to the model's channels, and a classifier for another number
    of classes left at initialisation. Returns the state and the names of the tensors left at
    initialisation; any other difference is left for the strict load to report. Raises
    ValueError when the library's conversion fails."""
    source, arch = source_of(spec["name"])
    try:
        return fitted(source, model, arch, state, spec["num_classes"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError,
            NotImplementedError, AssertionError) as error:  # fmt: skip
        raise ValueError(f"the {spec['name']} conversion failed: {short_reason(error)}") from error
