"""Tiny datasets written in each dataset's real on-disk format (CIFAR-10's pickled batches, MNIST's
IDX files, Imagenette's class folders of JPEGs), so that the real loading code runs on them. The
fixtures of tests/conftest.py call the writers; tests compare what loads with `cifar_images` and
`IMAGENETTE_CLASSES`, and damage the files starting from `idx_bytes`."""

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

IMAGENETTE_CLASSES = ["n01440764", "n02102040", "n02979186"]


def cifar_images(count: int, offset: int) -> np.ndarray:
    """(count, 32, 32, 3) uint8 images whose pixels encode index, row, column and channel."""
    index = np.arange(count)[:, None, None, None] + offset
    row = np.arange(32)[None, :, None, None]
    col = np.arange(32)[None, None, :, None]
    channel = np.arange(3)[None, None, None, :]
    return ((index * 7 + row * 3 + col + channel * 50) % 256).astype(np.uint8)


def write_cifar(data_dir: Path) -> None:
    """data_dir/cifar-10-batches-py with 5 train batches of 4 images and a test batch of 6,
    pickled as in the official archive: a dict with a (N, 3072) channel-major `data` array."""
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for number, name in enumerate(names):
        count = 6 if name == "test_batch" else 4
        images = cifar_images(count, offset=number * 10)
        batch = {
            "batch_label": f"{name} of 6",
            "labels": [(number + i) % 10 for i in range(count)],
            "data": images.transpose(0, 3, 1, 2).reshape(count, 3072),
            "filenames": [f"img_{number}_{i}.png" for i in range(count)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """`array` as an IDX file: magic (0, 0, type code, dimensions), big-endian sizes, data."""
    header = bytes([0, 0, type_code, array.ndim])
    return header + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """`array` as uint8 IDX at `path`, or gzipped at `path`.gz."""
    payload = idx_bytes(array.astype(np.uint8))
    if compress:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(data_dir: Path) -> None:
    """data_dir/MNIST/raw with IDX files (train gzipped, test plain, as both occur)."""
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count, compress in (("train", 20, True), ("t10k", 8, False)):
        write_idx(
            raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)), compress
        )
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10, compress)


def write_imagenette(data_dir: Path) -> None:
    """data_dir/imagenette2/{train,val}/<wnid>/*.JPEG, small JPEGs of varied sizes, one of them
    grayscale as in the real dataset."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("val", 2)):
        for label, wnid in enumerate(IMAGENETTE_CLASSES):
            folder = data_dir / "imagenette2" / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                size = (40 + 8 * i, 30 + 4 * label)
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    gray = rng.integers(0, 256, (33, 47), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(
        data_dir / "imagenette2" / "train" / IMAGENETTE_CLASSES[0] / "gray.JPEG"
    )
