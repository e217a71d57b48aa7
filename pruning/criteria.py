"""Pruning criteria: the registry behind `--prune_criterion`.

A criterion decides which live weights a prune removes. Most are rankings: `scores` gives every
weight a number and the lowest-scoring live weights go, a fraction `prune_rate` of those alive,
ranked across the whole network (`scope = "global"`) or within each tensor (`"layer"`). Rules that
are not rankings override `select`. Adding a method means one class here and one registry line.
"""

import itertools

import torch

from pruning.schedule import expected_sparsity
from pruning.select import prune_lowest_global, prune_lowest_per_layer
from pruning.snip import connection_sensitivity


class Criterion:
    scope = "global"
    # Scheduled criteria prune at the end of the epochs the schedule names; the others prune once,
    # before training (SNIP), or never.
    scheduled = True

    def __init__(self, config):
        self.config = config

    def scores(self, pruner) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def select(self, pruner) -> dict[str, torch.Tensor]:
        """name -> bool tensor of the live weights to remove now."""
        scores = self.scores(pruner)
        if self.scope == "layer":
            return prune_lowest_per_layer(scores, pruner.masks, self.config.prune_rate)
        count = int(self.config.prune_rate * pruner.masks.num_live)
        return prune_lowest_global(scores, pruner.masks, count)

    def describe(self) -> str:
        """What each scheduled prune removes, for the lines a run starts with."""
        cfg = self.config
        target = expected_sparsity(cfg.prune_rate, cfg.prune_freq, cfg.epochs, cfg.stop_pruning_at)
        where = "in each layer" if self.scope == "layer" else "across the network"
        return f"{cfg.prune_rate:g} of the live weights {where} each time -> {target:.2%}"

    def before_training(self, pruner, model, batches) -> dict[str, torch.Tensor] | None:
        """What to remove before the first step, if this criterion prunes at initialisation."""
        return None


class FlipOut(Criterion):
    """|w|^p / (flips + 1): small weights whose sign keeps flipping carry the least signal."""

    def scores(self, pruner):
        p = self.config.flipout_p
        return {
            name: w.detach().abs().pow(p) / (pruner.flips.counts[name] + 1)
            for name, w in pruner.params.items()
        }


class GlobalMagnitude(Criterion):
    """|w| ranked across the network (Frankle & Carbin, 2019)."""

    def scores(self, pruner):
        return {name: w.detach().abs() for name, w in pruner.params.items()}


class LayerMagnitude(GlobalMagnitude):
    """|w| ranked within each tensor: every layer loses the same fraction (Han et al., 2015)."""

    scope = "layer"


class Random(Criterion):
    """Uniformly random live weights, from a generator seeded by `--seed`."""

    def scores(self, pruner):
        return {
            name: torch.rand(w.shape, generator=pruner.random_generator, device=w.device)
            for name, w in pruner.params.items()
        }


class Threshold(Criterion):
    """Every live weight with |w| < `--magnitude_threshold` (Hoyer-Square's pruning step)."""

    def describe(self):
        return f"every live weight with |w| < {self.config.magnitude_threshold:g}"

    def select(self, pruner):
        threshold = self.config.magnitude_threshold
        return {
            name: pruner.masks[name] & (w.detach().abs() < threshold)
            for name, w in pruner.params.items()
        }


class Snip(Criterion):
    """Once, before training: keep the top 1 - `--snip_sparsity` weights by connection
    sensitivity, globally; the mask then stays fixed."""

    scheduled = False

    def before_training(self, pruner, model, batches):
        scores = connection_sensitivity(
            model,
            pruner.params,
            itertools.islice(batches, self.config.snip_batches),
            pruner.device,
            pruner.sync.all_reduce_sum,
        )
        total = pruner.masks.num_total
        keep = round((1.0 - self.config.snip_sparsity) * total)
        return prune_lowest_global(scores, pruner.masks, total - keep)


class NoPruning(Criterion):
    """Dense training; masks stay full and sign flips are still counted."""

    scheduled = False


CRITERIA: dict[str, type[Criterion]] = {
    "flipout": FlipOut,
    "global_magnitude": GlobalMagnitude,
    "magnitude": LayerMagnitude,
    "none": NoPruning,
    "random": Random,
    "snip": Snip,
    "threshold": Threshold,
}


def build_criterion(name: str, config) -> Criterion:
    if name not in CRITERIA:
        raise ValueError(
            f"unknown prune criterion {name!r}; choose from {', '.join(sorted(CRITERIA))}"
        )
    return CRITERIA[name](config)
