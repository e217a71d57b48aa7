"""One epoch of training and one evaluation pass, and what they are built from: loaders,
optimizer, learning rate and explicit regularisation.

    for each batch: forward (autocast with amp), loss + penalties, backward,
        pruner.after_backward (mask gradients, add noise), clip, optimizer step,
        pruner.after_step (count sign flips, re-mask weights where the optimizer needs it)

Everything here is configured by a `TrainConfig`, never by the command line itself:
`TrainConfig.from_options` takes a run's options by name (main.py gives its record's), so a
library user or a benchmark builds a run with `TrainConfig(lr=0.05, amp=True)` and no fake
argv. Optimizers come from the `OPTIMIZERS` registry by name (`build_optimizer`), as networks
and prune criteria come from theirs; `--opt` offers exactly its names.

The loop has no per-criterion branch and no host synchronisation per step, except at the
progress bar's cadence. Under torchrun, sums are all-reduced so every image counts once.

A stop signal (utils/stop.py) is acted on after the step in progress: alone, after every step
and every evaluation batch; under torchrun, at the progress bar's cadence and at the end of an
evaluation, where the ranks synchronise anyway and can agree to stop together.
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from data.device import device_loaders, in_memory
from utils.runtime import autocast, default_num_workers, pin_memory

LR_GAMMA = 0.1  # the factor of each --milestones drop
REG_TYPES = ("wdecay", "l1", "l2")


@dataclass(frozen=True)
class OptimizerKind:
    """A registered optimizer: its class, whether it takes a `momentum` argument (the CLI
    warns about --momentum for one that does not), and whether it is adaptive, dividing each
    coordinate's step by its own gradient RMS (the CLI warns about the paper's gradient noise
    under one: docs/noise.md)."""

    cls: type[torch.optim.Optimizer]
    takes_momentum: bool
    adaptive: bool = False


# Each is built with its library defaults but for lr, weight_decay and momentum, so that a run
# with one of them gives the same numbers as before the registry existed. For AdamW the
# weight_decay is its decoupled decay, scaled each epoch like the others' (--anneal_lambda).
OPTIMIZERS: dict[str, OptimizerKind] = {
    "sgd": OptimizerKind(torch.optim.SGD, takes_momentum=True),
    "rmsprop": OptimizerKind(torch.optim.RMSprop, takes_momentum=True, adaptive=True),
    "adam": OptimizerKind(torch.optim.Adam, takes_momentum=False, adaptive=True),
    "adamw": OptimizerKind(torch.optim.AdamW, takes_momentum=False, adaptive=True),
}


def build_optimizer(
    name: str,
    params: Iterable,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """The registered optimizer `name` over `params`. `momentum` is ignored by an optimizer that
    takes none (Adam, AdamW), as the CLI's default 0.9 is passed to every optimizer."""
    kind = optimizer_kind(name)
    options = {"lr": lr, "weight_decay": weight_decay}
    if kind.takes_momentum:
        options["momentum"] = momentum
    return kind.cls(params, **options)


def optimizer_kind(name: str) -> OptimizerKind:
    """The registry's entry for `name`; ValueError naming the choices for an unknown one."""
    if name not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of: {', '.join(sorted(OPTIMIZERS))}"
        )
    return OPTIMIZERS[name]


@dataclass(frozen=True)
class TrainConfig:
    """What training, evaluation and the loaders are configured by. Field names are those of the
    command line's argparse destinations (`lambda_` is `--lambda`), and the defaults are the
    command line's, so `TrainConfig()` trains like `python main.py` with no flags."""

    # Data: global batch sizes (under torchrun each rank takes 1/world_size), DataLoader
    # workers, and whether batches are kept and augmented on the device (None: on for CUDA when
    # the dataset fits in memory).
    batch_size: int = 128
    test_batch_size: int = 256
    num_workers: int = field(default_factory=default_num_workers)
    data_on_device: bool | None = None
    # Seed of the data order and the DistributedSampler's shuffle.
    seed: int = 0

    # Optimizer (a name in OPTIMIZERS) and its initial learning rate; momentum for those that
    # take it.
    opt: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9

    # Regularisation of strength `lambda_`: "wdecay" as the optimizer's weight decay, "l1" / "l2"
    # as lambda_ * sum |w| / sum w^2 over all parameters, added to the loss.
    reg_type: str = "wdecay"
    lambda_: float = 5e-4

    # Learning-rate schedule: times LR_GAMMA at each of `milestones` with `use_scheduler`, times
    # (1 - sparsity) with `anneal_lr`; `anneal_lambda` scales the regularisation (and the
    # pruner's Hoyer-Square) by (1 - sparsity).
    use_scheduler: bool = False
    milestones: tuple[int, ...] = (150, 250)
    anneal_lr: bool = False
    anneal_lambda: bool = False

    # The step: global gradient-norm clipping at `max_norm` with `clip_grad`.
    clip_grad: bool = False
    max_norm: float = 1.0

    # Speed: bf16 autocast for forward and backward, and NHWC layout of inputs and weights.
    amp: bool = False
    channels_last: bool = False

    # The epoch loop: its last epoch, and whether each epoch is evaluated on the validation
    # split, with the test set looked at once, after the last.
    epochs: int = 20
    evaluate_on_val: bool = False

    # Smoke runs and quiet processes: at most this many batches per pass; no progress bars.
    limit_batches: int | None = None
    quiet: bool = False

    def __post_init__(self):
        # The command line checks these; a library user gets the same refusal, not a silent L2.
        optimizer_kind(self.opt)
        if self.reg_type not in REG_TYPES:
            raise ValueError(
                f"unknown reg_type {self.reg_type!r}; choose one of: {', '.join(REG_TYPES)}"
            )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "TrainConfig":
        """The configuration of a run's options by field name (record.RunRecord.by_name)."""
        values = {f.name: options[f.name] for f in fields(cls)}
        values["milestones"] = tuple(values["milestones"])
        return cls(**values)

    def optimizer(self, params: Iterable) -> torch.optim.Optimizer:
        """This configuration's optimizer over `params` (see build_optimizer)."""
        return build_optimizer(self.opt, params, self.lr, self.momentum, self.weight_decay)

    @property
    def weight_decay(self) -> float:
        """The optimizer's initial weight decay: `lambda_` with reg_type "wdecay", else none."""
        return self.lambda_ if self.reg_type == "wdecay" else 0.0


class Diverged(Exception):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, batch: int):
        super().__init__(f"the training loss became non-finite at epoch {epoch}, batch {batch}")


def make_loader(
    dataset, batch_size: int, shuffle: bool, config: TrainConfig, device, ddp
) -> DataLoader:
    """A DataLoader over this rank's share: under torchrun, training uses DistributedSampler
    (reshuffled each epoch by `set_epoch`), evaluation every `world_size`-th image, unpadded."""
    workers = config.num_workers
    sampler = None
    if ddp.enabled:
        if shuffle:
            sampler = DistributedSampler(
                dataset, ddp.world_size, ddp.rank, shuffle=True, seed=config.seed
            )
        else:
            sampler = range(ddp.rank, len(dataset), ddp.world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory(device),
        # Workers start afresh each epoch, seeded from the loader's generator: a resumed run then
        # sees exactly the data order and augmentations of an uninterrupted one.
        persistent_workers=False,
        generator=torch.Generator().manual_seed(config.seed),
    )


def build_loaders(config: TrainConfig, splits, train_set, val_set, device, ddp) -> tuple:
    """The training loader and the evaluation loaders by split name: device-resident batches
    (data/device.py) with `data_on_device`, by default on CUDA; torch DataLoaders otherwise.
    Batch sizes are global: each of the `world_size` ranks takes its share."""
    batch_size = config.batch_size // ddp.world_size
    test_batch_size = max(1, config.test_batch_size // ddp.world_size)
    eval_sets = {"test": splits.test}
    if val_set is not None:
        eval_sets["val"] = val_set
    on_device = config.data_on_device
    if on_device is None:
        on_device = device.type == "cuda" and in_memory(splits.train)
    if on_device:
        return device_loaders(
            splits,
            train_set,
            eval_sets,
            batch_size,
            test_batch_size,
            device,
            config.seed,
            memory_format(config),
            ddp.rank,
            ddp.world_size,
        )
    train_loader = make_loader(train_set, batch_size, True, config, device, ddp)
    return train_loader, {
        name: make_loader(dataset, test_batch_size, False, config, device, ddp)
        for name, dataset in eval_sets.items()
    }


def memory_format(config: TrainConfig) -> torch.memory_format:
    return torch.channels_last if config.channels_last else torch.contiguous_format


def learning_rate(config: TrainConfig, epoch: int, sparsity: float) -> float:
    """The learning rate of epoch `epoch` (counted from 1): MultiStepLR's schedule with gamma 0.1
    at `milestones`, times (1 - sparsity) with `anneal_lr`. A pure function of the epoch and the
    sparsity, so a resumed run needs no scheduler state."""
    lr = config.lr
    if config.use_scheduler:
        lr *= LR_GAMMA ** sum(epoch - 1 >= m for m in config.milestones)
    if config.anneal_lr:
        lr *= 1.0 - sparsity
    return lr


def has_penalty(config: TrainConfig, pruner) -> bool:
    """Whether the training loss has terms beyond the data loss: L1 / L2 or Hoyer-Square."""
    return (config.reg_type != "wdecay" and config.lambda_ != 0) or pruner.penalty_enabled


def regularisation(config: TrainConfig, model: nn.Module) -> torch.Tensor | None:
    """The explicit L1 / L2 penalty; weight decay lives in the optimizer instead."""
    if config.reg_type == "wdecay" or config.lambda_ == 0:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    if config.reg_type == "l1":
        return config.lambda_ * sum(p.abs().sum() for p in params)
    return config.lambda_ * sum(p.pow(2).sum() for p in params)


# -- the loop -------------------------------------------------------------------------------


def batches(loader: DataLoader, limit: int | None) -> Iterator:
    for index, batch in enumerate(loader):
        if limit is not None and index >= limit:
            return
        yield batch


class LimitedBatches:
    """A loader's first `limit` batches (all with None), re-iterable like the loader."""

    def __init__(self, loader, limit: int | None):
        self.loader, self.limit = loader, limit

    def __iter__(self):
        return batches(self.loader, self.limit)

    def __len__(self) -> int:
        # the optimizer steps of an epoch, from which RigL's schedule counts
        return len(self.loader) if self.limit is None else min(len(self.loader), self.limit)


def progress(loader: DataLoader, config: TrainConfig, desc: str) -> tqdm:
    """The loader's batches (at most `limit_batches`) behind a progress bar; no bar when `quiet`
    or when stdout is not a terminal."""
    total = len(loader) if config.limit_batches is None else min(len(loader), config.limit_batches)
    return tqdm(
        batches(loader, config.limit_batches),
        total=total,
        desc=desc,
        leave=False,
        disable=config.quiet or None,
    )


def train_one_epoch(
    model, loader, optimizer, pruner, config: TrainConfig, epoch, device, reg_scale, ddp, stop=None
) -> dict[str, float]:
    """One pass over `loader`. Returns the epoch's `train_loss` (the data loss), `train_acc` and
    `train_examples` (the examples it trained, all ranks together), and, when the loss has
    penalty terms, `train_penalty`: their weighted sum as added to the loss, averaged like the
    data loss, so that train_loss + train_penalty is what was minimised."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    penalty_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    first_bad_step = torch.full((), -1, device=device, dtype=torch.long)
    bar = progress(loader, config, f"train {epoch}")
    for step, (inputs, targets) in enumerate(bar):
        inputs = inputs.to(device, non_blocking=True, memory_format=memory_format(config))
        targets = targets.to(device, non_blocking=True)
        with autocast(device, config.amp):
            logits = model(inputs)
        data_loss = F.cross_entropy(logits.float(), targets)
        loss = data_loss
        for penalty in (regularisation(config, model), pruner.penalty(epoch)):
            if penalty is not None:
                term = reg_scale * penalty
                loss = loss + term
                penalty_sum += term.detach() * len(targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # mask gradients of pruned weights, add gradient noise
        pruner.after_backward(epoch)
        if config.clip_grad:
            nn.utils.clip_grad_norm_(model.parameters(), config.max_norm)
        optimizer.step()
        # count sign flips (pruned weights stay at zero: see pruning/pruner.py)
        pruner.after_step()

        loss_sum += data_loss.detach() * len(targets)
        correct += (logits.argmax(1) == targets).sum()
        seen += len(targets)
        # remember the first non-finite loss on the device; looked at only at display cadence
        first_bad_step = torch.where(
            (first_bad_step < 0) & ~torch.isfinite(loss.detach()), step, first_bad_step
        )
        if step % 20 == 0:  # the only host syncs in the loop
            check_finite(first_bad_step, epoch, ddp)
            ddp.agree_to_stop(stop)
            bar.set_postfix(
                loss=f"{loss_sum.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}"
            )
        elif stop is not None and not ddp.enabled:
            stop.check()
    check_finite(first_bad_step, epoch, ddp)
    ddp.agree_to_stop(stop)
    loss, accuracy, penalty = mean_loss_and_accuracy(loss_sum, correct, seen, ddp, penalty_sum)
    # every rank trains as many examples: the samplers pad the epoch to share it evenly
    record = {"train_loss": loss, "train_acc": accuracy, "train_examples": seen * ddp.world_size}
    if has_penalty(config, pruner):
        record["train_penalty"] = penalty
    return record


def check_finite(first_bad_step: torch.Tensor, epoch: int, ddp) -> None:
    """Raise Diverged on every rank at once (the earliest bad step of any rank), so that no
    rank is left waiting in a collective."""
    never = torch.iinfo(torch.long).max
    bad = torch.where(first_bad_step >= 0, first_bad_step, never)
    step = int(ddp.all_reduce_min(bad.clone()))
    if step != never:
        raise Diverged(epoch, step + 1)


def mean_loss_and_accuracy(loss_sum, correct, seen: int, ddp, penalty_sum=None) -> tuple:
    """Summed over all ranks' shares, so that every image counts once: (loss, accuracy), and the
    mean penalty after them when `penalty_sum` is given."""
    sums = [loss_sum, correct, loss_sum.new_tensor(seen)]
    if penalty_sum is not None:
        sums.append(penalty_sum)
    totals = ddp.all_reduce_sum(torch.stack([value.double() for value in sums])).tolist()
    count = totals[2]
    means = (totals[0] / count, 100.0 * totals[1] / count)
    return means if penalty_sum is None else (*means, totals[3] / count)


@torch.no_grad()
def evaluate(
    model, loader, config: TrainConfig, device, desc: str, ddp, stop=None
) -> tuple[float, float]:
    """Test or validation loss and accuracy of the unwrapped model; under torchrun each rank
    evaluates its share and the sums are all-reduced."""
    ddp.broadcast_buffers(model)
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for inputs, targets in progress(loader, config, desc):
        inputs = inputs.to(device, non_blocking=True, memory_format=memory_format(config))
        targets = targets.to(device, non_blocking=True)
        with autocast(device, config.amp):
            logits = model(inputs)
        loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum")
        correct += (logits.argmax(1) == targets).sum()
        seen += len(targets)
        if stop is not None and not ddp.enabled:
            stop.check()
    ddp.agree_to_stop(stop)
    return mean_loss_and_accuracy(loss_sum, correct, seen, ddp)
