"""One global FlipOut prune of VGG-19 (20M weights): k-th value selection against a full sort."""

import torch

from bench.timing import interleaved
from models import build_model
from pruning import Pruner, Step


def run(device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model("vgg19").to(device)
    pruner = Pruner(model, "flipout", compile_kernels="off")
    for counts in pruner.flips.counts.values():
        counts.random_(0, 50)
    half = Step(rate=0.5)
    count = int(half.rate * pruner.masks.num_live)

    def ours():
        pruner.criterion.select(pruner.prune_inputs(), half)

    def full_sort():
        scores = pruner.criterion.scores(pruner.prune_inputs())
        flat = torch.cat([s.flatten() for s in scores.values()])
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[torch.argsort(flat)[:count]] = True
        return chosen.split([s.numel() for s in scores.values()])

    # the fast path must choose exactly what a stable sort chooses (ours breaks ties by position)
    scores = pruner.criterion.scores(pruner.prune_inputs())
    flat = torch.cat([s.flatten() for s in scores.values()])
    sorted_choice = torch.zeros_like(flat, dtype=torch.bool)
    sorted_choice[torch.argsort(flat, stable=True)[:count]] = True
    chosen = pruner.criterion.select(pruner.prune_inputs(), half)
    our_choice = torch.cat([c.flatten() for c in chosen.values()])
    assert torch.equal(sorted_choice, our_choice), "k-th value selection disagrees with the sort"
    return {"times": interleaved({"ours": ours, "sort": full_sort}, device, repeats)}
