"""The files the launcher and the report read and write: nothing but a regular file is ever opened,
and nothing is replaced that these tools did not write.

Reading. A folder of runs may hold anything under a run file's name: a FIFO blocks its reader
for ever, a device can be read without end (or changed by being opened). Only regular files are
opened (utils/io.py's `read_bytes`, `read_text`): anything else raises NotAFile, an OSError whose
message says what is there, which each reader reports as it reports any file it cannot read. The
check is made again on the open file, so that nothing swapped in meanwhile is read either.

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

from collections.abc import Callable
from pathlib import Path

from utils.io import NotAFile, read_bytes, special

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# a mark is read from the start of a file: this much of it
HEAD_BYTES = 1 << 16


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
