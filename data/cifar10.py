"""CIFAR-10 (Krizhevsky, 2009) from the standard `cifar-10-batches-py` pickles.

Used for the paper's VGG-19 and ResNet-18 tables. Training images get the usual random crop with
4 pixels of padding and a horizontal flip.
"""

import pickle
from pathlib import Path

import numpy as np
from torchvision import transforms

from data.common import (
    ArrayDataset,
    DatasetError,
    DataSplits,
    class_labels,
    describe,
    normalizing_transform,
)
from data.download import fetch

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
CROP_PADDING = 4
NUM_CLASSES = 10
PIXELS_PER_IMAGE = 3 * 32 * 32


# Everything a batch pickle may refer to: numpy's array and dtype constructors (under numpy 1 and 2
# module names), and what Python 3 writes for bytes in protocol 2 (the official files are Python 2
# pickles; re-saved copies may be Python 3 ones). Refusing every other global keeps a file planted
# in the data directory from running code when it is unpickled.
PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    *((module, name) for module in ("__builtin__", "builtins") for name in ("bytes", "bytearray")),
    *(
        (f"{package}.{module}", name)
        for package in ("numpy.core", "numpy._core")
        for module, name in (
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            ("numeric", "_frombuffer"),
        )
    ),
}


class BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which no batch does")
        return super().find_class(module, name)


def damaged(path: Path, what: str) -> DatasetError:
    return DatasetError(
        f"{path} is not a valid CIFAR-10 batch: {what}. Delete {path.parent} and run again online "
        f"to download a fresh copy, or extract {URL} into {path.parent.parent}/ again."
    )


def unpickle(path: Path):
    if path.stat().st_size == 0:
        raise damaged(path, "the file is empty (0 bytes)")
    try:
        with open(path, "rb") as f:
            return BatchUnpickler(f, encoding="latin1").load()
    # A damaged pickle fails in many ways (a bad opcode, a short read, a huge length that cannot
    # be allocated, a constructor given wrong arguments): all mean the file is corrupt.
    except Exception as error:
        raise damaged(path, f"it cannot be unpickled ({describe(error)})") from error


def pixel_rows(data, path: Path) -> np.ndarray:
    """A batch's `data` as (N, 3072) uint8 rows, refusing anything that is not pixels already:
    wrapping floats or large integers to uint8 would train on noise without a word."""
    expected = "expected a (N, 3072) uint8 array, one image per row (red, green, blue planes)"
    try:
        rows = np.asarray(data)
    except (ValueError, TypeError) as error:
        raise damaged(path, f"'data' is not an array ({describe(error)}); {expected}") from error
    if rows.ndim != 2 or rows.shape[1] != PIXELS_PER_IMAGE:
        raise damaged(path, f"'data' has shape {rows.shape}; {expected}")
    if rows.dtype == np.uint8:
        return rows
    if rows.dtype.kind not in "iu":
        raise damaged(path, f"'data' holds {rows.dtype} values; {expected}")
    low, high = (int(rows.min()), int(rows.max())) if rows.size else (0, 0)
    if low < 0 or high > 255:
        raise damaged(path, f"'data' holds values from {low} to {high}; {expected} (0..255)")
    return rows.astype(np.uint8)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (N, 3, 32, 32) uint8 images and int64 labels, each checked."""
    batch = unpickle(path)
    if not isinstance(batch, dict):
        raise damaged(
            path, f"it holds a {type(batch).__name__}; expected a dict with 'data' and 'labels'"
        )
    absent = [key for key in ("data", "labels") if key not in batch]
    if absent:
        keys = ", ".join(repr(key) for key in list(batch)[:8]) or "nothing"
        raise damaged(path, f"it has no {' or '.join(map(repr, absent))} (it holds {keys})")
    rows = pixel_rows(batch["data"], path)
    labels = class_labels(batch["labels"], NUM_CLASSES, path)
    if len(labels) != len(rows):
        raise damaged(
            path, f"it has {len(rows)} images but {len(labels)} labels; expected one each"
        )
    if not len(rows):
        raise damaged(path, "it holds no images")
    return rows.reshape(-1, 3, 32, 32), labels


def read_batches(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate pickled batches into (N, 32, 32, 3) uint8 images and int64 labels."""
    batches = [read_batch(folder / name) for name in names]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return images.transpose(0, 2, 3, 1).copy(), labels


def train_transform():
    """The torchvision training pipeline: crop with padding, flip, normalise."""
    return normalizing_transform(
        MEAN,
        STD,
        [transforms.RandomCrop(32, padding=CROP_PADDING), transforms.RandomHorizontalFlip()],
    )


def load(data_dir: str, download: bool = True) -> DataSplits:
    root = Path(data_dir).absolute()
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
        num_classes=NUM_CLASSES,
        in_channels=3,
        image_size=32,
        eval_transform=eval_transform,
        mean=MEAN,
        std=STD,
        crop_padding=CROP_PADDING,
        flip=True,
    )
