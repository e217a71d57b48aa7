"""MNIST (LeCun et al., 1998) from its IDX files, in torchvision's layout `MNIST/raw/`.

Images are resized once from 28x28 to 32x32 so that every model built for 32x32 inputs (LeNet-5,
the CIFAR-style networks) takes them unchanged. No augmentation.
"""

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from data.common import (
    ArrayDataset,
    DatasetError,
    DataSplits,
    class_labels,
    describe,
    normalizing_transform,
    resize_uint8,
)
from data.download import fetch
from utils.errors import special_file

MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FILES = {  # name -> md5 of its .gz
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
MEAN, STD = (0.1307,), (0.3081,)
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one MNIST uses
GZIP_MAGIC = b"\x1f\x8b"


def damaged(path: Path, problem: str) -> DatasetError:
    return DatasetError(
        f"{path} {problem}. Delete it and run again online to download a fresh copy from {MIRROR}."
    )


def file_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is a .gz."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise damaged(path, f"cannot be read ({describe(error)})") from error
    if not raw:
        raise damaged(path, "is empty (0 bytes)")
    if path.suffix != ".gz":
        return raw
    if raw[:2] != GZIP_MAGIC:
        raise damaged(path, f"is named .gz but is not gzip data: it starts with {raw[:4].hex(' ')}")
    try:
        return gzip.decompress(raw)
    # zlib.error: corrupt deflate data; EOFError: a cut-off stream; BadGzipFile (an OSError): a
    # bad header or checksum
    except (OSError, EOFError, zlib.error) as error:
        raise damaged(path, f"is a corrupt gzip file ({describe(error)})") from error


def read_idx(path: Path, dims: tuple[str, ...]) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzipped or not) whose dimensions are named by `dims`
    into an array of that shape."""
    raw = file_bytes(path)
    if not raw:
        raise damaged(path, "holds no data once decompressed")
    ndim = len(dims)
    expected = (
        f"expected an IDX file of unsigned bytes with {ndim} dimension(s) ({', '.join(dims)}), "
        f"which starts with {bytes([0, 0, IDX_UBYTE, ndim]).hex(' ')}"
    )
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise damaged(path, f"is not an IDX file: it starts with {raw[:4].hex(' ')}; {expected}")
    if raw[2] != IDX_UBYTE:
        raise damaged(path, f"holds IDX type code 0x{raw[2]:02x}, not unsigned bytes; {expected}")
    if raw[3] != ndim:
        raise damaged(path, f"has {raw[3]} dimension(s); {expected}")
    data_start = 4 + 4 * ndim
    if len(raw) < data_start:
        raise damaged(path, f"is truncated inside its header ({len(raw)} bytes); {expected}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if shape[0] == 0:
        raise damaged(path, f"holds no {dims[0]}")
    # math.prod on Python ints: a damaged header can claim sizes whose product overflows int64
    size, found = math.prod(shape), len(raw) - data_start
    if found < size:
        raise damaged(
            path, f"is truncated: its header declares shape {shape}, {size} bytes, found {found}"
        )
    if found > size:
        raise damaged(path, f"has {found - size} bytes beyond the {size} its header declares")
    return np.frombuffer(raw, dtype=np.uint8, offset=data_start).reshape(shape).copy()


def find(raw_dir: Path, name: str) -> Path | None:
    """The file `name` or `name`.gz in raw_dir, or None. A FIFO or a device there is refused:
    reading it would block or never end, and a download would write into it."""
    for candidate in (raw_dir / name, raw_dir / f"{name}.gz"):
        kind = special_file(candidate)
        if kind:
            raise damaged(candidate, f"is {kind}, not a file")
        if candidate.is_file():
            return candidate
    return None


def load(data_dir: str, download: bool = True) -> DataSplits:
    raw_dir = Path(data_dir).absolute() / "MNIST" / "raw"
    for name, md5 in FILES.items():
        if find(raw_dir, name) is None:
            what = f"MNIST file {name}(.gz) is missing in {raw_dir}"
            how = f"Run once while online, or download it from {MIRROR} into {raw_dir}/."
            if not download:
                raise DatasetError(f"{what}. {how}")
            fetch(f"{MIRROR}{name}.gz", raw_dir, md5, extract=True, missing=what, how_to_get=how)

    def split(prefix: str) -> ArrayDataset:
        images_path = find(raw_dir, f"{prefix}-images-idx3-ubyte")
        labels_path = find(raw_dir, f"{prefix}-labels-idx1-ubyte")
        images = read_idx(images_path, ("images", "rows", "columns"))
        if images.shape[1:] != IMAGE_SHAPE:
            size = "x".join(map(str, images.shape[1:]))
            raise damaged(images_path, f"holds {size} images; expected 28x28")
        labels = class_labels(read_idx(labels_path, ("labels",)), NUM_CLASSES, labels_path)
        if len(images) != len(labels):
            raise DatasetError(
                f"{labels_path} has {len(labels)} labels but {images_path} has {len(images)} "
                "images; expected one label per image. Delete both and run again online to "
                f"download fresh copies from {MIRROR}."
            )
        return ArrayDataset(resize_uint8(images[..., None], 32), labels, transform)

    transform = normalizing_transform(MEAN, STD)
    return DataSplits(
        train=split("train"),
        test=split("t10k"),
        num_classes=NUM_CLASSES,
        in_channels=1,
        image_size=32,
        eval_transform=transform,
        mean=MEAN,
        std=STD,
    )
