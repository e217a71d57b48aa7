"""How a sweep was launched, remembered in its runs directory as `launch.json`.

A run's directory is named after a hash of its options, so the arguments a sweep was launched
with after `--` (`-d synthetic -e 2`) are part of where its runs are. `run` writes them, and the
seeds, into `runs/<logdir>/launch.json` (atomically); `status`, `status --report` and a relaunch
that give neither `--seeds` nor `--` read them back and say so in a note, so that nobody has to
type them again to find the runs.

- Seeds add up: a launch with other seeds and the same overrides records the seeds of both.
- Other overrides are refused, in one line (exit 2), when they make other runs than the recorded
  ones: the new runs would land beside the old in one directory and be averaged with them into one
  table. Overrides that change no run (`--num_workers`, `--device`: not part of a run's identity)
  are accepted and recorded. To launch other overrides, keep them apart with `--logdir` among them
  (their own directory, their own launch.json), or delete launch.json to mix them knowingly.

A launch whose overrides move its runs (`--logdir`) is remembered in the directory they go to;
`status` finds those with the overrides given again. A directory whose launch.json records another
sweep's launch is refused, as is a launch.json that is not such a record (damaged, or a FIFO or
anything else that is no regular file, which is never opened): each is left as it is.

The overrides may not hold the flags the launcher gives each run itself (LAUNCHERS_OWN): `--seed`
would make every seed's run one run (the seeds come from `--seeds`), `--run_dir` and `--resume`
would be overridden or make every run one.
"""

import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cli import given_options
from experiments import shown
from experiments.runs import Run, resolve_all
from experiments.sweeps import Sweep
from utils.errors import UserError
from utils.io import read_bytes, write_json_atomic
from utils.rundir import LAUNCH


@dataclass(frozen=True)
class Launch:
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]  # the arguments after `--`, given to every main.py command

    def describe(self) -> str:
        seeds = f"--seeds {' '.join(map(str, self.seeds))}"
        return f"{seeds} -- {shlex.join(self.overrides)}" if self.overrides else seeds


# main.py's flags that the launcher gives each run itself, refused after `--`, and why (worded
# with the values given, by their names)
LAUNCHERS_OWN = {
    "seed": "the seeds come from --seeds (give --seeds {seed} before the --)",
    "run_dir": "each run's directory is named after its options, under runs/<logdir> (move "
    "them with --logdir)",
    "resume": "a launch resumes the runs that stopped by itself",
}


def check_overrides(overrides: Sequence[str]) -> None:
    """A UserError naming the arguments after `--` where they hold a mistake of their own (as
    main.py's parser finds it, in any spelling: --seed 5, --seed=5, --see 5) or a flag the
    launcher gives each run itself: --seed would make every seed's run one run."""
    try:
        given = given_options(list(overrides))
    except UserError as error:
        raise UserError(f"-- {shlex.join(overrides)}: {error}") from None
    for dest, why in LAUNCHERS_OWN.items():
        if dest in given:
            raise UserError(
                f"-- {shlex.join(overrides)}: --{dest} is the launcher's, not for after --: "
                + why.format(**given)
            )


def runs_of(sweep: Sweep, launch: Launch) -> list[Run]:
    check_overrides(launch.overrides)
    return resolve_all(sweep.commands(launch.seeds), extra=launch.overrides)


def home(sweep: Sweep) -> Path:
    """The directory the sweep's runs go to when no override moves them."""
    return runs_of(sweep, Launch(tuple(sweep.default_seeds), ()))[0].run_dir.parent


def recall(sweep: Sweep, directory: Path) -> Launch | None:
    """The launch recorded in `directory`, or None when none of this sweep is."""
    recorded = read_launch(directory)
    return recorded[1] if recorded is not None and recorded[0] == sweep.name else None


def read_launch(directory: Path) -> tuple[str, Launch] | None:
    """The sweep and the launch recorded in `directory`, or None where nothing is. A file there
    that is not a record of a launch (damaged, or anything but a regular file, which is never
    opened) is a UserError naming it: guessing would show other runs."""
    path = directory / LAUNCH
    try:
        text = read_bytes(path)  # json.loads finds the encoding, and refuses what has none
    except (FileNotFoundError, NotADirectoryError):  # a file in the way: check_writable says so
        return None
    except OSError as error:
        raise UserError(
            f"{shown(path)} is unreadable: {error.strerror or error}; it is left as it is"
        ) from None
    try:
        record = json.loads(text)
        seeds = tuple(record["seeds"])
        overrides = tuple(record["overrides"])
        name = record["sweep"]
    except (ValueError, RecursionError, TypeError, KeyError) as error:
        raise UserError(
            f"{shown(path)} is damaged ({type(error).__name__}); delete it and give the launch's "
            "--seeds and overrides after --"
        ) from None
    if not all(isinstance(seed, int) for seed in seeds) or not all(
        isinstance(word, str) for word in overrides
    ):
        raise UserError(f"{shown(path)} is damaged (seeds or overrides of another type); delete it")
    return name, Launch(seeds, overrides)


def remember(sweep: Sweep, directory: Path, launch: Launch) -> None:
    """Record `launch` in `directory`, with the seeds recorded there before (StorageError when
    it cannot be written). A launch already recorded as it is leaves the file untouched; the
    record of another sweep's launch is a UserError: its runs and these would share one
    directory and one report."""
    recorded = read_launch(directory)
    if recorded is not None and recorded[0] != sweep.name:
        raise UserError(
            f"{shown(directory / LAUNCH)} records a launch of {recorded[0]}: {sweep.name}'s "
            "runs would share its directory and its report; it is left as it is (keep them "
            "apart with -- --logdir NAME)"
        )
    before = recorded[1] if recorded is not None else None
    seeds = [*before.seeds] if before else []
    seeds += [seed for seed in launch.seeds if seed not in seeds]
    if before == Launch(tuple(seeds), launch.overrides):
        return
    record = {
        "sweep": sweep.name,
        "seeds": seeds,
        "overrides": list(launch.overrides),
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json_atomic(directory / LAUNCH, record)


def check_same_runs(sweep: Sweep, launch: Launch, directories: Sequence[Path]) -> None:
    """A UserError when a directory the launch's runs go to records a launch of this sweep whose
    overrides make other runs (compared on the recorded seeds)."""
    for directory in directories:
        before = recall(sweep, directory)
        if before is None or before.overrides == launch.overrides:
            continue
        recorded = {run.run_id for run in runs_of(sweep, before)}
        these = {run.run_id for run in runs_of(sweep, Launch(before.seeds, launch.overrides))}
        if recorded != these:
            given = f"-- {shlex.join(launch.overrides)}" if launch.overrides else "no overrides"
            raise UserError(
                f"{shown(directory / LAUNCH)}: {sweep.name} was launched there with "
                f"`{Launch(before.seeds, before.overrides).describe()}`; {given} makes other "
                "runs, which would be averaged with those: give the same overrides (or none, to "
                "reuse them), or add --logdir NAME to them to keep the new runs apart"
            )
