"""The device-resident input pipeline (data/device.py), checked on the CPU against the torchvision
transforms it stands in for."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from data import build_datasets, split_validation
from data.common import ArrayDataset, normalizing_transform
from data.device import DeviceLoader, device_loaders, in_memory, uint8_images
from tests.support.datasets import cifar_images
from utils.errors import UserError

SIZE, PAD = 32, 4
DRAWS = 4000


def position_image() -> np.ndarray:
    """A (32, 32, 3) uint8 image whose pixels say where they are: channel 0 holds row + 1,
    channel 1 column + 1 (so no pixel is 0, the padding's value), channel 2 a mix of both that
    catches a swapped or transposed channel."""
    row, col = np.mgrid[0:SIZE, 0:SIZE]
    return np.stack([row + 1, col + 1, (row * 7 + col * 3) % 200 + 1], axis=-1).astype(np.uint8)


def crop_and_flip(image: np.ndarray, dy: int, dx: int, flipped: bool) -> np.ndarray:
    """The reference: zero-pad by PAD, crop SIZE x SIZE at (dy, dx), then mirror if flipped."""
    padded = np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)))
    crop = padded[dy : dy + SIZE, dx : dx + SIZE]
    return crop[:, ::-1] if flipped else crop


def recover(output: np.ndarray) -> tuple[int, int, bool]:
    """(dy, dx, flipped) of an augmented position image (HWC uint8). The centre pixels are never
    padding for offsets in 0..2*PAD: the centre reads padded row dy + 16, i.e. image row
    dy + 12, holding dy + 13; columns likewise, mirrored when the column code falls to the right."""
    centre, right = output[16, 16], output[16, 17]
    flipped = bool(right[1] < centre[1])
    dy = int(centre[0]) - 13
    # unflipped, output column 16 reads padded column dx + 16; flipped, dx + 15
    dx = int(centre[1]) - (12 if flipped else 13)
    return dy, dx, flipped


def draws_of(outputs: list[np.ndarray]) -> np.ndarray:
    """Recovered (dy, dx, flipped) per output, each checked to be exactly that crop and flip."""
    image = position_image()
    params = []
    for output in outputs:
        dy, dx, flipped = recover(output)
        assert 0 <= dy <= 2 * PAD and 0 <= dx <= 2 * PAD
        np.testing.assert_array_equal(output, crop_and_flip(image, dy, dx, flipped))
        params.append((dy, dx, flipped))
    return np.array(params)


def device_draws() -> np.ndarray:
    images = torch.from_numpy(position_image()).permute(2, 0, 1).expand(DRAWS, -1, -1, -1)
    # mean 0 and std 1/255 make the normalised inputs the pixel values themselves
    loader = DeviceLoader(
        images.contiguous(),
        torch.zeros(DRAWS, dtype=torch.int64),
        batch_size=512,
        shuffle=True,
        device="cpu",
        mean=(0.0,) * 3,
        std=(1 / 255,) * 3,
        crop_padding=PAD,
        flip=True,
        seed=0,
    )
    inputs = torch.cat([batch for batch, _ in loader])
    pixels = inputs.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return draws_of(list(pixels))


def torchvision_draws() -> np.ndarray:
    augment = transforms.Compose(
        [transforms.RandomCrop(SIZE, padding=PAD), transforms.RandomHorizontalFlip()]
    )
    image = Image.fromarray(position_image())
    torch.manual_seed(0)  # torchvision draws from the global generator
    return draws_of([np.asarray(augment(image)) for _ in range(DRAWS)])


@pytest.mark.parametrize("draws", [device_draws, torchvision_draws], ids=["device", "torchvision"])
def test_augmentation_matches_torchvision_in_distribution(draws):
    params = draws()
    # each offset bin holds DRAWS/9 ~ 444 draws, standard deviation ~20: 25% is over 5 sigma
    expected = DRAWS / (2 * PAD + 1)
    for axis in (0, 1):
        counts = np.bincount(params[:, axis], minlength=2 * PAD + 1)
        assert len(counts) == 2 * PAD + 1 and (counts > 0).all()
        assert np.all(np.abs(counts - expected) < 0.25 * expected), counts
    # flip rate: standard deviation sqrt(0.25 / 4000) ~ 0.008
    assert abs(params[:, 2].mean() - 0.5) < 5 * np.sqrt(0.25 / DRAWS)
    # the draws are independent per image: all 9 * 9 * 2 combinations occur (~25 draws each)
    assert len({tuple(p) for p in params}) == (2 * PAD + 1) ** 2 * 2


def test_unaugmented_inputs_equal_the_torchvision_eval_transform():
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    dataset = ArrayDataset(cifar_images(10, 0), np.arange(10), normalizing_transform(mean, std))
    images, labels = uint8_images(dataset)
    loader = DeviceLoader(images, labels, 4, False, "cpu", mean, std)
    inputs = torch.cat([batch for batch, _ in loader])
    expected = torch.stack([dataset[i][0] for i in range(10)])
    torch.testing.assert_close(inputs, expected)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(inputs, (images.float() / 255 - m) / s)
    assert inputs.dtype == torch.float32


def indexed_loader(count=10, batch_size=4, **kwargs) -> DeviceLoader:
    """A loader whose labels are the image indices and whose images carry them too."""
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 1, 8, 8)
    options = {"shuffle": True, "mean": (0.0,), "std": (1 / 255,), **kwargs}
    return DeviceLoader(
        images.contiguous(), torch.arange(count), batch_size, device="cpu", **options
    )


def epoch(loader: DeviceLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(inputs.clone(), targets.clone()) for inputs, targets in loader]


def assert_same_epochs(first, second):
    assert len(first) == len(second)
    for (inputs_a, targets_a), (inputs_b, targets_b) in zip(first, second, strict=True):
        assert torch.equal(inputs_a, inputs_b) and torch.equal(targets_a, targets_b)


def test_same_seed_same_batches_and_another_seed_others():
    options = {"crop_padding": 2, "flip": True}
    first, second = indexed_loader(**options, seed=3), indexed_loader(**options, seed=3)
    assert_same_epochs(epoch(first), epoch(second))
    assert_same_epochs(epoch(first), epoch(second))
    other = torch.cat([t for _, t in epoch(indexed_loader(**options, seed=4))])
    assert not torch.equal(torch.cat([t for _, t in epoch(first)]), other)


def test_generator_state_replays_an_epoch():
    loader = indexed_loader(crop_padding=2, flip=True, seed=7)
    epoch(loader)
    state = loader.generator.get_state()
    second = epoch(loader)
    resumed = indexed_loader(crop_padding=2, flip=True, seed=123)
    resumed.generator.set_state(state)
    assert_same_epochs(second, epoch(resumed))


def test_an_epoch_cut_short_advances_the_generator_like_a_full_one():
    # main.py's --limit_batches stops iterating early; the next epoch must not depend on that
    full, cut = indexed_loader(seed=1, flip=True), indexed_loader(seed=1, flip=True)
    epoch(full)
    next(iter(cut))
    assert_same_epochs(epoch(full), epoch(cut))


def test_each_image_once_per_epoch_shuffled_with_a_partial_last_batch():
    loader = indexed_loader(count=10, batch_size=4)
    assert len(loader) == 3
    orders = []
    for _ in range(3):
        batches = epoch(loader)
        assert [len(targets) for _, targets in batches] == [4, 4, 2]
        targets = torch.cat([t for _, t in batches])
        assert sorted(targets.tolist()) == list(range(10))
        inputs = torch.cat([i for i, _ in batches])
        # each image travels with its own label
        assert torch.equal(inputs.round().long()[:, 0, 0, 0], targets)
        assert targets.dtype == torch.int64
        orders.append(targets.tolist())
    assert any(order != list(range(10)) for order in orders)
    assert len({tuple(order) for order in orders}) > 1
    assert len(indexed_loader(count=8, batch_size=4)) == 2


def test_unshuffled_loader_keeps_order_and_draws_nothing():
    loader = indexed_loader(count=10, batch_size=3, shuffle=False)
    state = loader.generator.get_state()
    assert torch.cat([t for _, t in epoch(loader)]).tolist() == list(range(10))
    assert torch.equal(loader.generator.get_state(), state)


def test_channels_last_is_honoured():
    images = torch.from_numpy(cifar_images(6, 0)).permute(0, 3, 1, 2).contiguous()
    labels = torch.arange(6)
    options = {"mean": (0.5,) * 3, "std": (0.25,) * 3, "crop_padding": 4, "flip": True}
    plain = DeviceLoader(images, labels, 4, True, "cpu", **options)
    last = DeviceLoader(
        images, labels, 4, True, "cpu", **options, memory_format=torch.channels_last
    )
    for (a, _), (b, _) in zip(plain, last, strict=True):
        assert a.is_contiguous() and b.is_contiguous(memory_format=torch.channels_last)
        assert not b.is_contiguous()
        assert torch.equal(a, b)


def test_uint8_images_of_an_array_dataset():
    pixels = cifar_images(5, 3)
    images, labels = uint8_images(ArrayDataset(pixels, np.arange(5) % 3))
    assert images.dtype == torch.uint8 and images.shape == (5, 3, 32, 32)
    assert np.array_equal(images.permute(0, 2, 3, 1).numpy(), pixels)
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 1, 2, 0, 1]


def test_uint8_images_of_synthetic_data_and_its_validation_subset():
    splits = build_datasets("synthetic", "unused")
    assert in_memory(splits.train) and in_memory(split_validation(splits, 50)[1])
    images, labels = uint8_images(splits.test)
    assert images.shape == (len(splits.test), 3, 32, 32) and images.dtype == torch.uint8
    for i in (0, 1, 511):
        assert torch.equal(images[i], splits.test.image(i))
        assert labels[i] == splits.test.label(i)

    train, val = split_validation(splits, 50)
    val_images, val_labels = uint8_images(val)
    assert len(val_images) == 50
    for row in (0, 49):
        index = val.indices[row]
        assert torch.equal(val_images[row], splits.train.image(index))
        assert val_labels[row] == splits.train.label(index)
    assert len(uint8_images(train)[0]) == len(splits.train) - 50


def test_uint8_images_of_a_validation_split_matches_its_eval_transform(cifar_dir):
    splits = build_datasets("cifar10", str(cifar_dir), download=False)
    val = split_validation(splits, 5)[1]
    loader = DeviceLoader(*uint8_images(val), 2, False, "cpu", splits.mean, splits.std)
    inputs = torch.cat([batch for batch, _ in loader])
    targets = torch.cat([t for _, t in loader])
    expected = [val[i] for i in range(len(val))]
    torch.testing.assert_close(inputs, torch.stack([x for x, _ in expected]))
    assert targets.tolist() == [y for _, y in expected]


def test_uint8_images_refuses_image_files(imagenette_dir):
    splits = build_datasets("imagenette", str(imagenette_dir), download=False)
    assert not in_memory(splits.train) and not in_memory(split_validation(splits, 2)[0])
    with pytest.raises(UserError, match=r"imagenette is read from image files.*no-data_on"):
        uint8_images(splits.train)
    with pytest.raises(UserError, match="--no-data_on_device"):
        uint8_images(split_validation(splits, 2)[1])
    with pytest.raises(UserError, match="list"):
        uint8_images([(torch.zeros(3, 8, 8), 0)])


def test_device_loaders_for_a_run_with_validation(cifar_dir):
    splits = build_datasets("cifar10", str(cifar_dir), download=False)
    train_set, val_set = split_validation(splits, 4)
    train, evals = device_loaders(
        splits, train_set, {"test": splits.test, "val": val_set}, 5, 3, "cpu", seed=0
    )
    assert (train.shuffle, train.crop_padding, train.flip) == (True, 4, True)
    assert len(train) == 4 and sorted(evals) == ["test", "val"]
    targets = torch.cat([t for _, t in train])
    assert sorted(targets.tolist()) == sorted(train_set[i][1] for i in range(len(train_set)))
    for name, dataset in (("test", splits.test), ("val", val_set)):
        loader = evals[name]
        assert not (loader.shuffle or loader.augments) and len(loader) == -(-len(dataset) // 3)
        inputs = torch.cat([batch for batch, _ in loader])
        torch.testing.assert_close(
            inputs, torch.stack([dataset[i][0] for i in range(len(dataset))])
        )


def test_device_loaders_without_augmentation_and_in_channels_last():
    splits = build_datasets("digits", "unused")
    train, evals = device_loaders(
        splits, splits.train, {"test": splits.test}, 64, 100, "cpu", 0, torch.channels_last
    )
    assert not train.augments and len(train) == -(-len(splits.train) // 64)
    inputs, targets = next(iter(evals["test"]))
    assert inputs.shape == (100, 1, 32, 32)
    assert inputs.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(inputs[:3], torch.stack([splits.test[i][0] for i in range(3)]))
    assert targets[:3].tolist() == [splits.test[i][1] for i in range(3)]


def test_invalid_arguments_are_refused():
    images, labels = torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.arange(4)
    with pytest.raises(ValueError, match="one value per channel"):
        DeviceLoader(images, labels, 2, True, "cpu", (), ())
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(images.float(), labels, 2, True, "cpu", (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(images, labels, 0, True, "cpu", (0.5,) * 3, (0.5,) * 3)
