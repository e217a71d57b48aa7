"""Pruning criteria: the scores and selection rules behind `--prune_criterion`.

A criterion decides which live weights a prune removes; the schedule (pruning/schedule.py)
decides when and how many. Most criteria are rankings: `scores` gives every weight a number and
the lowest-scoring live weights go, ranked across the whole network (`scope = "global"`) or
within each tensor (`"layer"`). Rules that are not rankings override `select`.

A criterion is a dataclass whose fields are its options; a field made with `pruning.options.option`
is also a flag of main.py, which cli.py adds from here. What a criterion needs it receives in
`PruneInputs`: weights, masks, flip counts, a seeded generator, and, if `batches_needed` says
so, the model and that many training batches. Adding a method is one class here (or in a file of
its own) and one line in CRITERIA (pruning/registry.py).

A criterion that `observes` training also sees every step: `observe`, called from
Pruner.after_backward, accumulates what it scores by (Taylor's (dL/dw · w)² summed over the steps
since the last prune); what it holds is saved with the pruner's state (`state_dict`). One that
does not observe costs the training step nothing.

An N:M constraint (pruning/nm.py) needs nothing of a ranking criterion: `select` adds the
weights the constraint forces out (`PruneInputs.forced`) to those its scores choose. A criterion
that overrides `select` and ranks must pass `forced` to its selection in turn (SynFlow does).
"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from .mask import Masks
from .nm import NM
from .options import (
    SPARSITY,
    Bounded,
    Choice,
    check_fields,
    describe_options,
    named,
    option,
)
from .schedule import Step
from .select import prune_lowest_global, prune_lowest_per_layer
from .snip import SCORINGS, connection_sensitivity, xavier_sensitivity


@dataclass
class PruneInputs:
    """Everything a criterion may look at when it prunes."""

    params: dict[str, torch.Tensor]  # the prunable tensors, by parameter name
    masks: Masks  # which of their weights are alive
    flip_counts: dict[str, torch.Tensor]  # sign flips of each weight so far (int32, up to date)
    generator: torch.Generator  # seeded, on the weights' device, saved with the checkpoint
    model: nn.Module  # the unwrapped network
    batches: list[tuple[torch.Tensor, torch.Tensor]]  # `batches_needed` training batches
    device: torch.device
    # sums a tensor over the ranks under torchrun (identity alone), for gradient-based scores
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]
    nm: NM | None = None  # at most N live of every M consecutive weights (pruning/nm.py)
    nm_exclude: frozenset[str] = frozenset()  # the tensors `nm` leaves alone
    # at a mask update of a criterion that `grows_by_gradient`: each tensor's gradient of this
    # step, read before the dead weights' entries were masked (None otherwise)
    gradients: dict[str, torch.Tensor] | None = None

    def random_scores(self) -> dict[str, torch.Tensor]:
        """A uniform draw for every weight, tensor after tensor, from the pruner's generator."""
        return {
            name: torch.rand(w.shape, generator=self.generator, device=w.device)
            for name, w in self.params.items()
        }

    def forced(
        self, scores: dict[str, torch.Tensor], masks: Masks | None = None
    ) -> dict[str, torch.Tensor] | None:
        """The live weights of `masks` (default: the pruner's) that must go whatever the step,
        for the N:M constraint to hold given `scores`; None without one."""
        if self.nm is None:
            return None
        return self.nm.excess(scores, self.masks if masks is None else masks, self.nm_exclude)


class Criterion:
    """Base class. Subclasses are dataclasses; class attributes describe the method."""

    label = ""  # its name in reports and plots (default: the class's name)
    schedule = "periodic"  # the schedule it runs on unless told otherwise
    # its own options that only set up that default schedule (ignored with another --schedule)
    schedule_fields: tuple[str, ...] = ()
    scope = "global"  # "global": one ranking over the network; "layer": one per tensor
    ranks = True  # False for a rule that decides by itself how many weights go (Threshold)
    prunes = True  # False for dense training
    # the method as published adds gradient noise (FlipOut's λ): a run of it without noise, and
    # a run of any other with noise, is labelled as the departure it is (registry.method_label)
    noisy = False
    # with the Hoyer-Square penalty in the loss (--add_hs) this is Yang et al.'s Hoyer-Square
    hoyer_square = False
    # dynamic sparse training (pruning/dynamic.py): between prunes, after the optimizer steps that
    # `update_due` names, `regrow` drops live weights and grows as many dead ones
    regrows = False
    # whether an update may remove more weights than it grows (GraNet), never the reverse
    shrinks = False
    # whether `regrow` reads PruneInputs.gradients (kept only at the steps of an update)
    grows_by_gradient = False
    # whether `observe` sees every training step (Pruner.after_backward); False: never called
    observes = False
    # the registry, name -> class (pruning/registry.py), which binds it here when it is built:
    # this module is below the registry and cannot import it
    registry: ClassVar[dict[str, type["Criterion"]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.label:
            cls.label = cls.__name__

    def __post_init__(self):
        check_fields(self)

    # methods of their own on another schedule: schedule -> their name in reports
    schedule_labels: ClassVar[dict[str, str]] = {}

    @classmethod
    def variant_label(cls, options: dict) -> str:
        """Its label, and the schedule when it is not the criterion's own (runs on different
        schedules are other methods), given the run's options under their flags' names. The
        part of the method's label (pruning.registry.method_label) that is the criterion's: a
        criterion whose options make other methods says so here."""
        schedule = options.get("schedule")
        if schedule in cls.schedule_labels:
            return cls.schedule_labels[schedule]
        return cls.label if schedule in (None, cls.schedule) else f"{cls.label} ({schedule})"

    def batches_needed(self) -> int:
        """Training batches `PruneInputs.batches` must hold at each prune."""
        return 0

    def default_schedule(self) -> tuple[str, dict]:
        """The schedule (registry name, fields) this criterion runs on unless told otherwise."""
        return self.schedule, {}

    def check_schedule(self, schedule) -> None:
        """ValueError when this criterion cannot run on `schedule` (any schedule by default)."""

    def update_due(self, step: int, total_steps: int) -> bool:
        """Whether the masks move after optimizer step `step` (counted from 1) of `total_steps`."""
        return False

    def regrow(self, inputs: PruneInputs, step: int, total_steps: int) -> tuple[dict, dict]:
        """(drop, grow) at a mask update, name -> bool tensor: live weights to drop and dead
        ones to grow (a regrowing criterion's own)."""
        raise NotImplementedError

    def between_prunes(self) -> str:
        """What it does between prunes, for the line a run starts with ("" for nothing)."""
        return ""

    def observe(self, params: dict[str, torch.Tensor]) -> None:
        """At every training step, for a criterion that `observes`: `params` are the prunable
        tensors by name, each `.grad` this step's gradient (None where the loss did not reach
        the tensor), as DDP averaged it under torchrun, the dead weights' entries already zero,
        before gradient noise is added, before any clipping and before the optimizer steps.
        Called under torch.no_grad(); what it accumulates goes in `state_dict`."""

    def state_dict(self) -> dict:
        """What it has accumulated by observing, for the pruner's checkpoint (nothing here)."""
        return {}

    def load_state_dict(self, state: dict, params: dict[str, torch.Tensor]) -> None:
        """Restore `state_dict`'s state, its tensors onto the devices of `params` (a checkpoint
        is read onto the CPU). A criterion that keeps none refuses any."""
        if state:
            raise ValueError(
                f"{self.label} keeps no state of its own, but the state holds some for its "
                f"criterion ({', '.join(map(str, state))}): it is another criterion's"
            )

    def scores(self, inputs: PruneInputs) -> dict[str, torch.Tensor]:
        """Higher is more worth keeping; shaped like each tensor."""
        raise NotImplementedError

    def select(self, inputs: PruneInputs, step: Step) -> dict[str, torch.Tensor]:
        """name -> bool tensor of the live weights to remove now: the step's count of the
        lowest-scoring, and any the N:M constraint forces out (they count first)."""
        scores = self.scores(inputs)
        masks, forced = inputs.masks, inputs.forced(scores)
        if self.scope == "layer":
            counts = step.layer_removals(masks.live_counts())
            return prune_lowest_per_layer(scores, masks, counts, forced)
        live = masks.num_live
        return prune_lowest_global(scores, masks, live - step.keep(live, masks.num_total), forced)

    def where(self) -> str:
        return "in each layer" if self.scope == "layer" else "across the network"

    def summary(self) -> dict:
        return {"name": self.name, "label": self.label, **describe_options(self)}

    @property
    def name(self) -> str:
        """Its registry name; a criterion used without registering it goes by its class name."""
        return next((key for key, cls in self.registry.items() if cls is type(self)),
                    type(self).__name__)  # fmt: skip


POSITIVE_P = Bounded(float, above=0, high=16.0)  # |w|^p of a small weight underflows long before


@dataclass
class FlipOut(Criterion):
    """|w|^p / (flips + 1): small weights whose sign keeps flipping carry the least signal
    (Apostol, Stol & Forré, 2020)."""

    p: float = option("flipout_p", POSITIVE_P, 2.0, "FlipOut score |w|^p / (flips + 1)")

    label = "FlipOut"
    noisy = True

    def scores(self, inputs):
        return {
            name: w.detach().abs().pow(self.p) / (inputs.flip_counts[name] + 1)
            for name, w in inputs.params.items()
        }


@dataclass
class GlobalMagnitude(Criterion):
    """|w| ranked across the network (Frankle & Carbin, 2019)."""

    label = "GlobalMagnitude"
    schedule_labels: ClassVar[dict[str, str]] = {"gradual": "GMP (global)"}

    def scores(self, inputs):
        return {name: w.detach().abs() for name, w in inputs.params.items()}


@dataclass
class LayerMagnitude(GlobalMagnitude):
    """|w| ranked within each tensor: every layer loses the same fraction (Han et al., 2015)."""

    label = "Magnitude"
    scope = "layer"
    # Zhu & Gupta prune within each layer
    schedule_labels: ClassVar[dict[str, str]] = {"gradual": "GMP"}


@dataclass
class Taylor(Criterion):
    """(dL/dw · w)², the first-order Taylor estimate of how much removing w changes the loss,
    summed over the training steps since the last prune and ranked across the network (Molchanov
    et al., "Importance Estimation for Neural Network Pruning", CVPR 2019: their FO-Taylor on
    weights, here per weight rather than per filter). Each step's gradient of the live weights
    is read before gradient noise; a prune ranks by the sum and starts it afresh, so that dead
    weights stay at 0. An instance observes for one Pruner."""

    # tensor name -> the sum of (g * w)^2 since the last prune, float32 on the weights' device
    importance: dict[str, torch.Tensor] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    label = "Taylor"
    observes = True

    def check_schedule(self, schedule) -> None:
        if schedule.step(0) is not None:
            raise ValueError(
                f"{self.label} ranks by the training steps it has seen since the last prune, "
                f"so it cannot prune before training, where {schedule.name} prunes first: prune "
                "after an epoch of training at the earliest"
            )

    @torch.no_grad()
    def observe(self, params):
        stepped = {name: p for name, p in params.items() if p.grad is not None}
        for name, p in stepped.items():
            if name not in self.importance:
                self.importance[name] = torch.zeros_like(p, dtype=torch.float32)
        if stepped:
            products = torch._foreach_mul([p.grad.float() for p in stepped.values()],
                                          [p.float() for p in stepped.values()])  # fmt: skip
            torch._foreach_addcmul_([self.importance[n] for n in stepped], products, products)

    def scores(self, inputs):
        if not self.importance:
            raise RuntimeError(
                f"{self.label} has seen no training step since the last prune: call "
                "pruner.after_backward() between backward and the optimizer step, or "
                "attach_optimizer(..., step_hooks=True), and train before pruning"
            )
        summed, self.importance = self.importance, {}
        return {
            name: summed.get(name, torch.zeros_like(w, dtype=torch.float32))
            for name, w in inputs.params.items()
        }

    def state_dict(self):
        return {"importance": {name: t.clone() for name, t in self.importance.items()}}

    def load_state_dict(self, state, params):
        importance = state.get("importance", {})
        for name, value in importance.items():
            if name not in params:
                raise ValueError(f"{self.label}'s importance has {name}, which is not pruned here")
            if not torch.is_tensor(value) or value.shape != params[name].shape:
                raise ValueError(
                    f"{self.label}'s importance of {name} is not a tensor shaped like it, "
                    f"{tuple(params[name].shape)}"
                )
        self.importance = {
            name: value.to(params[name].device, torch.float32, copy=True)
            for name, value in importance.items()
        }


@dataclass
class IterativeMagnitude(GlobalMagnitude):
    """Iterative magnitude pruning with rewinding, the lottery-ticket procedure (Frankle &
    Carbin, 2019; Frankle et al., 2020): global magnitude on the Rounds schedule
    (pruning/schedule.py), which rewinds the survivors after each prune."""

    label = "IMP"
    schedule = "rounds"
    schedule_labels: ClassVar[dict[str, str]] = {}

    @classmethod
    def variant_label(cls, options: dict) -> str:
        rewind = options.get("rewind_epoch") or 0
        label = super().variant_label(options)
        if rewind == 0 or label != cls.label:
            return label
        # at epoch 0 the optimizer is new either way: those runs are one method
        fresh = ", fresh optimizer" if options.get("imp_optimizer") == "fresh" else ""
        return f"IMP (rewind to epoch {rewind}{fresh})"


@dataclass
class Random(Criterion):
    """Uniformly random live weights, from the pruner's generator (seeded by `--seed`)."""

    label = "Random"

    def scores(self, inputs):
        return inputs.random_scores()


@dataclass
class Threshold(Criterion):
    """Every live weight with |w| < threshold (Hoyer-Square's pruning step, Yang et al., 2020)."""

    threshold: float = option(
        "magnitude_threshold",
        Bounded(float, low=0, high=100.0),
        1e-4,
        "the threshold criterion prunes live weights with |w| below this",
        level=True,
    )

    label = "Threshold"
    ranks = False
    hoyer_square = True

    def select(self, inputs, step):
        return {
            name: inputs.masks[name] & (w.detach().abs() < self.threshold)
            for name, w in inputs.params.items()
        }

    def where(self) -> str:
        return f"every live weight with |w| < {self.threshold:g}"


@dataclass
class AtInitialisation(Criterion):
    """Base of the criteria that, by default, prune once at initialisation (before training) to
    `init_sparsity` (`--init_sparsity`): SNIP, SynFlow, GraSP, and RigL, SET and GraNet,
    which start sparse (pruning/dynamic.py). On another schedule the first three score afresh
    at each prune."""

    init_sparsity: float | None = option(
        "init_sparsity",
        SPARSITY,
        None,
        "snip, synflow, grasp, rigl, set, granet: the fraction of the weights they remove at "
        "initialisation, before training (e.g. 0.99; required unless --schedule says otherwise)",
        level=True,
    )

    schedule = "oneshot"
    schedule_fields: ClassVar[tuple[str, ...]] = ("init_sparsity",)

    def target(self) -> float | None:
        """The sparsity of the default one-shot prune."""
        return self.init_sparsity

    def default_schedule(self):
        target = self.target()
        if target is None:
            raise ValueError(
                f"{self.label} prunes at initialisation to "
                f"{named(type(self), 'init_sparsity')}, which is missing (e.g. 0.99)"
            )
        return "oneshot", {"sparsity": target}


BN_MODES = Choice("train", "eval")


@dataclass
class Snip(AtInitialisation):
    """Connection sensitivity |dL/dw * w| on a few training batches (Lee et al., 2019). By
    default once, before training, to `init_sparsity` (or the original's `sparsity`,
    `--snip_sparsity`); on another schedule it scores afresh at each prune. `bn_mode` is the
    mode the model scores in: "train" (BatchNorm on batch statistics) as the FlipOut paper's
    SNIP, "eval" (on running statistics) as SNIP's authors'. `score` is what it scores: the model
    as initialised with cross-entropy, or, "xavier_nll", a Xavier re-initialised copy with NLL on
    raw logits, as the FlipOut authors' code (pruning/snip.py)."""

    sparsity: float | None = option(
        "snip_sparsity",
        SPARSITY,
        None,
        "fraction of weights SNIP removes before training (required with snip, unless "
        "--schedule says otherwise)",
        level=True,
    )
    batches: int = option(
        "snip_batches", Bounded(int, low=1, high=10_000), 1, "training batches SNIP scores on"
    )
    bn_mode: str = option(
        "snip_bn",
        BN_MODES,
        "train",
        "the mode SNIP scores the model in: train (BatchNorm normalises with each batch's "
        "statistics, as the FlipOut paper's SNIP) or eval (with its running statistics, as "
        "SNIP's authors' code); the model's statistics are left unchanged either way",
    )
    score: str = option(
        "snip_score",
        SCORINGS,
        "as_initialised",
        "what SNIP scores: as_initialised (the model, the weights that then train, with "
        "cross-entropy) or xavier_nll (a copy with Xavier normal linear and conv weights, with "
        "NLL on the raw logits, as the FlipOut authors' code; drawn from --seed's generator)",
    )

    label = "SNIP"
    schedule_fields = ("init_sparsity", "sparsity")

    @classmethod
    def variant_label(cls, options: dict) -> str:
        """Its label, with the schedule, the score and the BatchNorm mode where they are not the
        defaults: "SNIP (periodic, Xavier copy, NLL, BatchNorm in eval mode)"."""
        label = super().variant_label(options)
        extras = []
        if options.get("snip_score") == "xavier_nll":
            extras.append("Xavier copy, NLL")
        if options.get("snip_bn") == "eval":
            extras.append("BatchNorm in eval mode")
        if not extras:
            return label
        if label.endswith(")"):  # "SNIP (periodic)" -> "SNIP (periodic, BatchNorm in eval mode)"
            return f"{label[:-1]}, {', '.join(extras)})"
        return f"{label} ({', '.join(extras)})"

    def batches_needed(self):
        return self.batches

    def target(self):
        cls = type(self)
        if None not in (self.init_sparsity, self.sparsity) and self.init_sparsity != self.sparsity:
            raise ValueError(
                f"{named(cls, 'init_sparsity')} {self.init_sparsity:g} and "
                f"{named(cls, 'sparsity')} {self.sparsity:g} disagree; give one"
            )
        if self.init_sparsity is None and self.sparsity is None:
            raise ValueError(
                f"SNIP's default schedule needs {named(cls, 'init_sparsity')} or "
                f"{named(cls, 'sparsity')} (e.g. 0.999)"
            )
        return self.sparsity if self.init_sparsity is None else self.init_sparsity

    def scores(self, inputs):
        train_mode = self.bn_mode == "train"
        if self.score == "xavier_nll":
            return xavier_sensitivity(
                inputs.model,
                inputs.params,
                inputs.masks,
                inputs.batches,
                inputs.device,
                inputs.generator,
                inputs.all_reduce_sum,
                train_mode=train_mode,
            )
        return connection_sensitivity(
            inputs.model,
            inputs.params,
            inputs.batches,
            inputs.device,
            inputs.all_reduce_sum,
            train_mode=train_mode,
        )


@dataclass
class NoPruning(Criterion):
    """Dense training; masks stay full and sign flips are still counted."""

    label = "Dense"
    prunes = False

    def select(self, inputs, step):
        return {}


def first_batches(source, count: int) -> list:
    """The first `count` batches of a re-iterable source (a DataLoader)."""
    return list(itertools.islice(iter(source), count))
