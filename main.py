"""Train a network while pruning it: FlipOut (Apostol, Stol & Forré, 2020) and its baselines.

    python main.py                      # a short FlipOut run on the bundled digits data
    python main.py -m vgg19 -d cifar10 -bs 128 -e 350 -lr 0.1 --opt sgd --momentum 0.9 \\
        --reg_type wdecay --lambda 5e-4 --use_scheduler --milestones 150 250 \\
        --prune_criterion flipout --flipout_p 2 --prune_freq 32 --prune_rate 0.5 \\
        --noise --noise_scale_factor 1 --comment="test flipout" --logdir=vgg19/

parse -> build data, model, optimizer, pruner -> epoch loop -> artifacts in runs/<logdir>/<run>.
Every way a run can end (completed, interrupted, diverged, a failed write, a lost torchrun peer,
a mistake in its input) ends in one line on stderr or stdout and an exit code of its own
(utils/errors.py), with the last checkpoint intact.
"""

from utils.stop import Interrupted, StopSignals

# Installed before the imports below, which take seconds (torch): a Ctrl-C or SIGTERM during
# start-up is then recorded like any other, not a KeyboardInterrupt traceback.
STARTUP_SIGNALS = StopSignals().install() if __name__ == "__main__" else None
if __name__ == "__main__":
    import signal as _signal

    # Slurm's warning before a time limit (sbatch --signal=USR2@...) reaches every process of a
    # job, and USR2 ends a process by default. Under `python -m experiments` the task that runs
    # main.py answers it by stopping main.py with SIGTERM; alone, the time limit's SIGTERM does.
    _signal.signal(_signal.SIGUSR2, _signal.SIG_IGN)

import argparse
import dataclasses
import json
import os
import shlex
import signal
import sys
import time
import uuid
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from cli import IDENTITY_OPTIONS, build_pruner, parse_args
from data import build_datasets, split_validation
from models import build_model, check_input_size
from pruning import Pruner
from training import (
    Diverged,
    LimitedBatches,
    TrainConfig,
    build_loaders,
    evaluate,
    learning_rate,
    memory_format,
    train_one_epoch,
)
from utils.checkpoint import (
    CHECKPOINT,
    load_checkpoint,
    rng_state,
    save_atomic,
    save_checkpoint,
    set_rng_state,
)
from utils.distributed import SETTLE_SECONDS, Distributed, describe_lost
from utils.errors import (
    EXIT_DIVERGED,
    PeerLost,
    RunBusy,
    StorageError,
    UserError,
    given_path,
    quiet_closed_pipes,
)
from export.compact import compact_summary
from export.flops import flops_summary, layer_flops
from utils.io import made_folders, write_json_atomic
from utils.lock import RunLock, remove_stale_temporaries
from utils.logging import RUNS_ROOT, NullLogger, RunLogger, make_run_dir, warn
from pruning.mask import percent
from utils.runtime import batchnorm_in_fp32, seed_everything
from export.weights import load_weights, read_weights

HPARAM_METRICS = ("final_test_acc", "best_test_acc", "final_sparsity")
# options that describe how a run was resumed, not the run itself
BOOKKEEPING = ("resume", "resume_overrides")


def log_prune(event, pruner: Pruner, logger: RunLogger, model, input_shape) -> None:
    print(
        f"prune at epoch {event.epoch}: removed {event.pruned:,}, {event.live:,} of "
        f"{event.total:,} weights live, sparsity {percent(event.sparsity, 4)}"
        + ("" if event.rewound_to is None else f"; rewound to epoch {event.rewound_to}")
    )
    print(pruner.layer_table(layer_flops(model, input_shape, pruner.masks.masks)))
    for name, fraction in pruner.masks.layer_sparsity().items():
        logger.scalar(f"sparsity/layer/{name}", fraction, event.epoch)
    logger.histogram(
        "flips/live_weights", pruner.flips.live_counts(pruner.masks).numpy(), event.epoch
    )
    for name in event.collapsed:
        warn(f"layer {name} has no live weights left (layer collapse)")


def round_record(epoch: int, record: dict, pruner: Pruner) -> dict:
    """A round that ended with epoch `epoch` (Rounds schedule): its accuracies, and the sparsity
    it trained at, before the prune that ends it."""
    event = next((e for e in pruner.events if e.epoch == epoch), None)
    trained = record["sparsity"] if event is None else 1 - (event.live + event.pruned) / event.total
    return {
        "round": pruner.round_ends().index(epoch) + 1,
        "last_epoch": epoch,
        "test_acc": record.get("test_acc"),
        "val_acc": record.get("val_acc"),
        "sparsity": trained,
    }


def log_round(epoch: int, record: dict, pruner: Pruner, logger: RunLogger) -> None:
    entry = round_record(epoch, record, pruner)
    accuracy = "not evaluated" if entry["test_acc"] is None else f"{entry['test_acc']:.2f}%"
    print(
        f"round {entry['round']}/{len(pruner.round_ends())} ends: test accuracy {accuracy} at "
        f"sparsity {percent(entry['sparsity'], 4)}"
    )
    for key in ("test_acc", "val_acc", "sparsity"):
        if entry[key] is not None:
            logger.scalar(f"round/{key}", entry[key], entry["round"])


def rounds_of(history: list[dict], pruner: Pruner) -> list[dict]:
    """Every completed round, as round_record describes it."""
    by_epoch = {record["epoch"]: record for record in history}
    ends = [epoch for epoch in pruner.round_ends() if epoch in by_epoch]
    return [round_record(epoch, by_epoch[epoch], pruner) for epoch in ends]


def run(
    args: argparse.Namespace, ddp: Distributed | None = None, stop: StopSignals | None = None
) -> dict:
    """One training run, new or resumed, in this process or as one rank under torchrun. Returns
    its summary, whose `status` is `completed`, `interrupted`, `diverged` or `failed` and whose
    `exit_code` is the process's. A mistake found before the run directory exists raises
    UserError; an unexpected exception propagates after `failed` is recorded. The run
    directory's lock, once taken, is released however the run ends."""
    locks: list[RunLock] = []
    try:
        # not installed, a StopSignals never asks to stop
        return train_run(args, ddp or Distributed(), stop or StopSignals(), locks)
    finally:
        for lock in locks:
            lock.release()


def train_run(args, ddp: Distributed, stop: StopSignals, locks: list[RunLock]) -> dict:
    """run()'s body; every lock it takes goes into `locks`."""
    session_start = time.time()
    train_config = TrainConfig.from_args(args)
    if args.batch_size % ddp.world_size:
        raise UserError(
            f"-bs {args.batch_size} is the global batch size and must divide evenly among the "
            f"{ddp.world_size} processes"
        )
    device = ddp.setup(args.device, args.dist_timeout)
    seed_everything(args.seed)
    resume_dir = Path(args.resume) if args.resume else None
    checkpoint = None
    if resume_dir is not None:
        with given_path(f"--resume {resume_dir}", resume_dir):
            if ddp.is_main:
                locks.append(RunLock(resume_dir).acquire())
                remove_stale_temporaries(resume_dir)
            has_checkpoint = (resume_dir / CHECKPOINT).is_file()
        if has_checkpoint:
            checkpoint = load_checkpoint(resume_dir, "--resume")
        else:
            print(f"{resume_dir} has no checkpoint: it stopped before its first epoch ended; "
                  "starting it afresh there")  # fmt: skip
    ddp.agree_to_stop(stop)
    with given_path(f"--data_dir {args.data_dir}", args.data_dir):
        splits = build_datasets(args.dataset, args.data_dir, not args.no_download, args.image_size)
    train_set, val_set = splits.train, None
    if args.val:
        train_set, val_set = split_validation(splits, args.val_size or len(splits.train) // 10)
    if args.batch_size > len(train_set):
        warn(f"-bs {args.batch_size} is more than the {len(train_set)} training images: "
             "every epoch is a single step")  # fmt: skip
    ddp.agree_to_stop(stop)

    spec = model_spec(args, splits)
    if args.image_size is not None:  # every dataset's own size fits every network
        check_input_size(spec)
    input_shape = (splits.in_channels, splits.image_size, splits.image_size)
    model = build_model(**spec)
    model.to(device, memory_format=memory_format(train_config))
    if args.amp:
        batchnorm_in_fp32(model)
    optimizer = train_config.optimizer(model.parameters())
    initial_masks = None
    if args.init_from is not None and checkpoint is None:
        with given_path(f"--init_from {args.init_from}", args.init_from):
            initial_masks = init_from(args.init_from, model)
    pruner = build_pruner(args, model, sync=ddp)
    # a schedule of rounds trains longer than -e, which is then the length of a round
    total_epochs = pruner.total_epochs(args.epochs)
    train_config = dataclasses.replace(train_config, epochs=total_epochs)
    if initial_masks is not None:
        try:
            pruner.adopt_masks(initial_masks)
        except ValueError as error:
            raise UserError(f"--init_from {args.init_from}: {error}") from None
    pruner.attach_optimizer(optimizer)
    # `net` trains; `model`, the unwrapped module, is evaluated, pruned and saved
    net = parallel(model, args, device, ddp)
    train_loader, eval_loaders = build_loaders(
        train_config, splits, train_set, val_set, device, ddp
    )
    # criteria that score on training batches (SNIP) take the first few from here at each prune
    pruner.attach_data(LimitedBatches(train_loader, train_config.limit_batches))
    history: list[dict] = []
    wall_before = 0.0
    if checkpoint is not None:
        history, wall_before = restore(
            checkpoint, args, spec, model, optimizer, pruner, train_loader
        )
    first_epoch = len(history) + 1
    ddp.agree_to_stop(stop)

    # From here on the run has a directory, and every ending is recorded in it.
    options = run_options(args)
    run_dir, logger = None, NullLogger()
    if ddp.is_main:
        if resume_dir is None:
            run_dir, lock = new_run_dir(args)
            locks.append(lock)
            config = new_config(options, run_dir, device, model, pruner)
        else:
            run_dir = resume_dir
            config = resumed_config(run_dir, args, device, first_epoch, afresh=not history)
        logger = RunLogger(run_dir, config, history if resume_dir is not None else None)
    run_dir = run_dir or resume_dir
    describe_run(args, run_dir, device, pruner, train_set, splits.test, val_set, first_epoch, ddp)
    summary = {
        "model": args.model,
        "dataset": args.dataset,
        "prune_criterion": args.prune_criterion,
        "method": pruner.criterion.method_label(options),
        **pruner.summary(),
        "seed": args.seed,
        "epochs": total_epochs,
        "comment": args.comment,
        "run_dir": str(run_dir),
        "run_id": logger.run_id if ddp.is_main else None,
        "status": "running",
        # every option, so that tables can be grouped by any of them from this file alone
        "options": options,
    }

    def emergency_summary(status: str, **fields) -> None:
        """Write the summary from another thread (the stop watchdog, the heartbeat) while the
        main thread may be blocked: what the checkpoint holds, and how the run ended."""
        if ddp.is_main:
            record = {**summary, **final_metrics(history), "epochs_completed": len(history)}
            record.update(status=status, wall_seconds=wall_before + time.time() - session_start)
            write_json_atomic(run_dir / "summary.json", {**record, **fields})

    def peers_lost(message: str) -> str | None:
        emergency_summary("failed", error=message, exit_code=PeerLost.exit_code)
        return ending_line("failed", message, run_dir, len(history), ddp)

    def forced_exit(signum: int) -> tuple[str | None, int]:
        lost = ddp.heartbeat.silent(SETTLE_SECONDS) if ddp.heartbeat is not None else []
        if lost:  # stuck in a collective with a lost rank, rather than merely slow
            return peers_lost(describe_lost(lost)), PeerLost.exit_code
        name = signal.Signals(signum).name
        emergency_summary("interrupted", signal=name, exit_code=128 + signum)
        return ending_line("interrupted", name, run_dir, len(history), ddp), 128 + signum

    ddp.on_peers_lost = peers_lost
    stop.on_forced_exit = forced_exit
    unexpected = None
    try:
        if checkpoint is None:
            event = pruner.before_training()
            if event is not None:
                log_prune(event, pruner, logger, model, input_shape)
        ddp.agree_to_stop(stop)
        for epoch in range(first_epoch, total_epochs + 1):
            record, event = run_epoch(
                epoch, net, model, train_loader, eval_loaders, optimizer, pruner, train_config,
                device, ddp, stop,
            )  # fmt: skip
            # checkpoint first: an epoch counts as done once it can be resumed from
            if ddp.is_main:
                with stop.critical():
                    save_checkpoint(
                        {
                            "epoch": epoch,
                            "args": checkpoint_args(args),
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
            print(format_epoch(record, total_epochs), flush=True)
            if epoch in pruner.round_ends():
                log_round(epoch, record, pruner, logger)
            if event is not None:
                log_prune(event, pruner, logger, model, input_shape)
            ddp.agree_to_stop(stop)
        ddp.check_identical(pruner.state_tensors(), "at the end, weights, masks or flip counts")
        if args.save_model and ddp.is_main:
            save_model(run_dir / "model.pt", spec, model, pruner)
        summary["status"] = "completed"
    except Interrupted as interruption:
        summary.update(status="interrupted", signal=str(interruption))
        summary["exit_code"] = interruption.exit_code
    except Diverged as divergence:
        summary.update(status="diverged", error=str(divergence), exit_code=EXIT_DIVERGED)
    except (UserError, StorageError, PeerLost) as failure:
        summary.update(status="failed", error=one_line(failure), exit_code=failure.exit_code)
    except BaseException as error:
        lost = ddp.peer_failure(error)
        if lost is None:  # a bug: recorded, then raised with its traceback
            summary.update(status="failed", error=f"{type(error).__name__}: {error}")
            unexpected = error
        else:
            summary.update(status="failed", error=str(lost), exit_code=lost.exit_code)
    finish(summary, history, logger, pruner, model, input_shape, wall_before, session_start, ddp)
    stop.on_forced_exit = None
    if unexpected is not None:
        raise unexpected
    line = ending_line(summary["status"], summary.get("error") or summary.get("signal"), run_dir,
                       len(history), ddp, summary)  # fmt: skip
    if line:
        print(line, file=sys.stdout if summary["status"] == "completed" else sys.stderr)
    return summary


def finish(summary, history, logger, pruner, model, input_shape, wall_before, session_start, ddp):
    """Complete and write the summary and close the logs. A write that fails here (the disk that
    stopped the run is still full) turns a completed run into a failed one; an earlier failure
    stays the reason given."""
    summary.update(final_metrics(history))
    summary.update(
        epochs_completed=len(history),
        final_sparsity=pruner.sparsity,
        **flops_summary(model, input_shape, pruner.masks.masks),
        compact=compact_summary(model, input_shape, pruner.masks.masks),
        layer_sparsity=pruner.masks.layer_sparsity(),
        prune_events=[e.as_dict() for e in pruner.events],
        **({"rounds": rounds_of(history, pruner)} if pruner.round_ends() else {}),
        collapsed_layers=pruner.collapsed_layers(),
        wall_seconds=wall_before + time.time() - session_start,
        processes=ddp.world_size,
    )
    try:
        logger.write_summary(summary)
        if summary["status"] == "completed":
            logger.log_hparams(summary["options"], {key: summary[key] for key in HPARAM_METRICS})
    except StorageError as failure:
        if summary["status"] == "completed":
            summary.update(status="failed", error=str(failure), exit_code=failure.exit_code)
    finally:
        try:
            logger.close()
        except StorageError as failure:
            if summary["status"] == "completed":
                summary.update(status="failed", error=str(failure), exit_code=failure.exit_code)


def run_options(args: argparse.Namespace) -> dict:
    """Every option of the run under its flag's name (--lambda is stored as lambda_)."""
    return {key.rstrip("_"): value for key, value in vars(args).items() if key not in BOOKKEEPING}


def checkpoint_args(args: argparse.Namespace) -> dict:
    return {key: value for key, value in vars(args).items() if key not in BOOKKEEPING}


def new_run_dir(args) -> tuple[Path, RunLock]:
    """The directory of a new run, locked: --run_dir, or a fresh one under runs/<logdir>. A path
    the system refuses ends in one line naming it: a bad one (too long, through a file) a
    UserError, one on a refusing disk (read-only, full) a StorageError (utils.errors)."""
    if args.run_dir is None:
        parent = RUNS_ROOT / args.logdir
        with given_path(f"cannot write runs under --logdir {parent}", parent):
            run_dir = make_run_dir(args.logdir, args.comment)
            return run_dir, RunLock(run_dir).acquire()
    run_dir = Path(args.run_dir)
    with given_path(f"--run_dir {run_dir}: cannot create it", run_dir), made_folders(run_dir):
        lock = RunLock(run_dir).acquire()
    if (run_dir / "config.json").exists():
        # another process started this run since this one looked: it is that process's run
        lock.release()
        raise RunBusy(f"--run_dir {run_dir}: another process started a run there meanwhile")
    remove_stale_temporaries(run_dir)
    return run_dir, lock


def new_config(options: dict, run_dir: Path, device, model: nn.Module, pruner: Pruner) -> dict:
    return {
        **options,
        "run_id": uuid.uuid4().hex,
        "device_resolved": str(device),
        "torch_version": torch.__version__,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "num_prunable": pruner.masks.num_total,
        "run_dir": str(run_dir),
    }


def resumed_config(run_dir: Path, args, device, first_epoch: int, afresh: bool) -> dict:
    """The run's config.json with this resume recorded: the options stay the ones it was
    started with; what this resume changed is listed under `resumes`. A run that never finished
    an epoch starts afresh: its earlier files are cleared."""
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    config.setdefault("run_id", uuid.uuid4().hex)
    resumes = config.get("resumes") if isinstance(config.get("resumes"), list) else []
    resumes.append(
        {
            "at_epoch": first_epoch,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "overrides": dict(getattr(args, "resume_overrides", {})),
            "device_resolved": str(device),
            "torch_version": torch.__version__,
        }
    )
    config["resumes"] = resumes
    if afresh:
        for stale in [*run_dir.glob("events.out.tfevents.*"), run_dir / "summary.json"]:
            stale.unlink(missing_ok=True)
    return config


def resume_command(run_dir: Path, ddp: Distributed) -> str:
    target = f"main.py --resume {shlex.quote(str(run_dir))}"
    if not ddp.enabled:
        return f"python {target}"
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", ddp.world_size))
    if per_node == ddp.world_size:
        return f"python -m utils.launch --standalone --nproc_per_node {per_node} {target}"
    return f"your torchrun command, with {target}"


def ending_line(status: str, reason, run_dir, epochs: int, ddp: Distributed, summary=None):
    """The one line a run ends with, or None for a rank that stays silent (all but rank 0, and
    rank 0 too when it is the one that was lost)."""
    if not ddp.is_main:
        return None
    if status == "completed":
        return (
            f"done: test accuracy {summary['final_test_acc']:.2f}% "
            f"(best {summary['best_test_acc']:.2f}%), "
            f"sparsity {percent(summary['final_sparsity'], 4)}, "
            f"{summary['wall_seconds']:.0f}s -> {run_dir}"
        )
    if run_dir is None:
        return f"interrupted by {reason} before the run started; nothing to resume"
    where = (
        f"after {epochs} completed epoch{'s' if epochs != 1 else ''}"
        if epochs
        else "before its first epoch ended (a resume starts it afresh)"
    )
    again = f"continue with: {resume_command(run_dir, ddp)}"
    if status == "interrupted":
        return f"interrupted by {reason} {where}; {again}"
    if status == "diverged":
        kept = (
            f"the checkpoint of epoch {epochs} is in {run_dir}"
            if epochs
            else "no epoch completed, so there is no checkpoint to go back to"
        )
        return f"error: {reason}; {kept}"
    return f"error: {reason}; the run stopped {where}; {again}"


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


def restore(
    checkpoint, args, spec, model, optimizer, pruner, train_loader
) -> tuple[list[dict], float]:
    """Load a checkpoint's state into freshly built objects; returns (history, wall seconds)."""
    saved = checkpoint["args"]
    for dest in IDENTITY_OPTIONS:
        if saved.get(dest) != getattr(args, dest):
            raise UserError(
                f"--resume {args.resume}: its checkpoint is from a run with --{dest} "
                f"{saved.get(dest)}, not {getattr(args, dest)}"
            )
    if checkpoint["model_spec"] != spec:
        raise UserError(
            f"--resume {args.resume}: its {CHECKPOINT} is of {checkpoint['model_spec']}, not "
            f"of the network these options build, {spec}"
        )
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        pruner.load_state_dict(checkpoint["pruner"])
        train_loader.generator.set_state(checkpoint["data_order"])
        set_rng_state(checkpoint["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"--resume {args.resume}: its {CHECKPOINT} does not fit this run: {first}"
        ) from error
    return list(checkpoint["history"]), checkpoint["wall_seconds"]


def init_from(path: str, model: nn.Module) -> dict[str, torch.Tensor] | None:
    """Load the weights of --init_from into `model`; returns the masks the file carries."""
    weights = read_weights(path, "--init_from")
    load_weights(model, weights, "--init_from")
    if weights.masks is None:
        print(f"initialised from {path} ({weights.kind})")
    else:
        live = sum(int(mask.sum()) for mask in weights.masks.values())
        total = sum(mask.numel() for mask in weights.masks.values())
        print(f"initialised from {path} ({weights.kind}), keeping its masks: "
              f"{percent(1 - live / total)} of its masked weights pruned")  # fmt: skip
    return weights.masks


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
    if pruner.schedule is not None:
        print(f"schedule: {pruner.describe()}")


def run_epoch(
    epoch,
    net,
    model,
    train_loader,
    eval_loaders,
    optimizer,
    pruner,
    train_config: TrainConfig,
    device,
    ddp,
    stop=None,
):
    """Train one epoch, evaluate, then prune if the schedule says so. Returns the epoch's record
    and the prune event, if any."""
    sparsity = pruner.sparsity
    reg_scale = 1.0 - sparsity if train_config.anneal_lambda else 1.0
    lr = learning_rate(train_config, pruner.training_epoch(epoch), sparsity)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if train_config.reg_type == "wdecay":
            group["weight_decay"] = train_config.lambda_ * reg_scale
    flips_before = pruner.flips.total()

    sampler = getattr(train_loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    started = time.time()
    trained = train_one_epoch(
        net, train_loader, optimizer, pruner, train_config, epoch, device, reg_scale, ddp, stop
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
        if split == "test" and train_config.evaluate_on_val and epoch != train_config.epochs:
            record["test_loss"] = record["test_acc"] = None
            continue
        record[f"{split}_loss"], record[f"{split}_acc"] = evaluate(
            model, loader, train_config, device, f"{split} {epoch}", ddp, stop
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
        f"sparsity {percent(record['sparsity'], 4)}",
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


@quiet_closed_pipes()
def main(argv: list[str] | None = None) -> int:
    """The command line. Returns the exit code (utils/errors.py); every ending prints one line.
    A reader that stops reading (`| head`) stops the output, never the run."""
    # First of all, so that a signal at any moment, start-up included, is recorded, not lost;
    # run as a script, the handlers were installed before the imports.
    stop = STARTUP_SIGNALS if argv is None and STARTUP_SIGNALS else StopSignals().install()
    ddp = Distributed.from_environment()
    if not ddp.is_main:
        # rank 0 alone reports; the others stay silent but for errors
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    code, peers_lost = 0, False
    try:
        args = parse_args(argv)
        stop.check()
        if not ddp.is_main:
            args.quiet = True
        summary = run(args, ddp, stop)
        code = summary.get("exit_code", 0)
        peers_lost = code == PeerLost.exit_code
    except Interrupted as interruption:  # before the run had a directory
        if ddp.is_main:
            print(f"interrupted by {interruption} before the run started; nothing to resume",
                  file=sys.stderr)  # fmt: skip
        code = interruption.exit_code
    except (UserError, StorageError, PeerLost) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        code, peers_lost = error.exit_code, isinstance(error, PeerLost)
    finally:
        ddp.shutdown(peers_lost)
        # a process that is about to exit ignores late signals; a caller in-process gets its
        # own handlers back
        stop.release(ignore_further=argv is None)
    return code


def one_line(error: Exception) -> str:
    """The message of a user error, also when a DataLoader worker raised it (the worker's
    traceback then precedes the original message)."""
    text = str(error).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


if __name__ == "__main__":
    sys.exit(main())
