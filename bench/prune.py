"""One global FlipOut prune of VGG-19 (20M weights): k-th value selection against a full sort."""

import torch

from bench.timing import interleaved
from models import build_model
from pruning import Pruner, PruningConfig


def run(device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model("vgg19").to(device)
    pruner = Pruner(model, PruningConfig("flipout", prune_rate=0.5, compile_kernels="off"))
    for counts in pruner.flips.counts.values():
        counts.random_(0, 50)
    count = int(pruner.config.prune_rate * pruner.masks.num_live)

    def ours():
        pruner.criterion.select(pruner)

    def full_sort():
        scores = pruner.criterion.scores(pruner)
        flat = torch.cat([s.flatten() for s in scores.values()])
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[torch.argsort(flat)[:count]] = True
        return chosen.split([s.numel() for s in scores.values()])

    # the fast path must choose exactly what a stable sort chooses (ours breaks ties by position)
    scores = pruner.criterion.scores(pruner)
    flat = torch.cat([s.flatten() for s in scores.values()])
    sorted_choice = torch.zeros_like(flat, dtype=torch.bool)
    sorted_choice[torch.argsort(flat, stable=True)[:count]] = True
    our_choice = torch.cat([c.flatten() for c in pruner.criterion.select(pruner).values()])
    assert torch.equal(sorted_choice, our_choice), "k-th value selection disagrees with the sort"
    return {"times": interleaved({"ours": ours, "sort": full_sort}, device, repeats)}
