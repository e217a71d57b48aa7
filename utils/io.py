"""File writing that never leaves a half-written file behind, and the check that a file to be
read is a file."""

import contextlib
import json
import os
import tempfile
from pathlib import Path

from utils.errors import storage_error


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
