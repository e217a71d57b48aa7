"""A finished (or interrupted) run read back from its directory: the pruned network, its masks
and flip counters, for the tools that take a run elsewhere (utils.export, utils.inspect)."""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models import build_model
from utils.checkpoint import load_checkpoint
from utils.errors import UserError


@dataclass
class PrunedRun:
    model: nn.Module  # the registry's network with the run's weights, pruned ones exactly zero
    masks: dict[str, torch.Tensor]  # prunable parameter name -> bool tensor, True = live
    flip_counts: dict[str, torch.Tensor]  # same names -> int32 sign flips so far
    spec: dict  # build_model(**spec) rebuilds the architecture
    epoch: int  # the last completed epoch
    run_dir: Path

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.spec["in_channels"], self.spec["image_size"], self.spec["image_size"])


def load_run(run_dir: str | Path) -> PrunedRun:
    """The state of `run_dir`'s checkpoint.pt, on the CPU. Raises UserError when the directory
    holds no usable checkpoint."""
    checkpoint = load_checkpoint(run_dir)
    model = build_model(**checkpoint["model_spec"])
    model.load_state_dict(checkpoint["model"])
    model.eval()
    parameters = dict(model.named_parameters())
    for part in ("masks", "flip_counts"):
        for name, tensor in checkpoint["pruner"][part].items():
            if name not in parameters or parameters[name].shape != tensor.shape:
                raise UserError(f"{run_dir}: its {part} do not fit {checkpoint['model_spec']}")
    return PrunedRun(
        model=model,
        masks=dict(checkpoint["pruner"]["masks"]),
        flip_counts=dict(checkpoint["pruner"]["flip_counts"]),
        spec=dict(checkpoint["model_spec"]),
        epoch=checkpoint["epoch"],
        run_dir=Path(run_dir),
    )
