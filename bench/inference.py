"""Inference speed of a pruned network: dense against each export that runs faster, measured.

The masks come from a short real run: the network trains with SGD on CIFAR-10-shaped synthetic
images (data/synthetic.py) while FlipOut with gradient noise prunes it step by step, through the
library (pruning.Pruner), to the target sparsity. The masked dense network is then timed side by
side with its compact export (export/compact.py) and its sparse-kernel export
(export/sparse_runtime.py), at batch 1 and batch 64, on the CPU, where the sparse kernels run.
"""

import copy

import torch

from bench.timing import interleaved
from data.synthetic import class_patterns
from export.compact import channel_count, compact, parameter_count
from export.sparse_runtime import sparsify
from models import build_model
from pruning import Noise, Pruner

MODELS = ("vgg19", "resnet18")
SPARSITIES = (0.99, 0.999)
BATCHES = (1, 64)
PRUNES = 8  # sparsity rises geometrically to the target over this many prunes
STEPS_BETWEEN = 4  # SGD steps before each prune (and after the last)
TRAIN_BATCH = 16


def synthetic_batch(generator: torch.Generator, batch: int = TRAIN_BATCH):
    """CIFAR-10-shaped images with a class signal (data/synthetic.py's patterns plus noise)."""
    labels = torch.randint(0, 10, (batch,), generator=generator)
    images = class_patterns(32)[labels] + 1.5 * torch.randn(batch, 3, 32, 32, generator=generator)
    return images, labels


def short_run(name: str, sparsity: float, seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """`name` trained briefly while FlipOut prunes it to `sparsity`; its masks."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_model(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    pruner = Pruner(model, "flipout", noise=Noise(scale=1.0), seed=seed)
    pruner.attach_optimizer(optimizer, step_hooks=True)
    model.train()
    for prune in range(1, PRUNES + 2):
        for _ in range(STEPS_BETWEEN):
            images, labels = synthetic_batch(generator)
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
        if prune <= PRUNES:
            pruner.prune(sparsity=1 - (1 - sparsity) ** (prune / PRUNES))
    return model.eval(), dict(pruner.masks.masks)


def run(device: torch.device, repeats: int) -> dict:
    """Per model and sparsity: sizes, and milliseconds per forward pass at each batch size."""
    results = {}
    for name in MODELS:
        for sparsity in SPARSITIES:
            model, masks = short_run(name, sparsity)
            compacted, report = compact(model, (3, 32, 32), masks)
            row = {
                "input_independent": report.params_after == 0,
                "params": (parameter_count(model), parameter_count(compacted)),
                "channels": (channel_count(model), channel_count(compacted)),
                "times": {},
            }
            for batch in BATCHES:
                example = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
                sparse, choices = sparsify(copy.deepcopy(compacted), example)
                row.setdefault("sparse_layers", {})[batch] = (
                    sum(c.sparse for c in choices),
                    len(choices),
                )
                cases = {
                    "dense": lambda m=model, x=example: m(x),
                    "compact": lambda m=compacted, x=example: m(x),
                    "sparse": lambda m=sparse, x=example: m(x),
                }
                with torch.inference_mode():
                    row["times"][batch] = interleaved(cases, device, repeats, warmup=2)
            results[(name, sparsity)] = row
            print(f"  {name} at {sparsity:.1%}: {row}", flush=True)
    return results
