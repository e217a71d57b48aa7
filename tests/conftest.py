"""Fixtures that write tiny datasets in the real on-disk formats, so the real loading code runs."""

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def cifar_images(count: int, offset: int) -> np.ndarray:
    """(count, 32, 32, 3) uint8 images whose pixels encode index, row, column and channel."""
    index = np.arange(count)[:, None, None, None] + offset
    row = np.arange(32)[None, :, None, None]
    col = np.arange(32)[None, None, :, None]
    channel = np.arange(3)[None, None, None, :]
    return ((index * 7 + row * 3 + col + channel * 50) % 256).astype(np.uint8)


@pytest.fixture
def cifar_dir(tmp_path):
    """data_dir holding cifar-10-batches-py with 5 train batches of 4 images and a test batch of
    6, pickled as in the official archive: a dict with a (N, 3072) channel-major `data` array."""
    folder = tmp_path / "cifar-10-batches-py"
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
    return tmp_path


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


@pytest.fixture
def mnist_dir(tmp_path):
    """data_dir/MNIST/raw with IDX files (train gzipped, test plain, as both occur)."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count, compress in (("train", 20, True), ("t10k", 8, False)):
        write_idx(
            raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)), compress
        )
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10, compress)
    return tmp_path


IMAGENETTE_CLASSES = ["n01440764", "n02102040", "n02979186"]


@pytest.fixture
def imagenette_dir(tmp_path):
    """data_dir/imagenette2/{train,val}/<wnid>/*.JPEG, small JPEGs of varied sizes, one of them
    grayscale as in the real dataset."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("val", 2)):
        for label, wnid in enumerate(IMAGENETTE_CLASSES):
            folder = tmp_path / "imagenette2" / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                size = (40 + 8 * i, 30 + 4 * label)
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    gray = rng.integers(0, 256, (33, 47), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(
        tmp_path / "imagenette2" / "train" / IMAGENETTE_CLASSES[0] / "gray.JPEG"
    )
    return tmp_path


@pytest.fixture(scope="session")
def pruned_run(tmp_path_factory) -> Path:
    """LeNet-300-100 on digits pruned 7 times by half: 99.2% sparse. Read only: a test that
    changes its files works on a copy."""
    import main

    logdir = tmp_path_factory.mktemp("runs")
    argv = ["-e", "8", "--prune_freq", "1", "--num_workers", "0", "--quiet"]
    assert main.main([*argv, "--logdir", str(logdir)]) == 0
    (run,) = logdir.iterdir()
    return run
