"""scikit-learn's bundled handwritten digits (UCI optdigits test set): 1,797 8x8 images, 10 classes.

Real data that ships with scikit-learn, so runs and tests need no download. Images are scaled from
0..16 to 0..255 and upsampled to 32x32 so the models built for MNIST and CIFAR take them unchanged.
The 1,437 / 360 train / test split is stratified and fixed: it does not depend on `--seed`.
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from data.common import ArrayDataset, DataSplits, normalizing_transform, resize_uint8

NUM_TEST = 360
SPLIT_SEED = 0
# Statistics of the 32x32 training images, fixed here so that they do not depend on the split code.
MEAN, STD = (0.3054,), (0.3236,)


def load(data_dir: str, download: bool = True) -> DataSplits:
    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[..., None]
    images = resize_uint8(images, 32)
    train_x, test_x, train_y, test_y = train_test_split(
        images, bunch.target, test_size=NUM_TEST, stratify=bunch.target, random_state=SPLIT_SEED
    )
    transform = normalizing_transform(MEAN, STD)
    return DataSplits(
        train=ArrayDataset(train_x, train_y, transform),
        test=ArrayDataset(test_x, test_y, transform),
        num_classes=10,
        in_channels=1,
        image_size=32,
        eval_transform=transform,
        mean=MEAN,
        std=STD,
    )
