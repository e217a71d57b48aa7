"""MNIST (LeCun et al., 1998) from its IDX files, in torchvision's layout `MNIST/raw/`.

Images are resized once from 28x28 to 32x32 so that every model built for 32x32 inputs (LeNet-5,
the CIFAR-style networks) takes them unchanged. No augmentation.
"""

import gzip
from pathlib import Path

import numpy as np

from data.common import (
    ArrayDataset,
    DatasetError,
    DataSplits,
    normalizing_transform,
    resize_uint8,
)
from data.download import fetch

MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FILES = {  # name -> md5 of its .gz
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
MEAN, STD = (0.1307,), (0.3081,)


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzipped or not) into an array of its shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\x00\x00\x08":
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DatasetError(f"{path} is truncated: expected {shape}, found {data.size} bytes")
    return data.reshape(shape).copy()  # frombuffer's view is read-only


def find(raw_dir: Path, name: str) -> Path | None:
    for candidate in (raw_dir / name, raw_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load(data_dir: str, download: bool = True) -> DataSplits:
    raw_dir = Path(data_dir) / "MNIST" / "raw"
    for name, md5 in FILES.items():
        if find(raw_dir, name) is None:
            what = f"MNIST file {name}(.gz) is missing in {raw_dir}"
            how = f"Run once while online, or download it from {MIRROR} into {raw_dir}/."
            if not download:
                raise DatasetError(f"{what}. {how}")
            fetch(f"{MIRROR}{name}.gz", raw_dir, md5, extract=True, missing=what, how_to_get=how)

    def split(prefix: str) -> ArrayDataset:
        images = read_idx(find(raw_dir, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(find(raw_dir, f"{prefix}-labels-idx1-ubyte"))
        return ArrayDataset(resize_uint8(images[..., None], 32), labels, transform)

    transform = normalizing_transform(MEAN, STD)
    return DataSplits(
        train=split("train"),
        test=split("t10k"),
        num_classes=10,
        in_channels=1,
        image_size=32,
        eval_transform=transform,
        mean=MEAN,
        std=STD,
    )
