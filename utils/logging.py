"""What a run leaves behind (its files named in utils/rundir.py): TensorBoard events, `config.json`,
`metrics.jsonl` (one JSON object per epoch) and `summary.json` (the final record), beside
`checkpoint.pt` and, with --save_model, `model.pt`.

The JSON files are the machine-readable truth that reports and tables are computed from;
TensorBoard is for looking. A new run starts only in a directory that holds none of these files
(`run_files_in`), so that it never writes over what it did not make.
"""

import errno
import json
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from tensorboard.plugins.hparams.summary_v2 import hparams_pb
from torch.utils.tensorboard import SummaryWriter

from utils.errors import UserError, os_error_in
from utils.io import write_text_atomic, writing
from utils.rundir import EVENTS, METRICS_LOG, WRITTEN, write_config, write_summary

RUNS_ROOT = Path("runs")
# the comment's share of a run directory's name: file systems refuse names over 255 bytes
MAX_SLUG = 120

# metrics.jsonl key -> TensorBoard tag
EPOCH_TAGS = {
    "train_acc": "acc/train",
    "test_acc": "acc/test",
    "val_acc": "acc/val",
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "val_loss": "loss/val",
    "train_penalty": "loss/penalty",
    "sparsity": "sparsity/sparsity",
    "lr": "lr",
    "flips": "flips/total",
    "dropped": "regrowth/dropped",  # by the epoch's mask updates of dynamic sparse training
    "grown": "regrowth/grown",
    "train_flops": "flops/train",  # the epoch's training FLOPs (docs/runs.md)
    "seconds": "time/epoch_seconds",
}


def warn(message: str) -> None:
    """A one-line warning on stderr, without the source excerpt `warnings.warn` prints."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def library_warnings_as_lines(library: str = "pruning") -> None:
    """Show what the library warns through `warnings` (as a library should: its users filter or
    log it) as this command line's own one-line warnings, without file, line and source excerpt;
    other libraries' warnings (torch's, timm's) likewise on one line, naming their kind.
    Installed once, however often main() runs."""
    shown = warnings.showwarning
    if getattr(shown, "library", None) == library:
        return

    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        if Path(filename).parent.name == library:
            warn(text)
        else:
            warn(f"{text} ({category.__name__})")

    show.library = library
    warnings.showwarning = show


def run_name(comment: str, start: float | None = None) -> str:
    """Start time plus the comment, reduced to characters that are safe in any shell or path."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(start))
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", comment)[:MAX_SLUG].strip("_.")
    return f"{stamp}_{slug}" if slug else stamp


def make_run_dir(logdir: str, comment: str) -> Path:
    """Create `runs/<logdir>/<run name>`, never reusing a directory (parallel seeds start in the
    same second). An absolute `logdir` is used as given instead of under `runs/`."""
    parent = RUNS_ROOT / logdir
    name = run_name(comment)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1000):
            candidate = parent / (name if attempt == 0 else f"{name}-{attempt}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            probe = candidate / ".writable"
            probe.touch()
            probe.unlink()
            return candidate
    except OSError as error:
        raise UserError(f"cannot write runs under --logdir {parent}: {error}") from error
    raise UserError(f"could not create a fresh run directory under {parent}")


def run_files_in(directory: Path) -> list[str]:
    """The names of the files in `directory` that a run writes (rundir.WRITTEN, then its TensorBoard
    event files); a broken symbolic link under such a name counts too, as a write would replace
    it."""
    directory = Path(directory)
    found = [name for name in WRITTEN if os.path.lexists(directory / name)]
    return found + sorted(path.name for path in directory.glob(EVENTS))


def json_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True) + "\n"


def config_markdown(config: dict) -> str:
    rows = "\n".join(f"| {key} | `{value}` |" for key, value in sorted(config.items()))
    return f"| option | value |\n|---|---|\n{rows}"


STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}


def quiet_storage_errors_in_threads() -> None:
    """TensorBoard writes from a thread of its own, which prints a traceback when the disk fills;
    the same error then reaches the main thread at the next write, which reports it in one line.
    So an I/O failure ends such a thread quietly; any other exception is printed as before."""
    if getattr(threading.excepthook, "quiet_storage_errors", False):
        return
    default = threading.excepthook

    def hook(args) -> None:
        cause = os_error_in(args.exc_value) if args.exc_value is not None else None
        if cause is None or cause.errno not in STORAGE_ERRNOS:
            default(args)

    hook.quiet_storage_errors = True
    threading.excepthook = hook


class RunLogger:
    """Writes a run's files. When resuming, `history` is the checkpoint's list of epoch records:
    metrics.jsonl is rewritten to exactly those, and TensorBoard events of later epochs (written
    after the checkpoint, before the interruption) are purged, so no epoch appears twice. Every
    write that fails raises StorageError naming the file."""

    def __init__(self, run_dir: Path, config: dict, history: list[dict] | None = None):
        self.run_dir = Path(run_dir)
        self.run_id = config.get("run_id")
        quiet_storage_errors_in_threads()
        write_config(self.run_dir, config)
        self.metrics_path = self.run_dir / METRICS_LOG
        self.events_path = self.run_dir / EVENTS
        purge_step = None
        if history is not None:
            write_text_atomic(self.metrics_path, "".join(json_line(r) for r in history))
            purge_step = len(history) + 1
        with writing(self.events_path):
            self.writer = SummaryWriter(str(self.run_dir), purge_step=purge_step)
            self.writer.add_text("config", config_markdown(config), 0)
        with writing(self.metrics_path):
            self.metrics_file = open(self.metrics_path, "a")  # noqa: SIM115

    def scalar(self, tag: str, value: float, step: int) -> None:
        with writing(self.events_path):
            self.writer.add_scalar(tag, value, step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        if len(values):
            with writing(self.events_path):
                self.writer.add_histogram(tag, values, step)

    def text(self, tag: str, text: str, step: int) -> None:
        with writing(self.events_path):
            self.writer.add_text(tag, text, step)

    def log_epoch(self, record: dict) -> None:
        """Append one epoch's record to metrics.jsonl and mirror its known keys to TensorBoard."""
        with writing(self.metrics_path):
            self.metrics_file.write(json_line(record))
            self.metrics_file.flush()
        with writing(self.events_path):
            for key, tag in EPOCH_TAGS.items():
                if record.get(key) is not None:
                    self.writer.add_scalar(tag, record[key], record["epoch"])
            # per tensor: --log_mechanism's measurements, dynamic sparse training's mask updates
            for key in ("mechanism", "regrowth"):
                for tensor, stats in record.get(key, {}).items():
                    for stat, value in stats.items():
                        self.writer.add_scalar(f"{key}/{stat}/{tensor}", value, record["epoch"])
            self.writer.flush()

    def log_hparams(self, values: dict, metrics: dict) -> None:
        """Record the run for TensorBoard's HParams dashboard, which sets runs side by side:
        `values` (its method, schedule and options) as the session's hyperparameters, booleans
        as booleans and what it cannot show (lists, None) as text, and `metrics` as scalars
        `hparam/NAME`. No experiment summary is written: TensorBoard then builds the table from
        every run under the logdir and lists first the hyperparameters whose values differ
        between them (an experiment summary, one run's, would fix the columns to that run's
        alphabetical list). All in this run's own event file; TensorBoard names the row by the
        run's path below the logdir."""
        shown = {key: hparam_value(value) for key, value in values.items()}
        with writing(self.events_path):
            # no trial id: TensorBoard then groups each session alone, under its path below the
            # logdir, where one by name or by values would merge two runs into one row
            self.writer.file_writer.add_summary(hparams_pb(shown, trial_id=""))
            self.writer.file_writer.add_summary(session_ended())
            for key, value in metrics.items():
                if value is not None:
                    self.writer.add_scalar(f"hparam/{key}", value)

    def write_summary(self, summary: dict) -> None:
        write_summary(self.run_dir, summary)

    def close(self) -> None:
        """Close both files, the second also when the first fails; the first failure is raised."""
        try:
            with writing(self.metrics_path):
                self.metrics_file.close()
        finally:
            with writing(self.events_path):
                self.writer.close()


def session_ended():
    """The summary that marks the HParams session as finished successfully (its Status)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    ended = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)
    content = plugin_data_pb2.HParamsPluginData(
        session_end_info=ended, version=metadata.PLUGIN_DATA_VERSION
    )
    value = Summary.Value(
        tag=metadata.SESSION_END_INFO_TAG, metadata=metadata.create_summary_metadata(content)
    )
    return Summary(value=[value])


def hparam_value(value) -> bool | int | float | str:
    """A value as the HParams table can show it: a boolean, number or text as it is, a list as
    its items separated by spaces, nothing as "none"."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return " ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


class NullLogger:
    """The logger of ranks other than 0 under torchrun: rank 0 alone writes the run's files."""

    def scalar(self, *args) -> None:
        pass

    histogram = text = log_epoch = log_hparams = write_summary = close = scalar
