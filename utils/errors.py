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

A path the operating system refuses ends the same way (`path_error`): a path that no retry can
make work (too long, through a plain file, a file where a directory must be) is a UserError, 2;
a path that is right but whose storage refuses it (read-only, permissions, full, failing) is a
StorageError, 4, as for any failed write: the command works once the storage is fixed. And every
command-line tool stops writing quietly when its reader goes away (`| head`): `command`.
"""

import argparse
import contextlib
import errno
import functools
import os
import stat
import sys
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_STORAGE = 4
EXIT_BUSY = 5
EXIT_PEER_LOST = 6


# what a path holds when it is neither a regular file nor a directory
SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class UserError(Exception):
    """A mistake the user can fix: a flag, a missing or corrupt file, an absent GPU."""

    exit_code = EXIT_USER_ERROR


class StorageError(Exception):
    """Writing `path` failed (disk full, quota, permissions, a read-only or failing disk). What was
    written before stays: every file this code replaces is replaced atomically. `where` words
    the message's start in place of "cannot write PATH"; `detail` follows the reason."""

    exit_code = EXIT_STORAGE

    def __init__(
        self, path: str | Path, error: OSError, where: str | None = None, detail: str = ""
    ):
        reason = error.strerror or str(error) or type(error).__name__
        super().__init__(f"{where or f'cannot write {path}'}: {reason}{detail}")
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


# the storage refuses a path that is right: StorageError, exit 4
STORAGE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EIO}
# the path itself cannot work, wherever it is tried: UserError, exit 2. ENOENT is not here: a
# missing file is a mistake each reader words for itself ("no such run directory").
BAD_PATH_ERRNOS = {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ELOOP}


def refusal_in(error: BaseException) -> OSError | None:
    """The operating system's refusal behind `error`: `error` itself, or what a UserError or
    StorageError was raised from (make_run_dir, a lock, write_atomic). Not what an exception
    merely happened during, which may be unrelated to any path."""
    if isinstance(error, OSError):
        return error if error.errno is not None else None
    if isinstance(error, UserError | StorageError) and error.__cause__ is not None:
        return os_error_in(error.__cause__)
    return None


def file_in_the_way(path: str | Path) -> Path | None:
    """The first part of `path` that exists and is not a directory, if a later part needs it
    to be one (or `path` itself, when it must be a directory)."""
    with contextlib.suppress(OSError):
        for part in [*reversed(Path(path).parents), Path(path)]:
            if part.exists() and not part.is_dir():
                return part
    return None


def special_file(path: str | Path) -> str | None:
    """What is at `path` when it is neither a regular file nor a directory ("a FIFO", "a
    character device"), else None (also when nothing is there). Such a path is refused before it
    is opened: reading a FIFO blocks until something writes to it, a device may never end. A
    symbolic link counts as what it points to; a path the system refuses (too long) raises its
    OSError."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    return next((kind for test, kind in SPECIAL_KINDS if test(mode)), None)


def what_is_at(path: Path) -> str:
    """What is at `path`, which is no directory: "a file", or "a FIFO", "a character device"."""
    try:
        return special_file(path) or "a file"
    except OSError:
        return "a file"


def path_error(where: str, path: str | Path, error: BaseException) -> Exception | None:
    """The one-line error for the operating system refusing `path`, a path the user gave,
    worded as `where` (such as "--run_dir runs/x: cannot create it"); None when `error` is no
    such refusal. See the module docstring for which refusal is which exit code."""
    cause = refusal_in(error)
    if cause is None:
        return None
    if cause.errno in STORAGE_ERRNOS:
        return StorageError(path, cause, where, refused_file(cause, path))
    if cause.errno not in BAD_PATH_ERRNOS:
        return None
    if cause.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = file_in_the_way(cause.filename or path)
        if blocker is not None:
            return UserError(f"{where}: {blocker} is {what_is_at(blocker)}, not a directory")
    return UserError(f"{where}: {cause.strerror or cause}")


def refused_file(cause: OSError, path: str | Path) -> str:
    """The file the system refused, as " (FILE)" to follow a reason, where it is not `path`
    itself nor the temporary file write_atomic writes beside it: a lock, a file deep in a data
    folder."""
    if not cause.filename or Path(cause.filename) == Path(path):
        return ""
    if Path(cause.filename).name.startswith(f".{Path(path).name}."):
        return ""
    return f" ({cause.filename})"


@contextlib.contextmanager
def given_path(where: str, path: str | Path):
    """Inside the block, the operating system refusing `path` ends in `path_error`'s one line
    instead of a traceback; every other exception passes unchanged."""
    try:
        yield
    except Exception as error:
        failure = path_error(where, path, error)
        if failure is None:
            raise
        raise failure from error


class ReaderGone:
    """A text stream (stdout, stderr) that drops what is written once its reader has gone
    away, as when `| head` has read its lines: the command goes on with its real work, files
    and all, instead of ending in a BrokenPipeError traceback."""

    def __init__(self, stream):
        self.stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self.reader_left()
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self.reader_left()

    def reader_left(self) -> None:
        self.gone = True
        # the stream still holds what it could not write, and Python flushes it at exit: into
        # /dev/null then, not into the closed pipe (which would print "Exception ignored")
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextlib.contextmanager
def quiet_closed_pipes():
    """stdout and stderr as ReaderGone streams inside the block. A closed pipe leaves the exit
    code as the command's work made it, 0 when that succeeded: the reader chose to stop, which
    is no failure of the writer, and `set -o pipefail` scripts piping into `head` stay green.
    (A C tool would die of SIGPIPE instead, 141 in the shell, and leave its work undone.)"""
    saved = sys.stdout, sys.stderr
    if None in saved:  # no console at all (pythonw): nothing to guard
        yield
        return
    sys.stdout, sys.stderr = guards = ReaderGone(saved[0]), ReaderGone(saved[1])
    try:
        yield
    finally:
        for guard in guards:
            guard.flush()
        sys.stdout, sys.stderr = saved


def command(main):
    """A command-line tool's `main(argv) -> exit code` as its entry point: a UserError or
    StorageError ends it with its one line on stderr and its exit code, a closed pipe quietly
    (quiet_closed_pipes); anything else is a bug and keeps its traceback."""

    @functools.wraps(main)
    def entry(argv: list[str] | None = None) -> int:
        with quiet_closed_pipes():
            try:
                return main(argv)
            except (UserError, StorageError) as error:
                print(f"error: {error}", file=sys.stderr)
                return error.exit_code

    return entry


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a UserError (one line, exit 2 in the CLIs)
    rather than printing the whole usage block first. `--help` is unchanged."""

    def error(self, message: str):
        raise UserError(message)

    def exit(self, status: int = 0, message: str | None = None):
        if status and message:
            raise UserError(message.strip().removeprefix(f"{self.prog}: error: "))
        super().exit(status, message)
