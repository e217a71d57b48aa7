"""Train a network while pruning it: FlipOut (Apostol, Stol & Forré, 2020) and its baselines.

    python main.py                      # a short FlipOut run on the bundled digits data
    python main.py -m vgg19 -d cifar10 -bs 128 -e 350 -lr 0.1 --opt sgd --momentum 0.9 \\
        --reg_type wdecay --lambda 5e-4 --use_scheduler --milestones 150 250 \\
        --prune_criterion flipout --flipout_p 2 --prune_freq 32 --prune_rate 0.5 \\
        --noise --noise_scale_factor 1 --comment="test flipout" --logdir=vgg19/

The file reads as the run's phases: `main` parses the command line, and a `Run`, the one object
that holds what the phases share, prepares the data, network, optimizer and pruner (restoring a
checkpoint into them), opens its directory runs/<logdir>/<run>, trains the epochs and finishes
the summary.
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

import dataclasses
import json
import os
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from cli import (
    build_pruner,
    flags_of,
    build_pruning,
    changed_options,
    keyword_arguments,
    parse_args,
)
from data import DataSplits, build_datasets, split_validation
from data.device import DeviceLoader
from models import build_for_run, foreign_state, is_external
from pruning import CRITERIA, SCHEDULES, Pruner, prunable_parameters
from pruning.prunable import matches
from pruning.registry import method_label
from record import (
    ModelOptions,
    PruneOptions,
    Role,
    RunOptions,
    RunRecord,
    fixed_keys,
    key_of,
    keys_with,
)
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
from export.flops import TrainingFlops, flops_summary
from utils.io import made_folders, read_text
from utils.errors import special_file
from utils.lock import RunLock, remove_stale_temporaries
from utils.logging import (
    RUNS_ROOT,
    NullLogger,
    RunLogger,
    json_line,
    library_warnings_as_lines,
    make_run_dir,
    warn,
)
from pruning.mask import percent
from utils.runtime import batchnorm_in_fp32, seed_everything
from utils.rundir import (
    CHECKPOINT,
    CONFIG,
    EVENTS,
    METRICS_LOG,
    MODEL,
    SUMMARY,
    WRITTEN,
    read_config,
    write_summary,
)
from export.weights import load_weights, read_weights

HPARAM_METRICS = ("final_test_acc", "best_test_acc", "final_sparsity")


def hparams_of(summary: dict) -> dict:
    """What TensorBoard's HParams table shows of a run: first its method as the report labels it
    and the schedule it resolved to (--schedule is unset for a criterion's default), then its
    options, less where it ran and what it is called (which tell no result apart: the table names
    each run by its directory) and the options of the criteria and schedules it did not use (a
    FlipOut run has no use for --snip_batches: such columns crowded out the few that tell runs
    apart)."""
    schedule = (summary.get("schedule") or {}).get("name", "none")
    own = {*flags_of(CRITERIA.get(summary["prune_criterion"])), *flags_of(SCHEDULES.get(schedule))}
    others = {flag for cls in [*CRITERIA.values(), *SCHEDULES.values()] for flag in flags_of(cls)}
    left_out = {*keys_with(Role.MACHINE, Role.NAMING), *(others - own), "schedule"}
    options = {key: value for key, value in summary["options"].items() if key not in left_out}
    # capitalised, they sort before every option in TensorBoard's columns (it orders them by
    # name, those whose values differ first); λ spelled out, as its filter pane escapes it
    method = summary["method"].replace("λ", "lambda")
    return {"Method": method, "Schedule": schedule, **options}


@quiet_closed_pipes()
def main(argv: list[str] | None = None) -> int:
    """The command line. Returns the exit code (utils/errors.py); every ending prints one line.
    A reader that stops reading (`| head`) stops the output, never the run."""
    # First of all, so that a signal at any moment, start-up included, is recorded, not lost;
    # run as a script, the handlers were installed before the imports.
    stop = STARTUP_SIGNALS if argv is None and STARTUP_SIGNALS else StopSignals().install()
    library_warnings_as_lines()
    ddp = Distributed.from_environment()
    if not ddp.is_main:
        # rank 0 alone reports; the others stay silent but for errors
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    code, peers_lost = 0, False
    try:
        record = parse_args(argv)
        stop.check()
        if not ddp.is_main:
            record = record.replace(quiet=True)
        summary = run(record, ddp, stop)
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


def run(record: RunRecord, ddp: Distributed | None = None, stop: StopSignals | None = None) -> dict:
    """One training run, new or resumed, in this process or as one rank under torchrun. Returns
    its summary, whose `status` is `completed`, `interrupted`, `diverged` or `failed` and whose
    `exit_code` is the process's. A mistake found before the run directory exists raises
    UserError; an unexpected exception propagates after `failed` is recorded. The run
    directory's lock, once taken, is released however the run ends."""
    # not installed, a StopSignals never asks to stop
    this_run = Run(record, ddp or Distributed(), stop or StopSignals())
    try:
        return this_run.execute()
    finally:
        for lock in this_run.locks:
            lock.release()


# How an exception that ends the epochs is recorded in the summary, by the first type it is an
# instance of. Any other is a bug, unless a lost torchrun peer caused it (Run.record_ending).
ENDINGS: tuple[tuple[type | tuple[type, ...], Callable[[Exception], dict]], ...] = (
    (
        Interrupted,
        lambda stop: {"status": "interrupted", "signal": str(stop), "exit_code": stop.exit_code},
    ),
    (
        Diverged,
        lambda error: {"status": "diverged", "error": str(error), "exit_code": EXIT_DIVERGED},
    ),
    (
        (UserError, StorageError, PeerLost),
        lambda error: {"status": "failed", "error": one_line(error), "exit_code": error.exit_code},
    ),
)


class Run:
    """One training run and the state its phases share. `prepare` builds the data, the network,
    its optimizer and pruner, and restores a checkpoint's state into them; `open_run_dir` gives
    the run its directory and summary; `train` runs the epochs; `finish` completes the summary and
    writes it. `execute` runs them in that order, and records however the epochs ended.

    Rank 0 alone writes the run's files; the other ranks under torchrun keep a NullLogger."""

    # Given: the parsed command line, this process's place among torchrun's, its stop signals.
    record: RunRecord  # the run's options (record.py), from cli.parse_args
    ddp: Distributed
    stop: StopSignals
    train_config: TrainConfig  # its `epochs` become total_epochs once the pruner is built
    session_start: float  # when this process took the run up; earlier sessions: wall_before
    locks: list[RunLock]  # every lock taken, released by run() however the run ends
    # prepare(): what trains, and on what; with --resume, the checkpoint's state restored
    device: torch.device
    resume_dir: Path | None
    checkpoint: dict | None
    splits: DataSplits
    train_set: Dataset
    val_set: Dataset | None  # held out of the training set with --val
    spec: dict  # build_model(**spec) rebuilds the network
    input_shape: tuple[int, int, int]
    model: nn.Module  # the unwrapped module: evaluated, pruned and saved
    training_flops: TrainingFlops  # what each epoch's `train_flops` is counted by
    net: nn.Module  # the module that trains: `model`, or its DataParallel or DDP wrapper
    optimizer: torch.optim.Optimizer
    pruner: Pruner
    train_loader: DataLoader | DeviceLoader
    eval_loaders: dict[str, DataLoader | DeviceLoader]  # by split: test, and val with --val
    total_epochs: int  # a schedule of rounds trains longer than -e
    history: list[dict]  # the record of every completed epoch, restored ones included
    wall_before: float  # seconds spent on the run before this session
    first_epoch: int
    # with --resume: the epoch whose prune a changed schedule adds to the epochs trained, made
    # before training on, and the line that says what the schedule becomes (None: unchanged)
    made_up: int | None
    schedule_change: str | None
    # a resume of a run that completed the epochs these options train: its summary, which stays
    # as it is with every other file of the run, and the line that says so (None: it trains on)
    finished: dict | None
    finished_line: str
    # open_run_dir(): where the run is recorded, and what is recorded
    options: dict
    run_dir: Path | None  # None only on ranks other than 0 of a new run
    logger: RunLogger | NullLogger
    summary: dict

    def __init__(self, record: RunRecord, ddp: Distributed, stop: StopSignals):
        self.session_start = time.time()
        self.record, self.ddp, self.stop = record, ddp, stop
        self.train_config = TrainConfig.from_options(record.by_name())
        self.locks = []
        self.resume_dir = Path(record.run.resume) if record.run.resume else None
        self.checkpoint = None
        self.history, self.wall_before = [], 0.0
        self.run_dir, self.logger = None, NullLogger()
        self.finished = None

    def execute(self) -> dict:
        """The phases, in order; returns the summary. Once the run has a directory every ending
        of the epochs is recorded in it, and a bug is raised again after that."""
        self.prepare()
        if self.finished is not None:
            return self.leave_as_it_is()
        self.open_run_dir()
        self.ddp.on_peers_lost = self.peers_lost
        self.stop.on_forced_exit = self.forced_exit
        unexpected = None
        try:
            self.train()
            self.summary["status"] = "completed"
        except BaseException as error:
            unexpected = self.record_ending(error)
        self.finish()
        self.stop.on_forced_exit = None
        if unexpected is not None:
            raise unexpected
        line = self.ending_line(
            self.summary["status"], self.summary.get("error") or self.summary.get("signal")
        )
        if line:
            stream = sys.stdout if self.summary["status"] == "completed" else sys.stderr
            print(line, file=stream)
        return self.summary

    def wall_seconds(self) -> float:
        return self.wall_before + time.time() - self.session_start

    # -- prepare ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Everything the epochs need, in a fixed order, since the random streams follow it: the
        seeds, then the data (its validation split), then the network's initialisation. The
        ranks agree between the slow steps whether a signal asks them to stop."""
        record, ddp = self.record, self.ddp
        if record.train.batch_size % ddp.world_size:
            raise UserError(
                f"-bs {record.train.batch_size} is the global batch size and must divide evenly "
                f"among the {ddp.world_size} processes"
            )
        self.device = ddp.setup(record.run.device, record.run.dist_timeout)
        seed_everything(record.train.seed)
        if self.resume_dir is not None:
            self.checkpoint = self.read_checkpoint(self.resume_dir)
        ddp.agree_to_stop(self.stop)
        self.load_data()
        ddp.agree_to_stop(self.stop)
        self.build_network()
        self.build_training()
        ddp.agree_to_stop(self.stop)

    def read_checkpoint(self, resume_dir: Path) -> dict | None:
        """Lock the run to resume (rank 0) and read its checkpoint; None when it has none."""
        with given_path(f"--resume {resume_dir}", resume_dir):
            if self.ddp.is_main:
                self.locks.append(RunLock(resume_dir).acquire())
                remove_stale_temporaries(resume_dir, WRITTEN)
            kind = special_file(resume_dir / CHECKPOINT)
            if kind:  # not a missing checkpoint, after which the run would start afresh
                raise UserError(f"--resume {resume_dir}: its {CHECKPOINT} is {kind}, not a file")
            has_checkpoint = (resume_dir / CHECKPOINT).is_file()
        if has_checkpoint:
            return load_checkpoint(resume_dir, "--resume")
        print(f"{resume_dir} has no checkpoint: it stopped before its first epoch ended; "
              "starting it afresh there")  # fmt: skip
        return None

    def leave_as_it_is(self) -> dict:
        """The end of a resume with nothing to do: the run's files stay as they were, to the
        byte, but model.pt, written where --save_model asks for one the run lacks. Returns the
        run's summary."""
        line, model_file = self.finished_line, self.resume_dir / MODEL
        if self.record.run.save_model and not os.path.lexists(model_file):
            if self.ddp.is_main:
                save_model(model_file, self.spec, self.model, self.pruner)
            line += ", and model.pt is written, as --save_model asks"
        print(line)
        # what the file says of the ending is not this process's to return
        return {**self.finished, "exit_code": 0}

    def load_data(self) -> None:
        record = self.record
        with given_path(f"--data_dir {record.data.data_dir}", record.data.data_dir):
            self.splits = build_datasets(
                record.data.dataset,
                record.data.data_dir,
                not record.data.no_download,
                record.data.image_size,
            )
        self.train_set, self.val_set = self.splits.train, None
        if record.data.val:
            self.train_set, self.val_set = split_validation(
                self.splits, record.data.val_size or len(self.splits.train) // 10
            )
        if record.train.batch_size > len(self.train_set):
            warn(f"-bs {record.train.batch_size} is more than the {len(self.train_set)} training "
                 "images: every epoch is a single step")  # fmt: skip

    def build_network(self) -> None:
        """The model, its optimizer and its pruner; with --init_from (on a run's first start)
        the weights and masks of that file."""
        record, splits = self.record, self.splits
        self.spec = model_spec(record.model, splits)
        self.input_shape = (splits.in_channels, splits.image_size, splits.image_size)
        # the library's published weights, on a run's first start only
        self.model = build_for_run(
            self.spec,
            pretrained=record.model.pretrained and self.checkpoint is None,
            check=record.data.image_size is not None,
        )
        self.model.to(self.device, memory_format=memory_format(self.train_config))
        if record.train.amp:
            batchnorm_in_fp32(self.model)
        self.training_flops = TrainingFlops(self.model, self.input_shape)
        self.optimizer = self.train_config.optimizer(self.model.parameters())
        initial_masks, initialised = None, []
        if record.model.init_from is not None and self.checkpoint is None:
            with given_path(f"--init_from {record.model.init_from}", record.model.init_from):
                initial_masks = init_from(
                    record.model.init_from, self.model, self.spec, initialised
                )
        self.pruner = build_pruner(record, self.model, sync=self.ddp)
        # a schedule of rounds trains longer than -e, which is then the length of a round
        self.total_epochs = self.pruner.total_epochs(record.train.epochs)
        self.train_config = dataclasses.replace(self.train_config, epochs=self.total_epochs)
        if initial_masks is not None:
            try:
                self.pruner.adopt_masks(adoptable_masks(record, self.pruner, initial_masks))
            except ValueError as error:
                raise UserError(f"--init_from {record.model.init_from}: {error}") from None
        self.pruner.attach_optimizer(self.optimizer)
        # only now that the file's weights and masks are all accepted
        for line in initialised:
            print(line)

    def build_training(self) -> None:
        """The module that trains, the loaders, and a checkpoint's state restored."""
        self.net = self.parallel()
        self.train_loader, self.eval_loaders = build_loaders(
            self.train_config, self.splits, self.train_set, self.val_set, self.device, self.ddp
        )
        # criteria that score on training batches (SNIP) take the first few from here at each prune
        self.pruner.attach_data(LimitedBatches(self.train_loader, self.train_config.limit_batches))
        self.made_up = self.schedule_change = None
        if self.checkpoint is not None:
            self.restore()
            self.check_resumed_schedule()
        self.first_epoch = len(self.history) + 1
        # said once the run is known to resume: not before a refused checkpoint's error line
        changes = changed_options(self.record) if self.resume_dir is not None else None
        if changes and self.finished is None and self.ddp.is_main:
            warn(changes)

    def parallel(self) -> nn.Module:
        """The module that trains: DistributedDataParallel under torchrun, DataParallel with
        --parallel and several GPUs, the model itself otherwise."""
        model, device, ddp = self.model, self.device, self.ddp
        if ddp.enabled:
            if self.record.run.parallel:
                warn("--parallel is ignored under torchrun, which already runs one process per GPU")
            return ddp.wrap(model, device)
        if not self.record.run.parallel:
            return model
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        if gpus < 2:
            warn(f"--parallel needs several GPUs; {gpus} visible, training on {device} alone")
            return model
        print(f"DataParallel over {gpus} GPUs; torchrun --nproc_per_node {gpus} is usually faster")
        return nn.DataParallel(model)

    def restore(self) -> None:
        """Load the checkpoint's state into the freshly built objects, and its history."""
        checkpoint, record = self.checkpoint, self.record
        saved = {key_of(name): value for name, value in checkpoint["args"].items()}
        options = record.options()
        for key in fixed_keys():
            if saved.get(key) != options[key]:
                raise UserError(
                    f"--resume {record.run.resume}: its checkpoint is from a run with --{key} "
                    f"{saved.get(key)}, not {options[key]}"
                )
        if checkpoint["model_spec"] != self.spec:
            raise UserError(
                f"--resume {record.run.resume}: its {CHECKPOINT} is of "
                f"{checkpoint['model_spec']}, not of the network these options build, {self.spec}"
            )
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.pruner.load_state_dict(checkpoint["pruner"])
            self.train_loader.generator.set_state(checkpoint["data_order"])
            set_rng_state(checkpoint["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
            text = str(error).strip()
            first = text.splitlines()[0] if text else type(error).__name__
            raise UserError(
                f"--resume {record.run.resume}: its {CHECKPOINT} does not fit this run: {first}"
            ) from error
        self.history, self.wall_before = list(checkpoint["history"]), checkpoint["wall_seconds"]

    def check_resumed_schedule(self) -> None:
        """A resume whose options change the schedule (a longer -e, another --prune_freq) may
        change only what is still to come: one that would have pruned otherwise in the epochs
        trained is refused. The one prune it may add there is after the last of them, where
        the run ended before (a periodic schedule never prunes after the last epoch, so a
        longer -e adds it); `train` makes it before training on, as an uninterrupted run of
        these options would have made it there. `schedule_change` says what the schedule
        becomes. A run cannot be shortened: an -e shorter than the epochs trained is refused,
        and a run that completed what these options train is left as it is (`finished`)."""
        done, schedule = len(self.history), self.pruner.schedule
        self.check_no_shorter()
        if done >= self.total_epochs:
            self.finished = self.completed_summary()
        if self.finished is not None:
            self.finished_line = (
                f"nothing to train: {self.resume_dir} completed its {done} epochs, at "
                f"{percent(self.pruner.sparsity)} sparsity; its files are left as they are"
            )
            return
        before = self.schedule_before()
        if schedule is None or before is None or plan(before) == plan(schedule):
            return
        differ = [epoch for epoch in range(done + 1) if before.step(epoch) != schedule.step(epoch)]
        if differ == [done] and before.step(done) is None and done < self.total_epochs:
            self.made_up = done
        elif differ:
            epoch = differ[0]
            raise UserError(
                f"--resume {self.record.run.resume}: these options change the prunes of the {done} "
                f"epochs it has trained ({when(epoch)}: {step_text(before.step(epoch))} then, "
                f"{step_text(schedule.step(epoch))} now); a resume may change only what is "
                "still to come: keep its schedule's options (with gradual, give --prune_end), or "
                "start a new run"
            )
        if done < self.total_epochs:
            self.schedule_change = self.changed_schedule_line()
        else:  # the end of a run stopped after its last checkpoint, before its summary
            self.schedule_change = (
                f"nothing to train: it has trained {done} epochs, as these options train; it "
                f"ends there, at {percent(self.pruner.sparsity)} sparsity"
            )

    def check_no_shorter(self) -> None:
        """Refuse options that train fewer epochs than the run has trained, unless the run
        completed (a plain --resume of a run that a resume with a longer -e extended, whose
        config.json keeps its first -e, then leaves it as it is)."""
        done, total, record = len(self.history), self.total_epochs, self.record
        if done <= total:
            return
        if "epochs" in record.resume_overrides:
            raise UserError(
                f"--resume {record.run.resume}: -e {record.train.epochs} trains {total} epoch"
                f"{'s' if total != 1 else ''}, fewer than the {done} it has trained, and a run "
                "cannot be shortened: leave -e out or give a longer one, or start a new run"
            )
        if self.completed_summary() is None:
            raise UserError(
                f"--resume {record.run.resume}: it has trained {done} epochs, more than the "
                f"{total} of the options it was started with (a resume with a longer -e extended "
                "it): give -e with the length to train it to"
            )

    def completed_summary(self) -> dict | None:
        """The run's summary when its files record it as complete, intact: summary.json says that
        it completed the epochs its checkpoint holds, and metrics.jsonl holds exactly those. None
        otherwise (a run stopped after its last checkpoint, before its summary, or a damaged
        file): this resume writes them again."""
        summary_text = text_of(self.resume_dir / SUMMARY)
        metrics_text = text_of(self.resume_dir / METRICS_LOG)
        if summary_text is None or metrics_text != "".join(map(json_line, self.history)):
            return None
        try:
            summary = json.loads(summary_text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(summary, dict) or summary.get("status") != "completed":
            return None
        return summary if summary.get("epochs_completed") == len(self.history) else None

    def schedule_before(self):
        """The schedule the resumed run followed, from its checkpoint's options; None when they
        no longer build one (a checkpoint of an older version), as nothing can be compared."""
        saved = self.checkpoint.get("args")
        if not isinstance(saved, dict):
            return None
        try:
            return build_pruning(self.record.replace(**saved))[1]
        except (UserError, TypeError, ValueError, KeyError, AttributeError):
            return None

    def changed_schedule_line(self) -> str:
        """What a schedule changed by a resume does from here: the epochs left, the prunes left
        (the one made up first), and the sparsity it ends at."""
        schedule, pruner, done = self.pruner.schedule, self.pruner, len(self.history)
        left = self.total_epochs - done
        parts = [f"{left} more epoch{'s' if left != 1 else ''} (to epoch {self.total_epochs})"]
        ahead = [epoch for epoch in schedule.epochs_pruned() if epoch > done]
        later = None
        if ahead:
            later = f"prunes after epochs {', '.join(map(str, ahead))}"
            later = f"a prune after epoch {ahead[0]}" if len(ahead) == 1 else later
        if self.made_up is None:
            parts.append(later or "no more prunes")
        else:
            parts.append(f"the prune after epoch {done}, where the run ended before, is made now")
            parts.append(f"then {later}" if later else "no prune after that")
        if pruner.criterion.ranks:
            live, total = pruner.masks.num_live, pruner.masks.num_total
            for epoch in ([done] if self.made_up is not None else []) + ahead:
                live = schedule.step(epoch).keep(live, total)
            least = "at least " if pruner.nm is not None else ""  # N:M may remove more
            parts.append(f"it ends at {least}{percent(1 - live / total)} sparsity")
        return f"schedule changed by this resume: {'; '.join(parts)}"

    # -- open the run's directory and summary ----------------------------------------------

    def open_run_dir(self) -> None:
        """Give the run its directory (on rank 0: locked, with config.json and the logs), say
        what it runs, and start its summary. From here on every ending is recorded there."""
        record, ddp = self.record, self.ddp
        self.options = record.options()
        self.run_dir = self.resume_dir
        if ddp.is_main:
            if self.resume_dir is None:
                self.run_dir, lock = new_run_dir(record.run)
                self.locks.append(lock)
                config = self.new_config()
            else:
                config = self.resumed_config(afresh=not self.history)
            restored = self.history if self.resume_dir is not None else None
            self.logger = RunLogger(self.run_dir, config, restored)
        self.describe()
        self.summary = {
            "model": record.model.model,
            "dataset": record.data.dataset,
            "prune_criterion": record.prune.prune_criterion,
            "method": method_label(record.prune.prune_criterion, self.options),
            **self.pruner.summary(),
            "seed": record.train.seed,
            "epochs": self.total_epochs,
            "comment": record.run.comment,
            "run_dir": str(self.run_dir),
            "run_id": self.logger.run_id if ddp.is_main else None,
            "status": "running",
            # every option, so that tables can be grouped by any of them from this file alone
            "options": self.options,
        }

    def new_config(self) -> dict:
        return {
            **self.options,
            "run_id": uuid.uuid4().hex,
            "device_resolved": str(self.device),
            "torch_version": torch.__version__,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "num_prunable": self.pruner.masks.num_total,
            "run_dir": str(self.run_dir),
        }

    def resumed_config(self, afresh: bool) -> dict:
        """The run's config.json with this resume recorded: the options stay the ones it was
        started with; what this resume changed is listed under `resumes`. A run that never
        finished an epoch starts afresh: its earlier files are cleared."""
        run_dir = self.run_dir
        config = read_config(run_dir)  # read and checked by cli.py a moment ago
        config.setdefault("run_id", uuid.uuid4().hex)
        resumes = config.get("resumes") if isinstance(config.get("resumes"), list) else []
        resumes.append(
            {
                "at_epoch": self.first_epoch,
                "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                "overrides": dict(self.record.resume_overrides),
                "device_resolved": str(self.device),
                "torch_version": torch.__version__,
            }
        )
        config["resumes"] = resumes
        if afresh:
            for stale in [*run_dir.glob(EVENTS), run_dir / SUMMARY]:
                stale.unlink(missing_ok=True)
        return config

    def describe(self) -> None:
        record, ddp = self.record, self.ddp
        resumed = f" (resumed at epoch {self.first_epoch})" if self.first_epoch > 1 else ""
        print(f"run {self.run_dir}{resumed}")
        if ddp.enabled:
            processes = f"{ddp.world_size} process{'es' if ddp.world_size > 1 else ''}"
            print(
                f"{processes} (DistributedDataParallel, {ddp.backend}), "
                f"{record.train.batch_size // ddp.world_size} images per process per step"
            )
        sizes = [f"{len(self.train_set)} train", f"{len(self.splits.test)} test"]
        if self.val_set is not None:
            sizes.append(f"{len(self.val_set)} val")
        excluded = sum(p.numel() for p in self.pruner.excluded.values())
        kept_dense = f" ({excluded:,} more excluded, kept dense)" if excluded else ""
        print(
            f"{record.model.model} on {record.data.dataset} ({' / '.join(sizes)}), {self.device}, "
            f"{self.pruner.masks.num_total:,} prunable weights{kept_dense}, "
            f"criterion {record.prune.prune_criterion}"
        )
        # a run with nothing left to train ends as it is, whatever these options' schedule says
        ends_as_it_is = self.schedule_change is not None and self.first_epoch > self.total_epochs
        if self.pruner.schedule is not None and not ends_as_it_is:
            print(f"schedule: {self.pruner.describe()}")
        if self.schedule_change is not None:
            print(self.schedule_change)

    # -- train -----------------------------------------------------------------------------

    def train(self) -> None:
        """The epochs from the first not completed: a prune before training on a run's first
        start (SNIP), then each epoch checkpointed, logged and reported; at the end, the ranks'
        states compared and, with --save_model, model.pt."""
        event = None
        if self.checkpoint is None:
            event = self.pruner.before_training()
        elif self.made_up is not None:
            # the end of that epoch again, under the schedule that prunes there
            self.pruner.epoch = self.made_up
            event = self.pruner.end_of_epoch(self.made_up)
        if event is not None:
            self.log_prune(event)
        self.ddp.agree_to_stop(self.stop)
        for epoch in range(self.first_epoch, self.total_epochs + 1):
            record, event = run_epoch(epoch, self)
            # checkpoint first: an epoch counts as done once it can be resumed from
            if self.ddp.is_main:
                with self.stop.critical():
                    self.checkpoint_epoch(epoch, record)
            self.history.append(record)
            self.logger.log_epoch(record)
            print(format_epoch(record, self.total_epochs), flush=True)
            if epoch in self.pruner.round_ends():
                self.log_round(epoch, record)
            if event is not None:
                self.log_prune(event)
            self.ddp.agree_to_stop(self.stop)
        self.ddp.check_identical(
            self.pruner.state_tensors(), "at the end, weights, masks or flip counts"
        )
        if self.record.run.save_model and self.ddp.is_main:
            save_model(self.run_dir / MODEL, self.spec, self.model, self.pruner)

    def checkpoint_epoch(self, epoch: int, record: dict) -> None:
        history = [*self.history, record]
        save_checkpoint(
            {
                "epoch": epoch,
                "args": self.record.options(),
                "model_spec": self.spec,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "pruner": self.pruner.state_dict(),
                "data_order": self.train_loader.generator.get_state(),
                "rng": rng_state(),
                "history": history,
                "best_test_acc": final_metrics(history)["best_test_acc"],
                "wall_seconds": self.wall_seconds(),
            },
            self.run_dir,
        )

    def log_prune(self, event) -> None:
        pruner, logger = self.pruner, self.logger
        print(
            f"prune at epoch {event.epoch}: removed {event.pruned:,}, {event.live:,} of "
            f"{event.total:,} weights live, sparsity {percent(event.sparsity, 4)}"
            + ("" if event.rewound_to is None else f"; rewound to epoch {event.rewound_to}")
        )
        print(pruner.layer_table(self.training_flops.layer_macs(pruner.masks.masks)))
        for name, fraction in pruner.masks.layer_sparsity().items():
            logger.scalar(f"sparsity/layer/{name}", fraction, event.epoch)
        logger.histogram(
            "flips/live_weights", pruner.flips.live_counts(pruner.masks).numpy(), event.epoch
        )
        for name in event.collapsed:
            warn(f"layer {name} has no live weights left (layer collapse)")

    def log_round(self, epoch: int, record: dict) -> None:
        entry = round_record(epoch, record, self.pruner)
        accuracy = "not evaluated" if entry["test_acc"] is None else f"{entry['test_acc']:.2f}%"
        print(
            f"round {entry['round']}/{len(self.pruner.round_ends())} ends: test accuracy "
            f"{accuracy} at sparsity {percent(entry['sparsity'], 4)}"
        )
        for key in ("test_acc", "val_acc", "sparsity"):
            if entry[key] is not None:
                self.logger.scalar(f"round/{key}", entry[key], entry["round"])

    # -- how the epochs ended --------------------------------------------------------------

    def record_ending(self, error: BaseException) -> BaseException | None:
        """Record in the summary how `error` ended the epochs. Returns `error` itself when it
        is a bug, to be raised with its traceback once the summary is written."""
        for kinds, ending in ENDINGS:
            if isinstance(error, kinds):
                self.summary.update(ending(error))
                return None
        lost = self.ddp.peer_failure(error)
        if lost is not None:
            self.summary.update(status="failed", error=str(lost), exit_code=lost.exit_code)
            return None
        self.summary.update(status="failed", error=f"{type(error).__name__}: {error}")
        return error

    def emergency_summary(self, status: str, **fields) -> None:
        """Write the summary from another thread (the stop watchdog, the heartbeat) while the
        main thread may be blocked: what the checkpoint holds, and how the run ended."""
        if self.ddp.is_main:
            history = self.history
            record = {**self.summary, **final_metrics(history), "epochs_completed": len(history)}
            record.update(train_flops_of(history, self.training_flops))
            record.update(status=status, wall_seconds=self.wall_seconds())
            write_summary(self.run_dir, {**record, **fields})

    def peers_lost(self, message: str) -> str | None:
        """The heartbeat's word that a torchrun peer is gone: recorded, and the ending line."""
        self.emergency_summary("failed", error=message, exit_code=PeerLost.exit_code)
        return self.ending_line("failed", message)

    def forced_exit(self, signum: int) -> tuple[str | None, int]:
        """The stop watchdog's last word, when the main thread did not stop in time: the
        ending line and exit code, after the summary is written."""
        lost = self.ddp.heartbeat.silent(SETTLE_SECONDS) if self.ddp.heartbeat is not None else []
        if lost:  # stuck in a collective with a lost rank, rather than merely slow
            return self.peers_lost(describe_lost(lost)), PeerLost.exit_code
        name = signal.Signals(signum).name
        self.emergency_summary("interrupted", signal=name, exit_code=128 + signum)
        return self.ending_line("interrupted", name), 128 + signum

    # -- finish ----------------------------------------------------------------------------

    def finish(self) -> None:
        """Complete and write the summary and close the logs. A write that fails here (the disk
        that stopped the run is still full) turns a completed run into a failed one; an earlier
        failure stays the reason given."""
        summary, history, pruner = self.summary, self.history, self.pruner
        masks = pruner.masks.masks
        summary.update(final_metrics(history))
        summary.update(
            epochs_completed=len(history),
            final_sparsity=pruner.sparsity,
            **flops_summary(self.model, self.input_shape, masks),
            **train_flops_of(history, self.training_flops),
            compact=compact_summary(self.model, self.input_shape, masks),
            # the tensors kept dense by --prune_exclude or --prune_include, at 0 like any dense one
            layer_sparsity={**pruner.masks.layer_sparsity(), **dict.fromkeys(pruner.excluded, 0.0)},
            excluded_layers=list(pruner.excluded),
            prune_events=[e.as_dict() for e in pruner.events],
            **({"rounds": rounds_of(history, pruner)} if pruner.round_ends() else {}),
            collapsed_layers=pruner.collapsed_layers(),
            wall_seconds=self.wall_seconds(),
            processes=self.ddp.world_size,
        )
        try:
            self.logger.write_summary(summary)
            if summary["status"] == "completed":
                metrics = {key: summary[key] for key in HPARAM_METRICS}
                self.logger.log_hparams(hparams_of(summary), metrics)
        except StorageError as failure:
            self.fail_at_the_end(failure)
        finally:
            try:
                self.logger.close()
            except StorageError as failure:
                self.fail_at_the_end(failure)

    def fail_at_the_end(self, failure: StorageError) -> None:
        if self.summary["status"] == "completed":
            self.summary.update(status="failed", error=str(failure), exit_code=failure.exit_code)

    def ending_line(self, status: str, reason) -> str | None:
        """The one line a run ends with, or None for a rank that stays silent (all but rank 0,
        and rank 0 too when it is the one that was lost)."""
        if not self.ddp.is_main:
            return None
        run_dir, epochs = self.run_dir, len(self.history)
        if status == "completed":
            summary = self.summary
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
        again = f"continue with: {resume_command(run_dir, self.ddp)}"
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


def regrowth_by_tensor(updates: list) -> dict[str, dict[str, int]]:
    """What an epoch's mask updates dropped and grew, tensor by tensor (those they changed)."""
    totals: dict[str, dict[str, int]] = {}
    for event in updates:
        for name, (dropped, grown) in (event.layers or {}).items():
            entry = totals.setdefault(name, {"dropped": 0, "grown": 0})
            entry["dropped"] += dropped
            entry["grown"] += grown
    return totals


def run_epoch(epoch: int, run: Run) -> tuple[dict, object]:
    """Train one epoch, evaluate, then prune if the schedule says so. Returns the epoch's record
    and the prune event, if any."""
    pruner, train_config = run.pruner, run.train_config
    sparsity = pruner.sparsity
    reg_scale = 1.0 - sparsity if train_config.anneal_lambda else 1.0
    lr = learning_rate(train_config, pruner.training_epoch(epoch), sparsity)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
        if train_config.reg_type == "wdecay":
            group["weight_decay"] = train_config.lambda_ * reg_scale
    flips_before = pruner.flips.counted()
    # the masks in force as the epoch starts, and where its mask updates will be recorded: what
    # its training FLOPs are counted from
    start_macs = run.training_flops.live_macs(pruner.masks.masks)
    steps_before, events_before = pruner.steps, len(pruner.events)

    sampler = getattr(run.train_loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    started = time.time()
    trained = train_one_epoch(
        run.net, run.train_loader, run.optimizer, pruner, train_config, epoch, run.device,
        reg_scale, run.ddp, run.stop,
    )  # fmt: skip
    record = {
        "epoch": epoch,
        **trained,
        "lr": lr,
        "seconds": time.time() - started,
        "flips": pruner.flips.counted() - flips_before,
    }
    # the epoch's mask updates (RigL, SET, GraNet), made after its steps
    updates = [e for e in pruner.events[events_before:] if e.step is not None]
    record["train_flops"] = run.training_flops.epoch(
        start_macs, trained["train_examples"], train_config.batch_size,
        [(e.step - steps_before, e.layers) for e in updates], pruner.criterion.grows_by_gradient,
    )  # fmt: skip
    if pruner.criterion.regrows:  # in all, and per tensor
        record["dropped"] = sum(e.dropped for e in updates)
        record["grown"] = sum(e.grown for e in updates)
        record["regrowth"] = regrowth_by_tensor(updates)
    # With --evaluate_on_val the test set is looked at once, after the last epoch.
    for split, loader in run.eval_loaders.items():
        if split == "test" and train_config.evaluate_on_val and epoch != train_config.epochs:
            record["test_loss"] = record["test_acc"] = None
            continue
        record[f"{split}_loss"], record[f"{split}_acc"] = evaluate(
            run.model, loader, train_config, run.device, f"{split} {epoch}", run.ddp, run.stop
        )
    # pruning comes after evaluation: an epoch's accuracy is that of the network it trained
    event = pruner.end_of_epoch(epoch)
    record["sparsity"] = pruner.sparsity
    if pruner.mechanism is not None:  # per tensor, the prune's included
        record["mechanism"] = pruner.mechanism.take()
    return record, event


# -- the pieces: options, files, lines -----------------------------------------------------


def new_run_dir(run: RunOptions) -> tuple[Path, RunLock]:
    """The directory of a new run, locked: --run_dir, or a fresh one under runs/<logdir>. A path
    the system refuses ends in one line naming it: a bad one (too long, through a file) a
    UserError, one on a refusing disk (read-only, full) a StorageError (utils.errors)."""
    if run.run_dir is None:
        parent = RUNS_ROOT / run.logdir
        with given_path(f"cannot write runs under --logdir {parent}", parent):
            run_dir = make_run_dir(run.logdir, run.comment)
            return run_dir, RunLock(run_dir).acquire()
    run_dir = Path(run.run_dir)
    with given_path(f"--run_dir {run_dir}: cannot create it", run_dir), made_folders(run_dir):
        lock = RunLock(run_dir).acquire()
    if (run_dir / CONFIG).exists():
        # another process started this run since this one looked: it is that process's run
        lock.release()
        raise RunBusy(f"--run_dir {run_dir}: another process started a run there meanwhile")
    remove_stale_temporaries(run_dir, WRITTEN)
    return run_dir, lock


def text_of(path: Path) -> str | None:
    """The text of a run's file, or None where it is missing, unreadable or no regular file
    (reading a FIFO would block)."""
    try:
        return read_text(path)
    except (OSError, ValueError):
        return None


def resume_command(run_dir: Path, ddp: Distributed) -> str:
    target = f"main.py --resume {shlex.quote(str(run_dir))}"
    if not ddp.enabled:
        return f"python {target}"
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", ddp.world_size))
    if per_node == ddp.world_size:
        return f"python -m utils.launch --standalone --nproc_per_node {per_node} {target}"
    return f"your torchrun command, with {target}"


def init_from(
    path: str, model: nn.Module, spec: dict, said: list[str] | None = None
) -> dict[str, torch.Tensor] | None:
    """Load the weights of --init_from into `model`, the network of `spec`; returns the masks the
    file carries. A plain state dict for a timm: or torchvision: model is first fitted as its
    library fits its published weights (models.external.foreign_state): a classifier for another
    number of classes stays at its initialisation, as this says. What it says is appended to
    `said`, for a caller that prints it once it has accepted the masks too; printed at once when
    `said` is None."""
    weights = read_weights(path, "--init_from")
    fresh = []
    if weights.spec is None and is_external(spec["name"]):
        try:
            weights.state_dict, fresh = foreign_state(model, spec, weights.state_dict)
        except ValueError as error:
            raise UserError(f"--init_from {path}: {error}") from None
    load_weights(model, weights, "--init_from")
    lines = [] if said is None else said
    if fresh:
        lines.append(f"--init_from {path}: its classifier is for another number of classes; "
                     f"{', '.join(fresh)} left at initialisation")  # fmt: skip
    if weights.masks is None:
        lines.append(f"initialised from {path} ({weights.kind})")
    else:
        live = sum(int(mask.sum()) for mask in weights.masks.values())
        total = sum(mask.numel() for mask in weights.masks.values())
        lines.append(f"initialised from {path} ({weights.kind}), keeping its masks: "
                     f"{percent(1 - live / total)} of its masked weights pruned")  # fmt: skip
    if said is None:
        print("\n".join(lines))
    return weights.masks


def adoptable_masks(record: RunRecord, pruner: Pruner, masks: dict[str, torch.Tensor]) -> dict:
    """The masks of --init_from's file for the tensors this run prunes. The mask of a tensor it
    keeps dense is dropped where the file pruned nothing of it; where the file pruned some of
    it, the pruned weights would come back, so it is refused, naming the option that keeps the
    tensor dense here."""
    kept = [name for name, mask in masks.items() if name not in pruner.params and not mask.all()]
    if not kept:
        return {name: mask for name, mask in masks.items() if name in pruner.params}
    more = f" (and {len(kept) - 1} more)" if len(kept) > 1 else ""
    raise UserError(
        f"--init_from {record.model.init_from}: its masks prune {kept[0]}{more}, which this run "
        f"keeps dense {why_dense(record.prune, pruner, kept[0])}"
    )


def why_dense(prune: PruneOptions, pruner: Pruner, name: str) -> str:
    """Why this run does not prune `name`, and how to prune it as the file did."""
    if name in pruner.excluded:
        excluding = any(matches(pattern, name) for pattern in prune.prune_exclude or ())
        flag = "--prune_exclude" if excluding else "--prune_include"
        patterns = " ".join(prune.prune_exclude if excluding else prune.prune_include)
        fix = f"leave it out of {flag}" if excluding else f"name it in {flag} too"
        return (
            f"by {flag} {patterns}: its pruned weights would train again; {fix} to keep them "
            "pruned, or start from a file where it is dense"
        )
    for flag, option in (("--prune_bias", "prune_bias"), ("--prune_bnorm", "prune_bnorm")):
        if name in prunable_parameters(pruner.model, **{option: True}):
            return f"without {flag}: give {flag} to keep its pruned weights pruned"
    return (
        "(it is outside the default set, which the file's run extended with --prune_include): "
        "name it in --prune_include to keep its pruned weights pruned"
    )


def plan(schedule) -> tuple:
    """What a schedule does: how long it trains, and each prune."""
    return schedule.total_epochs(), [
        (epoch, schedule.step(epoch)) for epoch in schedule.epochs_pruned()
    ]


def when(epoch: int) -> str:
    return "before training" if epoch == 0 else f"after epoch {epoch}"


def step_text(step) -> str:
    """What one prune of a schedule removes, in words."""
    if step is None:
        return "no prune"
    if step.rate is not None:
        return f"{step.rate:g} of the live weights"
    return f"to {percent(step.sparsity)}"


def model_spec(model: ModelOptions, splits) -> dict:
    """What the model registry needs to rebuild the network: `build_model(**spec)`. Only a run
    with --model_kwargs has a `model_kwargs` entry, so that the specs of other runs stay as they
    were written before the option."""
    spec = {
        "name": model.model,
        "num_classes": splits.num_classes,
        "in_channels": splits.in_channels,
        "image_size": splits.image_size,
    }
    if model.model_kwargs:
        spec["model_kwargs"] = keyword_arguments(model.model_kwargs)
    return spec


def save_model(path: Path, spec: dict, model: nn.Module, pruner: Pruner) -> None:
    """model.pt: what `torch.load` plus the model registry need to rebuild the pruned network."""
    save_atomic(
        {"spec": spec, "state_dict": model.state_dict(), "masks": pruner.masks.state_dict()},
        path,
    )


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


def train_flops_of(history: list[dict], training_flops: TrainingFlops) -> dict:
    """`train_flops`, the training FLOPs of the epochs in `history`, and `train_flops_dense`,
    theirs with every weight live; neither where an epoch does not record them (one trained by
    an earlier version, which a resume went on from)."""
    if not all("train_flops" in r and "train_examples" in r for r in history):
        return {}
    return {
        "train_flops": sum(record["train_flops"] for record in history),
        "train_flops_dense": training_flops.dense(sum(r["train_examples"] for r in history)),
    }


def final_metrics(history: list[dict]) -> dict:
    """Final and best accuracies over the epochs that were evaluated."""
    metrics = {}
    for split in ("test", "val"):
        accs = [r[f"{split}_acc"] for r in history if r.get(f"{split}_acc") is not None]
        if split == "test" or accs:
            metrics[f"final_{split}_acc"] = accs[-1] if accs else None
            metrics[f"best_{split}_acc"] = max(accs) if accs else None
    return metrics


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


def rounds_of(history: list[dict], pruner: Pruner) -> list[dict]:
    """Every completed round, as round_record describes it."""
    by_epoch = {record["epoch"]: record for record in history}
    ends = [epoch for epoch in pruner.round_ends() if epoch in by_epoch]
    return [round_record(epoch, by_epoch[epoch], pruner) for epoch in ends]


def one_line(error: Exception) -> str:
    """The message of a user error, also when a DataLoader worker raised it (the worker's
    traceback then precedes the original message)."""
    text = str(error).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


if __name__ == "__main__":
    sys.exit(main())
