"""Input pipeline throughput on CIFAR-10-shaped data: torchvision's DataLoader with PIL
transforms (crop with padding 4, flip, normalise) against the device-resident path."""

import numpy as np
import torch
from torch.utils.data import DataLoader

from bench.timing import interleaved
from data import cifar10
from data.common import ArrayDataset
from data.device import DeviceLoader
from utils.runtime import default_num_workers, pin_memory

IMAGES = 10_000
BATCH = 128


def run(device: torch.device, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (IMAGES, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, IMAGES)
    workers = default_num_workers()
    torchvision_loader = DataLoader(
        ArrayDataset(images, labels, cifar10.train_transform()),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        pin_memory=pin_memory(device),
        persistent_workers=workers > 0,
    )
    device_loader = DeviceLoader(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(labels),
        BATCH,
        True,
        device,
        cifar10.MEAN,
        cifar10.STD,
        crop_padding=cifar10.CROP_PADDING,
        flip=True,
    )

    def epoch(loader):
        def consume():
            for inputs, targets in loader:
                inputs.to(device, non_blocking=True)
                targets.to(device, non_blocking=True)

        return consume

    times = interleaved(
        {"torchvision": epoch(torchvision_loader), "device": epoch(device_loader)},
        device,
        repeats,
    )
    return {
        "images_per_second": {name: IMAGES / seconds for name, seconds in times.items()},
        "workers": workers,
    }
