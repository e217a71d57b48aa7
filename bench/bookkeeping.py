"""What pruning bookkeeping adds to a training step: VGG-19 at batch 128 (the paper's batch size).

Ours: gradient masking, weight re-masking and sign-flip counting as fused kernels over int8 signs
and int32 counters. The original code's way, reimplemented here only as a baseline: an fp32 copy of
every prunable weight before each step, fp32 flip counters, masks multiplied in as fp32.
"""

import torch
import torch.nn.functional as F

from bench.timing import interleaved
from models import build_model
from pruning import Pruner, PruningConfig

BATCH = 128


class OriginalStyleBookkeeping:
    """Per-step work in the manner of the original code (the baseline, not our method): bool
    masks applied out of place, a full fp32 copy of the weights before every step, and fp32 flip
    counters updated from the signs of the copy and of the new weights, then masked."""

    def __init__(self, params: list[torch.nn.Parameter], masks: list[torch.Tensor]):
        self.params = params
        self.masks = [mask.clone() for mask in masks]
        self.counts = [torch.zeros_like(p, dtype=torch.float) for p in self.params]
        self.saved = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def before_step(self) -> None:
        self.saved = [p.data.detach().clone() for p in self.params]
        for p, mask in zip(self.params, self.masks, strict=True):
            p.grad.data = p.grad.data * mask

    @torch.no_grad()
    def after_step(self) -> None:
        for p, mask, counts, saved in zip(
            self.params, self.masks, self.counts, self.saved, strict=True
        ):
            p.data = p.data * mask
            counts += torch.sign(p.data) != torch.sign(saved)
            counts *= mask

    def state_bytes(self) -> int:
        tensors = self.masks + self.counts + self.saved
        return sum(t.numel() * t.element_size() for t in tensors)


def state_bytes(pruner: Pruner) -> int:
    tensors = [*pruner.masks.masks.values(), *pruner.flips.signs.values()]
    tensors += list(pruner.flips.counts.values())
    return sum(t.numel() * t.element_size() for t in tensors)


def run(device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model("vgg19").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    inputs = torch.randn(BATCH, 3, 32, 32, device=device)
    targets = torch.randint(0, 10, (BATCH,), device=device)

    def pruner(**options) -> Pruner:
        built = Pruner(model, PruningConfig("flipout", prune_freq=1, epochs=2, **options))
        built.end_of_epoch(1)  # half the weights pruned: every masking pass does real work
        return built

    ours = pruner()  # the default kernels for this device
    ours_noise = pruner(noise=True)
    eager, compiled = pruner(compile_kernels="off"), pruner(compile_kernels="on")
    # The original style replaces each parameter's storage every step, so it gets its own copy
    # of the network (same architecture, same masks).
    original_model = build_model("vgg19").to(device)
    original_model.load_state_dict(model.state_dict())
    original_optimizer = torch.optim.SGD(
        original_model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4
    )
    original_params = dict(original_model.named_parameters())
    original = OriginalStyleBookkeeping(
        [original_params[name] for name in ours.params], list(ours.masks.masks.values())
    )

    def backward():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()

    def dense():
        backward()
        optimizer.step()

    def with_bookkeeping(chosen: Pruner):
        def step():
            backward()
            chosen.after_backward(epoch=1)
            optimizer.step()
            chosen.after_step()

        return step

    def original_style():
        original_optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(original_model(inputs), targets).backward()
        original.before_step()
        original_optimizer.step()
        original.after_step()

    steps = interleaved(
        {
            "dense": dense,
            "ours": with_bookkeeping(ours),
            "ours_noise": with_bookkeeping(ours_noise),
            "original": original_style,
        },
        device,
        repeats,
    )
    backward()  # gradients for the bookkeeping-only timings
    original_style()
    alone = interleaved(
        {
            "ours": lambda: (ours.after_backward(1), ours.after_step()),
            "eager": lambda: (eager.after_backward(1), eager.after_step()),
            "compiled": lambda: (compiled.after_backward(1), compiled.after_step()),
            "noise": ours_noise.noise.add,
            "original": lambda: (original.before_step(), original.after_step()),
        },
        device,
        repeats * 4,
    )
    return {
        "steps": steps,
        "alone": alone,
        "default_kernels": "eager" if ours.kernels.eager else "compiled",
        "prunable": ours.masks.num_total,
        "state_bytes": state_bytes(ours) / ours.masks.num_total,
        "original_state_bytes": original.state_bytes() / ours.masks.num_total,
    }
