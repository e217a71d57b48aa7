"""The dataset loaders, run on small files written in each dataset's real on-disk format."""

import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from data import DATASETS, build_datasets, split_validation
from data import cifar10 as cifar10_module
from data.common import DatasetError
from tests.support import ROOT
from tests.support.datasets import IMAGENETTE_CLASSES, cifar_images


def test_registry_names():
    # the five among others: docs/library.md's recipe adds one
    assert {"cifar10", "digits", "imagenette", "mnist", "synthetic"} <= set(DATASETS)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'") as error:
        build_datasets("svhn", "data")
    assert ", ".join(sorted(DATASETS)) in str(error.value)


# -- CIFAR-10 ----------------------------------------------------------------------------------


def test_cifar10_reads_batches_in_pixel_order(cifar_dir):
    splits = build_datasets("cifar10", str(cifar_dir), download=False)
    assert (len(splits.train), len(splits.test)) == (20, 6)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 3, 32)
    # The pickles are channel-major rows; decoding must give back the HWC images written.
    np.testing.assert_array_equal(splits.train.images[:4], cifar_images(4, offset=0))
    np.testing.assert_array_equal(splits.train.images[16:], cifar_images(4, offset=40))
    np.testing.assert_array_equal(splits.test.images, cifar_images(6, offset=50))
    assert splits.train.labels[:4].tolist() == [0, 1, 2, 3]
    assert splits.test.labels.tolist() == [5, 6, 7, 8, 9, 0]


def test_cifar10_normalisation_and_augmentation(cifar_dir):
    splits = build_datasets("cifar10", str(cifar_dir), download=False)
    image, label = splits.test[2]
    expected = torch.from_numpy(cifar_images(6, offset=50)[2]).permute(2, 0, 1).float() / 255
    mean = torch.tensor(cifar10_module.MEAN)[:, None, None]
    std = torch.tensor(cifar10_module.STD)[:, None, None]
    torch.testing.assert_close(image, (expected - mean) / std)
    assert label == 7
    # Training images are randomly cropped (padding 4) and flipped: same shape, varying content.
    torch.manual_seed(0)
    views = torch.stack([splits.train[0][0] for _ in range(20)])
    assert views.shape == (20, 3, 32, 32)
    assert len({v.sum().item() for v in views}) > 1


def test_cifar10_missing_without_download_is_clear(tmp_path):
    with pytest.raises(DatasetError) as error:
        build_datasets("cifar10", str(tmp_path), download=False)
    message = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert cifar10_module.URL in message


def test_cifar10_failed_download_is_clear(tmp_path, monkeypatch):
    import data.download

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(data.download, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError, match=r"downloading \S*cifar-10-python\.tar\.gz failed"):
        build_datasets("cifar10", str(tmp_path), download=True)


# -- MNIST -------------------------------------------------------------------------------------


def test_mnist_reads_idx_files_and_resizes_to_32(mnist_dir):
    splits = build_datasets("mnist", str(mnist_dir), download=False)
    assert (len(splits.train), len(splits.test)) == (20, 8)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 1, 32)
    image, label = splits.train[3]
    assert image.shape == (1, 32, 32) and label == 3
    assert splits.test.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    # Normalised with MNIST's statistics: pixel 0 maps to -0.1307 / 0.3081.
    assert image.min() >= -0.1307 / 0.3081 - 1e-6


def test_mnist_truncated_file_is_reported(mnist_dir):
    path = mnist_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte is truncated"):
        build_datasets("mnist", str(mnist_dir), download=False)


def test_mnist_missing_names_the_file(tmp_path):
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        build_datasets("mnist", str(tmp_path), download=False)


# -- Imagenette --------------------------------------------------------------------------------


def test_imagenette_folders_grayscale_becomes_rgb(imagenette_dir):
    splits = build_datasets("imagenette", str(imagenette_dir))
    assert (len(splits.train), len(splits.test)) == (10, 6)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (3, 3, 224)
    assert splits.train.classes == IMAGENETTE_CLASSES
    gray_index = [Path(p).name for p, _ in splits.train.samples].index("gray.JPEG")
    image, label = splits.train[gray_index]
    assert image.shape == (3, 224, 224) and label == 0
    image, _ = splits.test[5]
    assert image.shape == (3, 224, 224)


def test_imagenette_corrupt_image_names_the_file(imagenette_dir):
    bad = imagenette_dir / "imagenette2" / "val" / IMAGENETTE_CLASSES[1] / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    splits = build_datasets("imagenette", str(imagenette_dir))
    index = [Path(p).name for p, _ in splits.test.samples].index("broken.JPEG")
    with pytest.raises(DatasetError, match=r"broken\.JPEG"):
        splits.test[index]


def test_imagenette_missing_points_to_the_script(tmp_path):
    with pytest.raises(DatasetError, match=r"\./get_imagenette\.sh"):
        build_datasets("imagenette", str(tmp_path))


# -- digits and synthetic ----------------------------------------------------------------------


def test_digits_fixed_stratified_split():
    torch.manual_seed(123)
    np.random.seed(123)
    first = build_datasets("digits", "unused")
    torch.manual_seed(7)
    np.random.seed(7)
    second = build_datasets("digits", "unused")
    assert (len(first.train), len(first.test)) == (1437, 360)
    assert (first.num_classes, first.in_channels, first.image_size) == (10, 1, 32)
    np.testing.assert_array_equal(first.test.images, second.test.images)
    np.testing.assert_array_equal(first.train.labels, second.train.labels)
    # Stratified: every class keeps its share of the 360 test images (35 to 37 of each).
    counts = np.bincount(first.test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    image, _ = first.train[0]
    assert image.shape == (1, 32, 32)


def test_synthetic_is_deterministic_and_resizable():
    first = build_datasets("synthetic", "unused")
    second = build_datasets("synthetic", "unused")
    assert (first.num_classes, first.in_channels, first.image_size) == (10, 3, 32)
    torch.testing.assert_close(first.train[17][0], second.train[17][0])
    assert first.train[17][1] == 7
    assert not torch.equal(first.train[17][0], first.test[17][0])
    big = build_datasets("synthetic", "unused", image_size=224)
    assert big.image_size == 224 and big.train[0][0].shape == (3, 224, 224)


def test_synthetic_has_a_learnable_class_signal():
    splits = build_datasets("synthetic", "unused")
    images = torch.stack([splits.train[i][0] for i in range(400)]).flatten(1)
    labels = torch.tensor([splits.train[i][1] for i in range(400)])
    centroids = torch.stack([images[labels == c].mean(0) for c in range(10)])
    test_images = torch.stack([splits.test[i][0] for i in range(200)]).flatten(1)
    test_labels = torch.tensor([splits.test[i][1] for i in range(200)])
    predicted = torch.cdist(test_images, centroids).argmin(1)
    assert (predicted == test_labels).float().mean() > 0.5  # chance is 0.1


# -- validation split --------------------------------------------------------------------------


def test_validation_split_is_fixed_disjoint_and_unaugmented(cifar_dir):
    splits = build_datasets("cifar10", str(cifar_dir), download=False)
    train, val = split_validation(splits, 5)
    assert (len(train), len(val)) == (15, 5)
    assert not set(train.indices) & set(val.indices)
    assert split_validation(splits, 5)[1].indices == val.indices
    # validation images see the evaluation transform: the same tensor every time
    torch.testing.assert_close(val[0][0], val[0][0])
    assert val.dataset.transform is splits.eval_transform
    assert train.dataset.transform is not splits.eval_transform


def test_validation_split_must_leave_training_data(cifar_dir):
    splits = build_datasets("cifar10", str(cifar_dir), download=False)
    with pytest.raises(Exception, match="--val_size must be between 1 and 19"):
        split_validation(splits, 20)


# -- get_imagenette.sh -------------------------------------------------------------------------


def make_archive(path: Path, source: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source / "imagenette2", arcname="imagenette2")


def run_script(data_dir: Path, url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "get_imagenette.sh")],
        env={"PATH": "/usr/bin:/bin", "DATA_DIR": str(data_dir), "IMAGENETTE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_get_imagenette_downloads_verifies_extracts(imagenette_dir, tmp_path):
    archive = tmp_path / "served.tgz"
    make_archive(archive, imagenette_dir)
    data_dir = tmp_path / "fresh"
    result = run_script(data_dir, archive.as_uri())
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (data_dir / "imagenette2" / "train").iterdir()) == (
        IMAGENETTE_CLASSES
    )
    assert not (data_dir / "imagenette2.tgz").exists()
    assert len(build_datasets("imagenette", str(data_dir)).test) == 6
    again = run_script(data_dir, archive.as_uri())
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_get_imagenette_rejects_a_truncated_archive(imagenette_dir, tmp_path):
    archive = tmp_path / "served.tgz"
    make_archive(archive, imagenette_dir)
    truncated = tmp_path / "truncated.tgz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    data_dir = tmp_path / "fresh"
    result = run_script(data_dir, truncated.as_uri())
    assert result.returncode != 0
    assert "truncated or corrupt" in result.stderr
    assert not (data_dir / "imagenette2").exists()
    assert not (data_dir / "imagenette2.tgz").exists()
