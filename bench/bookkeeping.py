"""What pruning bookkeeping adds to a training step: VGG-19 at batch 128 (the paper's batch size).

Ours: gradient masking and sign-flip counting in one byte per weight (sign bit and pending flips,
int32 totals caught up every 127 steps); pruned weights stay at zero because each prune also
zeroes the optimizer's state for them. The original code's way, reimplemented here only as a
baseline: an fp32 copy of every prunable weight before each step, gradients and weights masked
out of place, fp32 flip counters fed from float signs.
"""

import torch
import torch.nn.functional as F

from bench import dynamic
from bench.timing import interleaved
from models import build_model
from pruning import Noise, Periodic, Pruner

BATCH = 128


class OriginalStyleBookkeeping:
    """Per-step work in the manner of the original code (the baseline, not our method), step by
    step: copy every prunable weight; mask the gradients out of place; after the optimizer step,
    mask the weights out of place; take the float signs of the new and the saved weights, compare
    them and invert the comparison; add that to fp32 counters, mask the counters, and keep a
    running total of the flips on the device."""

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
    def after_step(self) -> torch.Tensor:
        total = 0
        for p, mask, counts, saved in zip(
            self.params, self.masks, self.counts, self.saved, strict=True
        ):
            p.data = p.data * mask
            flipped = ~torch.sign(p.data).eq(torch.sign(saved))
            counts += flipped
            counts *= mask
            total += flipped.sum()
        return total

    def state_bytes(self) -> int:
        tensors = self.masks + self.counts + self.saved
        return sum(t.numel() * t.element_size() for t in tensors)


def state_bytes(pruner: Pruner) -> int:
    tensors = [*pruner.masks.masks.values(), *pruner.flips.packed.values()]
    tensors += list(pruner.flips.totals.values())
    return sum(t.numel() * t.element_size() for t in tensors)


def run(
    device: torch.device,
    repeats: int,
    model_name: str = "vgg19",
    batch: int = BATCH,
    with_compiled: bool = True,
) -> dict:
    """Median times of whole steps and of the bookkeeping alone, FlipOut's at half the weights
    pruned and RigL's and SET's at 90% sparsity (bench/dynamic.py); `with_compiled=False` skips
    the compiled kernels (their compilation dominates a smoke run)."""
    torch.manual_seed(0)
    model = build_model(model_name).to(device)
    dynamic_cases = dynamic.cases(model, model_name, device)  # copies of the dense network
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    inputs = torch.randn(batch, 3, 32, 32, device=device)
    targets = torch.randint(0, 10, (batch,), device=device)

    def pruner(attach: bool = True, **options) -> Pruner:
        built = Pruner(model, "flipout", Periodic(rate=0.5, every=1), **options)
        if attach:
            built.attach_optimizer(optimizer)
        built.end_of_epoch(1)  # half the weights pruned: every masking pass does real work
        return built

    ours = pruner()  # the default kernels for this device
    ours_noise = pruner(noise=Noise(scale=1.0))
    eager = pruner(compile_kernels="off")
    compiled = pruner(compile_kernels="on") if with_compiled else None
    remasking = pruner(attach=False)  # what an optimizer outside pruner.KEEP_ZEROS gets
    # The original style replaces each parameter's storage every step, so it gets its own copy
    # of the network (same architecture, same masks).
    original_model = build_model(model_name).to(device)
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
            **{
                name: (lambda case=case: case.step(inputs, targets))
                for name, case in dynamic_cases.items()
            },
        },
        device,
        repeats,
    )
    backward()  # gradients for the bookkeeping-only timings
    original_style()
    bookkeeping = {
        "ours": ours,
        "eager": eager,
        "compiled": compiled,
        "remasking": remasking,
    }
    cases = {
        name: (lambda chosen=chosen: (chosen.after_backward(1), chosen.after_step()))
        for name, chosen in bookkeeping.items()
        if chosen is not None
    }
    # the original style allocates fresh copies every call: the noise row, which needs no warm
    # cache, runs after it
    cases["original"] = lambda: (original.before_step(), original.after_step())
    cases["noise"] = ours_noise.noise.add
    alone = interleaved(cases, device, repeats * 4)
    dynamic.check_between(dynamic_cases["rigl"])
    return {
        "steps": steps,
        "alone": alone,
        "default_kernels": "eager" if ours.kernels.eager else "compiled",
        "prunable": ours.masks.num_total,
        "state_bytes": state_bytes(ours) / ours.masks.num_total,
        "original_state_bytes": original.state_bytes() / ours.masks.num_total,
        "dynamic": {
            "sparsity": dynamic.SPARSITY,
            "cycle": dynamic.cycle(dynamic_cases["rigl"]),
            "drop_fraction": dynamic_cases["rigl"].pruner.criterion.drop_fraction,
            "updates": {name: case.updates for name, case in dynamic_cases.items()},
            "work": {name: case.work.median() for name, case in dynamic_cases.items()},
        },
    }
