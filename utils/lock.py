"""One process at a time in a run directory.

Two processes training into one directory (two `--resume` of the same run, or a requeued copy of a
cluster job next to the original) would interleave their epochs in metrics.jsonl and TensorBoard
and overwrite each other's checkpoints. The lock is `flock` on `RUN_DIR/.lock`: the kernel drops it
when its holder exits, however it exits (SIGKILL and a crash included), so a dead holder never
blocks the run, and a live one is named in the refusal.

The sweep launcher (experiments/) claims a run the same way, with a lock file of its own
(`file_name`), for the whole life of the main.py it starts there: main.py's `.lock` cannot be
handed to a child, and two launchers must not both start one run.
"""

import fcntl
import glob
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path

from utils.errors import RunBusy, UserError
from utils.rundir import LOCK


class RunLock:
    def __init__(self, run_dir: str | Path, file_name: str = LOCK):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / file_name
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock or raise RunBusy naming the holder; never waits."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f"cannot lock {self.run_dir}: {error.strerror or error}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise RunBusy(
                f"{self.run_dir} is in use by another process ({holder}); a run directory takes "
                "one process at a time"
            ) from None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode())
        self._fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        except OSError:
            text = ""
        return text or "holder unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(run_dir: str | Path, file_name: str = LOCK) -> str | None:
    """Who holds the lock ("pid N on HOST since ..."), asked without waiting and without keeping
    it; None when no live process holds it."""
    path = Path(run_dir) / file_name
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return RunLock._holder(fd)
    finally:
        os.close(fd)  # also drops the lock, if it was taken here
    return None


def is_locked(run_dir: str | Path) -> bool:
    """Whether a live process holds the run's lock."""
    return holder(run_dir) is not None


def remove_stale_temporaries(run_dir: str | Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files an atomic write of one of `names` (the run's own files) leaves
    when its process is killed mid-write (`.checkpoint.pt.*.tmp`, hundreds of MB for VGG-19);
    those of other names are someone else's. Only call while holding the lock: then no write of
    this run is in progress."""
    removed = []
    stale = [path for name in names for path in Path(run_dir).glob(f".{glob.escape(name)}.*.tmp")]
    for path in stale:
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed
