"""CIFAR-10 (Krizhevsky, 2009) from the standard `cifar-10-batches-py` pickles.

Used for the paper's VGG-19 and ResNet-18 tables. Training images get the usual random crop with
4 pixels of padding and a horizontal flip.
"""

import pickle
from pathlib import Path

import numpy as np
from torchvision import transforms

from data.common import ArrayDataset, DatasetError, DataSplits, normalizing_transform
from data.download import fetch

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
CROP_PADDING = 4


def read_batches(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate pickled batches into (N, 32, 32, 3) uint8 images and int64 labels."""
    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch["labels"])
    return np.concatenate(images).transpose(0, 2, 3, 1).copy(), np.asarray(labels, dtype=np.int64)


def train_transform():
    """The torchvision training pipeline: crop with padding, flip, normalise."""
    return normalizing_transform(
        MEAN,
        STD,
        [transforms.RandomCrop(32, padding=CROP_PADDING), transforms.RandomHorizontalFlip()],
    )


def load(data_dir: str, download: bool = True) -> DataSplits:
    root = Path(data_dir)
    folder = root / FOLDER
    missing = [n for n in TRAIN_BATCHES + TEST_BATCHES if not (folder / n).is_file()]
    if missing:
        what = f"CIFAR-10 is missing {', '.join(missing)} in {folder}"
        how = f"Run once while online, or download {URL} and extract it into {root}/."
        if not download:
            raise DatasetError(f"{what}. {how}")
        fetch(URL, root, ARCHIVE_MD5, extract=True, missing=what, how_to_get=how)

    eval_transform = normalizing_transform(MEAN, STD)
    return DataSplits(
        train=ArrayDataset(*read_batches(folder, TRAIN_BATCHES), transform=train_transform()),
        test=ArrayDataset(*read_batches(folder, TEST_BATCHES), transform=eval_transform),
        num_classes=10,
        in_channels=3,
        image_size=32,
        eval_transform=eval_transform,
        mean=MEAN,
        std=STD,
        crop_padding=CROP_PADDING,
        flip=True,
    )
