"""The pruning engine a training loop talks to: masks, sign-flip counters, a criterion and a
schedule, and its parts (gradient noise, the Hoyer-Square penalty, the tensors it prunes:
pruning/parts.py) behind five calls.

    pruner = Pruner(model, FlipOut(), Periodic(rate=0.5, every=2), noise=Noise(scale=1.0))
    pruner.attach_optimizer(optimizer)       # once: lets pruning clear the optimizer's state
    pruner.before_training()                 # a one-shot schedule at epoch 0 (SNIP) prunes here
    loss = loss + pruner.penalty()           # Hoyer-Square, when enabled (None otherwise)
    pruner.after_backward()                  # mask gradients, add gradient noise
    pruner.after_step()                      # count sign flips (re-mask weights if needed)
    pruner.end_of_epoch()                    # prune when the schedule says so

so the loop has no per-criterion branches. `attach_optimizer(optimizer, step_hooks=True)` runs
after_backward and after_step from inside `optimizer.step()`, which leaves an existing loop
unchanged but for end_of_epoch. The hooks count epochs themselves (end_of_epoch moves on to
the next, up to the schedule's last); a loop that knows its epoch may pass it, as main.py does.
`state_dict` and `load_state_dict` save and restore it, loaded before or after the model.
`Pruner(..., nm="2:4")` makes any ranking criterion keep at most 2 of every 4 consecutive weights
along each layer's inputs (pruning/nm.py).

How pruned weights stay exactly zero: their gradients are masked before every step, and when they
are pruned, the optimizer's per-weight state (momentum, Adam's moments) is zeroed with them. SGD,
RMSprop, Adam and AdamW then compute an update of exactly zero for them, weight decay included,
so the weights need no re-masking after the step. For any other optimizer, or with none attached,
after_step re-masks the weights as well, which costs one more pass over them.
"""

import copy
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .criteria import Criterion, PruneInputs, first_batches
from .flips import FlipCounter
from .hoyer import hoyer_square, penalised
from .kernels import Kernels
from .mask import Masks, check_mask, layer_table
from .mechanism import Mechanism
from .nm import NM
from .noise import NOISES, GradientNoise, UpdateNoise
from .options import RATE, SPARSITY, flags_named, spelled
from .parts import HoyerSquare, Noise, Tensors, names_of, resolve
from .prunable import aliases, as_patterns, matching, select_prunable
from .registry import build_criterion
from .schedule import SCHEDULES, Schedule, Step
from .sync import Alone, Sync

# Optimizers whose update is exactly zero for a weight whose value, gradient and per-weight state
# are all zero. Exact types only: a subclass may change the update.
KEEP_ZEROS = (torch.optim.SGD, torch.optim.RMSprop, torch.optim.Adam, torch.optim.AdamW)


@dataclass
class PruneEvent:
    epoch: int
    pruned: int
    live: int
    total: int
    sparsity: float
    collapsed: list[str]
    rewound_to: int | None = None  # the epoch the survivors were rewound to, if they were
    # a mask update of dynamic sparse training (pruning/dynamic.py), made after optimizer step
    # `step` of the run: how many weights it dropped and grew, in all and per tensor
    # (name -> [dropped, grown]); `pruned` is then what it removed net, 0 for RigL and SET
    step: int | None = None
    dropped: int | None = None
    grown: int | None = None
    layers: dict[str, list[int]] | None = None

    def as_dict(self) -> dict:
        # the optional fields only where they say something: other runs' summaries stay as
        # they were
        optional = ("rewound_to", "step", "dropped", "grown", "layers")
        return {k: v for k, v in self.__dict__.items() if k not in optional or v is not None}


def check_pairing(
    criterion: Criterion, schedule: Schedule | None, nm: NM | str | None = None
) -> None:
    """ValueError when `criterion` cannot run on `schedule`, or under the N:M constraint `nm`:
    a rule that is not a ranking decides how many weights go and cannot aim at a sparsity, nor
    say which N of every M weights are the best."""
    if schedule is not None and schedule.targets and not criterion.ranks:
        periodic = "--schedule periodic" if flags_named() else "the periodic schedule"
        raise ValueError(
            f"{criterion.label} decides by itself which weights go and cannot aim at a "
            f"sparsity; it runs on {periodic}, not {schedule.name}"
        )
    if schedule is not None:
        criterion.check_schedule(schedule)
    if nm is not None and criterion.regrows:
        raise ValueError(
            f"{criterion.label} regrows weights, which {spelled('nm')} {nm} would not constrain: "
            "dynamic sparse training runs without an N:M constraint"
        )
    if nm is not None and not (criterion.prunes and criterion.ranks):
        what = "decides by itself which weights go" if criterion.prunes else "prunes nothing"
        raise ValueError(
            f"{criterion.label} {what}: {spelled('nm')} {nm} needs a criterion that ranks the "
            "weights, to keep the best N of every M"
        )


def check_part_kinds(parts: dict) -> None:
    """TypeError for a part of the wrong kind (a class where an instance belongs, say)."""
    for argument, kind, example in (("noise", Noise, "Noise(scale=1.0)"),
                                    ("penalty", HoyerSquare, "HoyerSquare(strength=6e-5)"),
                                    ("tensors", Tensors, "Tensors(bias=True)")):  # fmt: skip
        part = parts[argument]
        if part is not None and not isinstance(part, kind):
            raise TypeError(
                f"{argument} must be a {kind.__name__}, such as {example}, or None, got {part!r}"
            )


def check_parts(model, criterion, schedule) -> None:
    """TypeError for a model, criterion or schedule of the wrong kind (a class where an instance
    belongs, say), before anything is built from it."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(criterion, Criterion | str):
        raise TypeError(
            f"criterion must be a Criterion, such as FlipOut(), or a name in CRITERIA, got "
            f"{criterion!r}"
        )
    if schedule is not None and not isinstance(schedule, Schedule):
        raise TypeError(
            f"schedule must be a Schedule, such as Periodic(rate=0.5, every=2), or None, got "
            f"{schedule!r}"
        )


class Pruner:
    """Prunes `model` (any nn.Module with weight matrices) with `criterion` (an instance or a
    registry name, pruning/criteria.py) on `schedule` (pruning/schedule.py; None: the
    criterion's own default, Periodic for most).

    Its parts (pruning/parts.py): `tensors`, which tensors are pruned, a Tensors (None: the
    default one): every layer's weight matrices (linear, convolution of any kind,
    nn.MultiheadAttention's input projection), biases and BatchNorm scales on request,
    `include` selecting some of them and `exclude` keeping some dense
    (`Tensors(exclude=("conv1", "fc"))`); the default tensors left out are `excluded`, shown
    dense in the layer table and the summary. `noise`, gradient noise, a Noise, or None;
    `penalty`, the Hoyer-Square penalty, a HoyerSquare, or None.

    Keywords besides: `data`, training batches for criteria that score on them (a DataLoader,
    or any re-iterable of (inputs, targets)); `seed`, for the noise, Random's choices and SNIP's
    re-initialised copy; `compile_kernels`, "auto", "on" or "off" (pruning/kernels.py); `sync`,
    the process group under torchrun (pruning/sync.py; the CLI passes
    utils.distributed.Distributed): gradient scores are summed over ranks, and every prune
    checks that all ranks hold the same state; `mechanism`, whether to measure per tensor the
    flip rates and the noise's share of the steps (pruning/mechanism.py), read with
    `pruner.mechanism.take()` at each epoch's end.

    The keywords of the release before that the parts replace (`noise_scale`, `hoyer_lambda`,
    `prune_bias`, ... : parts.KEYWORDS) still work in this one, with a DeprecationWarning.

    `nm`, an N:M constraint (pruning/nm.py, "2:4" or NM(2, 4)): every prune also removes, in
    each group of M consecutive weights along a layer's inputs, the live ones beyond the N that
    the criterion ranks highest, so that at most N stay live; a prune that removes at least that
    many anyway keeps its exact sparsity. `nm_exclude` selects the tensors it leaves alone (a
    first convolution with 3 input channels) as `Tensors.exclude` does; 1-D tensors (biases,
    BatchNorm scales) are never constrained. The constraint holds from the first prune on:
    masks given to `adopt_masks` or loaded from a checkpoint are taken as they are.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: Criterion | str = "flipout",
        schedule: Schedule | None = None,
        *,
        data: Iterable | None = None,
        noise: Noise | None = None,
        penalty: HoyerSquare | None = None,
        tensors: Tensors | None = None,
        nm: NM | str | None = None,
        nm_exclude: str | Iterable[str] = (),
        seed: int = 0,
        compile_kernels: str = "auto",
        sync: Sync | None = None,
        mechanism: bool = False,
        **deprecated,
    ):
        check_parts(model, criterion, schedule)
        parts = resolve({"noise": noise, "penalty": penalty, "tensors": tensors}, deprecated)
        check_part_kinds(parts)
        self.criterion = build_criterion(criterion) if isinstance(criterion, str) else criterion
        if not self.criterion.prunes:
            schedule = None
        elif schedule is None:
            name, fields = self.criterion.default_schedule()
            schedule = SCHEDULES[name](**fields)
        self.nm = NM.parse(nm) if isinstance(nm, str) else nm
        check_pairing(self.criterion, schedule, self.nm)
        self.schedule = schedule
        self.model = model
        self.data = data
        self.sync = sync or Alone()
        self.tensors = parts["tensors"] or Tensors()
        # messages name the tensors' fields as the caller spelled them
        self._tensor_names = names_of(self.tensors, keywords=bool(deprecated))
        selection = select_prunable(
            model, self.tensors.bias, self.tensors.bnorm, self.tensors.include,
            self.tensors.exclude, names=(self._tensor_names["include"],
                                         self._tensor_names["exclude"]),
        )  # fmt: skip
        self.params, self.excluded = selection.params, selection.excluded
        if not self.params:
            raise ValueError(
                f"{type(model).__name__} has nothing to prune: no layer with a weight matrix "
                "(pruning/prunable.py says which), or every one excluded"
            )
        if self.nm is None and nm_exclude:
            raise ValueError(
                f"{spelled('nm_exclude')} leaves tensors out of an N:M constraint, but there is "
                f"none ({spelled('nm')} is not given)"
            )
        # patterns, matched as Tensors.exclude's are (a tensor kept dense may be named too: it is
        # left alone anyway); the names of pruned tensors they select, from here on
        candidates = [*self.params, *self.excluded]
        left_alone = matching(
            as_patterns(nm_exclude), candidates, spelled("nm_exclude"), "prunable tensor",
            aliases(model),
        )  # fmt: skip
        self.nm_exclude = tuple(name for name in left_alone if name in self.params)
        if self.nm is not None:
            self.nm.check(self.params, self.nm_exclude)
        self.masks = Masks(self.params)
        self.device = next(iter(self.params.values())).device
        if self.device.type == "meta":
            raise ValueError(
                "model is on the meta device, which holds shapes but no values: a Pruner takes "
                "a model whose weights are on cpu, cuda or another device that holds them "
                "(model.to_empty(device=...), then its weights loaded)"
            )
        self.kernels = Kernels(compile_kernels, self.device)
        self.flips = FlipCounter(self.params, self.kernels)
        # Separate streams, so that switching noise on does not change which weights Random picks.
        self.random_generator = torch.Generator(self.device).manual_seed(seed)
        self.hoyer: HoyerSquare | None = parts["penalty"]
        self.noise_part: Noise | None = parts["noise"]
        # the noise's own streams, as the part says (None: no noise)
        self.noise = None if self.noise_part is None else self._noise(self.noise_part, seed + 1)
        self._noise_now = False  # whether this step has noise (set in after_backward, before it)
        # per-tensor flip rates and noise-to-step ratios, when asked (pruning/mechanism.py)
        self.mechanism = Mechanism(self.params, self.masks, self.flips) if mechanism else None
        # the masks as the step takes them; updated only in place, so the references stay valid
        self._masks = list(self.masks.masks.values())
        self.optimizer: torch.optim.Optimizer | None = None
        self.remask_weights = True
        self._hooks: list = []
        self.epoch = 1  # the epoch in progress, counted from 1
        self._started = False  # whether before_training ran
        # whether the weights must be read again before the next step: after load_state_dict,
        # since the model's own may be loaded after it
        self._reread_weights = False
        # weights and optimizer state at the schedule's rewind epoch, once reached
        self.rewind_point: dict | None = None
        self.events: list[PruneEvent] = []
        self.steps = 0  # optimizer steps taken (counted by after_step)
        # at a mask update's step of a criterion that grows by gradient: the step's gradients,
        # read in after_backward before the dead weights' entries are masked
        self._gradients: dict[str, torch.Tensor] | None = None

    def _noise(self, part: Noise, seed: int) -> GradientNoise:
        targets = {
            name: p
            for name, p in self.model.named_parameters()
            if p.requires_grad and (name in self.params or not part.only_prunable)
        }
        return NOISES[part.kind](
            list(targets.values()),
            part.scale,
            seed,
            masks=[self.masks.masks.get(name) for name in targets],
            kernels=self.kernels,
        )

    # The release before's attributes, read from the parts now, for code that read them.
    @property
    def hoyer_scope(self) -> str:
        """The tensors the penalty sums over ("prunable" when there is none)."""
        return "prunable" if self.hoyer is None else self.hoyer.scope

    @property
    def hoyer_lambda(self) -> float:
        return 0.0 if self.hoyer is None else self.hoyer.strength

    @property
    def stop_hoyer_at(self) -> int | None:
        return None if self.hoyer is None else self.hoyer.last_epoch

    @property
    def stop_noise_at(self) -> int | None:
        return None if self.noise_part is None else self.noise_part.stop_at

    @property
    def prune_include(self) -> tuple[str, ...]:
        return self.tensors.include

    @property
    def prune_exclude(self) -> tuple[str, ...]:
        return self.tensors.exclude

    def attach_optimizer(self, optimizer: torch.optim.Optimizer, step_hooks: bool = False) -> None:
        """The optimizer that steps these weights. From now on every prune zeroes its state for
        the pruned weights, and, for an optimizer in KEEP_ZEROS, after_step skips re-masking.
        With `step_hooks`, `optimizer.step()` itself calls after_backward before the update and
        after_step after it. A replacement optimizer must be attached in turn.

        It must step every prunable parameter that requires a gradient (the very tensors, as an
        optimizer built from `model.parameters()` does): another model's optimizer, or one that
        leaves pruned weights out, is a ValueError."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [n for n, p in self.params.items() if p.requires_grad and id(p) not in stepped]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ValueError(
                f"optimizer does not step {len(missing)} of the {len(self.params)} prunable "
                f"parameters, {missing[0]}{more}: give it this pruner's model's parameters "
                "(model.parameters())"
            )
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self.optimizer = optimizer
        self.remask_weights = type(optimizer) not in KEEP_ZEROS
        if step_hooks:
            self._hooks = [
                optimizer.register_step_pre_hook(lambda *_: self.after_backward()),
                optimizer.register_step_post_hook(lambda *_: self.after_step()),
            ]
        self._clear_optimizer_state()

    def attach_data(self, data: Iterable) -> None:
        """Training batches for criteria that score on them: a re-iterable of (inputs, targets)
        such as a DataLoader, from which each prune takes the first few."""
        self.data = data

    # -- the training loop's hooks ------------------------------------------------------------

    def before_training(self) -> PruneEvent | None:
        """Prune if the schedule prunes at epoch 0 (one-shot at initialisation)."""
        self._started = True
        step = None if self.schedule is None else self.schedule.step(0)
        event = None if step is None else self._prune(step, epoch=0)
        self._remember_rewind_point(0)
        return event

    def penalty(self, epoch: int | None = None) -> torch.Tensor | None:
        """The Hoyer-Square term to add to the loss in `epoch`, or None."""
        epoch = self.epoch if epoch is None else epoch
        if self.hoyer is None or not self.hoyer.applies(epoch):
            return None
        return self.hoyer.strength * hoyer_square(
            penalised(self.model, self.params.values(), self.hoyer.scope)
        )

    @property
    def penalty_enabled(self) -> bool:
        """Whether `penalty` adds a term to the loss in some epoch."""
        return self.hoyer is not None and bool(self.hoyer.strength)

    @torch.no_grad()
    def after_backward(self, epoch: int | None = None) -> None:
        """Between backward and the optimizer step: mask the gradients of pruned weights, let a
        criterion that `observes` see them, then add the gradient noise (in the epochs before
        the noise's `stop_at`)."""
        if self._reread_weights:
            self._reread_weights = False
            self._zero_pruned()
        if self.criterion.grows_by_gradient and self._update_due(self.steps + 1):
            # autograd computed the dead weights' gradients anyway: kept only at an update
            self._gradients = {
                name: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                for name, p in self.params.items()
            }
        if self.masks.any_pruned:
            pairs = [(p.grad, self.masks[n]) for n, p in self.params.items() if p.grad is not None]
            if pairs:
                self.kernels.mask_gradients([g for g, _ in pairs], [m for _, m in pairs])
        if self.criterion.observes:
            # the true gradient of the live weights, before the noise perturbs it
            self.criterion.observe(self.params)
        epoch = self.epoch if epoch is None else epoch
        if self.noise is not None:
            self._noise_now = self.noise_part.applies(epoch)
        if self.mechanism is not None:
            into_gradients = self.noise is not None and not isinstance(self.noise, UpdateNoise)
            self.mechanism.before_noise(self.optimizer, epoch, self._noise_now, into_gradients)
        if self.noise is not None:
            if self._noise_now and isinstance(self.noise, UpdateNoise):
                self.noise.before_step()  # its noise comes after the step, on the step
            elif self._noise_now:
                # the noise std comes from the masked gradient; pruned entries are re-zeroed
                self.noise.add()

    @torch.no_grad()
    def after_step(self) -> PruneEvent | None:
        """After the optimizer step: count sign flips (re-masking the weights first where the
        optimizer could have moved pruned ones); then, for a criterion that regrows, move the
        masks if this step is one of its updates (the event, else None)."""
        if self._noise_now and isinstance(self.noise, UpdateNoise):
            self.noise.add()  # on the step just taken; pruned weights stay at zero
        self._noise_now = False
        self.flips.update(self._masks if self.remask_weights and self.masks.any_pruned else None)
        if self.mechanism is not None:
            self.mechanism.step_taken()
        self.steps += 1
        return self._update_masks() if self._update_due(self.steps) else None

    def total_steps(self) -> int | None:
        """The optimizer steps of the whole run: the criterion's `total_steps` where it has one,
        else the batches of the Pruner's data (its len) times the schedule's epochs; None when
        neither is known."""
        given = getattr(self.criterion, "total_steps", None)
        if given is not None:
            return given
        epochs = None if self.schedule is None else self.schedule.total_epochs()
        try:
            batches = len(self.data)
        except TypeError:  # None, or data without a length
            return None
        return None if epochs is None else batches * epochs

    def _update_due(self, step: int) -> bool:
        if not self.criterion.regrows:
            return False
        total = self.total_steps()
        if total is None:
            raise ValueError(
                f"{self.criterion.label} anneals over the run's optimizer steps, which this "
                f"pruner does not know: give {self.criterion.label}(total_steps=...), or data= (a "
                "DataLoader) and a schedule built with epochs="
            )
        return self.criterion.update_due(step, total)

    def end_of_epoch(self, epoch: int | None = None) -> PruneEvent | None:
        """Prune if the schedule says so at the end of `epoch` (default: the one in progress),
        then move on to the next epoch. Epochs count from 1; one that has ended already, or one
        after the schedule's last (`schedule.total_epochs()`, where the schedule has `epochs`),
        is a ValueError, as a prune there would be outside the schedule."""
        epoch = self.epoch if epoch is None else epoch
        self._check_epoch(epoch)
        needs_start = self.schedule is not None and (
            self.schedule.step(0) is not None or self.schedule.rewind_epoch == 0
        )
        if epoch == 1 and not self._started and needs_start:
            raise RuntimeError(
                "the schedule prunes or remembers the weights before training: call "
                "pruner.before_training() first"
            )
        self.epoch = epoch + 1
        self._remember_rewind_point(epoch)
        step = None if self.schedule is None else self.schedule.step(epoch)
        return None if step is None else self._prune(step, epoch)

    def _check_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
            raise TypeError(f"epoch must be an integer, got {epoch!r}")
        if epoch < 1:
            raise ValueError(
                f"epoch must be at least 1, got {epoch}: epochs count from 1, and "
                "before_training() is the prune at epoch 0"
            )
        if epoch < self.epoch:
            raise ValueError(f"epoch {epoch} has ended already: the next to end is {self.epoch}")
        last = None if self.schedule is None else self.schedule.total_epochs()
        if last is not None and epoch > last:
            raise ValueError(
                f"epoch {epoch} is past the schedule's last epoch, {last} ({self.schedule.name} "
                f"built with epochs={self.schedule.epochs}): build the schedule with the epochs "
                "the loop trains"
            )

    def total_epochs(self, epochs: int) -> int:
        """How many epochs a run of `epochs` trains in all (more when its schedule has rounds)."""
        total = None if self.schedule is None else self.schedule.total_epochs()
        return epochs if total is None else total

    def round_ends(self) -> list[int]:
        """The epochs that end a round, when the schedule has rounds (else empty)."""
        return [] if self.schedule is None else self.schedule.round_ends()

    def training_epoch(self, epoch: int) -> int:
        """The epoch of the learning-rate schedule that `epoch` trains as (see Rounds)."""
        return epoch if self.schedule is None else self.schedule.training_epoch(epoch)

    def prune(self, sparsity: float | None = None, rate: float | None = None) -> PruneEvent:
        """Prune now, outside the schedule: down to `sparsity` of all prunable weights, or
        `rate` of the live ones, chosen by the criterion. A pruned weight is never revived, so a
        `sparsity` below the current one is a ValueError; the current one itself removes nothing
        (but what an N:M constraint forces)."""
        if (sparsity is None) == (rate is None):
            raise ValueError("prune takes either sparsity or rate")
        if not (self.criterion.prunes and self.criterion.ranks):
            raise ValueError(f"{self.criterion.label} cannot prune to a sparsity or a rate")
        if sparsity is not None:
            SPARSITY.check("sparsity", sparsity)
            # counted in weights, as the prune keeps them: no rounding makes it refuse its own
            live, total = self.masks.num_live, self.masks.num_total
            if round((1.0 - sparsity) * total) > live:
                raise ValueError(
                    f"sparsity {sparsity:g} is below the current sparsity, {1 - live / total:.6g}: "
                    "pruning never revives a weight"
                )
        else:
            RATE.check("rate", rate)
        return self._prune(Step(rate=rate, sparsity=sparsity), self.epoch - 1)

    @torch.no_grad()
    def adopt_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Start from `masks` (name -> bool tensor of the parameter's shape, True = live), such
        as a pruned model's: their pruned weights become zero and stay pruned. Call before
        training starts: after a prune, or once training has begun, it is a ValueError, as the
        masks would silently combine with the pruner's own. Masks of another dtype are a
        TypeError (0s and 1s convert with `.bool()`); of another shape, for a tensor this
        pruner does not prune, or leaving no weight live at all, a ValueError; nothing is
        adopted then."""
        if not isinstance(masks, Mapping):
            raise TypeError(f"masks must map parameter names to bool tensors, got {masks!r}")
        if self.events or self._started or self.epoch > 1:
            raise ValueError(
                "adopt_masks starts from masks before training: this pruner has pruned or "
                "trained already (build a new Pruner for the model)"
            )
        unknown = [name for name in masks if name not in self.params]
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise ValueError(
                f"there are masks for {unknown[0]}{more}, which this pruner does not prune "
                f"({self.why_not_pruned(unknown[0])})"
            )
        for name, mask in masks.items():
            check_mask(name, mask, self.masks[name].shape)
        live = sum(int(mask.sum()) for mask in masks.values())
        live += sum(self.masks[name].numel() for name in self.params if name not in masks)
        if live == 0:
            raise ValueError("masks leave no weight live: a network of zeros computes nothing")
        for name, mask in masks.items():
            self.masks.prune(name, ~mask.to(self.device))
        self._zero_pruned()

    def why_not_pruned(self, name: str) -> str:
        """Why `name` is no tensor this pruner prunes, in words that name the argument."""
        names = self._tensor_names
        if name in self.excluded:
            return f"{names['exclude']} or {names['include']} keeps it dense"
        if name.endswith("bias"):
            return f"biases need {names['bias']}"
        if name in dict(self.model.named_parameters()):
            return f"BatchNorm scales need {names['bnorm']}; other tensors, {names['include']}"
        return "the model has no such parameter"

    def prune_inputs(self) -> PruneInputs:
        """What the criterion is given at a prune."""
        needed = self.criterion.batches_needed()
        if needed and self.data is None:
            raise ValueError(
                f"{self.criterion.label} scores on training batches: give the Pruner data= "
                "(a DataLoader), or call attach_data"
            )
        return PruneInputs(
            params=self.params,
            masks=self.masks,
            flip_counts=self.flips.counts,
            generator=self.random_generator,
            model=self.model,
            batches=first_batches(self.data, needed) if needed else [],
            device=self.device,
            all_reduce_sum=self.sync.all_reduce_sum,
            nm=self.nm,
            nm_exclude=frozenset(self.nm_exclude),
        )

    def describe(self) -> str:
        """When and how this pruner prunes, in one line."""
        if self.schedule is None:
            return "no pruning"
        line = self.schedule.describe(self.criterion.where(), self.criterion.ranks)
        if self.criterion.between_prunes():
            line = f"{line}; {self.criterion.between_prunes()}"
        if self.nm is None:
            return line
        left_out = f", not in {', '.join(self.nm_exclude)}" if self.nm_exclude else ""
        return (
            f"{line}; at most {self.nm.n} of every {self.nm.m} consecutive weights along each "
            f"layer's inputs stay live ({self.nm}{left_out})"
        )

    def summary(self) -> dict:
        """The criterion and schedule with their options, and the N:M constraint where there is
        one, for a run's summary."""
        # nm only where there is one: other runs' summaries stay as they were
        constraint = {"nm": str(self.nm), "nm_exclude": list(self.nm_exclude)} if self.nm else {}
        # the same for a choice of tensors
        include, exclude = self.tensors.include, self.tensors.exclude
        chosen = {"prune_include": list(include)} if include else {}
        if exclude:
            chosen["prune_exclude"] = list(exclude)
        return {
            "criterion": self.criterion.summary(),
            "schedule": None if self.schedule is None else self.schedule.summary(),
            **constraint,
            **chosen,
        }

    # -- bookkeeping --------------------------------------------------------------------------

    def _prune(self, step: Step, epoch: int) -> PruneEvent:
        remove = self.criterion.select(self.prune_inputs(), step)
        if self.nm is not None:
            self._check_constraint(remove)
        event = self._apply(remove, epoch)
        if step.rewind:
            self._rewind()
            event.rewound_to = self.schedule.rewind_epoch
        return event

    @torch.no_grad()
    def _remember_rewind_point(self, epoch: int) -> None:
        """At the schedule's rewind epoch, keep the weights (and buffers) and the optimizer's
        state to go back to; with a schedule's `fresh_optimizer`, that state is emptied first,
        so that this round and every later one train on from here with a new optimizer."""
        if self.schedule is None or self.schedule.rewind_epoch != epoch:
            return
        if self.schedule.fresh_optimizer and self.optimizer is not None:
            self.optimizer.state.clear()  # a new torch optimizer has no per-weight state yet
        self.rewind_point = {
            "model": {name: t.detach().clone() for name, t in self.model.state_dict().items()},
            "optimizer": None
            if self.optimizer is None
            else copy.deepcopy(self.optimizer.state_dict()),
        }

    @torch.no_grad()
    def _rewind(self) -> None:
        """Back to the rewind point, the pruned weights staying pruned; the flip counter reads
        the rewound signs afresh, so that the rewind itself counts no flips."""
        if self.rewind_point is None:
            raise RuntimeError("rewinding before the rewind epoch was reached")
        self.model.load_state_dict(self.rewind_point["model"])
        if self.optimizer is not None and self.rewind_point["optimizer"] is not None:
            self.optimizer.load_state_dict(copy.deepcopy(self.rewind_point["optimizer"]))
        self._zero_pruned()
        self.sync.check_identical(self.state_tensors(), "after rewinding, weights or masks")

    def _check_constraint(self, remove: dict[str, torch.Tensor]) -> None:
        """RuntimeError, before anything changes, when removing `remove` would leave more than
        N of M live: a criterion with a `select` of its own that ignores the constraint."""
        kept = {name: m & ~remove[name] if name in remove else m for name, m in self.masks.items()}
        if not self.nm.satisfied(kept, self.nm_exclude):
            raise RuntimeError(
                f"{self.criterion.label} chose weights that leave more than {self.nm} live: its "
                "select must pass PruneInputs.forced to the selection, as Criterion.select does"
            )

    def _apply(self, remove: dict[str, torch.Tensor], epoch: int) -> PruneEvent:
        live_before = self.masks.num_live
        if self.mechanism is not None:
            self.mechanism.pruned(remove, self.steps)
        for name, chosen in remove.items():
            self.masks.prune(name, chosen)
        self._zero_pruned()
        self.sync.check_identical(
            self.state_tensors(), f"after the prune at epoch {epoch}, weights, masks or flip counts"
        )
        return self._recorded(epoch, pruned=live_before - self.masks.num_live)

    def _recorded(self, epoch: int, **fields) -> PruneEvent:
        """The event of a change of the masks made at `epoch`, as they are now, kept in
        `events`; `fields`: what only the change knows (pruned, a mask update's counts)."""
        counts = self.masks.live_counts()
        live = sum(n for n, _ in counts.values())
        event = PruneEvent(
            epoch=epoch,
            live=live,
            total=self.masks.num_total,
            sparsity=1.0 - live / self.masks.num_total,
            collapsed=[name for name, (n, _) in counts.items() if n == 0],
            **fields,
        )
        self.events.append(event)
        return event

    @torch.no_grad()
    def _update_masks(self) -> PruneEvent:
        """A mask update of dynamic sparse training: the criterion's drop and growth applied, the
        grown weights (those dead before) set to zero with their flip counts and optimizer state,
        the dropped ones zeroed as pruned ones are."""
        inputs = self.prune_inputs()
        inputs.gradients, self._gradients = self._gradients, None
        drop, grow = self.criterion.regrow(inputs, self.steps, self.total_steps())
        layers, grown_masks = {}, {}
        for name, mask in self.masks.items():
            before = mask.clone()
            mask &= ~drop[name]
            mask |= grow[name]  # in place: the step's kernels and the noise hold these tensors
            grown_masks[name] = mask & ~before
            layers[name] = [int((before & ~mask).sum()), int(grown_masks[name].sum())]
        self._check_kept(layers)
        self._zero_grown(grown_masks)
        self._zero_pruned()
        self.sync.check_identical(
            self.state_tensors(), f"after the mask update at step {self.steps}, weights or masks"
        )
        return self._recorded(
            self.epoch,
            pruned=sum(d - g for d, g in layers.values()),
            step=self.steps,
            dropped=sum(d for d, _ in layers.values()),
            grown=sum(g for _, g in layers.values()),
            layers=layers,
        )

    def _check_kept(self, layers: dict[str, list[int]]) -> None:
        """RuntimeError when an update changed the count of live weights (in a tensor, for a
        criterion that keeps each tensor's): its drop and growth must be as many; one that
        `shrinks` may drop more than it grows in a tensor, never fewer."""
        if self.criterion.shrinks:
            changed = [name for name, (d, g) in layers.items() if g > d]
            if changed:
                name = changed[0]
                raise RuntimeError(
                    f"{self.criterion.label}'s update grew {layers[name][1]} and dropped only "
                    f"{layers[name][0]} weights of {name}: it may remove weights, never add them"
                )
            return
        changed = [name for name, (d, g) in layers.items() if d != g]
        global_ok = sum(d for d, _ in layers.values()) == sum(g for _, g in layers.values())
        if changed and (self.criterion.scope == "layer" or not global_ok):
            name = changed[0]
            raise RuntimeError(
                f"{self.criterion.label}'s update dropped {layers[name][0]} and grew "
                f"{layers[name][1]} weights of {name}: it must grow as many as it drops"
            )

    @torch.no_grad()
    def _zero_grown(self, grown: dict[str, torch.Tensor]) -> None:
        """Grown weights start at zero, their flips counted afresh and their optimizer state
        (momentum, Adam's moments) zeroed."""
        counts = self.flips.counts
        for name, p in self.params.items():
            chosen = grown[name]
            p.masked_fill_(chosen, 0)
            counts[name].masked_fill_(chosen, 0)
            if self.optimizer is None:
                continue
            for value in self.optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value.masked_fill_(chosen, 0)

    @torch.no_grad()
    def _zero_pruned(self) -> None:
        """Pruned weights to zero, and their flip counters and optimizer state with them; the
        counters read the weights' signs afresh, so that no flip is counted across the change."""
        self.masks.apply_to_weights()
        self.flips.forget_pruned(self.masks)
        self._clear_optimizer_state()

    @torch.no_grad()
    def _clear_optimizer_state(self) -> None:
        """Zero the optimizer's per-weight state (tensors shaped like the weight) where pruned."""
        if self.optimizer is None or not self.masks.any_pruned:
            return
        for name, p in self.params.items():
            for value in self.optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value.mul_(self.masks[name])

    def state_tensors(self) -> list[torch.Tensor]:
        """What must be identical on every rank: weights, masks and flip counters."""
        return [*self.params.values(), *self.masks.masks.values(), *self.flips.counts.values()]

    def state_dict(self) -> dict:
        return {
            "masks": self.masks.state_dict(),
            "flip_counts": self.flips.state_dict(),
            "events": [event.as_dict() for event in self.events],
            "random_generator": self.random_generator.get_state(),
            "noise_generator": None if self.noise is None else self.noise.get_state(),
            "noise_moments": None if self.noise is None else self.noise.moments(),
            "epoch": self.epoch,
            "rewind_point": self.rewind_point,
            "steps": self.steps,
            "criterion": self.criterion.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore, before or after the model's weights and the optimizer are loaded: the flip
        counter's reference signs are the weights', and the pruned weights and their optimizer
        state are zeroed, here and again before the next step (in after_backward), once all
        three are loaded whatever the order."""
        self.masks.load_state_dict(state["masks"])
        self._clear_optimizer_state()
        self.flips.load_state_dict(state["flip_counts"])
        self.events = [PruneEvent(**event) for event in state["events"]]
        self.random_generator.set_state(state["random_generator"])
        if self.noise is not None and state["noise_generator"] is not None:
            self.noise.set_state(state["noise_generator"])
            self.noise.load_moments(state.get("noise_moments"))
        self.epoch = state.get("epoch", self.epoch)
        self.rewind_point = state.get("rewind_point")
        self.steps = state.get("steps", 0)
        self.criterion.load_state_dict(state.get("criterion", {}), self.params)
        self._reread_weights = True

    @property
    def sparsity(self) -> float:
        return self.masks.sparsity

    def collapsed_layers(self) -> list[str]:
        return [name for name, (live, _) in self.masks.live_counts().items() if live == 0]

    def layer_table(self, flops: dict[str, tuple[int, int]] | None = None) -> str:
        """Per-layer live / total (and MACs, when given), as printed at each prune."""
        excluded = {name: p.numel() for name, p in self.excluded.items()}
        return layer_table(self.masks.live_counts(), flops, excluded)
