"""Pieces shared by the dataset loaders: the splits container, an in-memory uint8 image dataset,
the error raised when a dataset is missing or corrupt, and the checks that turn a corrupt file into
that error at load time rather than a crash once training has started."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from utils.errors import UserError


class DatasetError(UserError):
    """Data a run needs is missing, unreadable or invalid; the message says which and what to do."""


def describe(error: BaseException) -> str:
    """An exception as `Type: message` on one line, to quote inside a DatasetError: main.py prints
    a UserError as a single line, and library messages sometimes span several."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def class_labels(values, num_classes: int, source: Path) -> np.ndarray:
    """`values` as an int64 array of class indices in [0, num_classes), or a DatasetError naming
    `source`, the file they were read from.

    Checked at load because a bad label otherwise passes every step up to the loss, and fails there
    with a device-side assertion that names no file.
    """
    expected = f"expected one integer class index in 0..{num_classes - 1} per image"
    try:
        labels = np.asarray(values)
    except (ValueError, TypeError) as error:  # ragged nested sequences
        raise DatasetError(
            f"{source} has labels that are not a flat list of integers ({describe(error)}); "
            f"{expected}"
        ) from error
    if labels.ndim != 1:
        raise DatasetError(f"{source} has labels of shape {labels.shape}; {expected}")
    # Booleans and floats are refused even when they hold whole numbers: a label file never
    # stores them, so they mean the file is not what it claims to be. (An empty list becomes a
    # float array: the caller decides whether no labels is an error.)
    if labels.dtype.kind not in "iu" and labels.size:
        found = {"U": "text", "S": "bytes", "O": "mixed Python objects"}.get(
            labels.dtype.kind, str(labels.dtype)
        )
        raise DatasetError(f"{source} has labels of type {found}; {expected}")
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise DatasetError(
            f"{source} has labels outside 0..{num_classes - 1} ({int(outside.sum())} of "
            f"{len(labels)}; the first is {labels[first]} at position {first}); {expected}"
        )
    return labels.astype(np.int64, copy=False)


@dataclass
class DataSplits:
    train: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    # Applied to any validation images carved out of `train`: no augmentation.
    eval_transform: Callable
    # Normalisation and training augmentation, stated as data so that the device-resident path
    # (data/device.py) applies exactly what the torchvision transforms above do.
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    crop_padding: int = 0  # RandomCrop(image_size, padding=crop_padding); 0: no crop
    flip: bool = False  # RandomHorizontalFlip(0.5)


class ArrayDataset(Dataset):
    """Images held in memory as a uint8 array of shape (N, H, W, C), served as PIL images through
    a torchvision transform, like torchvision's own CIFAR-10 and MNIST datasets."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images of shape (N, H, W, C), got {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        # PIL wants a 2-D array for single-channel ("L") images.
        image = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


class ToNormalizedTensor:
    """torchvision's ToTensor then Normalize for a uint8 image (PIL or an (H, W[, C]) array), with
    their very operations in their order, so the floats are bit for bit theirs, without importing
    torchvision, which takes seconds: a run on in-memory data without augmentation needs none."""

    def __init__(self, mean, std):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image) -> torch.Tensor:
        pixels = np.asarray(image, dtype=np.uint8)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()
        return tensor.to(dtype=torch.float32).div(255).sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"ToNormalizedTensor(mean={self.mean.flatten().tolist()})"


def normalizing_transform(mean, std, augment: list | None = None):
    """PIL image -> normalised float tensor, after the given PIL-level augmentations."""
    if not augment:
        return ToNormalizedTensor(mean, std)
    from torchvision import transforms  # here, not above: see data/__init__.py

    return transforms.Compose([*augment, transforms.ToTensor(), transforms.Normalize(mean, std)])


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly resize a (N, H, W, C) uint8 array to size x size once, at load time."""
    if images.shape[1:3] == (size, size):
        return images
    resized = []
    for chunk in np.array_split(images, max(1, len(images) // 4096)):
        batch = torch.from_numpy(chunk).permute(0, 3, 1, 2).float()
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False)
        resized.append(batch.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(resized)
