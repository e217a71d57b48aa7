"""Imagenette (Howard, 2019): a 10-class subset of ImageNet, read from image folders.

Used for the paper's DenseNet-121 table. `./get_imagenette.sh` puts the data in
`data/imagenette2/{train,val}`. Images are resized to 224x224; training adds a random crop with 28
pixels of padding and a horizontal flip. Grayscale JPEGs (a few exist) are converted to RGB.
"""

from pathlib import Path

from PIL import Image
from torchvision import datasets, transforms

from data.common import DatasetError, DataSplits, normalizing_transform

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
    except OSError as error:
        raise DatasetError(f"cannot read image {path}: {error}") from error


def load(data_dir: str, download: bool = True) -> DataSplits:
    root = Path(data_dir) / FOLDER
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
    try:
        train = datasets.ImageFolder(str(root / "train"), train_transform, loader=load_rgb)
        test = datasets.ImageFolder(str(root / "val"), eval_transform, loader=load_rgb)
    except FileNotFoundError as error:  # a split folder with no class folders or no images
        raise DatasetError(f"Imagenette in {root} is incomplete: {error}") from error
    if train.classes != test.classes:
        raise DatasetError(f"train and val folders of {root} hold different classes")
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
