"""File writing that never leaves a half-written file behind, and file reading that never opens
anything but a regular file (a FIFO blocks its reader for ever, a device may never end)."""

import contextlib
import errno
import json
import os
import stat
import tempfile
from pathlib import Path

from utils.errors import SPECIAL_KINDS, special_file, storage_error

# what a path holds where a file is read or written and it is no regular file
KINDS = ((stat.S_ISDIR, "a directory"), *SPECIAL_KINDS)


def write_atomic(path: Path, write) -> None:
    """Call `write(binary_file)` on a temporary file beside `path`, fsync it, then rename it over
    `path`: readers and crashes see the old file or the new one, never a part. A failed write
    (disk full, permissions) leaves the old file, removes the temporary one and raises
    StorageError naming `path`. A kill mid-write leaves the temporary file behind, named
    `.<name>.*.tmp`, for utils.lock.remove_stale_temporaries."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        # mkstemp makes the file private; give it the permissions open() would have
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        failure = storage_error(path, error)
        if failure is not None:
            raise failure from error
        raise


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def made_folders(folder: Path):
    """Create `folder` and its missing parents for the block; when the creation or the block
    fails, remove the folders made here again (those still empty), so that a refused path
    leaves nothing behind."""
    folder = Path(folder)
    made = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield
    except BaseException:
        for path in made:  # the deepest first
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


@contextlib.contextmanager
def writing(path: Path):
    """Turn an I/O failure inside the block into a StorageError naming `path`."""
    try:
        yield
    except BaseException as error:
        failure = storage_error(path, error)
        if failure is not None:
            raise failure from error
        raise


class NotAFile(OSError):
    """Something other than a regular file where a file is read: never opened, or closed again
    at once. `strerror` says what it is ("a FIFO, not a file")."""

    def __init__(self, path: Path, kind: str):
        code = errno.EISDIR if kind == "a directory" else errno.EINVAL
        super().__init__(code, f"{kind}, not a file", str(path))
        self.kind = kind


def kind_of(mode: int) -> str | None:
    """What a file of `mode` is when it is not a regular file ("a FIFO"), or None."""
    return next((name for test, name in KINDS if test(mode)), None)


def special(path: Path) -> str | None:
    """What is at `path` when it is there and not a regular file: utils.errors.special_file's
    answer, or "a directory". A symbolic link counts as what it points to; a path the system
    refuses (too long) raises its OSError."""
    kind = special_file(path)
    if kind is None and os.path.isdir(path):
        return "a directory"
    return kind


def read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The content of the regular file `path` (its first `limit` bytes, when given); NotAFile
    for anything else, which is not opened, or not read when it was swapped in meanwhile."""
    kind = special(path)
    if kind:
        raise NotAFile(path, kind)
    # O_NONBLOCK: a FIFO put in its place since the check opens at once instead of waiting
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        kind = kind_of(os.fstat(fd).st_mode)
        if kind:
            raise NotAFile(path, kind)
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read() if limit is None else file.read(limit)
    finally:
        os.close(fd)


def read_text(path: Path) -> str:
    """read_bytes as UTF-8 (UnicodeDecodeError, a ValueError, where it is not)."""
    return read_bytes(path).decode("utf-8")
