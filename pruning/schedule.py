"""When pruning happens and how much each prune removes: the schedules behind `--schedule`.

A schedule answers one question at the end of every epoch (and at epoch 0, before training):
prune now, and how much? The answer is a `Step`, either a fraction of the live weights (`rate`)
or a sparsity to reach (`sparsity`, a fraction of all prunable weights); the criterion then
chooses which weights go. Any ranking criterion runs on any schedule.

- `Periodic` (the paper's, the default): after every `every`-th epoch but the last (and before
  `stop_at`), remove `rate` of the live weights. With n prunes the sparsity is 1 - (1 - rate)^n,
  which gives the seed README's table for 350 epochs at rate 0.5: every 117, 70, 50, 39, 32
  epochs -> 75%, 93.75%, 98.44%, 99.61%, 99.90%.
- `OneShot`: once, at the end of `epoch` (0: before training, as SNIP), to `sparsity`.
- `Gradual` (Zhu & Gupta, "To prune, or not to prune", 2017): at epochs start, start + every, ...
  and end, to s(t) = s_f + (s_i - s_f) (1 - (t - start) / (end - start))^3, which rises quickly
  at first and levels off at s_f = `sparsity` at `end`.
- `Rounds` (the lottery ticket's iterative pruning): train `epochs`, remove `rate` of the live
  weights, rewind the survivors, and train again, for `rounds` rounds.

A schedule checks its arguments when it is built, from Python as from the command line (the
flags' parsers are its fields' checks): `epochs` at least 1, rates in (0, 1), sparsities in
[0, 1), epochs to prune at before the last, a start no later than its end; anything else is a
ValueError naming the argument.

A sparsity is reached exactly: the prune keeps round((1 - s) * total) weights, ties broken as
everywhere by position; a layer-wise criterion shares those out between layers in proportion to
their sizes (largest remainders), so the total is exact there too.
"""

from dataclasses import dataclass
from functools import partial

from .mask import percent
from .options import (
    RATE,
    SPARSITY,
    Bounded,
    Choice,
    check_fields,
    describe_options,
    named,
    option,
)

NEVER = -1  # the --stop_*_at value that means "never stop"


EPOCH = Bounded(int, low=0, high=100_000)
# a schedule's `epochs`, the length of training (-e), which it is given rather than declares
EPOCHS = Bounded(int, low=1, high=100_000)
# options that several schedules share: one flag each, a fresh dataclass field per schedule
PRUNE_RATE = partial(
    option,
    "prune_rate",
    RATE,
    0.5,
    "periodic and rounds: the fraction of the live weights each prune removes",
    level=True,
)
PRUNE_FREQ = partial(
    option,
    "prune_freq",
    Bounded(int, low=1, high=100_000),
    2,
    "prune at the end of every this many epochs (periodic: not after the last; gradual: between "
    "--prune_start and --prune_end)",
    level=True,
)
TARGET = partial(
    option,
    "target_sparsity",
    SPARSITY,
    None,
    "oneshot and gradual: the fraction of prunable weights removed in the end (e.g. 0.95)",
    level=True,
)
START = partial(
    option,
    "prune_start",
    EPOCH,
    0,
    "oneshot: the epoch after which it prunes (0: before training); gradual: the epoch of its "
    "first prune",
)


@dataclass(frozen=True)
class Step:
    """What one prune removes: `rate` of the live weights, or down to `sparsity` of all."""

    rate: float | None = None
    sparsity: float | None = None
    rewind: bool = False  # after pruning, rewind the survivors (Rounds)

    def keep(self, live: int, total: int) -> int:
        """How many weights stay alive, of `total` with `live` alive now."""
        if self.rate is not None:
            return live - int(self.rate * live)
        return min(live, round((1.0 - self.sparsity) * total))

    def layer_removals(self, counts: dict[str, tuple[int, int]]) -> dict[str, int]:
        """Per tensor (name -> (live, total)), how many of its live weights go. A rate applies
        to each tensor alone; a sparsity is shared out in proportion to the tensors' sizes (a
        tensor already sparser than its share keeps what it has, and the others share the rest),
        the rounding going to the largest remainders (ties to the first), so that the overall
        count is exactly that of `keep`."""
        if self.rate is not None:
            return {name: int(self.rate * live) for name, (live, _) in counts.items()}
        live = sum(n for n, _ in counts.values())
        budget = self.keep(live, sum(size for _, size in counts.values()))
        keep: dict[str, int] = {}
        open_layers = dict(counts)
        # a layer already sparser than its share keeps what it has; the rest share the remainder
        while open_layers:
            size = sum(s for _, s in open_layers.values())
            full = [n for n, (live, s) in open_layers.items() if budget * s / size >= live]
            if not full:
                break
            for name in full:
                keep[name] = open_layers.pop(name)[0]
                budget -= keep[name]
        if open_layers:
            size = sum(s for _, s in open_layers.values())
            shares = {name: budget * s / size for name, (_, s) in open_layers.items()}
            floors = {name: int(share) for name, share in shares.items()}
            by_remainder = sorted(shares, key=lambda n: shares[n] - floors[n], reverse=True)
            for name in by_remainder[: budget - sum(floors.values())]:
                floors[name] += 1
            keep.update(floors)
        return {name: live - keep[name] for name, (live, _) in counts.items()}


class Schedule:
    """Base class: `step(epoch)` is the prune at the end of `epoch` (0: before training), or
    None. `epochs` is the length of training, which a schedule needs to avoid the last epoch."""

    name = ""
    # whether its steps aim at a sparsity (criteria that are not rankings cannot follow those)
    targets = True
    # the epoch whose weights and optimizer state a rewinding step goes back to (0: the
    # initialisation), None for schedules that never rewind
    rewind_epoch: int | None = None
    # whether the optimizer's state is emptied at the rewind epoch, so that a rewind goes back to
    # a new optimizer rather than to the one trained up to that epoch
    fresh_optimizer = False

    def __post_init__(self):
        # first, as other fields default from it and are checked against it
        epochs = getattr(self, "epochs", None)
        if epochs is not None:
            EPOCHS.check(named(type(self), "epochs"), epochs)
        self.fill_defaults()
        check_fields(self)
        self.check()

    def fill_defaults(self) -> None:
        """Give the fields whose default depends on others (Gradual's `end`) their value."""

    def check(self) -> None:
        """Raise ValueError (one line) for options that do not fit together."""

    def step(self, epoch: int) -> Step | None:
        raise NotImplementedError

    def epochs_pruned(self) -> list[int]:
        """Every epoch this schedule prunes after (0: before training)."""
        total = self.total_epochs()
        last = total if total is not None else self.horizon()
        return [e for e in range(0, last + 1) if self.step(e) is not None]

    def total_epochs(self) -> int | None:
        """How many epochs the whole run trains (more than `epochs` when it has rounds)."""
        return self.epochs

    def training_epoch(self, epoch: int) -> int:
        """The epoch of the learning-rate schedule that epoch `epoch` of the run trains as (a
        rewound round replays the epochs after the one it rewound to)."""
        return epoch

    def round_ends(self) -> list[int]:
        """The epochs that end a round of training, for schedules made of rounds."""
        return []

    def horizon(self) -> int:
        """How far to look for prunes when the length of training is not known."""
        return 0

    def final_sparsity(self) -> float:
        """The sparsity after the last prune, ignoring the rounding to whole weights."""
        kept = 1.0
        for epoch in self.epochs_pruned():
            step = self.step(epoch)
            kept = kept * (1.0 - step.rate) if step.rate is not None else 1.0 - step.sparsity
        return 1.0 - kept

    def describe(self, where: str = "across the network", ranks: bool = True) -> str:
        """The line a run starts with: what each prune removes, when, and where it ends. A
        criterion that is not a ranking gives its rule as `where`."""
        epochs = self.epochs_pruned()
        if not epochs:
            return "never prunes"
        when = ", ".join("before training" if e == 0 else str(e) for e in epochs)
        if not ranks:
            return f"prune {where}; after epochs {when}"
        return f"prune {self.what(where)}; after epochs {when} -> {percent(self.final_sparsity())}"

    def what(self, where: str) -> str:
        raise NotImplementedError

    def summary(self) -> dict:
        return {"name": self.name, **describe_options(self), "epochs_pruned": self.epochs_pruned()}


@dataclass
class Periodic(Schedule):
    """`rate` of the live weights after every `every`-th epoch, never after the last of
    `epochs` (None: training length unknown, and no end) nor from epoch `stop_at` on (-1:
    never)."""

    rate: float = PRUNE_RATE()
    every: int = PRUNE_FREQ()
    stop_at: int = option(
        "stop_pruning_at",
        Bounded(int, low=1, high=100_000, also=(NEVER,)),
        NEVER,
        "periodic: no pruning from this epoch on (-1: never stop)",
        level=True,
    )
    epochs: int | None = None

    name = "periodic"
    targets = False

    def step(self, epoch: int) -> Step | None:
        stop = None if self.stop_at == NEVER else self.stop_at
        if (
            epoch > 0
            and epoch % self.every == 0
            and epoch != self.epochs
            and (stop is None or epoch < stop)
        ):
            return Step(rate=self.rate)
        return None

    def horizon(self) -> int:
        return 0 if self.stop_at == NEVER else self.stop_at

    def describe(self, where: str = "across the network", ranks: bool = True) -> str:
        if self.epochs is None and self.stop_at == NEVER:
            every = "epoch" if self.every == 1 else f"{self.every} epochs"
            return f"prune {self.what(where) if ranks else where}, after every {every}"
        return super().describe(where, ranks)

    def what(self, where: str) -> str:
        return f"{self.rate:g} of the live weights {where} each time"


@dataclass
class OneShot(Schedule):
    """Once, after epoch `epoch` (0: before training), to `sparsity`."""

    sparsity: float | None = TARGET()
    epoch: int = START()
    epochs: int | None = None

    name = "oneshot"

    def check(self) -> None:
        if self.sparsity is None:
            raise ValueError(f"{named(type(self), 'sparsity')} is required")
        if self.epochs is not None and self.epoch >= self.epochs:
            raise ValueError(
                f"{named(type(self), 'epoch')} {self.epoch} must be before the last epoch "
                f"({self.epochs}): a prune after it would never be trained or evaluated"
            )

    def step(self, epoch: int) -> Step | None:
        return Step(sparsity=self.sparsity) if epoch == self.epoch else None

    def horizon(self) -> int:
        return self.epoch

    def what(self, where: str) -> str:
        return f"{where} to {percent(self.sparsity)} at once"


@dataclass
class Gradual(Schedule):
    """Zhu & Gupta's cubic schedule from `initial_sparsity` at epoch `start` to `sparsity` at
    epoch `end`, pruning every `every` epochs in between (and at `end`). `end` None: half of
    `epochs`, leaving the second half to fine-tune."""

    sparsity: float | None = TARGET()
    start: int = START()
    end: int | None = option(
        "prune_end",
        Bounded(int, low=0, high=100_000),
        None,
        "gradual: the epoch of its last prune, which reaches --target_sparsity (default: half "
        "of -e)",
    )
    every: int = PRUNE_FREQ()
    initial_sparsity: float = option(
        "start_sparsity",
        SPARSITY,
        0.0,
        "gradual: the sparsity its first prune reaches, at --prune_start (Zhu & Gupta's s_i)",
    )
    epochs: int | None = None

    name = "gradual"

    def fill_defaults(self) -> None:
        if self.end is None and self.epochs is not None:
            self.end = max(self.start, self.epochs // 2)

    def check(self) -> None:
        cls = type(self)
        if self.sparsity is None:
            raise ValueError(f"{named(cls, 'sparsity')} is required")
        if self.end is None:
            raise ValueError(f"{named(cls, 'end')} is required (or epochs)")
        if self.end < self.start:
            raise ValueError(
                f"{named(cls, 'end')} {self.end} is before {named(cls, 'start')} {self.start}"
            )
        if self.epochs is not None and self.end >= self.epochs:
            raise ValueError(
                f"{named(cls, 'end')} {self.end} must be before the last epoch ({self.epochs}): "
                "a prune after it would never be trained or evaluated"
            )
        if self.initial_sparsity > self.sparsity:
            raise ValueError(
                f"{named(cls, 'initial_sparsity')} {self.initial_sparsity:g} is above "
                f"{named(cls, 'sparsity')} {self.sparsity:g}"
            )

    def sparsity_at(self, epoch: int) -> float:
        if self.end == self.start:
            return self.sparsity
        progress = min(1.0, max(0.0, (epoch - self.start) / (self.end - self.start)))
        return self.sparsity + (self.initial_sparsity - self.sparsity) * (1.0 - progress) ** 3

    def step(self, epoch: int) -> Step | None:
        on_beat = epoch >= self.start and (epoch - self.start) % self.every == 0
        target = self.sparsity_at(epoch)
        # a first prune to 0% (s_i = 0, Zhu & Gupta's usual start) would remove nothing
        if ((on_beat and epoch < self.end) or epoch == self.end) and target > 0:
            return Step(sparsity=target)
        return None

    def horizon(self) -> int:
        return self.end

    def what(self, where: str) -> str:
        steps = ", ".join(percent(self.sparsity_at(e)) for e in self.epochs_pruned())
        return f"{where} along a cubic curve ({steps})"


OPTIMIZER_AT_REWIND = Choice("rewind", "fresh")


@dataclass
class Rounds(Schedule):
    """Iterative pruning with rewinding, the lottery-ticket procedure (Frankle & Carbin, 2019;
    Frankle et al., "Linear Mode Connectivity and the Lottery Ticket Hypothesis", 2020): train
    `epochs`, remove `rate` of the live weights, rewind the survivors, the optimizer's state and
    the learning-rate schedule to where they were after epoch `rewind_epoch` (0: the
    initialisation), and train again from there, for `rounds` rounds in all. Round 1 trains
    `epochs` epochs, every later round `epochs - rewind_epoch`; the last round is not pruned.

    `optimizer_at_rewind` "fresh" empties the optimizer's state (momentum, Adam's moments) at the
    rewind epoch, in round 1 as at every rewind: each round trains on from there with a new
    optimizer, as in open_lth, whose rounds (levels) each build their optimizer afresh, level 0
    too, after a pretraining run that ends at the rewind step. "rewind", the default, keeps the
    state trained up to that epoch and goes back to it. At epoch 0 the two are the same."""

    rate: float = PRUNE_RATE()
    rounds: int = option(
        "rounds",
        Bounded(int, low=1, high=1000),
        3,
        "rounds: train-prune-rewind rounds, each of -e epochs (the later ones from "
        "--rewind_epoch on); the last is not pruned",
        level=True,
    )
    rewind_epoch: int = option(
        "rewind_epoch",
        Bounded(int, low=0, high=100_000),
        0,
        "rounds: after each prune the surviving weights, the optimizer and the learning rate go "
        "back to where they were after this epoch (0: the initialisation, as the original "
        "lottery ticket)",
    )
    optimizer_at_rewind: str = option(
        "imp_optimizer",
        OPTIMIZER_AT_REWIND,
        "rewind",
        "rounds: rewind (the optimizer's state goes back to that of --rewind_epoch) or fresh "
        "(emptied at --rewind_epoch, so every round trains on from there with a new optimizer, "
        "as open_lth does)",
    )
    epochs: int | None = None

    name = "rounds"
    targets = False

    @property
    def fresh_optimizer(self) -> bool:
        return self.optimizer_at_rewind == "fresh"

    def check(self) -> None:
        cls = type(self)
        if self.epochs is None:
            raise ValueError("rounds need epochs, the length of each round")
        if self.rewind_epoch >= self.epochs:
            raise ValueError(
                f"{named(cls, 'rewind_epoch')} {self.rewind_epoch} must be before the end of a "
                f"round ({self.epochs} epochs)"
            )

    def round_ends(self) -> list[int]:
        replay = self.epochs - self.rewind_epoch
        return [self.epochs + r * replay for r in range(self.rounds)]

    def total_epochs(self) -> int:
        return self.round_ends()[-1]

    def training_epoch(self, epoch: int) -> int:
        if epoch <= self.epochs:
            return epoch
        replay = self.epochs - self.rewind_epoch
        return self.rewind_epoch + (epoch - self.epochs - 1) % replay + 1

    def step(self, epoch: int) -> Step | None:
        return Step(rate=self.rate, rewind=True) if epoch in self.round_ends()[:-1] else None

    def what(self, where: str) -> str:
        to = "the initialisation" if self.rewind_epoch == 0 else f"epoch {self.rewind_epoch}"
        if self.fresh_optimizer:
            to += " with a fresh optimizer"
        return f"{self.rate:g} of the live weights {where} after each round, rewinding to {to}"


SCHEDULES: dict[str, type[Schedule]] = {
    "gradual": Gradual,
    "oneshot": OneShot,
    "periodic": Periodic,
    "rounds": Rounds,
}
