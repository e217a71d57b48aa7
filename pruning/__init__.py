"""Pruning as a library: FlipOut (Apostol, Stol & Forré, 2020) and its baselines for any PyTorch
model and training loop.

    from pruning import FlipOut, Noise, Periodic, Pruner

    pruner = Pruner(model, FlipOut(p=2), Periodic(rate=0.5, every=1), noise=Noise(scale=1.0))
    pruner.attach_optimizer(optimizer, step_hooks=True)
    ...                               # your loop, unchanged
    pruner.end_of_epoch()             # after each epoch: prunes when the schedule says so

The names below are the stable surface: the Pruner and its hooks, its parts (Noise,
HoyerSquare, Tensors), the criteria (registry CRITERIA, `--prune_criterion`; RigL, SET and
GraNet regrow weights, pruning/dynamic.py; Taylor observes every training step), the schedules
(registry SCHEDULES, `--schedule`), masks and what a criterion is given (PruneInputs), and the
N:M constraint that any ranking criterion obeys (NM, `Pruner(..., nm="2:4")`, `--nm`).
"""

from .criteria import (
    AtInitialisation,
    Criterion,
    FlipOut,
    GlobalMagnitude,
    IterativeMagnitude,
    LayerMagnitude,
    NoPruning,
    PruneInputs,
    Random,
    Snip,
    Taylor,
    Threshold,
)
from .dynamic import SET, DynamicSparse, GraNet, RigL
from .grasp import GraSP
from .mask import Masks
from .nm import NM
from .parts import HoyerSquare, Noise, Tensors
from .prunable import PRUNABLE, prunable_parameters, register_prunable
from .pruner import PruneEvent, Pruner
from .registry import CRITERIA, build_criterion
from .schedule import SCHEDULES, Gradual, OneShot, Periodic, Rounds, Schedule, Step
from .synflow import SynFlow

__all__ = [
    "CRITERIA",
    "NM",
    "PRUNABLE",
    "SCHEDULES",
    "SET",
    "AtInitialisation",
    "Criterion",
    "DynamicSparse",
    "FlipOut",
    "GlobalMagnitude",
    "GraNet",
    "GraSP",
    "Gradual",
    "HoyerSquare",
    "IterativeMagnitude",
    "LayerMagnitude",
    "Masks",
    "NoPruning",
    "Noise",
    "OneShot",
    "Periodic",
    "PruneEvent",
    "PruneInputs",
    "Pruner",
    "Random",
    "RigL",
    "Rounds",
    "Schedule",
    "Snip",
    "Step",
    "SynFlow",
    "Taylor",
    "Tensors",
    "Threshold",
    "build_criterion",
    "prunable_parameters",
    "register_prunable",
]
