"""Train a network while pruning it: FlipOut (Apostol, Stol & Forré, 2020) and its baselines.

    python main.py                      # a short FlipOut run on the bundled digits data
    python main.py -m vgg19 -d cifar10 -bs 128 -e 350 -lr 0.1 --opt sgd --momentum 0.9 \\
        --reg_type wdecay --lambda 5e-4 --use_scheduler --milestones 150 250 \\
        --prune_criterion flipout --flipout_p 2 --prune_freq 32 --prune_rate 0.5 \\
        --noise --noise_scale_factor 1 --comment="test flipout" --logdir=vgg19/

parse -> build data, model, optimizer, pruner -> epoch loop -> artifacts in runs/<logdir>/<run>.
"""

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from data import DATASETS, build_datasets, split_validation
from data.device import device_loaders, in_memory
from models import MODELS, build_model
from pruning import CRITERIA, Pruner, PruningConfig
from pruning.schedule import prune_epochs
from utils.checkpoint import load_checkpoint, rng_state, save_atomic, save_checkpoint, set_rng_state
from utils.distributed import Distributed
from utils.errors import UserError
from utils.logging import NullLogger, RunLogger, make_run_dir, warn
from utils.runtime import (
    autocast,
    batchnorm_in_fp32,
    default_num_workers,
    pin_memory,
    seed_everything,
)

LR_GAMMA = 0.1  # the factor of each --milestones drop
EXIT_DIVERGED = 3
HPARAM_METRICS = ("final_test_acc", "best_test_acc", "final_sparsity")
# A resumed run must be the same experiment...
IDENTITY_OPTIONS = ("model", "dataset", "prune_criterion")
# ...but may run on another machine, with other workers or data paths, without a warning.
MACHINE_OPTIONS = {
    "resume", "device", "num_workers", "data_dir", "no_download", "quiet", "data_on_device",
    "compile_kernels", "parallel",
}  # fmt: skip


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the run stops at once and keeps its last checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Diverged(Exception):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, batch: int):
        super().__init__(f"the training loss became non-finite at epoch {epoch}, batch {batch}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """States every flag's default: switches read "(default: off)", and a help text that already
    explains its default is left alone."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train and prune a network with FlipOut or a baseline criterion.",
        formatter_class=HelpFormatter,
    )
    g = parser.add_argument_group("model and data")
    g.add_argument(
        "-m",
        "--model",
        default="lenet300",
        choices=sorted(MODELS),
        metavar="MODEL",
        help=f"network: {', '.join(sorted(MODELS))}",
    )
    g.add_argument(
        "-d",
        "--dataset",
        default="digits",
        choices=sorted(DATASETS),
        metavar="DATASET",
        help=f"dataset: {', '.join(sorted(DATASETS))}",
    )
    g.add_argument("--data_dir", default="./data", help="where datasets are read and downloaded")
    g.add_argument(
        "--no_download", action="store_true", help="never download: fail if the data is missing"
    )
    g.add_argument(
        "--image_size",
        type=int,
        default=None,
        help="side of the synthetic images (synthetic only; default: 32)",
    )
    g.add_argument(
        "--num_workers",
        type=int,
        default=default_num_workers(),
        help="DataLoader worker processes (default: min(8, CPUs))",
    )
    g.add_argument("--val", action="store_true", help="hold out part of the training set")
    g.add_argument(
        "--val_size",
        type=int,
        default=None,
        help="validation images held out with --val (default: 10%% of the training set)",
    )
    g.add_argument(
        "--evaluate_on_val",
        action="store_true",
        help="implies --val; evaluate on the validation set each epoch and on the test set once, "
        "at the end",
    )

    g = parser.add_argument_group("optimisation")
    g.add_argument("-bs", "--batch_size", type=int, default=128, help="training batch size")
    g.add_argument("-tbs", "--test_batch_size", type=int, default=256, help="evaluation batch size")
    g.add_argument("-e", "--epochs", type=int, default=20, help="training epochs")
    g.add_argument("-lr", type=float, default=0.1, help="initial learning rate")
    g.add_argument("--opt", default="sgd", choices=["sgd", "rmsprop", "adam"], help="optimizer")
    g.add_argument("-mom", "--momentum", type=float, default=0.9, help="momentum (sgd and rmsprop)")
    g.add_argument(
        "--reg_type",
        default="wdecay",
        choices=["wdecay", "l1", "l2"],
        help="wdecay: optimizer weight decay; l1 / l2: lambda * sum |w| / sum w^2 added to the "
        "loss, over all parameters",
    )
    g.add_argument(
        "--lambda",
        dest="lambda_",
        metavar="LAMBDA",
        type=float,
        default=5e-4,
        help="regularisation strength",
    )
    g.add_argument(
        "--use_scheduler",
        action="store_true",
        help=f"multiply the learning rate by {LR_GAMMA} at each of --milestones",
    )
    g.add_argument(
        "--milestones",
        type=int,
        nargs="+",
        default=[150, 250],
        metavar="EPOCH",
        help="epochs after which the learning rate drops (with --use_scheduler)",
    )
    g.add_argument(
        "--anneal_lr",
        action="store_true",
        help="also scale the learning rate by (1 - sparsity) after each epoch",
    )
    g.add_argument(
        "--anneal_lambda",
        action="store_true",
        help="scale the regularisation (and Hoyer-Square) by (1 - sparsity) after each epoch",
    )
    g.add_argument("--clip_grad", action="store_true", help="clip the global gradient norm")
    g.add_argument("--max_norm", type=float, default=1.0, help="gradient norm for --clip_grad")

    g = parser.add_argument_group("pruning")
    g.add_argument(
        "--prune_criterion",
        default="flipout",
        choices=sorted(CRITERIA),
        metavar="CRITERION",
        help=f"how weights are chosen for removal: {', '.join(sorted(CRITERIA))}",
    )
    g.add_argument(
        "--prune_freq",
        type=int,
        default=2,
        help="prune at the end of every this many epochs (not after the last)",
    )
    g.add_argument(
        "--prune_rate",
        type=float,
        default=0.5,
        help="fraction of the live weights each prune removes",
    )
    g.add_argument(
        "--stop_pruning_at",
        type=int,
        default=-1,
        help="no pruning from this epoch on (-1: never stop)",
    )
    g.add_argument("--flipout_p", type=float, default=2.0, help="FlipOut score |w|^p / (flips + 1)")
    g.add_argument(
        "--magnitude_threshold",
        type=float,
        default=1e-4,
        help="the threshold criterion prunes live weights with |w| below this",
    )
    g.add_argument(
        "--snip_sparsity",
        type=float,
        default=None,
        help="fraction of weights SNIP removes before training (required with snip)",
    )
    g.add_argument("--snip_batches", type=int, default=1, help="training batches SNIP scores on")
    g.add_argument("--prune_bias", action="store_true", help="also prune conv/linear biases")
    g.add_argument("--prune_bnorm", action="store_true", help="also prune BatchNorm weights")
    g.add_argument("--noise", action="store_true", help="add Gaussian noise to the gradients")
    g.add_argument(
        "--noise_scale_factor",
        type=float,
        default=1.0,
        help="noise std = ||grad||_2 / sqrt(numel) * this, per tensor",
    )
    g.add_argument(
        "--stop_noise_at", type=int, default=-1, help="no noise from this epoch on (-1: never)"
    )
    g.add_argument(
        "--noise_only_prunable",
        action="store_true",
        help="add noise to the prunable tensors only, not to every parameter",
    )
    g.add_argument("--add_hs", action="store_true", help="add the Hoyer-Square penalty to the loss")
    g.add_argument("--hoyer_lambda", type=float, default=0.0, help="Hoyer-Square strength")
    g.add_argument(
        "--stop_hoyer_at",
        type=int,
        default=-1,
        help="Hoyer-Square applies while epoch <= this (-1: always)",
    )

    g = parser.add_argument_group("speed")
    g.add_argument(
        "--data_on_device",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the uint8 dataset on the training device and augment there, without worker "
        "processes (cifar10, mnist, digits, synthetic; default: on for CUDA, off otherwise)",
    )
    g.add_argument(
        "--amp",
        action="store_true",
        help="bf16 autocast for forward and backward; weights, BatchNorm, masks and flip counters "
        "stay in full precision",
    )
    g.add_argument(
        "--channels_last", action="store_true", help="NHWC memory layout for convolutions"
    )
    g.add_argument(
        "--compile_kernels",
        choices=["auto", "on", "off"],
        default="auto",
        help="fuse the per-step masking and sign-flip counting with torch.compile; auto: on for "
        "CUDA (eager where no compiler works), off on the CPU, where eager measured faster",
    )

    g = parser.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0, help="seed for torch, numpy and random")
    g.add_argument(
        "--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N"
    )
    g.add_argument("--comment", default="", help="run name suffix")
    g.add_argument("--logdir", default="", help="runs are written to runs/<logdir>/<run name>")
    g.add_argument(
        "--limit_batches",
        type=int,
        default=None,
        help="end every train and eval pass after this many batches (smoke runs; default: all)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument(
        "--parallel",
        action="store_true",
        help="DataParallel over all visible GPUs (not under torchrun, which uses "
        "DistributedDataParallel: torchrun --nproc_per_node N main.py ...)",
    )
    g.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run in RUN_DIR from its last completed epoch, with the options it was "
        "started with; flags given here override them (default: start a new run)",
    )
    g.add_argument(
        "--save_model",
        action="store_true",
        help="also write model.pt at the end: the masked state dict and the masks",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line. With --resume, options not given on the command line
    come from the run's config.json, so `main.py --resume RUN_DIR` alone continues a run."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.resume is not None:
        args = resumed_args(parser, argv, args.resume)
    validate(parser, args)
    return args


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> dict:
    """The options that appear on the command line, with their parsed values."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def resumed_args(parser: argparse.ArgumentParser, argv: list[str], run_dir: str):
    config_path = Path(run_dir) / "config.json"
    if not config_path.is_file():
        raise UserError(f"--resume {run_dir}: no config.json there; is it a run directory?")
    saved = json.loads(config_path.read_text())
    defaults = vars(parser.parse_args([]))
    given = given_options(build_parser(), argv)
    merged = {dest: saved.get(dest.rstrip("_"), default) for dest, default in defaults.items()}
    for dest in IDENTITY_OPTIONS:
        if dest in given and given[dest] != merged[dest]:
            raise UserError(
                f"--resume {run_dir}: that run has --{dest} {merged[dest]}, not {given[dest]}"
            )
    changed = sorted(
        dest for dest, value in given.items()
        if dest not in MACHINE_OPTIONS and value != merged[dest]
    )  # fmt: skip
    if changed:
        warn(f"resuming {run_dir} with changed options: {', '.join(changed)}")
    return argparse.Namespace(**{**merged, **given})


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "test_batch_size", "prune_freq", "snip_batches"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.limit_batches is not None and args.limit_batches <= 0:
        parser.error(f"--limit_batches must be positive, got {args.limit_batches}")
    if args.num_workers < 0:
        parser.error(f"--num_workers must be 0 or more, got {args.num_workers}")
    if not 0 < args.prune_rate < 1:
        parser.error(f"--prune_rate must be in (0, 1), got {args.prune_rate}")
    if args.flipout_p <= 0:
        parser.error(f"--flipout_p must be positive, got {args.flipout_p}")
    if args.prune_criterion == "snip":
        if args.snip_sparsity is None:
            parser.error("--prune_criterion snip needs --snip_sparsity (e.g. 0.999)")
        if not 0 <= args.snip_sparsity < 1:
            parser.error(f"--snip_sparsity must be in [0, 1), got {args.snip_sparsity}")
    if args.val_size is not None and args.val_size <= 0:
        parser.error(f"--val_size must be positive, got {args.val_size}")
    if args.clip_grad and args.max_norm <= 0:
        parser.error(f"--max_norm must be positive, got {args.max_norm}")
    if args.image_size is not None and args.dataset != "synthetic":
        parser.error("--image_size only applies to --dataset synthetic")
    args.val = args.val or args.evaluate_on_val
    if args.milestones != parser.get_default("milestones") and not args.use_scheduler:
        warn("--milestones has no effect without --use_scheduler")


# -- building -------------------------------------------------------------------------------


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


def train_one_epoch(model, loader, optimizer, pruner, args, epoch, device, reg_scale, ddp):
    model.train()
    loss_sum = torch.zeros((), device=device)
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
                loss = loss + reg_scale * penalty
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # mask gradients of pruned weights, add gradient noise
        pruner.after_backward(epoch)
        if args.clip_grad:
            nn.utils.clip_grad_norm_(model.parameters(), args.max_norm)
        optimizer.step()
        # re-mask weights, count sign flips
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
            bar.set_postfix(
                loss=f"{loss_sum.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}"
            )
    check_finite(first_bad_step, epoch, ddp)
    return mean_loss_and_accuracy(loss_sum, correct, seen, ddp)


def check_finite(first_bad_step: torch.Tensor, epoch: int, ddp) -> None:
    """Raise Diverged on every rank at once (the earliest bad step of any rank), so that no
    rank is left waiting in a collective."""
    never = torch.iinfo(torch.long).max
    bad = torch.where(first_bad_step >= 0, first_bad_step, never)
    step = int(ddp.all_reduce_min(bad.clone()))
    if step != never:
        raise Diverged(epoch, step + 1)


def mean_loss_and_accuracy(loss_sum, correct, seen: int, ddp) -> tuple[float, float]:
    """Summed over all ranks' shares, so that every image counts once."""
    totals = torch.stack([loss_sum.double(), correct.double()])
    totals = torch.cat([totals, torch.tensor([float(seen)], device=totals.device).double()])
    loss, right, count = ddp.all_reduce_sum(totals).tolist()
    return loss / count, 100.0 * right / count


@torch.no_grad()
def evaluate(model, loader, args, device, desc: str, ddp) -> tuple[float, float]:
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
    return mean_loss_and_accuracy(loss_sum, correct, seen, ddp)


def log_prune(event, pruner: Pruner, logger: RunLogger) -> None:
    print(
        f"prune at epoch {event.epoch}: removed {event.pruned:,}, {event.live:,} of "
        f"{event.total:,} weights live, sparsity {event.sparsity:.4%}"
    )
    print(pruner.layer_table())
    for name, fraction in pruner.masks.layer_sparsity().items():
        logger.scalar(f"sparsity/layer/{name}", fraction, event.epoch)
    logger.histogram(
        "flips/live_weights", pruner.flips.live_counts(pruner.masks).numpy(), event.epoch
    )
    for name in event.collapsed:
        warn(f"layer {name} has no live weights left (layer collapse)")


def run(args: argparse.Namespace, ddp: Distributed | None = None) -> dict:
    """One training run, new or resumed, in this process or as one rank under torchrun. Returns
    its summary, whose `status` is `completed`, `interrupted` or `diverged`; any other exception
    propagates after `failed` is recorded."""
    session_start = time.time()
    ddp = ddp or Distributed()
    if args.batch_size % ddp.world_size:
        raise UserError(
            f"-bs {args.batch_size} is the global batch size and must divide evenly among the "
            f"{ddp.world_size} processes"
        )
    device = ddp.setup(args.device)
    seed_everything(args.seed)
    checkpoint = load_checkpoint(args.resume) if args.resume else None
    splits = build_datasets(args.dataset, args.data_dir, not args.no_download, args.image_size)
    train_set, val_set = splits.train, None
    if args.val:
        train_set, val_set = split_validation(splits, args.val_size or len(splits.train) // 10)

    model = build_model(args.model, splits.num_classes, splits.in_channels, splits.image_size)
    model.to(device, memory_format=memory_format(args))
    if args.amp:
        batchnorm_in_fp32(model)
    optimizer = build_optimizer(args, model)
    pruner = Pruner(model, PruningConfig.from_args(args), sync=ddp)
    # `net` trains; `model`, the unwrapped module, is evaluated, pruned and saved
    net = parallel(model, args, device, ddp)
    train_loader, eval_loaders = build_loaders(args, splits, train_set, val_set, device, ddp)

    history: list[dict] = []
    wall_before = 0.0
    if checkpoint is None:
        run_dir = make_run_dir(args.logdir, args.comment) if ddp.is_main else None
    else:
        run_dir = Path(args.resume)
        history, wall_before = restore(checkpoint, args, model, optimizer, pruner, train_loader)
    first_epoch = len(history) + 1

    config = {key.rstrip("_"): value for key, value in vars(args).items()}
    config.update(
        device_resolved=str(device),
        torch_version=torch.__version__,
        num_parameters=sum(p.numel() for p in model.parameters()),
        num_prunable=pruner.masks.num_total,
        run_dir=str(run_dir),
    )
    if ddp.is_main:
        logger = RunLogger(run_dir, config, history if checkpoint is not None else None)
    else:
        logger = NullLogger()
    describe_run(args, run_dir, device, pruner, train_set, splits.test, val_set, first_epoch, ddp)

    summary = {
        "model": args.model,
        "dataset": args.dataset,
        "prune_criterion": args.prune_criterion,
        "seed": args.seed,
        "epochs": args.epochs,
        "comment": args.comment,
        "run_dir": str(run_dir),
        "status": "running",
        # every option, so that tables can be grouped by any of them from this file alone
        "options": {key.rstrip("_"): value for key, value in vars(args).items()},
    }
    previous_handlers = install_signal_handlers()
    try:
        if checkpoint is None:
            event = pruner.before_training(model, batches(train_loader, args.limit_batches))
            if event is not None:
                log_prune(event, pruner, logger)
        for epoch in range(first_epoch, args.epochs + 1):
            record, event = run_epoch(
                epoch, net, model, train_loader, eval_loaders, optimizer, pruner, args, device, ddp
            )
            # checkpoint first: an epoch counts as done once it can be resumed from
            if ddp.is_main:
                save_checkpoint(
                    {
                        "epoch": epoch,
                        "args": {**vars(args), "resume": None},
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "pruner": pruner.state_dict(),
                        "data_order": train_loader.generator.get_state(),
                        "rng": rng_state(),
                        "history": [*history, record],
                        "best_test_acc": final_metrics([*history, record])["best_test_acc"],
                        "wall_seconds": wall_before + time.time() - session_start,
                    },
                    run_dir,
                )
            history.append(record)
            logger.log_epoch(record)
            print(format_epoch(record, args.epochs), flush=True)
            if event is not None:
                log_prune(event, pruner, logger)
        ddp.check_identical(pruner.state_tensors(), "at the end, weights, masks or flip counts")
        if args.save_model and ddp.is_main:
            save_model(run_dir / "model.pt", args, splits, model, pruner)
        summary["status"] = "completed"
    except Interrupted as interruption:
        summary.update(status="interrupted", signal=str(interruption))
        summary["exit_code"] = 128 + interruption.signum
    except Diverged as divergence:
        summary.update(status="diverged", error=str(divergence), exit_code=EXIT_DIVERGED)
    except BaseException as error:
        summary.update(status="failed", error=f"{type(error).__name__}: {error}")
        raise
    finally:
        restore_signal_handlers(previous_handlers)
        summary.update(final_metrics(history))
        summary.update(
            epochs_completed=len(history),
            final_sparsity=pruner.sparsity,
            layer_sparsity=pruner.masks.layer_sparsity(),
            prune_events=[e.as_dict() for e in pruner.events],
            collapsed_layers=pruner.collapsed_layers(),
            wall_seconds=wall_before + time.time() - session_start,
            processes=ddp.world_size,
        )
        logger.write_summary(summary)
        if summary["status"] == "completed":
            logger.log_hparams(
                summary["options"],
                {key: summary[key] for key in HPARAM_METRICS},
            )
        logger.close()
    if ddp.is_main:
        report_end(summary, run_dir)
    return summary


def parallel(model: nn.Module, args, device: torch.device, ddp: Distributed) -> nn.Module:
    """The module that trains: DistributedDataParallel under torchrun, DataParallel with
    --parallel and several GPUs, the model itself otherwise."""
    if ddp.enabled:
        if args.parallel:
            warn("--parallel is ignored under torchrun, which already runs one process per GPU")
        return ddp.wrap(model, device)
    if not args.parallel:
        return model
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus < 2:
        warn(f"--parallel needs several GPUs; {gpus} visible, training on {device} alone")
        return model
    print(f"DataParallel over {gpus} GPUs; torchrun --nproc_per_node {gpus} is usually faster")
    return nn.DataParallel(model)


def restore(checkpoint, args, model, optimizer, pruner, train_loader) -> tuple[list[dict], float]:
    """Load a checkpoint's state into freshly built objects; returns (history, wall seconds)."""
    saved = checkpoint["args"]
    for dest in IDENTITY_OPTIONS:
        if saved.get(dest) != getattr(args, dest):
            raise UserError(
                f"--resume {args.resume}: its checkpoint is from a run with --{dest} "
                f"{saved.get(dest)}, not {getattr(args, dest)}"
            )
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    pruner.load_state_dict(checkpoint["pruner"])
    train_loader.generator.set_state(checkpoint["data_order"])
    set_rng_state(checkpoint["rng"])
    return list(checkpoint["history"]), checkpoint["wall_seconds"]


def save_model(path: Path, args, splits, model: nn.Module, pruner: Pruner) -> None:
    """model.pt: what `torch.load` plus the model registry need to rebuild the pruned network."""
    save_atomic(
        {
            "model": args.model,
            "num_classes": splits.num_classes,
            "in_channels": splits.in_channels,
            "image_size": splits.image_size,
            "state_dict": model.state_dict(),
            "masks": pruner.masks.state_dict(),
        },
        path,
    )


def install_signal_handlers() -> dict:
    """SIGINT and SIGTERM raise Interrupted in the training loop; repeats are ignored so that the
    summary still gets written."""

    def handler(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def restore_signal_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def describe_run(
    args, run_dir, device, pruner, train_set, test_set, val_set, first_epoch, ddp
) -> None:
    print(f"run {run_dir}" + (f" (resumed at epoch {first_epoch})" if first_epoch > 1 else ""))
    if ddp.enabled:
        print(
            f"{ddp.world_size} processes (DistributedDataParallel), "
            f"{args.batch_size // ddp.world_size} images per process per step"
        )
    sizes = [f"{len(train_set)} train", f"{len(test_set)} test"]
    if val_set is not None:
        sizes.append(f"{len(val_set)} val")
    print(
        f"{args.model} on {args.dataset} ({' / '.join(sizes)}), {device}, "
        f"{pruner.masks.num_total:,} prunable weights, criterion {args.prune_criterion}"
    )
    if pruner.criterion.scheduled:
        epochs = prune_epochs(args.prune_freq, args.epochs, args.stop_pruning_at)
        removes = pruner.criterion.describe()
        where = f"after epochs {', '.join(map(str, epochs))}" if epochs else "never"
        print(f"schedule: prune {removes}, {where}")


def report_end(summary: dict, run_dir: Path) -> None:
    status = summary["status"]
    if status == "completed":
        print(
            f"done: test accuracy {summary['final_test_acc']:.2f}% "
            f"(best {summary['best_test_acc']:.2f}%), sparsity {summary['final_sparsity']:.4%}, "
            f"{summary['wall_seconds']:.0f}s -> {run_dir}"
        )
        return
    if status == "interrupted":
        print(
            f"interrupted by {summary['signal']} after {summary['epochs_completed']} completed "
            f"epochs; continue with:\n  python main.py --resume {run_dir}",
            file=sys.stderr,
        )
    else:
        print(
            f"error: {summary['error']}; the run stopped, its checkpoint from epoch "
            f"{summary['epochs_completed']} is in {run_dir}",
            file=sys.stderr,
        )


def run_epoch(epoch, net, model, train_loader, eval_loaders, optimizer, pruner, args, device, ddp):
    """Train one epoch, evaluate, then prune if the schedule says so. Returns the epoch's record
    and the prune event, if any."""
    sparsity = pruner.sparsity
    reg_scale = 1.0 - sparsity if args.anneal_lambda else 1.0
    lr = learning_rate(args, epoch, sparsity)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if args.reg_type == "wdecay":
            group["weight_decay"] = args.lambda_ * reg_scale
    flips_before = pruner.flips.total()

    sampler = getattr(train_loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    started = time.time()
    train_loss, train_acc = train_one_epoch(
        net, train_loader, optimizer, pruner, args, epoch, device, reg_scale, ddp
    )
    record = {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "lr": lr,
        "seconds": time.time() - started,
        "flips": pruner.flips.total() - flips_before,
    }
    # With --evaluate_on_val the test set is looked at once, after the last epoch.
    for split, loader in eval_loaders.items():
        if split == "test" and args.evaluate_on_val and epoch != args.epochs:
            record["test_loss"] = record["test_acc"] = None
            continue
        record[f"{split}_loss"], record[f"{split}_acc"] = evaluate(
            model, loader, args, device, f"{split} {epoch}", ddp
        )
    # pruning comes after evaluation: an epoch's accuracy is that of the network it trained
    event = pruner.end_of_epoch(epoch)
    record["sparsity"] = pruner.sparsity
    return record, event


def format_epoch(record: dict, epochs: int) -> str:
    parts = [
        f"epoch {record['epoch']}/{epochs}",
        f"train {record['train_loss']:.4f} / {record['train_acc']:.2f}%",
    ]
    for split in ("val", "test"):
        if record.get(f"{split}_acc") is not None:
            parts.append(f"{split} {record[f'{split}_loss']:.4f} / {record[f'{split}_acc']:.2f}%")
    parts += [
        f"sparsity {record['sparsity']:.4%}",
        f"lr {record['lr']:.4g}",
        f"{record['seconds']:.1f}s",
    ]
    return "  ".join(parts)


def final_metrics(history: list[dict]) -> dict:
    """Final and best accuracies over the epochs that were evaluated."""
    metrics = {}
    for split in ("test", "val"):
        accs = [r[f"{split}_acc"] for r in history if r.get(f"{split}_acc") is not None]
        if split == "test" or accs:
            metrics[f"final_{split}_acc"] = accs[-1] if accs else None
            metrics[f"best_{split}_acc"] = max(accs) if accs else None
    return metrics


def main(argv: list[str] | None = None) -> int:
    ddp = Distributed.from_environment()
    if not ddp.is_main:
        # rank 0 alone reports; the others stay silent but for errors
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    try:
        args = parse_args(argv)
        if not ddp.is_main:
            args.quiet = True
        summary = run(args, ddp)
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    finally:
        ddp.shutdown()
    return summary.get("exit_code", 0)


def one_line(error: Exception) -> str:
    """The message of a user error, also when a DataLoader worker raised it (the worker's
    traceback then precedes the original message)."""
    text = str(error).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


if __name__ == "__main__":
    sys.exit(main())
