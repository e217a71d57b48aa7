"""One full training epoch as a replication runs it: a network of the paper on its dataset's
training set (VGG-19 and ResNet-18 on CIFAR-10's 50,000 images of 32x32, DenseNet-121 on
Imagenette's 9,469 of 224x224; batch 128, crop and flip), FlipOut with gradient noise, `--amp
--data_on_device --channels_last`, half the weights pruned. Random uint8 images stand in for the
data: the time does not depend on the pixels. A 350-epoch run takes about 350 times this, plus
evaluation. `python -m bench` also records each measurement, by device, in BENCHMARKS.json beside
BENCHMARKS.md, where `python -m experiments list` finds the pace to turn sweeps into GPU-hours.
"""

import datetime
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.timing import synchronize
from data import cifar10, imagenette
from data.device import DeviceLoader
from models import build_model
from pruning import Noise, Periodic, Pruner
from training import TrainConfig, memory_format, train_one_epoch
from utils.distributed import Distributed
from utils.io import write_json_atomic
from utils.runtime import batchnorm_in_fp32

CIFAR10_TRAIN = 50_000
WARMUP_STEPS = 5
# dataset -> (training images, image size, its module: MEAN, STD, CROP_PADDING)
DATASETS = {"cifar10": (CIFAR10_TRAIN, 32, cifar10), "imagenette": (9_469, 224, imagenette)}
DATASET_NAMES = {"cifar10": "CIFAR-10", "imagenette": "Imagenette"}
# the paper's networks, each on its dataset
NETWORKS = {"vgg19": "cifar10", "resnet18": "cifar10", "densenet121": "imagenette"}
# the key of `record`'s file: {"epoch": {device: {"model/dataset": {"seconds": one whole
# epoch, ...}}}}, read by experiments/cost.py
SECTION = "epoch"
FLAGS = "--amp --data_on_device --channels_last"


def device_name(device: torch.device) -> str:
    """The name a measurement is filed under: the GPU's, or "cpu"."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def record(result: dict, device: torch.device, path: Path) -> None:
    """File one measurement in `path` under its device and network, replacing an older one."""
    try:
        measured = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        measured = {}
    times = measured.setdefault(SECTION, {})
    entry = {
        "seconds": round(result["epoch_seconds"], 3),
        "images_timed": result["images"],
        "flags": FLAGS,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    network = f"{result['model']}/{result['dataset']}"
    times.setdefault(device_name(device), {})[network] = entry
    write_json_atomic(path, measured)


def run(
    device: torch.device,
    images: int | None = None,
    model_name: str = "vgg19",
    dataset: str = "cifar10",
) -> dict:
    """One timed epoch of `images` (default: the whole training set) of `dataset`'s shape."""
    # the command line's defaults otherwise: SGD, lr 0.1, momentum 0.9, weight decay 5e-4
    config = TrainConfig(
        batch_size=128, amp=True, data_on_device=True, channels_last=True, quiet=True
    )
    train_images, size, source = DATASETS[dataset]
    images = train_images if images is None else min(images, train_images)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (images,), generator=generator)
    loader = DeviceLoader(
        pixels, labels, config.batch_size, True, device, source.MEAN, source.STD,
        crop_padding=source.CROP_PADDING, flip=True, memory_format=memory_format(config),
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(model_name, 10, 3, size).to(device, memory_format=memory_format(config))
    batchnorm_in_fp32(model)
    optimizer = config.optimizer(model.parameters())
    pruner = Pruner(model, "flipout", Periodic(rate=0.5, every=1, epochs=2), noise=Noise(scale=1.0))
    pruner.attach_optimizer(optimizer)
    pruner.end_of_epoch(1)  # half the weights pruned
    ddp = Distributed()

    # warm-up: kernel compilation, cuDNN's algorithm search, the allocator's first blocks
    warmup = replace(config, limit_batches=WARMUP_STEPS)
    train_one_epoch(model, loader, optimizer, pruner, warmup, 1, device, 1.0, ddp)
    synchronize(device)
    start = time.perf_counter()
    trained = train_one_epoch(model, loader, optimizer, pruner, config, 2, device, 1.0, ddp)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "model": model_name,
        "dataset": dataset,
        "seconds": seconds,
        # scaled to the whole training set when fewer images were timed
        "epoch_seconds": seconds * train_images / images,
        "images": images,
        "steps": len(loader),
        "images_per_second": images / seconds,
        "loss": trained["train_loss"],
    }
