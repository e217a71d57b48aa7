"""One full training epoch as a replication runs it: VGG-19, CIFAR-10's size (50,000 images of
32x32, batch 128, crop and flip), FlipOut with gradient noise, `--amp --data_on_device
--channels_last`, half the weights pruned. Random uint8 images stand in for CIFAR-10: the time does
not depend on the pixels. A 350-epoch run takes about 350 times this, plus evaluation.
"""

import time
from dataclasses import replace

import torch

from bench.timing import synchronize
from data import cifar10
from data.device import DeviceLoader
from models import build_model
from pruning import Periodic, Pruner
from training import TrainConfig, memory_format, train_one_epoch
from utils.distributed import Distributed
from utils.runtime import batchnorm_in_fp32

CIFAR10_TRAIN = 50_000
WARMUP_STEPS = 5


def run(device: torch.device, images: int = CIFAR10_TRAIN, model_name: str = "vgg19") -> dict:
    # the command line's defaults otherwise: SGD, lr 0.1, momentum 0.9, weight decay 5e-4
    config = TrainConfig(
        batch_size=128, amp=True, data_on_device=True, channels_last=True, quiet=True
    )
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (images,), generator=generator)
    loader = DeviceLoader(
        pixels, labels, config.batch_size, True, device, cifar10.MEAN, cifar10.STD,
        crop_padding=cifar10.CROP_PADDING, flip=True, memory_format=memory_format(config),
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(model_name, 10, 3, 32).to(device, memory_format=memory_format(config))
    batchnorm_in_fp32(model)
    optimizer = config.optimizer(model.parameters())
    pruner = Pruner(model, "flipout", Periodic(rate=0.5, every=1, epochs=2), noise_scale=1.0)
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
        "seconds": seconds,
        "images": images,
        "steps": len(loader),
        "images_per_second": images / seconds,
        "loss": trained["train_loss"],
    }
