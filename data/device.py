"""A device-resident input pipeline: the whole uint8 dataset on the training device, batches
augmented there, in place of a DataLoader with worker processes and PIL transforms.

Small image datasets (CIFAR-10, MNIST, digits, synthetic) fit on an accelerator many times over as
uint8, and per-image PIL work in worker processes then costs more than the network it feeds. The
idea is the one of Keller Jordan's cifar10-airbench (https://github.com/KellerJordan/cifar10-airbench):
keep the uint8 images on the device and augment a whole batch at once with tensor operations.

`DeviceLoader` reproduces the torchvision training transforms that `DataSplits` describes:
RandomCrop(image_size, padding=crop_padding) with zero fill, RandomHorizontalFlip(0.5), ToTensor,
Normalize(mean, std). The augmentation matches that path in distribution, not draw for draw:
torchvision interleaves its crop and flip draws image by image from the global generator, while
here an epoch's draws come in blocks from the loader's own generator.
"""

import math

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from data.common import ArrayDataset, DataSplits
from data.synthetic import SyntheticImages
from utils.errors import UserError

SUPPORTED = "cifar10, mnist, digits and synthetic"


def in_memory(dataset: Dataset) -> bool:
    """Whether `uint8_images` takes `dataset`; decides where the device path can be the default."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return isinstance(dataset, ArrayDataset | SyntheticImages)


def uint8_images(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The (N, C, H, W) uint8 images and (N,) int64 labels of an in-memory dataset, on the CPU.

    Takes an `ArrayDataset`, a `SyntheticImages` or a `Subset` of either (as `split_validation`
    makes). Subset transforms are ignored: only the stored pixels and the indices matter, since the
    loader applies its own augmentation and normalisation.
    """
    return _select(dataset, None)


def _select(dataset: Dataset, indices: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    # Subsets are resolved to indices into the underlying dataset, so that only the images asked
    # for are copied (or, for synthetic data, generated).
    if isinstance(dataset, Subset):
        inner = list(dataset.indices)
        return _select(dataset.dataset, inner if indices is None else [inner[i] for i in indices])
    if isinstance(dataset, ArrayDataset):
        images, labels = dataset.images, dataset.labels
        if indices is not None:
            rows = np.asarray(indices, dtype=np.int64)
            images, labels = images[rows], labels[rows]
        # ArrayDataset stores NHWC, as PIL wants; the network takes NCHW. np.array always copies
        # (a single-channel transpose alone would stay a view), so the tensors never share memory
        # with the dataset.
        images = np.array(images.transpose(0, 3, 1, 2), order="C")
        return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    if isinstance(dataset, SyntheticImages):
        return dataset.materialise(indices)
    from torchvision.datasets import DatasetFolder  # here, not above: see data/__init__.py

    if isinstance(dataset, DatasetFolder):
        raise UserError(
            f"--data_on_device supports {SUPPORTED}; imagenette is read from image files "
            f"({dataset.root}): use the DataLoader path (--no-data_on_device)"
        )
    raise UserError(
        f"--data_on_device supports {SUPPORTED}; a {type(dataset).__name__} is not held in memory "
        "as uint8 images: use the DataLoader path (--no-data_on_device)"
    )


class DeviceLoader:
    """Batches of (normalised float inputs, int64 targets) drawn from uint8 images on `device`.

    Iterating once is one epoch, `len()` batches, the last one partial (DataLoader's
    drop_last=False). Every random draw of an epoch (the order, the crop offsets, the flips) is
    made from `generator`, a CPU generator, when iteration starts. So a seed gives the same batches
    on every device type, the generator's state after an epoch does not depend on how many of its
    batches were consumed, and `generator.get_state()` / `set_state()` resume the data order as
    they do for a DataLoader's generator.

    Under torchrun each rank takes every `world_size`-th place of the epoch, starting at `rank`.
    Every rank draws the same epoch, so together they see each image once; a shuffled (training)
    epoch is padded with its first places so that all ranks take the same number of steps, as
    DistributedSampler does, while an evaluation epoch is not padded: no image counts twice.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        device: torch.device | str,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        crop_padding: int = 0,
        flip: bool = False,
        seed: int = 0,
        memory_format: torch.memory_format = torch.contiguous_format,
        rank: int = 0,
        world_size: int = 1,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"expected uint8 images of shape (N, C, H, W), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be 0 or more, got {crop_padding}")
        channels = images.shape[1]
        if not len(mean) == len(std) == channels:
            raise ValueError(
                f"mean {tuple(mean)} and std {tuple(std)} need one value per channel ({channels})"
            )
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.device = torch.device(device)
        self.crop_padding = crop_padding
        self.flip = flip
        self.memory_format = memory_format
        self.generator = torch.Generator().manual_seed(seed)
        self.num_images, _, self.height, self.width = images.shape
        places = self.num_images
        if shuffle:
            places = math.ceil(places / world_size) * world_size
        # this rank's places in the epoch's draws (all of them in a single process)
        self._places = (torch.arange(places) % self.num_images)[rank::world_size]

        # Zero-pad once, on the host, so that a random crop is only a gather from the padded image:
        # the zeros are the fill torchvision's RandomCrop pads with.
        pad = crop_padding
        padded = images.new_zeros(
            (self.num_images, channels, self.height + 2 * pad, self.width + 2 * pad)
        )
        padded[:, :, pad : pad + self.height, pad : pad + self.width] = images
        self.images = padded.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        # Shaped to broadcast over (N, C, H, W); the arithmetic below is ToTensor's and
        # Normalize's, in their order, so that unaugmented inputs agree with the torchvision path.
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        # Index helpers, made once: the pixel coordinates that the crop gather offsets.
        self._rows = torch.arange(self.height, device=self.device)
        self._cols = torch.arange(self.width, device=self.device)

    @property
    def augments(self) -> bool:
        return self.crop_padding > 0 or self.flip

    def __len__(self) -> int:
        return math.ceil(len(self._places) / self.batch_size)

    def __iter__(self):
        # Draw the whole epoch now rather than batch by batch, so that stopping early
        # (--limit_batches) leaves the generator where a full epoch would.
        n = self.num_images
        draws = {}
        if self.shuffle:
            draws["order"] = torch.randperm(n, generator=self.generator)
        if self.crop_padding > 0:
            # torchvision's RandomCrop.get_params: randint(0, padded - size + 1), i.e. 0..2*padding.
            draws["offsets"] = torch.randint(
                0, 2 * self.crop_padding + 1, (n, 2), generator=self.generator
            )
        if self.flip:
            draws["flips"] = torch.rand(n, generator=self.generator) < 0.5
        draws = {name: value[self._places] for name, value in draws.items()}
        draws.setdefault("order", self._places)
        return self._batches(self._to_device(draws))

    def _to_device(self, draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Pinned host memory lets the copies run asynchronously; this is the one transfer of an
        # epoch, and nothing in the batches below waits for the host.
        pin = self.device.type == "cuda"
        return {
            name: (value.pin_memory() if pin else value).to(self.device, non_blocking=True)
            for name, value in draws.items()
        }

    def _batches(self, draws: dict[str, torch.Tensor]):
        order = draws["order"]
        for start in range(0, len(order), self.batch_size):
            stop = min(start + self.batch_size, len(order))
            index = order[start:stop]
            if self.augments:
                inputs = self._augmented(index, draws, start, stop)
            else:
                inputs = self.images.index_select(0, index)
            targets = self.labels.index_select(0, index)
            # One kernel converts to float and lays the batch out as the model wants it; the
            # in-place steps after it keep that layout.
            inputs = inputs.to(torch.float32, memory_format=self.memory_format)
            inputs = inputs.div_(255).sub_(self.mean).div_(self.std)
            yield inputs, targets

    def _augmented(self, index: torch.Tensor, draws, start: int, stop: int) -> torch.Tensor:
        """The batch's images cropped at their offsets and flipped where drawn, as one gather:
        output pixel (b, c, i, j) reads padded pixel (index[b], c, dy[b] + i, dx[b] + j'), where
        j' = width - 1 - j for a flipped image (crop first, then flip, as in torchvision)."""
        size = stop - start
        if "offsets" in draws:
            dy, dx = draws["offsets"][start:stop].unbind(1)
        else:
            dy = dx = torch.zeros(size, dtype=torch.int64, device=self.device)
        cols = self._cols.expand(size, -1)
        if "flips" in draws:
            cols = torch.where(draws["flips"][start:stop, None], cols.flip(1), cols)
        rows = dy[:, None] + self._rows  # (B, H)
        cols = dx[:, None] + cols  # (B, W)
        # Whole padded images first (a plain copy), then one gather along their flattened
        # pixels with a (B, H*W) index shared by the channels: far fewer index computations than
        # indexing every output element in four dimensions.
        images = self.images.index_select(0, index).flatten(2)
        padded_width = self.images.shape[3]
        pixels = (rows[:, :, None] * padded_width + cols[:, None, :]).flatten(1)
        channels = images.shape[1]
        cropped = images.gather(2, pixels[:, None, :].expand(-1, channels, -1))
        return cropped.view(size, channels, self.height, self.width)


def device_loaders(
    splits: DataSplits,
    train_set: Dataset,
    eval_sets: dict[str, Dataset],
    batch_size: int,
    test_batch_size: int,
    device: torch.device | str,
    seed: int,
    memory_format: torch.memory_format = torch.contiguous_format,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[DeviceLoader, dict[str, DeviceLoader]]:
    """The shuffled, augmented training loader and an unshuffled, unaugmented loader per
    evaluation set, all normalised with the statistics of `splits`.

    `train_set` is `splits.train` or the training part of `split_validation`; `eval_sets` maps a
    split name ("test", "val") to its dataset.
    """
    # what the training and evaluation loaders share: normalisation, device, layout, sharding
    common = dict(
        device=device,
        mean=splits.mean,
        std=splits.std,
        seed=seed,
        memory_format=memory_format,
        rank=rank,
        world_size=world_size,
    )
    train = DeviceLoader(
        *uint8_images(train_set),
        batch_size,
        shuffle=True,
        crop_padding=splits.crop_padding,
        flip=splits.flip,
        **common,
    )
    evals = {
        name: DeviceLoader(*uint8_images(dataset), test_batch_size, shuffle=False, **common)
        for name, dataset in eval_sets.items()
    }
    return train, evals
