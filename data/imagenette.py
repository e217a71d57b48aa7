"""Imagenette (Howard, 2019): a 10-class subset of ImageNet, read from image folders.

Used for the paper's DenseNet-121 table. `./get_imagenette.sh` puts the data in
`data/imagenette2/{train,val}`. Images are resized to 224x224; training adds a random crop with 28
pixels of padding and a horizontal flip. Grayscale JPEGs (a few exist) are converted to RGB.
"""

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torchvision import datasets, transforms
from torchvision.datasets.folder import IMG_EXTENSIONS

from data.common import DatasetError, DataSplits, describe, normalizing_transform
from utils.errors import special_file

FOLDER = "imagenette2"
IMAGE_SIZE = 224
MEAN = (0.4625, 0.4580, 0.4295)
STD = (0.3901, 0.3880, 0.4042)
CROP_PADDING = 28


def load_rgb(path: str) -> Image.Image:
    """Open an image as RGB, naming the file when it cannot be read."""
    try:
        with open(path, "rb") as f, Image.open(f) as image:
            return image.convert("RGB")
    # PIL reports damaged data as OSError, DecompressionBombError or, from some decoders,
    # ValueError or SyntaxError: to a user each means this file is broken
    except Exception as error:
        raise DatasetError(f"cannot read image {path}: {describe(error)}") from error


def check_is_image(path: str) -> None:
    """Fail, naming the file, unless it can be opened and PIL recognises it as an image.

    Reads only the header, so that checking the 13,000 files of Imagenette at load takes about a
    second. This catches what an interrupted download or a stray file leaves behind: empty files
    and files of another kind. A file that PIL recognises as an image but whose header or pixel
    data is damaged loads, and `load_rgb` names it if it is read (tests/test_data.py pins that).
    """
    kind = special_file(path)
    if kind:  # opening a FIFO would block until something writes to it
        raise DatasetError(f"{path} is {kind}, not an image file: remove it")
    try:
        with open(path, "rb") as f, Image.open(f):
            pass
    except UnidentifiedImageError as error:
        what = "is empty (0 bytes)" if Path(path).stat().st_size == 0 else "is not an image"
        raise DatasetError(
            f"{path} {what}: PIL recognises no image format in it; expected a JPEG image. "
            "Delete it, or run ./get_imagenette.sh again for a fresh copy."
        ) from error
    except OSError as error:
        if error.filename == path:  # raised by open(), not by PIL: permissions, a broken link
            raise DatasetError(f"cannot read image {path}: {describe(error)}") from error
    except Image.DecompressionBombError:
        pass  # a recognised image too, though a huge one: load_rgb refuses it if it is read


def image_folder(split_dir: Path, transform) -> datasets.ImageFolder:
    """One split's `<class>/<image>` folders, every class holding at least one image file."""
    try:
        has_class_folders = any(entry.is_dir() for entry in os.scandir(split_dir))
    except OSError as error:
        raise DatasetError(f"cannot read {split_dir}: {describe(error)}") from error
    if not has_class_folders:
        raise DatasetError(
            f"{split_dir} holds no class folders; expected one folder per class, named by its "
            f"WordNet id (e.g. {split_dir / 'n01440764'}), holding that class's JPEG images. "
            "Run ./get_imagenette.sh again."
        )
    # allow_empty: an empty class is reported below, naming its folder, which torchvision's own
    # error does not
    folder = datasets.ImageFolder(str(split_dir), transform, loader=load_rgb, allow_empty=True)
    with_images = set(folder.targets)
    empty = [name for index, name in enumerate(folder.classes) if index not in with_images]
    if empty:
        others = f" (nor do {len(empty) - 1} more class folders)" if len(empty) > 1 else ""
        raise DatasetError(
            f"{split_dir / empty[0]} holds no images{others}; expected image files ending in "
            f"{', '.join(IMG_EXTENSIONS)}. Run ./get_imagenette.sh again."
        )
    return folder


def load(data_dir: str, download: bool = True) -> DataSplits:
    root = Path(data_dir).absolute() / FOLDER
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetError(
                f"Imagenette is missing: no folder {root / split}. Run ./get_imagenette.sh "
                f"(it downloads and extracts it into data/{FOLDER}), or pass --data_dir."
            )
    resize = transforms.Resize((IMAGE_SIZE, IMAGE_SIZE))
    eval_transform = normalizing_transform(MEAN, STD, [resize])
    train_transform = normalizing_transform(
        MEAN,
        STD,
        [
            resize,
            transforms.RandomCrop(IMAGE_SIZE, padding=CROP_PADDING),
            transforms.RandomHorizontalFlip(),
        ],
    )
    train = image_folder(root / "train", train_transform)
    test = image_folder(root / "val", eval_transform)
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_val = sorted(set(test.classes) - set(train.classes))
        raise DatasetError(
            f"{root / 'train'} and {root / 'val'} hold different class folders (only in train: "
            f"{', '.join(only_train) or 'none'}; only in val: {', '.join(only_val) or 'none'}); "
            "expected the same classes in both. Run ./get_imagenette.sh again."
        )
    for path, _ in train.samples + test.samples:
        check_is_image(path)
    return DataSplits(
        train=train,
        test=test,
        num_classes=len(train.classes),
        in_channels=3,
        image_size=IMAGE_SIZE,
        eval_transform=eval_transform,
        mean=MEAN,
        std=STD,
        crop_padding=CROP_PADDING,
        flip=True,
    )
