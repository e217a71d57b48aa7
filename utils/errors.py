"""Errors that end a run with one line on stderr and an exit code a script can act on, instead of a
traceback, and the argument parser that reports its own errors the same way.

| exit | meaning                                                      | what to do               |
|------|--------------------------------------------------------------|--------------------------|
| 0    | completed                                                    |                          |
| 2    | a mistake in flags, data or run files (UserError)            | fix it and start again   |
| 3    | the training loss diverged (main.py)                         | change hyperparameters   |
| 4    | a file could not be written: disk full, permissions (StorageError) | free space, resume |
| 5    | the run directory is in use by another process (RunBusy)     | wait, or stop the other  |
| 6    | under torchrun, another rank died or stopped answering (PeerLost) | resume              |
| 130  | interrupted by SIGINT (Ctrl-C); the last checkpoint is intact | resume                  |
| 143  | interrupted by SIGTERM (a cluster's time limit)              | resume                   |
"""

import argparse
import errno
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_STORAGE = 4
EXIT_BUSY = 5
EXIT_PEER_LOST = 6


class UserError(Exception):
    """A mistake the user can fix: a flag, a missing or corrupt file, an absent GPU."""

    exit_code = EXIT_USER_ERROR


class StorageError(Exception):
    """Writing `path` failed (disk full, quota, permissions, a read-only or failing disk). What was
    written before stays: every file this code replaces is replaced atomically."""

    exit_code = EXIT_STORAGE

    def __init__(self, path: str | Path, error: OSError):
        reason = error.strerror or str(error) or type(error).__name__
        super().__init__(f"cannot write {path}: {reason}")
        self.path = Path(path)
        self.errno = error.errno


class RunBusy(UserError):
    """Another live process holds the run directory's lock."""

    exit_code = EXIT_BUSY


class PeerLost(Exception):
    """Under torchrun, another rank died or stopped answering."""

    exit_code = EXIT_PEER_LOST


def os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind `error`, also when a library raised its own error while handling it
    (torch.save's zip writer raises a RuntimeError on top of the disk-full OSError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno is not None:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def storage_error(path: str | Path, error: BaseException) -> StorageError | None:
    """A StorageError for a failed write of `path`, or None when `error` is not an I/O failure."""
    cause = os_error_in(error)
    return None if cause is None else StorageError(path, cause)


def no_space(error: StorageError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a UserError (one line, exit 2 in the CLIs)
    rather than printing the whole usage block first. `--help` is unchanged."""

    def error(self, message: str):
        raise UserError(message)

    def exit(self, status: int = 0, message: str | None = None):
        if status and message:
            raise UserError(message.strip().removeprefix(f"{self.prog}: error: "))
        super().exit(status, message)
