"""Corrupt dataset files are refused at load time with one DatasetError that names the file, which
main.py prints as a single `error:` line before any run directory exists.

Each table below starts from a valid fixture of tests/conftest.py and damages one file in one known
way. The generated cases then truncate and flip bytes of valid files at seeded positions: every
variant must either load into valid data (the damage was harmless) or be refused the same way.
"""

import gzip
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import main
from data import build_datasets
from data.cifar10 import FOLDER as CIFAR_FOLDER
from data.common import ArrayDataset, DatasetError
from tests.support.datasets import IMAGENETTE_CLASSES, idx_bytes

CIFAR_BATCH = f"{CIFAR_FOLDER}/data_batch_3"  # a middle batch: 4 images, labels 2..5
MNIST_RAW = "MNIST/raw"
DROP = object()  # a key to remove from a batch


def refusal(name: str, data_dir: Path) -> str:
    """The message of the DatasetError that loading `data_dir` must raise, checked to be one
    line."""
    with pytest.raises(DatasetError) as error:
        build_datasets(name, str(data_dir), download=False)
    message = str(error.value)
    assert "\n" not in message
    return message


def assert_cli_refuses(name: str, data_dir: Path, path: Path, logdir: Path, capsys) -> None:
    """main.py exits 2 with one `error:` line naming `path`, and creates no run directory."""
    capsys.readouterr()
    argv = ["-d", name, "--data_dir", str(data_dir), "--no_download", "--num_workers", "0"]
    # --prune_criterion none: -e 1 with a pruning schedule would add a warning line to stderr
    argv += ["--quiet", "-e", "1", "--prune_criterion", "none", "--logdir", str(logdir)]
    assert main.main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    (line,) = err.splitlines()
    assert line.startswith("error: ") and str(path) in line
    assert not logdir.exists()


def assert_refused(name: str, data_dir: Path, path: Path, problem: str, tmp_path, capsys) -> None:
    message = refusal(name, data_dir)
    assert str(path) in message and problem in message, message
    assert_cli_refuses(name, data_dir, path, tmp_path / "runs", capsys)


# -- CIFAR-10 ----------------------------------------------------------------------------------


def read_batch(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def write_pickle(path: Path, value) -> None:
    path.write_bytes(pickle.dumps(value, protocol=2))


def edit_batch(**changes) -> Callable[[Path], None]:
    """A corruption that rewrites the batch with the given keys replaced, or removed (DROP)."""

    def corrupt(path: Path) -> None:
        batch = read_batch(path)
        for key, value in changes.items():
            if value is DROP:
                del batch[key]
            else:
                batch[key] = value
        write_pickle(path, batch)

    return corrupt


def four_rows(value, dtype) -> np.ndarray:
    return np.full((4, 3072), value, dtype=dtype)


CIFAR_CASES = {
    "empty": (lambda path: path.write_bytes(b""), "empty (0 bytes)"),
    "truncated": (
        lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
        "cannot be unpickled",
    ),
    "not a pickle": (
        lambda path: path.write_bytes(b"PK\x03\x04 a zip archive, not a pickle"),
        "cannot be unpickled",
    ),
    "a list": (lambda path: write_pickle(path, [1, 2, 3]), "holds a list"),
    "no data": (edit_batch(data=DROP), "no 'data'"),
    "no labels": (edit_batch(labels=DROP), "no 'labels'"),
    "rows of 3000": (edit_batch(data=np.zeros((4, 3000), np.uint8)), "shape (4, 3000)"),
    "flat data": (edit_batch(data=np.zeros(4 * 3072, np.uint8)), "shape (12288,)"),
    "images as HWC": (edit_batch(data=np.zeros((4, 32, 32, 3), np.uint8)), "(4, 32, 32, 3)"),
    "fewer labels": (edit_batch(labels=[0, 1, 2]), "4 images but 3 labels"),
    "more labels": (edit_batch(labels=[0, 1, 2, 3, 4]), "4 images but 5 labels"),
    "label 10": (edit_batch(labels=[0, 10, 2, 3]), "the first is 10 at position 1"),
    "label -1": (edit_batch(labels=[0, 1, 2, -1]), "the first is -1 at position 3"),
    "float labels": (edit_batch(labels=[0.0, 1.5, 2.0, 3.0]), "labels of type float64"),
    "text labels": (edit_batch(labels=["cat", "dog", "cat", "ship"]), "labels of type text"),
    "nested labels": (edit_batch(labels=[[0, 1], [2], [3], [4]]), "not a flat list"),
    "float data": (edit_batch(data=four_rows(0.5, np.float32)), "float32 values"),
    "data above 255": (edit_batch(data=four_rows(256, np.int16)), "from 256 to 256"),
    "negative data": (edit_batch(data=four_rows(-1, np.int64)), "from -1 to -1"),
    "no images": (
        edit_batch(data=np.zeros((0, 3072), np.uint8), labels=[]),
        "holds no images",
    ),
}


@pytest.mark.parametrize("case", CIFAR_CASES)
def test_corrupt_cifar_batch(case, cifar_dir, tmp_path, capsys):
    corrupt, problem = CIFAR_CASES[case]
    path = cifar_dir / CIFAR_BATCH
    corrupt(path)
    assert_refused("cifar10", cifar_dir, path, problem, tmp_path, capsys)


class OpensAFile:
    """Unpickles as a call to open(): stands for any pickle that runs code when it is loaded."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return open, (str(self.target), "w")


def test_cifar_pickle_that_runs_code_is_refused_unrun(cifar_dir):
    path = cifar_dir / CIFAR_BATCH
    marker = cifar_dir / "created_by_unpickling"
    batch = read_batch(path)
    batch["labels"] = OpensAFile(marker)
    write_pickle(path, batch)
    message = refusal("cifar10", cifar_dir)
    assert str(path) in message and "refers to" in message
    assert not marker.exists()


# -- MNIST -------------------------------------------------------------------------------------


def images(count: int, size: int = 28) -> np.ndarray:
    return np.random.default_rng(count).integers(0, 256, (count, size, size), dtype=np.uint8)


def labels(count: int) -> np.ndarray:
    return (np.arange(count) % 10).astype(np.uint8)


def store(payload: bytes) -> Callable[[Path], None]:
    """A corruption that replaces the file with `payload`, gzipped if the file is a .gz."""

    def corrupt(path: Path) -> None:
        path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)

    return corrupt


def cut_gzip(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


def scramble_gzip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[40:48] = bytes(8)  # inside the deflate stream, past the 10-byte gzip header
    path.write_bytes(bytes(raw))


# The fixture's train files are gzipped (20 images), its t10k files plain (8 images).
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"

MNIST_CASES = {
    "empty": (TEST_IMAGES, lambda path: path.write_bytes(b""), "empty (0 bytes)"),
    "empty gz": (TRAIN_LABELS, lambda path: path.write_bytes(b""), "empty (0 bytes)"),
    "gz of nothing": (TRAIN_LABELS, store(b""), "holds no data once decompressed"),
    "bad magic": (TEST_IMAGES, store(b"GIF89a" + bytes(100)), "is not an IDX file"),
    "float type code": (
        TEST_LABELS,
        store(idx_bytes(labels(8).astype(">f4"), type_code=0x0D)),
        "type code 0x0d",
    ),
    "images 2-D": (TRAIN_IMAGES, store(idx_bytes(images(20).reshape(20, 784))), "2 dimension"),
    "labels 2-D": (TEST_LABELS, store(idx_bytes(labels(8)[:, None])), "2 dimension"),
    "truncated data": (TEST_IMAGES, store(idx_bytes(images(8))[:-100]), "is truncated"),
    "truncated header": (TEST_LABELS, store(idx_bytes(labels(8))[:6]), "inside its header"),
    "extra bytes": (TEST_LABELS, store(idx_bytes(labels(8)) + b"\x00"), "1 bytes beyond"),
    "gz cut short": (TRAIN_IMAGES, cut_gzip, "corrupt gzip"),
    "gz scrambled": (TRAIN_IMAGES, scramble_gzip, "corrupt gzip"),
    "gz name, plain data": (
        TRAIN_LABELS,
        lambda path: path.write_bytes(idx_bytes(labels(20))),
        "is not gzip data",
    ),
    "fewer labels": (TRAIN_LABELS, store(idx_bytes(labels(19))), "19 labels but"),
    "more images": (TEST_IMAGES, store(idx_bytes(images(9))), "has 8 labels but"),
    "label 10": (TEST_LABELS, store(idx_bytes(labels(8) + 3)), "(1 of 8; the first is 10 at"),
    "label 255": (TRAIN_LABELS, store(idx_bytes(labels(20) - 1)), "the first is 255 at position 0"),
    "32x32 images": (TEST_IMAGES, store(idx_bytes(images(8, size=32))), "holds 32x32 images"),
    "no images": (TEST_IMAGES, store(idx_bytes(images(0))), "holds no images"),
}


@pytest.mark.parametrize("case", MNIST_CASES)
def test_corrupt_mnist_file(case, mnist_dir, tmp_path, capsys):
    name, corrupt, problem = MNIST_CASES[case]
    path = mnist_dir / MNIST_RAW / name
    corrupt(path)
    assert_refused("mnist", mnist_dir, path, problem, tmp_path, capsys)


# -- Imagenette --------------------------------------------------------------------------------


def no_class_folders(split: Path) -> Path:
    for wnid in IMAGENETTE_CLASSES:
        shutil.rmtree(split / wnid)
    return split


def no_images(split: Path) -> Path:
    folder = split / IMAGENETTE_CLASSES[1]
    for image in folder.iterdir():
        image.unlink()
    (folder / "README.txt").write_text("not an image: ignored, so the class is empty\n")
    return folder


def renamed_class(split: Path) -> Path:
    (split / IMAGENETTE_CLASSES[2]).rename(split / "n09999999")
    return split


def zero_byte_image(split: Path) -> Path:
    path = split / IMAGENETTE_CLASSES[0] / "empty.JPEG"
    path.write_bytes(b"")
    return path


def text_as_image(split: Path) -> Path:
    path = split / IMAGENETTE_CLASSES[2] / "page.jpg"
    path.write_text("<html>404 Not Found</html>\n")
    return path


IMAGENETTE_CASES = {
    "split without class folders": ("val", no_class_folders, "holds no class folders"),
    "class without images": ("train", no_images, "holds no images"),
    "different classes in val": ("val", renamed_class, "only in val: n09999999"),
    "zero-byte image": ("train", zero_byte_image, "is empty (0 bytes)"),
    "text named .jpg": ("val", text_as_image, "is not an image"),
}


@pytest.mark.parametrize("case", IMAGENETTE_CASES)
def test_corrupt_imagenette_folder(case, imagenette_dir, tmp_path, capsys):
    split, corrupt, problem = IMAGENETTE_CASES[case]
    path = corrupt(imagenette_dir / "imagenette2" / split)
    assert_refused("imagenette", imagenette_dir, path, problem, tmp_path, capsys)


# -- --data_dir --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "mnist", "imagenette"])
def test_data_dir_that_is_a_file(name, tmp_path, capsys):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(b"\x1f\x8b an archive, not its extracted folder")
    assert_refused(name, path, path, "is a file, not a directory", tmp_path, capsys)


# -- generated corruptions ---------------------------------------------------------------------


def damaged_variants(data: bytes, seed: int, header: int) -> list[bytes]:
    """`data` truncated at several lengths, and with single bytes flipped, half of them within
    the first `header` bytes where a format keeps its structure."""
    rng = np.random.default_rng(seed)
    lengths = {0, 1, len(data) // 2, len(data) - 1, *rng.integers(2, len(data) - 1, 4).tolist()}
    variants = [data[:length] for length in sorted(lengths)]
    positions = [*rng.integers(0, header, 5).tolist(), *rng.integers(0, len(data), 5).tolist()]
    for position in positions:
        flipped = bytearray(data)
        flipped[position] ^= int(rng.integers(1, 256))
        variants.append(bytes(flipped))
    return variants


def load_or_refuse(name: str, data_dir: Path, path: Path):
    """The splits when the damaged `path` still loads, None when it is refused, naming it."""
    try:
        return build_datasets(name, str(data_dir), download=False)
    except DatasetError as error:
        assert str(path) in str(error) and "\n" not in str(error)
        return None


def assert_valid_arrays(splits) -> None:
    for dataset in (splits.train, splits.test):
        assert isinstance(dataset, ArrayDataset) and dataset.images.dtype == np.uint8
        assert len(dataset.images) == len(dataset.labels) > 0
        assert dataset.labels.min() >= 0 and dataset.labels.max() < splits.num_classes


@pytest.mark.parametrize(
    ("name", "fixture", "relative_path", "header"),
    [
        # a batch pickle keeps its keys and labels before the pixels
        ("cifar10", "cifar_dir", CIFAR_BATCH, 200),
        ("mnist", "mnist_dir", f"{MNIST_RAW}/{TRAIN_IMAGES}", 40),
        ("mnist", "mnist_dir", f"{MNIST_RAW}/{TEST_LABELS}", 8),
    ],
)
def test_damaged_array_files_load_or_are_refused(name, fixture, relative_path, header, request):
    data_dir = request.getfixturevalue(fixture)
    path = data_dir / relative_path
    outcomes = []
    for variant in damaged_variants(path.read_bytes(), seed=len(relative_path), header=header):
        path.write_bytes(variant)
        splits = load_or_refuse(name, data_dir, path)
        if splits is not None:
            assert_valid_arrays(splits)
        outcomes.append(splits is not None)
    assert not all(outcomes)  # the variants do damage: some are refused


def test_damaged_jpeg_loads_or_is_refused(imagenette_dir):
    wnid = IMAGENETTE_CLASSES[1]
    path = imagenette_dir / "imagenette2" / "val" / wnid / f"{wnid}_0.JPEG"
    for variant in damaged_variants(path.read_bytes(), seed=3, header=200):
        path.write_bytes(variant)
        splits = load_or_refuse("imagenette", imagenette_dir, path)
        if splits is None:
            continue
        index = [Path(p) for p, _ in splits.test.samples].index(path)
        # a header PIL recognises may still hide damaged pixels: those are refused when read
        try:
            image, _ = splits.test[index]
        except DatasetError as error:
            assert str(path) in str(error)
        else:
            assert image.shape == (3, 224, 224)
