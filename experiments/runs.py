"""The runs of a sweep: a stable identity for each, its directory, and its state on disk.

A run's identity is a hash of its resolved options (what main.py's parser makes of its command,
those away from their defaults), leaving out where and how it runs (device, workers, paths, its
name). Its directory is `runs/<logdir>/<comment>-<identity>`, handed to main.py as `--run_dir`, so
the same command starts the run and, after an interruption, resumes it. Launching a sweep again
therefore skips the runs that completed, resumes those that were stopped, and never runs one twice;
two commands of one launch that are one run (the arguments after `--` set alike what told them
apart) are refused, naming both and the flag.

A run directory where one of the run's files is no regular file (a FIFO, a device, a directory
under a file's name) is damaged: it is never opened, nor written, and the launch refuses the run.

A run is one process's at a time: main.py holds its `.lock` while it trains, and a launcher holds
a claim on it (`.launch.lock`) from before it starts main.py there until that main.py has exited,
so that two launchers of one sweep, or a launcher and a Slurm task, never both start it nor both
write its output.log. A run that one of them holds is left to its holder and shown as
such, whatever its files say.
"""

import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cli import build_pruning, flag_spellings, given_options, parse_args
from experiments.values import epochs_problem, is_count, is_percentage
from record import as_json, identity_defaults
from utils.errors import RunBusy, UserError, given_path
from utils.io import special
from utils.lock import RunLock, holder
from utils.logging import RUNS_ROOT
from utils.rundir import (
    CHECKPOINT,
    CLAIM,
    CONFIG,
    LAUNCHER_READS,
    OUTPUT_LOG,
    Damaged,
    epochs_logged,
    read_config,
    read_summary,
)

MAIN = Path(__file__).resolve().parents[1] / "main.py"
TETHER = Path(__file__).resolve().parent / "tether.py"


def identity(options: dict) -> str:
    """10 hex digits of a hash of the options that make the run (record.py: its options of the
    roles of its identity, keys as config.json has them). Only options away from their defaults
    count (an option missing from an older config.json is at its default), so that a flag added
    to main.py later changes no existing run's identity."""
    kept = {}
    for key, default in identity_defaults().items():
        value = as_json(options.get(key, default))
        if value != default:
            kept[key] = value
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]  # main.py's arguments, as the sweep gives them
    options: dict  # resolved, under the flags' names
    run_id: str
    run_dir: Path
    total_epochs: int  # all it trains: more than --epochs when its schedule has rounds

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def command(self) -> list[str]:
        """main.py's arguments as launched: the sweep's command and where the run lives."""
        return [*self.argv, "--run_dir", str(self.run_dir)]


class Held(Exception):
    """Another process holds the run: the message says who."""


class Finished(Exception):
    """The run completed after the plan was made (another launcher ran it meanwhile)."""


def held_by(run_dir: Path) -> str | None:
    """Who holds the run ("pid N on HOST since ..."): the main.py training it, or else a
    launcher about to start it; None when nobody does."""
    training = holder(run_dir)
    if training is not None:
        return training
    starting = holder(run_dir, CLAIM)
    return None if starting is None else f"a launcher, {starting}"


@dataclass
class MainProcess:
    """A main.py that start_main started; `finish` once it has exited."""

    process: subprocess.Popen
    claim: RunLock
    log: Path
    log_size: int  # the length of output.log before this process wrote to it

    def finish(self) -> int:
        """Its exit code, once it has exited; the claim on the run is released. A process that
        found the run taken by another (a `main.py --resume` by hand, between the claim and
        main.py's own lock) wrote nothing but its refusal into output.log: that is taken out
        again, so that the log stays the run's own."""
        code = self.process.wait()
        if code == RunBusy.exit_code:
            with contextlib.suppress(OSError):
                os.truncate(self.log, self.log_size)
        self.claim.release()
        return code


def start_main(
    command: list[str],
    run_dir: Path,
    environment: dict,
    cores: list[int] | None = None,
    epochs: int | None = None,
) -> MainProcess:
    """main.py with `command`, claimed for this process and tied to it (experiments/tether.py:
    it stops when this process dies), pinned to `cores`, its output appended to the run's
    output.log as it comes. Raises Held, having written nothing, when another process holds the
    run; Finished when its summary says it completed its `epochs` (given) since it was planned;
    StorageError or UserError (path_error) when its directory cannot be written."""
    with given_path(f"cannot start the run in {run_dir}", run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        claim = RunLock(run_dir, CLAIM)
        try:
            claim.acquire()
        except RunBusy:
            raise Held(held_by(run_dir) or "holder unknown") from None
        try:
            training = holder(run_dir)
            if training is not None:
                raise Held(training)
            if epochs is not None and completed(summary_of(run_dir), epochs):
                raise Finished()
            log_path = run_dir / OUTPUT_LOG
            with open(log_path, "a") as log:
                size = os.fstat(log.fileno()).st_size
                pinned = ",".join(map(str, cores)) if cores else "-"
                tether = [sys.executable, "-I", str(TETHER), str(os.getpid()), pinned]
                process = subprocess.Popen(
                    [*tether, str(MAIN), *command],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**environment, "PYTHONUNBUFFERED": "1"},
                )
        except BaseException:
            claim.release()
            raise
    return MainProcess(process, claim, log_path, size)


def resolve(argv: list[str], runs_root: Path) -> Run:
    """A sweep's command line as a Run, checked by main.py's own parser (a mistake in the sweep,
    or in arguments given to every command, is a UserError naming it)."""
    quiet = io.StringIO()  # the parser's warnings about inert flags are for when the run starts
    with contextlib.redirect_stderr(quiet):
        try:
            record = parse_args(argv)
            schedule = build_pruning(record)[1]
        except UserError as error:
            raise UserError(f"{error} (in: main.py {shlex.join(argv)})") from None
    options = record.options()
    run_id = identity(options)
    total = None if schedule is None else schedule.total_epochs()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", record.run.comment).strip("_.")[:80] or "run"
    logdir = Path(record.run.logdir)
    parent = logdir if logdir.is_absolute() else runs_root / logdir
    run_dir = parent / f"{slug}-{run_id}"
    return Run(
        tuple(argv), options, run_id, run_dir, record.train.epochs if total is None else total
    )


def resolve_all(
    commands: list[list[str]], runs_root: Path | None = None, extra: Sequence[str] = ()
) -> list[Run]:
    """The commands, each followed by `extra` (arguments given to every one of them), as Runs.
    Two that are one run (one identity: the same training under two names, which a launch would
    train twice and a report count twice) are a UserError naming both, and the flags of `extra`
    that made them one."""
    root = Path.cwd() / RUNS_ROOT if runs_root is None else runs_root
    try:
        runs = [resolve([*argv, *extra], root) for argv in commands]
    except UserError as error:
        if not extra:
            raise
        # a flag of the sweep's given again (--model_kwargs), refused by main.py's parser
        raise UserError(
            f"-- {shlex.join(extra)}, after the sweep's own arguments: {error}"
        ) from None
    first: dict[str, int] = {}
    for index, run in enumerate(runs):
        earlier = first.setdefault(run.run_id, index)
        if earlier != index:
            raise UserError(one_run(commands[earlier], commands[index], extra, root))
    return runs


def one_run(first: list[str], second: list[str], extra: Sequence[str], root: Path) -> str:
    """The line that refuses two commands that `extra` makes one run."""
    options = [resolve(argv, root).options for argv in (first, second)]
    named = " and ".join(
        f"--comment {shlex.quote(these['comment'])}"
        if these["comment"]
        else f"main.py {shlex.join(argv)}"
        for argv, these in zip((first, second), options, strict=True)
    )
    if not extra:
        return f"two commands of the sweep are one run: {named}"
    given, spelled = given_options(list(extra)), flag_spellings()
    differing = [key for key in identity_defaults() if options[0][key] != options[1][key]]
    flags = ", ".join(spelled[key] for key in differing if key in given) or "what it sets"
    return (
        f"-- {shlex.join(extra)} makes two runs of the sweep one: the commands with {named} "
        f"differ in {flags}, which it sets alike for both (the same training twice, counted twice "
        f"in the report); leave {flags} out of the arguments after --"
    )


class State(Enum):
    NEW = "new"  # never started
    RUNNING = "running"  # a process holds it (its lock, or a launcher's claim)
    STOPPED = "stopped"  # interrupted, killed, or a failed write: resumable
    FAILED = "failed"  # ended on an error; its checkpoint is intact: resumable
    DIVERGED = "diverged"  # a result, not a fault: kept, not run again
    COMPLETED = "completed"
    CONFLICT = "conflict"  # its directory holds a run with other options
    DAMAGED = "damaged"  # its directory or config.json cannot be read as a run's


# what a launch does with a run in each state
ACTION = {
    State.NEW: "start",
    State.STOPPED: "resume",
    State.FAILED: "rerun",
    State.RUNNING: "skip (held by {detail})",
    State.COMPLETED: "skip (completed)",
    State.DIVERGED: "skip (diverged; delete its directory to run it again)",
    State.CONFLICT: "refuse (its directory holds a run with other options)",
    State.DAMAGED: "refuse (damaged: {detail}; left as is)",
}
TO_LAUNCH = {State.NEW, State.STOPPED, State.FAILED}
# states a launch leaves alone as a mistake to fix (exit 2)
REFUSED = {State.CONFLICT, State.DAMAGED}


def completed(summary, epochs: int) -> bool:
    """Whether a summary.json's content is that of a run that completed all its epochs: its
    own count of them (`epochs` where it records none), which a schedule of rounds makes longer
    than -e (--rounds 4 -e 8: 29), each a whole number the report would table (epochs_problem)."""
    if not isinstance(summary, dict) or summary.get("status") != "completed":
        return False
    counts = {"epochs": epochs, **summary}
    recorded = all(is_count(counts.get(key), 1) for key in ("epochs", "epochs_completed"))
    return recorded and epochs_problem(counts) is None


def summary_of(run_dir: Path) -> dict | None:
    """The run's summary.json; None where it has none, or none that can be read."""
    try:
        return read_summary(run_dir)
    except (Damaged, OSError):
        return None


@dataclass(frozen=True)
class Status:
    state: State
    epochs_done: int
    epochs: int
    test_acc: float | None = None
    detail: str = ""

    @property
    def action(self) -> str:
        """What a launch does with the run."""
        return ACTION[self.state].format(detail=self.detail)


def epochs_done(run_dir: Path) -> int:
    return epochs_logged(run_dir) or 0


def status_of(run: Run) -> Status:
    """Where `run` stands, read from its directory. A run someone holds is theirs, whatever its
    files say: a new run's main.py takes its lock before it writes config.json."""
    directory, epochs = run.run_dir, run.options["epochs"]
    if directory.exists() and not directory.is_dir():
        return Status(State.DAMAGED, 0, epochs, detail="a file, not a directory")
    foreign = foreign_file(directory)
    if foreign:  # not opened: a FIFO would block the launcher, a device be written to
        return Status(State.DAMAGED, 0, epochs, detail=foreign)
    done = epochs_done(directory)
    held = held_by(directory)
    if held is not None:
        return Status(State.RUNNING, done, epochs, detail=held)
    config, damage = config_of(directory)
    if damage:
        return Status(State.DAMAGED, done, epochs, detail=damage)
    if config is None:
        return Status(State.NEW, 0, epochs)
    if identity(config) != run.run_id:
        return Status(State.CONFLICT, done, epochs, detail=str(directory / CONFIG))
    summary = summary_of(directory)
    status = summary.get("status") if isinstance(summary, dict) else None
    accuracy = summary.get("final_test_acc") if isinstance(summary, dict) else None
    accuracy = accuracy if is_percentage(accuracy) else None
    if completed(summary, epochs):
        return Status(State.COMPLETED, epochs, epochs, accuracy)
    if status == "diverged":
        return Status(State.DIVERGED, done, epochs, detail=str(summary.get("error", "")))
    if status == "failed":
        return Status(State.FAILED, done, epochs, detail=str(summary.get("error", "")))
    # interrupted, or killed before it could write a summary
    return Status(State.STOPPED, done, epochs)


def foreign_file(directory: Path) -> str:
    """What is wrong where one of a run's files in `directory` is no regular file ("summary.json
    is a FIFO, not a file"), or ""."""
    for name in LAUNCHER_READS:
        try:
            kind = special(directory / name)
        except OSError:  # a directory that cannot be searched: each reader says so in its way
            return ""
        if kind:
            return f"{name} is {kind}, not a file"
    return ""


def config_of(directory: Path) -> tuple[dict | None, str]:
    """A run directory's config.json as (options, ""), (None, "") where there is none, or
    (None, what is wrong with it) where it cannot be a run's (main.py would refuse it)."""
    try:
        config = read_config(directory)
    except Damaged as error:
        return None, str(error)
    except OSError as error:  # a directory that cannot be searched
        return None, f"{CONFIG} is unreadable: {error.strerror or error}"
    if config is None and (directory / CHECKPOINT).exists():
        return None, f"{CHECKPOINT} without a {CONFIG}"
    return config, ""
