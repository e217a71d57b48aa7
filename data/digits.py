"""scikit-learn's bundled handwritten digits (UCI optdigits test set): 1,797 8x8 images, 10 classes.

Real data that ships with scikit-learn, so runs and tests need no download. Images are scaled from
0..16 to 0..255 and upsampled to 32x32 so the models built for MNIST and CIFAR take them unchanged.
The 1,437 / 360 train / test split is stratified and fixed: it does not depend on `--seed`.

Importing scikit-learn takes seconds, more than a short run on this data trains. So the digits are
read from the CSV file scikit-learn ships (the one its `load_digits` reads), and the split, which
is scikit-learn's `train_test_split`, is computed once per scikit-learn version and its order kept
in the user's cache directory; later runs import no scikit-learn at all, and see the same data.
"""

import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from data.common import ArrayDataset, DatasetError, DataSplits, normalizing_transform, resize_uint8
from utils.errors import StorageError
from utils.io import write_text_atomic

NUM_TEST = 360
SPLIT_SEED = 0
# Statistics of the 32x32 training images, fixed here so that they do not depend on the split code.
MEAN, STD = (0.3054,), (0.3236,)


def raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8x8 images (0..16) and their labels, as scikit-learn's load_digits gives them."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is None or not csv.is_file():  # another layout: let scikit-learn read it
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    table = np.loadtxt(csv, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def split_cache() -> Path:
    version = importlib.metadata.version("scikit-learn")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "flipout" / f"digits-split-sklearn-{version}.json"


def split_order(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The train and test indices, in the order train_test_split gives them."""
    cache = split_cache()
    try:
        saved = json.loads(cache.read_text())
        train, test = np.asarray(saved["train"]), np.asarray(saved["test"])
        if sorted([*train, *test]) == list(range(len(labels))) and len(test) == NUM_TEST:
            return train, test
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(labels)), test_size=NUM_TEST, stratify=labels, random_state=SPLIT_SEED
    )
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache, json.dumps({"train": train.tolist(), "test": test.tolist()}))
    except (OSError, StorageError):  # a read-only home only costs the next run the import
        pass
    return train, test


def load(data_dir: str, download: bool = True) -> DataSplits:
    raw_images, labels = raw_digits()
    if raw_images.shape != (1797, 8, 8):
        raise DatasetError(f"scikit-learn's digits have shape {raw_images.shape}, not (1797, 8, 8)")
    images = np.round(raw_images * (255 / 16)).astype(np.uint8)[..., None]
    images = resize_uint8(images, 32)
    train, test = split_order(labels)
    transform = normalizing_transform(MEAN, STD)
    return DataSplits(
        train=ArrayDataset(images[train], labels[train], transform),
        test=ArrayDataset(images[test], labels[test], transform),
        num_classes=10,
        in_channels=1,
        image_size=32,
        eval_transform=transform,
        mean=MEAN,
        std=STD,
    )
