"""One epoch of training and one evaluation pass, and what they are built from: loaders,
optimizer, learning rate and explicit regularisation.

    for each batch: forward (autocast with --amp), loss + penalties, backward,
        pruner.after_backward (mask gradients, add noise), clip, optimizer step,
        pruner.after_step (count sign flips, re-mask weights where the optimizer needs it)

The loop has no per-criterion branch and no host synchronisation per step, except at the
progress bar's cadence. Under torchrun, sums are all-reduced so every image counts once.

A stop signal (utils/stop.py) is acted on after the step in progress: alone, after every step
and every evaluation batch; under torchrun, at the progress bar's cadence and at the end of an
evaluation, where the ranks synchronise anyway and can agree to stop together.
"""

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from data.device import device_loaders, in_memory
from utils.runtime import autocast, pin_memory

LR_GAMMA = 0.1  # the factor of each --milestones drop


class Diverged(Exception):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, batch: int):
        super().__init__(f"the training loss became non-finite at epoch {epoch}, batch {batch}")


def make_loader(dataset, batch_size: int, shuffle: bool, args, device, ddp) -> DataLoader:
    """A DataLoader over this rank's share: under torchrun, training uses DistributedSampler
    (reshuffled each epoch by `set_epoch`), evaluation every `world_size`-th image, unpadded."""
    workers = args.num_workers
    sampler = None
    if ddp.enabled:
        if shuffle:
            sampler = DistributedSampler(
                dataset, ddp.world_size, ddp.rank, shuffle=True, seed=args.seed
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
        generator=torch.Generator().manual_seed(args.seed),
    )


def build_loaders(args, splits, train_set, val_set, device, ddp) -> tuple:
    """The training loader and the evaluation loaders by split name: device-resident batches
    (data/device.py) with --data_on_device, by default on CUDA; torch DataLoaders otherwise.
    Batch sizes are global: each of the `world_size` ranks takes its share."""
    batch_size = args.batch_size // ddp.world_size
    test_batch_size = max(1, args.test_batch_size // ddp.world_size)
    eval_sets = {"test": splits.test}
    if val_set is not None:
        eval_sets["val"] = val_set
    on_device = args.data_on_device
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
            args.seed,
            memory_format(args),
            ddp.rank,
            ddp.world_size,
        )
    train_loader = make_loader(train_set, batch_size, True, args, device, ddp)
    return train_loader, {
        name: make_loader(dataset, test_batch_size, False, args, device, ddp)
        for name, dataset in eval_sets.items()
    }


def build_optimizer(args, model: nn.Module) -> torch.optim.Optimizer:
    weight_decay = args.lambda_ if args.reg_type == "wdecay" else 0.0
    params = model.parameters()
    if args.opt == "sgd":
        return torch.optim.SGD(
            params, lr=args.lr, momentum=args.momentum, weight_decay=weight_decay
        )
    if args.opt == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=args.lr, momentum=args.momentum, weight_decay=weight_decay
        )
    return torch.optim.Adam(params, lr=args.lr, weight_decay=weight_decay)


def memory_format(args) -> torch.memory_format:
    return torch.channels_last if args.channels_last else torch.contiguous_format


def learning_rate(args, epoch: int, sparsity: float) -> float:
    """The learning rate of epoch `epoch` (counted from 1): MultiStepLR's schedule with gamma 0.1
    at --milestones, times (1 - sparsity) with --anneal_lr. A pure function of the epoch and the
    sparsity, so a resumed run needs no scheduler state."""
    lr = args.lr
    if args.use_scheduler:
        lr *= LR_GAMMA ** sum(epoch - 1 >= m for m in args.milestones)
    if args.anneal_lr:
        lr *= 1.0 - sparsity
    return lr


def has_penalty(args, pruner) -> bool:
    """Whether the training loss has terms beyond the data loss: L1 / L2 or Hoyer-Square."""
    return (args.reg_type != "wdecay" and args.lambda_ != 0) or pruner.config.add_hs


def regularisation(args, model: nn.Module) -> torch.Tensor | None:
    """The explicit L1 / L2 penalty; weight decay lives in the optimizer instead."""
    if args.reg_type == "wdecay" or args.lambda_ == 0:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    if args.reg_type == "l1":
        return args.lambda_ * sum(p.abs().sum() for p in params)
    return args.lambda_ * sum(p.pow(2).sum() for p in params)


# -- the loop -------------------------------------------------------------------------------


def batches(loader: DataLoader, limit: int | None) -> Iterator:
    for index, batch in enumerate(loader):
        if limit is not None and index >= limit:
            return
        yield batch


def progress(loader: DataLoader, args, desc: str) -> tqdm:
    """The loader's batches (at most --limit_batches) behind a progress bar; no bar with --quiet
    or when stdout is not a terminal."""
    total = len(loader) if args.limit_batches is None else min(len(loader), args.limit_batches)
    return tqdm(
        batches(loader, args.limit_batches),
        total=total,
        desc=desc,
        leave=False,
        disable=args.quiet or None,
    )


def train_one_epoch(
    model, loader, optimizer, pruner, args, epoch, device, reg_scale, ddp, stop=None
) -> dict[str, float]:
    """One pass over `loader`. Returns the epoch's `train_loss` (the data loss) and `train_acc`,
    and, when the loss has penalty terms, `train_penalty`: their weighted sum as added to the
    loss, averaged like the data loss, so that train_loss + train_penalty is what was minimised."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    penalty_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    first_bad_step = torch.full((), -1, device=device, dtype=torch.long)
    bar = progress(loader, args, f"train {epoch}")
    for step, (inputs, targets) in enumerate(bar):
        inputs = inputs.to(device, non_blocking=True, memory_format=memory_format(args))
        targets = targets.to(device, non_blocking=True)
        with autocast(device, args.amp):
            logits = model(inputs)
        data_loss = F.cross_entropy(logits.float(), targets)
        loss = data_loss
        for penalty in (regularisation(args, model), pruner.penalty(epoch)):
            if penalty is not None:
                term = reg_scale * penalty
                loss = loss + term
                penalty_sum += term.detach() * len(targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # mask gradients of pruned weights, add gradient noise
        pruner.after_backward(epoch)
        if args.clip_grad:
            nn.utils.clip_grad_norm_(model.parameters(), args.max_norm)
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
    record = {"train_loss": loss, "train_acc": accuracy}
    if has_penalty(args, pruner):
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
def evaluate(model, loader, args, device, desc: str, ddp, stop=None) -> tuple[float, float]:
    """Test or validation loss and accuracy of the unwrapped model; under torchrun each rank
    evaluates its share and the sums are all-reduced."""
    ddp.broadcast_buffers(model)
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for inputs, targets in progress(loader, args, desc):
        inputs = inputs.to(device, non_blocking=True, memory_format=memory_format(args))
        targets = targets.to(device, non_blocking=True)
        with autocast(device, args.amp):
            logits = model(inputs)
        loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum")
        correct += (logits.argmax(1) == targets).sum()
        seen += len(targets)
        if stop is not None and not ddp.enabled:
            stop.check()
    ddp.agree_to_stop(stop)
    return mean_loss_and_accuracy(loss_sum, correct, seen, ddp)
