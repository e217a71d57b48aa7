"""The run directory: the one module that knows the names of a run's files, and reads and writes
its JSON records.

A run directory holds what main.py writes (`config.json`, the options; `metrics.jsonl`, one JSON
object per epoch; `summary.json`, the final record; `checkpoint.pt`; with --save_model
`model.pt`; TensorBoard's event files), its lock, and what a launcher adds (its claim, the
output it captured in `output.log`, a Slurm job's `slurm.json`). A sweep's folder of runs keeps
how it was launched in `launch.json`.

Reading a record never opens anything but a regular file, and every way it can fail is one
`Damaged` error with the reason ("unreadable: a FIFO, not a file", "a list, not options"), which
each reader puts into its own line: a refusal (main.py), a damaged run (the launcher), a skipped
file (the report).
"""

import fnmatch
import json
from pathlib import Path

from utils.io import read_bytes, read_text, write_json_atomic

CONFIG = "config.json"  # the run's options, as it was started, and its resumes
METRICS_LOG = "metrics.jsonl"  # one JSON object per trained epoch
SUMMARY = "summary.json"  # the final record (written at the end, and on any ending)
CHECKPOINT = "checkpoint.pt"  # everything a resume needs, replaced after every epoch
MODEL = "model.pt"  # with --save_model: the masked state dict and the masks
EVENTS = "events.out.tfevents.*"  # TensorBoard's, a pattern
LOCK = ".lock"  # held by the main.py training the run
CLAIM = ".launch.lock"  # held by a launcher from before it starts main.py until that exits
OUTPUT_LOG = "output.log"  # what a launcher captured of main.py's output
SLURM = "slurm.json"  # the run's Slurm job and its starts
LAUNCH = "launch.json"  # in a sweep's folder of runs: how the sweep was launched

# what main.py writes in its directory, its lock and events aside: a new run never starts where
# one of these is, since it would write over a file it did not make
WRITTEN = (CONFIG, METRICS_LOG, SUMMARY, CHECKPOINT, MODEL)
# the files that make a folder a run's, summary or not
MARKS = (CHECKPOINT, CONFIG, METRICS_LOG)
# the files a launcher reads or writes in a run's directory: never opened unless regular
LAUNCHER_READS = (CONFIG, SUMMARY, METRICS_LOG, CHECKPOINT, OUTPUT_LOG, SLURM, LOCK, CLAIM)
# every file a run directory may hold, and the folder of runs beside it: by name, and by pattern
# (TensorBoard's, the locks, the temporary files that atomic writes go through)
NAMES = (*WRITTEN, OUTPUT_LOG, SLURM, LAUNCH)
PATTERNS = (EVENTS, ".*lock", ".*.tmp")


def is_run_directory(folder: Path) -> bool:
    return any((Path(folder) / mark).is_file() for mark in MARKS)


def is_run_file(name: str) -> bool:
    """Whether a run, its logger or a launcher writes a file of this name."""
    return name in NAMES or any(fnmatch.fnmatch(name, pattern) for pattern in PATTERNS)


class Damaged(ValueError):
    """A run's file that is there but cannot be read as what it should be: its `reason` is
    "unreadable: ..." (no regular file, not UTF-8, not JSON) or "a list, not options"; str() is
    "config.json is " and the reason."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{Path(path).name} is {reason}")
        self.path, self.reason = Path(path), reason


def read_json(path: Path, expected: str = "a record"):
    """The JSON object in the regular file `path`: FileNotFoundError (or NotADirectoryError)
    where nothing is, Damaged where something is that is no such object (`expected` names what
    it should hold, "options")."""
    try:
        text = read_text(path)
    except (FileNotFoundError, NotADirectoryError):
        raise
    except (OSError, ValueError) as error:  # a FIFO, a directory, bad UTF-8
        raise Damaged(path, f"unreadable: {getattr(error, 'strerror', None) or error}") from None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: absurdly deep nesting
        reason = "nested too deeply" if isinstance(error, RecursionError) else first_line(error)
        raise Damaged(path, f"unreadable: {reason}") from None
    if not isinstance(value, dict):
        raise Damaged(path, f"a {type(value).__name__}, not {expected}")
    return value


def first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else "not JSON"


def read_optional(path: Path, expected: str = "a record") -> dict | None:
    """read_json, or None where nothing is at `path`."""
    try:
        return read_json(path, expected)
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_config(run_dir: Path) -> dict | None:
    """The run's options as config.json keeps them; None where it has none; Damaged."""
    return read_optional(Path(run_dir) / CONFIG, "options")


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary.json; None where it has none; Damaged."""
    return read_optional(Path(run_dir) / SUMMARY)


def write_config(run_dir: Path, config: dict) -> None:
    write_json_atomic(Path(run_dir) / CONFIG, config)


def write_summary(run_dir: Path, summary: dict) -> None:
    write_json_atomic(Path(run_dir) / SUMMARY, summary)


def epochs_logged(run_dir: Path) -> int | None:
    """How many epochs the run's metrics.jsonl records: its lines that are JSON objects, so that
    a line cut short by a kill does not count; None when there is no such file to read (nothing,
    or no regular file, which is never opened)."""
    try:
        text = read_bytes(Path(run_dir) / METRICS_LOG).decode("utf-8", errors="replace")
    except OSError:
        return None
    count = 0
    for line in text.splitlines():
        try:
            count += isinstance(json.loads(line), dict)
        except (ValueError, RecursionError):
            continue
    return count
