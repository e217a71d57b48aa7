"""The runs of a sweep: a stable identity for each, its directory, and its state on disk.

A run's identity is a hash of its resolved options (what main.py's parser makes of its command,
defaults included), leaving out where and how it runs (device, workers, paths, its name). Its
directory is `runs/<logdir>/<comment>-<identity>`, handed to main.py as `--run_dir`, so the same
command starts the run and, after an interruption, resumes it. Launching a sweep again therefore
skips the runs that completed, resumes those that were stopped, and never runs one twice.
"""

import argparse
import contextlib
import hashlib
import io
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cli import MACHINE_OPTIONS, NAME_OPTIONS, build_parser, parse_args
from utils.errors import UserError
from utils.lock import is_locked
from utils.logging import RUNS_ROOT, epochs_logged

MAIN = Path(__file__).resolve().parents[1] / "main.py"

# The options that make a run what it is: every flag of main.py but where and how it runs.
IDENTITY_KEYS = sorted(
    action.dest.rstrip("_")
    for action in build_parser()._actions
    if action.option_strings and action.dest not in MACHINE_OPTIONS | NAME_OPTIONS | {"help"}
)


def identity(options: dict) -> str:
    """10 hex digits of a hash of the options that make the run (keys as config.json has them)."""
    kept = {key: options.get(key) for key in IDENTITY_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:10]


def options_of(args: argparse.Namespace) -> dict:
    return {key.rstrip("_"): value for key, value in vars(args).items()}


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]  # main.py's arguments, as the sweep gives them
    options: dict  # resolved, under the flags' names
    run_id: str
    run_dir: Path

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def command(self) -> list[str]:
        """main.py's arguments as launched: the sweep's command and where the run lives."""
        return [*self.argv, "--run_dir", str(self.run_dir)]


def start_main(command: list[str], run_dir: Path, environment: dict, **popen) -> subprocess.Popen:
    """main.py with `command`, its output appended to the run's output.log as it comes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "output.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, str(MAIN), *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**environment, "PYTHONUNBUFFERED": "1"},
            **popen,
        )


def resolve(argv: list[str], runs_root: Path) -> Run:
    """A sweep's command line as a Run, checked by main.py's own parser (a mistake in the sweep,
    or in arguments given to every command, is a UserError naming it)."""
    quiet = io.StringIO()  # the parser's warnings about inert flags are for when the run starts
    with contextlib.redirect_stderr(quiet):
        try:
            args = parse_args(argv)
        except UserError as error:
            raise UserError(f"{error} (in: main.py {' '.join(argv)})") from None
    options = options_of(args)
    run_id = identity(options)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", args.comment).strip("_.")[:80] or "run"
    logdir = Path(args.logdir)
    parent = logdir if logdir.is_absolute() else runs_root / logdir
    return Run(tuple(argv), options, run_id, parent / f"{slug}-{run_id}")


def resolve_all(commands: list[list[str]], runs_root: Path | None = None) -> list[Run]:
    root = Path.cwd() / RUNS_ROOT if runs_root is None else runs_root
    runs = [resolve(argv, root) for argv in commands]
    seen: dict[Path, Run] = {}
    for run in runs:
        if run.run_dir in seen:
            raise UserError(f"two commands of the sweep are the same run: {run.run_dir}")
        seen[run.run_dir] = run
    return runs


class State(Enum):
    NEW = "new"  # never started
    RUNNING = "running"  # a process holds its lock
    STOPPED = "stopped"  # interrupted, killed, or a failed write: resumable
    FAILED = "failed"  # ended on an error; its checkpoint is intact: resumable
    DIVERGED = "diverged"  # a result, not a fault: kept, not run again
    COMPLETED = "completed"
    CONFLICT = "conflict"  # its directory holds a run with other options


# what a launch does with a run in each state
ACTION = {
    State.NEW: "start",
    State.STOPPED: "resume",
    State.FAILED: "rerun",
    State.RUNNING: "skip (running in another process)",
    State.COMPLETED: "skip (completed)",
    State.DIVERGED: "skip (diverged; delete its directory to run it again)",
    State.CONFLICT: "refuse (its directory holds a run with other options)",
}
TO_LAUNCH = {State.NEW, State.STOPPED, State.FAILED}


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


@dataclass(frozen=True)
class Status:
    state: State
    epochs_done: int
    epochs: int
    test_acc: float | None = None
    detail: str = ""


def epochs_done(run_dir: Path) -> int:
    return epochs_logged(run_dir / "metrics.jsonl") or 0


def status_of(run: Run) -> Status:
    """Where `run` stands, read from its directory."""
    directory, epochs = run.run_dir, run.options["epochs"]
    config = read_json(directory / "config.json")
    if config is None:
        return Status(State.NEW, 0, epochs)
    done = epochs_done(directory)
    if is_locked(directory):
        return Status(State.RUNNING, done, epochs)
    if not isinstance(config, dict) or identity(config) != run.run_id:
        return Status(State.CONFLICT, done, epochs, detail=str(directory / "config.json"))
    summary = read_json(directory / "summary.json")
    status = summary.get("status") if isinstance(summary, dict) else None
    accuracy = summary.get("final_test_acc") if isinstance(summary, dict) else None
    if status == "completed" and summary.get("epochs_completed") == epochs:
        return Status(State.COMPLETED, epochs, epochs, accuracy)
    if status == "diverged":
        return Status(State.DIVERGED, done, epochs, detail=str(summary.get("error", "")))
    if status == "failed":
        return Status(State.FAILED, done, epochs, detail=str(summary.get("error", "")))
    # interrupted, or killed before it could write a summary
    return Status(State.STOPPED, done, epochs)
