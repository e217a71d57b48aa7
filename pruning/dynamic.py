"""Dynamic sparse training: criteria that start sparse and move weights during training, keeping
each layer's count of live weights. RigL (Evci et al., "Rigging the Lottery", 2020) drops the
smallest live |w| and grows the dead weights with the largest |gradient|; SET (Mocanu et al., 2018)
grows at random. GraNet (Liu et al., 2021) prunes across the network along Zhu & Gupta's cubic
curve while it regrows, so that its updates remove weights.

    pruner = Pruner(model, RigL(init_sparsity=0.9, total_steps=len(loader) * epochs))

Before training (their schedule: one prune at epoch 0) each layer is given a random mask of its
density, ERK (Erdős-Rényi-Kernel, `erk_densities`) or uniform; then after every `update_every`
optimizer steps up to `end` of training, each layer drops `int(live * f)` live weights and grows
as many, f the drop fraction cosine-annealed from `drop_fraction` to 0 at `end`
(`drop_fraction_at`). The Pruner applies the update (pruning/pruner.py): a grown weight starts at
zero with zeroed optimizer state and flip count. The facts follow the authors' code
(google-research/rigl: sparse_utils.py, sparse_optimizers_base.py); docs/baselines.md lists where
ours differs.
"""

import math
from dataclasses import dataclass

import torch

from .criteria import AtInitialisation, PruneInputs
from .options import RATE, SPARSITY, Bounded, Choice, named, option
from .schedule import OneShot, Schedule, Step
from .select import lowest_k, prune_lowest_global, prune_lowest_per_layer

DISTRIBUTIONS = Choice("erk", "uniform")


def erk_densities(
    shapes: dict[str, tuple[int, ...]],
    sparsity: float,
    power_scale: float = 1.0,
    custom: frozenset[str] = frozenset(),
) -> dict[str, float]:
    """The authors' ERK densities (sparse_utils.get_sparsities_erdos_renyi): each tensor's density
    is eps * (sum(shape) / prod(shape)) ** power_scale, eps chosen so that the tensors outside
    `custom` keep as many weights as `sparsity` leaves them (their zeros counted as
    floor(sparsity * n)). While that puts a tensor above density 1, the tensors of the largest
    raw density become dense and eps is solved again over the rest, the dense ones' surplus
    counted against it. The `custom` tensors (a dense first layer) are left out: density 1."""
    dense: set[str] = set()
    while True:
        budget, divisor, raw = 0.0, 0.0, {}
        for name, shape in shapes.items():
            size = math.prod(shape)
            zeros = math.floor(sparsity * size)
            if name in dense:
                budget -= zeros
            elif name not in custom:
                budget += size - zeros
                raw[name] = (sum(shape) / size) ** power_scale
                divisor += raw[name] * size
        eps = budget / divisor if divisor else 0.0
        largest = max(raw.values(), default=0.0)
        if largest * eps <= 1:
            break
        dense.update(name for name, value in raw.items() if value == largest)
    return {name: 1.0 if name in dense or name in custom else eps * raw[name] for name in shapes}


def keep_counts(densities: dict[str, float], sizes: dict[str, int], budget: int) -> dict[str, int]:
    """Live weights per tensor: `densities` times `sizes`, scaled to `budget` in all, the rounding
    going to the largest remainders (ties to the first), no tensor above its size. Dense tensors
    keep every weight."""
    keep = {name: sizes[name] for name, density in densities.items() if density >= 1}
    shares = {name: densities[name] * sizes[name] for name in densities if name not in keep}
    left = budget - sum(keep.values())
    total = sum(shares.values())
    scaled = {name: share * left / total if total else 0.0 for name, share in shares.items()}
    floors = {name: min(sizes[name], int(value)) for name, value in scaled.items()}
    open_ = [name for name in scaled if floors[name] < sizes[name]]
    by_remainder = sorted(open_, key=lambda n: scaled[n] - floors[n], reverse=True)
    for name in by_remainder[: max(0, left - sum(floors.values()))]:
        floors[name] += 1
    return {name: keep.get(name, floors.get(name)) for name in densities}


def cosine_fraction(initial: float, step: int, end_step: int) -> float:
    """`initial` cosine-annealed to 0 at `end_step` (TensorFlow's cosine_decay, alpha 0)."""
    progress = min(step, end_step) / end_step
    return initial * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class DynamicSparse(AtInitialisation):
    """Base of RigL and SET: the options they share, the sparse start and the update; a subclass
    says how it grows (`grow_scores`)."""

    update_every: int = option(
        "rigl_update_every",
        Bounded(int, low=1, high=10_000_000),
        100,
        "rigl, set: optimizer steps between mask updates (the authors' ΔT)",
    )
    drop_fraction: float = option(
        "rigl_drop_fraction",
        RATE,
        0.3,
        "rigl, set: the fraction of each layer's live weights the first update drops and regrows, "
        "cosine-annealed to 0 at --rigl_end",
    )
    end: float = option(
        "rigl_end",
        Bounded(float, above=0, high=1),
        0.75,
        "rigl, set: the fraction of training (in optimizer steps) after which the masks stay as "
        "they are (the authors' T_end)",
    )
    distribution: str = option(
        "rigl_distribution",
        DISTRIBUTIONS,
        "erk",
        "rigl, set: each layer's density: erk (Erdős-Rényi-Kernel, denser for small layers) or "
        "uniform (every layer at --init_sparsity)",
    )
    erk_power_scale: float = option(
        "rigl_erk_power_scale",
        Bounded(float, low=0, high=16.0),
        1.0,
        "rigl, set: the exponent of ERK's (sum of dimensions / size); below 1 is closer to uniform",
    )
    dense_first_layer: bool = option(
        "rigl_dense_first_layer",
        bool,
        False,
        "rigl, set: keep the first pruned tensor dense, outside the density budget (as the "
        "authors do at high sparsity)",
    )
    # the run's optimizer steps, from which `end` counts (not a flag: main.py's Pruner learns it
    # from its data's batches times the epochs); None: the Pruner's own count
    total_steps: int | None = None

    regrows = True
    scope = "layer"

    def __post_init__(self):
        super().__post_init__()
        if self.total_steps is not None:
            Bounded(int, low=1).check("total_steps", self.total_steps)

    def check_schedule(self, schedule: Schedule | None) -> None:
        if not (isinstance(schedule, OneShot) and schedule.epoch == 0):
            name = "none" if schedule is None else schedule.name
            raise ValueError(
                f"{self.label} starts sparse before training and moves its masks between "
                f"optimizer steps: it runs on its own schedule, one prune at epoch 0, not {name}"
            )

    # -- the sparse start ---------------------------------------------------------------------

    def layer_densities(self, params: dict[str, torch.Tensor], sparsity: float) -> dict:
        custom = frozenset(list(params)[:1]) if self.dense_first_layer else frozenset()
        shapes = {name: tuple(p.shape) for name, p in params.items()}
        if self.distribution == "erk":
            return erk_densities(shapes, sparsity, self.erk_power_scale, custom)
        return {name: 1.0 if name in custom else 1.0 - sparsity for name in shapes}

    def select(self, inputs: PruneInputs, step: Step) -> dict[str, torch.Tensor]:
        """The sparse start: in each tensor a random set of live weights of its density, the
        total exactly round((1 - sparsity) * size) of the tensors outside a dense first layer."""
        masks = inputs.masks
        if step.sparsity is None or masks.num_live != masks.num_total:
            raise ValueError(
                f"{self.label} prunes once, from dense masks to "
                f"{named(type(self), 'init_sparsity')}; its updates keep that sparsity"
            )
        densities = self.layer_densities(inputs.params, step.sparsity)
        sizes = {name: p.numel() for name, p in inputs.params.items()}
        custom = [name for name in sizes if self.custom(name, inputs.params)]
        budget = round(
            (1.0 - step.sparsity) * sum(n for name, n in sizes.items() if name not in custom)
        )
        budget += sum(sizes[name] for name in custom)
        keep = keep_counts(densities, sizes, budget)
        scores = inputs.random_scores()
        return prune_lowest_per_layer(scores, masks, {n: sizes[n] - keep[n] for n in sizes})

    def custom(self, name: str, params: dict[str, torch.Tensor]) -> bool:
        """Whether `name` is the dense first layer, outside the budget."""
        return self.dense_first_layer and name == next(iter(params))

    # -- the updates --------------------------------------------------------------------------

    def end_step(self, total_steps: int) -> int:
        return int(self.end * total_steps)

    def update_due(self, step: int, total_steps: int) -> bool:
        # the authors skip an update whose fraction has annealed to 0 (at T_end itself)
        on_beat = step % self.update_every == 0 and step <= self.end_step(total_steps)
        return on_beat and self.drop_fraction_at(step, total_steps) > 0

    def drop_fraction_at(self, step: int, total_steps: int) -> float:
        return cosine_fraction(self.drop_fraction, step, max(1, self.end_step(total_steps)))

    def grow_scores(self, inputs: PruneInputs) -> dict[str, torch.Tensor]:
        """Higher grows first; shaped like each tensor."""
        raise NotImplementedError

    @torch.no_grad()
    def regrow(self, inputs: PruneInputs, step: int, total_steps: int) -> tuple[dict, dict]:
        """(drop, grow), name -> bool: in each tensor but a dense first layer, int(live * f) of
        its live weights of least |w|, and as many of the highest `grow_scores` among those dead
        after the drop (a weight dropped may grow again at once: then it stays as it was)."""
        fraction = self.drop_fraction_at(step, total_steps)
        grow_scores = self.grow_scores(inputs)
        drop, grow = {}, {}
        counts = inputs.masks.live_counts()
        for name, w in inputs.params.items():
            mask = inputs.masks[name]
            count = 0 if self.custom(name, inputs.params) else int(counts[name][0] * fraction)
            flat = mask.flatten()
            dropping = lowest_k(torch.where(flat, w.detach().abs().flatten().float(), math.inf),
                                count)  # fmt: skip
            candidates = ~(flat & ~dropping)
            growing = lowest_k(
                torch.where(candidates, -grow_scores[name].flatten().float(), math.inf), count
            )
            drop[name], grow[name] = dropping.view_as(mask), growing.view_as(mask)
        return drop, grow

    def where(self) -> str:
        densities = "ERK" if self.distribution == "erk" else "uniform"
        return f"randomly in each layer ({densities} densities)"

    def between_prunes(self) -> str:
        first = ", the first dense" if self.dense_first_layer else ""
        return (
            f"then every {self.update_every} steps up to {self.end:g} of training each layer"
            f"{first} drops {self.drop_fraction:g} (cosine-annealed to 0) of its live weights by "
            f"|w| and grows as many {self.grown_by}"
        )

    @classmethod
    def variant_label(cls, options: dict) -> str:
        label = super().variant_label(options)
        extras = []
        if options.get("rigl_distribution") == "uniform":
            extras.append("uniform")
        if options.get("rigl_dense_first_layer"):
            extras.append("dense first layer")
        return f"{label} ({', '.join(extras)})" if extras else label


@dataclass
class RigL(DynamicSparse):
    """Grows the dead weights of largest |gradient|, the dense gradient of the update step's batch
    (Evci et al., 2020)."""

    label = "RigL"
    grows_by_gradient = True
    grown_by = "by |gradient|"

    def grow_scores(self, inputs):
        if inputs.gradients is None:
            raise RuntimeError(
                "RigL grows by the gradient, read in after_backward: call pruner.after_backward() "
                "between backward and the optimizer step, or attach_optimizer(..., step_hooks=True)"
            )
        return {name: inputs.gradients[name].abs() for name in inputs.params}


@dataclass
class SET(DynamicSparse):
    """Grows dead weights at random, from the pruner's seeded generator (Mocanu et al., 2018)."""

    label = "SET"
    grown_by = "at random"

    def grow_scores(self, inputs):
        return inputs.random_scores()


@dataclass
class GraNet(AtInitialisation):
    """Gradual magnitude pruning with zero-cost neuroregeneration (Liu et al., "Sparse Training
    via Boosting Pruning Plasticity with Neuroregeneration", NeurIPS 2021). From a random
    start at `init_sparsity`, every `update_every` optimizer steps it prunes the live weights of
    least |w| across the network down to Zhu & Gupta's cubic schedule's sparsity at that step
    (reaching `sparsity` at `prune_end` of training), then, in each tensor, drops
    ceil(live * f) more by |w| and regrows as many dead ones of largest |gradient|, f the
    regrowth fraction cosine-annealed from `regrow_fraction` to `regrow_fraction_end` over the
    whole run (the authors' CosineDecay). The facts follow VITA-Group/GraNet
    (CIFAR/sparselearning/core.py: pruning, truncate_weights)."""

    sparsity: float | None = option(
        "granet_sparsity",
        SPARSITY,
        None,
        "granet: the sparsity its cubic schedule reaches at --granet_prune_end (required)",
        level=True,
    )
    update_every: int = option(
        "granet_update_every",
        Bounded(int, low=1, high=10_000_000),
        1000,
        "granet: optimizer steps between updates (prune and regrow)",
    )
    prune_start: float = option(
        "granet_prune_start",
        Bounded(float, low=0, below=1),
        0.0,
        "granet: the fraction of training (in optimizer steps) where its cubic schedule starts",
    )
    prune_end: float = option(
        "granet_prune_end",
        Bounded(float, above=0, high=1),
        0.5,
        "granet: the fraction of training where its cubic schedule reaches --granet_sparsity",
    )
    regrow_fraction: float = option(
        "granet_regrow_fraction",
        RATE,
        0.5,
        "granet: the fraction of each tensor's live weights the first update drops and regrows",
    )
    regrow_fraction_end: float = option(
        "granet_regrow_fraction_end",
        RATE,
        0.005,
        "granet: the regrowth fraction at the end of training, reached by cosine annealing",
    )
    distribution: str = option(
        "granet_distribution",
        DISTRIBUTIONS,
        "erk",
        "granet: each layer's density at the random start: erk (Erdős-Rényi-Kernel, as the "
        "authors' CIFAR code starts) or uniform",
    )
    # the run's optimizer steps (as for RigL); None: the Pruner's own count
    total_steps: int | None = None

    label = "GraNet"
    regrows = True
    grows_by_gradient = True
    shrinks = True

    def __post_init__(self):
        super().__post_init__()
        if self.total_steps is not None:
            Bounded(int, low=1).check("total_steps", self.total_steps)
        if self.sparsity is None:
            raise ValueError(f"{self.label} needs {named(type(self), 'sparsity')} (e.g. 0.95)")
        if self.init_sparsity is not None and self.init_sparsity > self.sparsity:
            raise ValueError(
                f"{named(type(self), 'init_sparsity')} {self.init_sparsity:g} is above "
                f"{named(type(self), 'sparsity')} {self.sparsity:g}"
            )
        if self.prune_end <= self.prune_start:
            raise ValueError(
                f"{named(type(self), 'prune_end')} {self.prune_end:g} is not after "
                f"{named(type(self), 'prune_start')} {self.prune_start:g}"
            )

    check_schedule = DynamicSparse.check_schedule

    def select(self, inputs: PruneInputs, step: Step) -> dict[str, torch.Tensor]:
        """The random start: round((1 - init_sparsity) * size) live weights in all, shared out
        among the tensors by their ERK or uniform densities."""
        sizes = {name: p.numel() for name, p in inputs.params.items()}
        budget = round((1.0 - step.sparsity) * sum(sizes.values()))
        if self.distribution == "erk":
            shapes = {name: tuple(p.shape) for name, p in inputs.params.items()}
            densities = erk_densities(shapes, step.sparsity)
        else:
            densities = {name: 1.0 - step.sparsity for name in sizes}
        keep = keep_counts(densities, sizes, budget)
        scores = inputs.random_scores()
        return prune_lowest_per_layer(scores, inputs.masks, {n: sizes[n] - keep[n] for n in sizes})

    def sparsity_at(self, step: int, total_steps: int) -> float:
        """Zhu & Gupta's cubic curve from `init_sparsity` at `prune_start` to `sparsity` at
        `prune_end` of `total_steps`."""
        start, end = self.prune_start * total_steps, self.prune_end * total_steps
        progress = min(1.0, max(0.0, (step - start) / max(1.0, end - start)))
        initial = self.init_sparsity or 0.0
        return self.sparsity + (initial - self.sparsity) * (1.0 - progress) ** 3

    def regrow_fraction_at(self, step: int, total_steps: int) -> float:
        low = self.regrow_fraction_end
        return low + cosine_fraction(self.regrow_fraction - low, step, total_steps)

    def update_due(self, step: int, total_steps: int) -> bool:
        return step % self.update_every == 0 and step >= self.prune_start * total_steps

    @torch.no_grad()
    def regrow(self, inputs: PruneInputs, step: int, total_steps: int) -> tuple[dict, dict]:
        """(drop, grow): the global magnitude prune to the cubic schedule's sparsity, then in
        each tensor ceil(live * f) more of least |w| dropped and as many of the highest
        |gradient| among the dead grown (a weight dropped may grow again at once: then it
        stays as it was)."""
        if inputs.gradients is None:
            raise RuntimeError(
                "GraNet regrows by the gradient, read in after_backward: call "
                "pruner.after_backward() between backward and the optimizer step, or "
                "attach_optimizer(..., step_hooks=True)"
            )
        masks = inputs.masks
        keep = round((1.0 - self.sparsity_at(step, total_steps)) * masks.num_total)
        magnitudes = {name: w.detach().abs().float() for name, w in inputs.params.items()}
        drop = prune_lowest_global(magnitudes, masks, max(0, masks.num_live - keep))
        fraction = self.regrow_fraction_at(step, total_steps)
        grow = {}
        for name, mask in masks.items():
            live = (mask & ~drop[name]).flatten()
            count = math.ceil(int(live.sum()) * fraction)
            dropping = lowest_k(torch.where(live, magnitudes[name].flatten(), math.inf), count)
            drop[name] = drop[name] | dropping.view_as(mask)
            scores = inputs.gradients[name].abs().flatten().float()
            growing = lowest_k(torch.where(live & ~dropping, math.inf, -scores), count)
            grow[name] = growing.view_as(mask)
        return drop, grow

    where = DynamicSparse.where

    def between_prunes(self) -> str:
        return (
            f"then every {self.update_every} steps prunes across the network by |w| along a "
            f"cubic curve to {self.sparsity:g} at {self.prune_end:g} of training, and in each "
            f"layer drops {self.regrow_fraction:g} (cosine-annealed to "
            f"{self.regrow_fraction_end:g}) of its live weights by |w| and regrows as many by "
            "|gradient|"
        )
