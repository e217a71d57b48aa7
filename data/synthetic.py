"""Synthetic images with a learnable class signal, for smoke runs that need no data at all.

Each class has a fixed smooth colour pattern; an image is its class pattern plus per-pixel Gaussian
noise, quantised to uint8. Everything is a function of the image index, so the data is identical on
every machine and run, and images are made on demand (a 224x224 set costs no memory).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from data.common import DataSplits
from utils.errors import UserError

NUM_CLASSES = 10
NUM_TRAIN, NUM_TEST = 2048, 512
SIGNAL, NOISE = 40.0, 60.0  # pixel units: a clear but not trivial signal
PATTERN_SEED, TRAIN_SEED, TEST_SEED = 1234, 1, 2
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def class_patterns(image_size: int, channels: int = 3) -> torch.Tensor:
    """One smooth pattern per class: 4x4 random values upsampled, so it survives any image size."""
    coarse = torch.randn(
        NUM_CLASSES, channels, 4, 4, generator=torch.Generator().manual_seed(PATTERN_SEED)
    )
    return F.interpolate(coarse, size=(image_size, image_size), mode="bilinear")


class SyntheticImages(Dataset):
    def __init__(self, size: int, image_size: int, seed: int, transform=None):
        self.size = size
        self.seed = seed
        self.patterns = class_patterns(image_size)
        self.transform = transform

    def __len__(self) -> int:
        return self.size

    def label(self, index: int) -> int:
        return index % NUM_CLASSES

    def image(self, index: int) -> torch.Tensor:
        """The uint8 (C, H, W) image at `index`, the same on every call."""
        generator = torch.Generator().manual_seed(self.seed * 10_000_019 + index)
        pattern = self.patterns[self.label(index)]
        noise = torch.randn(pattern.shape, generator=generator)
        return (128 + SIGNAL * pattern + NOISE * noise).round().clamp(0, 255).to(torch.uint8)

    def materialise(
        self, indices: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (N, C, H, W) uint8 images and (N,) int64 labels at `indices` (all by default),
        exactly as `image` and `label` give them, stacked to be held on a device in one piece.

        A loop, not one batched draw: each image's noise comes from its own index-seeded
        generator, which is what keeps an image the same however the set is read.
        """
        indices = range(self.size) if indices is None else indices
        images = torch.empty(len(indices), *self.patterns.shape[1:], dtype=torch.uint8)
        for row, index in enumerate(indices):
            images[row] = self.image(index)
        labels = torch.tensor([self.label(index) for index in indices], dtype=torch.int64)
        return images, labels

    def __getitem__(self, index: int):
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.label(index)


def load(data_dir: str, download: bool = True, image_size: int = 32) -> DataSplits:
    if image_size < 8:
        raise UserError(f"--image_size must be at least 8, got {image_size}")
    from torchvision import transforms  # here, not above: see data/__init__.py

    transform = transforms.Compose(
        [transforms.ConvertImageDtype(torch.float32), transforms.Normalize(MEAN, STD)]
    )
    return DataSplits(
        train=SyntheticImages(NUM_TRAIN, image_size, TRAIN_SEED, transform),
        test=SyntheticImages(NUM_TEST, image_size, TEST_SEED, transform),
        num_classes=NUM_CLASSES,
        in_channels=3,
        image_size=image_size,
        eval_transform=transform,
        mean=MEAN,
        std=STD,
    )
