"""Train a network while pruning it: FlipOut (Apostol, Stol & Forré, 2020) and its baselines.

    python main.py                      # a short FlipOut run on the bundled digits data
    python main.py -m vgg19 -d cifar10 -bs 128 -e 350 -lr 0.1 --opt sgd --momentum 0.9 \\
        --reg_type wdecay --lambda 5e-4 --use_scheduler --milestones 150 250 \\
        --prune_criterion flipout --flipout_p 2 --prune_freq 32 --prune_rate 0.5 \\
        --noise --noise_scale_factor 1 --comment="test flipout" --logdir=vgg19/

parse -> build data, model, optimizer, pruner -> epoch loop -> artifacts in runs/<logdir>/<run>.
"""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from cli import IDENTITY_OPTIONS, parse_args
from data import build_datasets, split_validation
from models import build_model
from pruning import Pruner, PruningConfig
from pruning.schedule import prune_epochs
from training import (
    Diverged,
    batches,
    build_loaders,
    build_optimizer,
    evaluate,
    learning_rate,
    memory_format,
    train_one_epoch,
)
from utils.checkpoint import load_checkpoint, rng_state, save_atomic, save_checkpoint, set_rng_state
from utils.distributed import Distributed
from utils.errors import UserError
from utils.flops import flops_summary, layer_flops
from utils.logging import NullLogger, RunLogger, make_run_dir, warn
from utils.runtime import batchnorm_in_fp32, seed_everything

EXIT_DIVERGED = 3
HPARAM_METRICS = ("final_test_acc", "best_test_acc", "final_sparsity")


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the run stops at once and keeps its last checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def log_prune(event, pruner: Pruner, logger: RunLogger, model, input_shape) -> None:
    print(
        f"prune at epoch {event.epoch}: removed {event.pruned:,}, {event.live:,} of "
        f"{event.total:,} weights live, sparsity {event.sparsity:.4%}"
    )
    print(pruner.layer_table(layer_flops(model, input_shape, pruner.masks.masks)))
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
    checkpoint = load_checkpoint(args.resume, "--resume") if args.resume else None
    splits = build_datasets(args.dataset, args.data_dir, not args.no_download, args.image_size)
    train_set, val_set = splits.train, None
    if args.val:
        train_set, val_set = split_validation(splits, args.val_size or len(splits.train) // 10)

    spec = model_spec(args, splits)
    input_shape = (splits.in_channels, splits.image_size, splits.image_size)
    model = build_model(**spec)
    model.to(device, memory_format=memory_format(args))
    if args.amp:
        batchnorm_in_fp32(model)
    optimizer = build_optimizer(args, model)
    pruner = Pruner(model, PruningConfig.from_args(args), sync=ddp)
    pruner.attach_optimizer(optimizer)
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

    # every option under its flag's name (--lambda is stored as lambda_)
    options = {key.rstrip("_"): value for key, value in vars(args).items()}
    config = dict(options)
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
        "options": options,
    }
    previous_handlers = install_signal_handlers()
    try:
        if checkpoint is None:
            event = pruner.before_training(model, batches(train_loader, args.limit_batches))
            if event is not None:
                log_prune(event, pruner, logger, model, input_shape)
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
                        "model_spec": spec,
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
                log_prune(event, pruner, logger, model, input_shape)
        ddp.check_identical(pruner.state_tensors(), "at the end, weights, masks or flip counts")
        if args.save_model and ddp.is_main:
            save_model(run_dir / "model.pt", spec, model, pruner)
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
            **flops_summary(model, input_shape, pruner.masks.masks),
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


def model_spec(args, splits) -> dict:
    """What the model registry needs to rebuild the network: `build_model(**spec)`."""
    return {
        "name": args.model,
        "num_classes": splits.num_classes,
        "in_channels": splits.in_channels,
        "image_size": splits.image_size,
    }


def save_model(path: Path, spec: dict, model: nn.Module, pruner: Pruner) -> None:
    """model.pt: what `torch.load` plus the model registry need to rebuild the pruned network."""
    save_atomic(
        {"spec": spec, "state_dict": model.state_dict(), "masks": pruner.masks.state_dict()},
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
        processes = f"{ddp.world_size} process{'es' if ddp.world_size > 1 else ''}"
        print(
            f"{processes} (DistributedDataParallel, {ddp.backend}), "
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
    trained = train_one_epoch(
        net, train_loader, optimizer, pruner, args, epoch, device, reg_scale, ddp
    )
    record = {
        "epoch": epoch,
        **trained,
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
