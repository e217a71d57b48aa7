"""Dataset registry: CLI name -> the module whose `load` returns the train and test splits a run
needs. A module is imported when its dataset is built, not with the registry: torchvision and
scikit-learn take seconds to import, which the command line, the sweep launcher and every other
dataset's runs need not pay.

Every loader takes the data directory and returns a `DataSplits`. The paper's datasets (CIFAR-10,
Imagenette, MNIST) are read from their standard on-disk layouts under `--data_dir`; `digits` and
`synthetic` need no download, so the CLI and the tests work offline.
"""

import copy
import importlib
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from data.common import DatasetError, DataSplits
from utils.errors import UserError

DATASETS: dict[str, str] = {
    "cifar10": "data.cifar10",
    "digits": "data.digits",
    "imagenette": "data.imagenette",
    "mnist": "data.mnist",
    "synthetic": "data.synthetic",
}

__all__ = ["DATASETS", "DataSplits", "DatasetError", "build_datasets", "split_validation"]


def build_datasets(
    name: str, data_dir: str, download: bool = True, image_size: int | None = None
) -> DataSplits:
    """Load dataset `name`; `image_size` only applies to datasets without a native size."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(sorted(DATASETS))}")
    root = Path(data_dir)
    if root.exists() and not root.is_dir():
        raise DatasetError(
            f"--data_dir {root.absolute()} is a file, not a directory; expected the folder that "
            "holds (or will receive) the datasets, e.g. ./data"
        )
    kwargs = {"image_size": image_size} if image_size is not None else {}
    return importlib.import_module(DATASETS[name]).load(data_dir, download=download, **kwargs)


def split_validation(splits: DataSplits, val_size: int) -> tuple[Dataset, Dataset]:
    """Hold out `val_size` training images, seen without augmentation, as a validation set.

    The split is fixed (independent of `--seed`) so that runs with different seeds are tuned on
    the same images.
    """
    num_train = len(splits.train)
    if not 0 < val_size < num_train:
        raise UserError(
            f"--val_size must be between 1 and {num_train - 1} (the training set has "
            f"{num_train} images), got {val_size}"
        )
    order = torch.randperm(num_train, generator=torch.Generator().manual_seed(0)).tolist()
    val_source = copy.copy(splits.train)
    val_source.transform = splits.eval_transform
    return Subset(splits.train, order[val_size:]), Subset(val_source, order[:val_size])
