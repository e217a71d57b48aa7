"""The files the launcher and the report read and write: nothing but a regular file is ever opened,
and nothing is replaced that these tools did not write.

Reading. A folder of runs may hold anything under a run file's name: a FIFO blocks its reader
for ever, a device can be read without end (or changed by being opened). Only regular files are
opened (`read_bytes`, `read_text`): anything else raises NotAFile, an OSError whose message says
what is there, which each reader reports as it reports any file it cannot read. The check is made
again on the open file, so that nothing swapped in meanwhile is read either.

Writing. A file these tools write replaces what is at its path only where nothing is there, or a
file of the same kind that they wrote, known by a mark of its own (`replace_problem`):

- `launch.json` (the launcher): a JSON object with the keys `sweep`, `seeds` and `overrides`,
  of the same sweep (experiments/launches.py);
- the report's CSV: a first line that starts with the report's own columns,
  `model,dataset,method,sparsity_mean,...` (experiments/report.py, `CSV_MARK`);
- the report's plots: the PNG text chunk `Software: python -m experiments.report` (`PNG_MARK`).

Anything else there (a user's own file of that name, a directory, a FIFO, a device, a socket) is
refused in one line and left as it is. Everything else the launcher writes goes into a run's own
directory, named after the run's options (experiments/runs.py), where a file of another kind
under a run file's name makes the run "damaged", refused before anything is written.
"""

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from utils.errors import SPECIAL_KINDS, special_file

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# a mark is read from the start of a file: this much of it
HEAD_BYTES = 1 << 16
# what a path holds where a file is read or written and it is no regular file
KINDS = ((stat.S_ISDIR, "a directory"), *SPECIAL_KINDS)


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


def png_texts(head: bytes) -> dict[str, str]:
    """The tEXt chunks before the image data of a PNG's first bytes, by keyword; {} for what is
    not a PNG."""
    if not head.startswith(PNG_SIGNATURE):
        return {}
    texts, at = {}, len(PNG_SIGNATURE)
    while at + 8 <= len(head):
        length, kind = int.from_bytes(head[at : at + 4], "big"), head[at + 4 : at + 8]
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"tEXt":
            keyword, _, text = head[at + 8 : at + 8 + length].partition(b"\0")
            texts[keyword.decode("latin-1")] = text.decode("latin-1")
        at += 12 + length  # length, type, data, CRC
    return texts


def replace_problem(path: Path, ours: Callable[[bytes], bool], what: str) -> str | None:
    """What is at `path` when writing `what` there would replace what these tools did not write,
    worded to follow "PATH is" ("a FIFO, not a CSV of this report", "not a CSV of this report");
    None when nothing is there or `ours` recognises the first bytes of the file that is. A path
    the system refuses (too long) raises its OSError."""
    kind = special(path)
    if kind:
        return f"{kind}, not {what}"
    try:
        head = read_bytes(path, HEAD_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except NotAFile as error:  # swapped in since the check
        return f"{error.kind}, not {what}"
    return None if ours(head) else f"not {what}"
