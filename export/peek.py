"""What a file that torch.save wrote holds, read without building any of it: enough to tell an
export of python -m export from any other file before it is written over or read
(export/formats.py's `export_header`), also when it is a pickled module someone sent.

`peek(path)` reads the pickle of the archive (its data.pkl) with an unpickler that resolves no
name the pickle gives. Each class or function it names becomes an `Inert` stand-in, which only
records what the pickle passes it, and each tensor's storage a `Stored` placeholder whose bytes
stay in the archive; dicts, lists, strings and numbers come back as they are. So nothing in the
file runs, and reading a large file costs the size of its pickle, not of its tensors.
"""

import io
import os
import pickle
import stat
import zipfile
from pathlib import Path

# far more than the pickle of any export: the tensors' bytes are stored beside it, not in it
MOST_PICKLE_BYTES = 64 << 20


class NotPeekable(Exception):
    """The file is not an archive torch.save writes, or cannot be read (the message says why)."""


class Inert:
    """What the pickle builds where it names a class or function (`name`): the arguments,
    state and items it was given, nothing made of them."""

    name = ""

    def __new__(cls, *args, **kwargs):
        inert = super().__new__(cls)
        inert.args, inert.kwargs, inert.state, inert.items = args, kwargs, None, []
        return inert

    def __init__(self, *args, **kwargs):
        pass  # __new__ recorded the arguments; a REDUCE calls both

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items.append((key, value))

    def append(self, item):
        self.items.append(item)

    def extend(self, items):
        self.items.extend(items)

    def add(self, item):
        self.items.append(item)


class Stored:
    """A tensor's storage, named by the pickle's persistent id and left unread."""

    def __init__(self, key):
        self.key = key


class InertUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # a class per name, since the pickle may instantiate it (NEWOBJ takes only a class)
        return type("Inert", (Inert,), {"name": f"{module}.{name}"})

    def persistent_load(self, pid):
        return Stored(pid)


def pickle_bytes(path: str | Path) -> bytes:
    """The data.pkl of the torch archive at `path`. Only a regular file is opened, and without
    waiting, so that a FIFO or a device given by mistake neither blocks nor is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise NotPeekable(error.strerror or str(error)) from error
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotPeekable("not a regular file")
        try:
            with zipfile.ZipFile(file) as archive:
                names = archive.namelist()
                # torch names every record under one folder, that of the first
                folder = names[0].split("/", 1)[0] if names else ""
                with archive.open(f"{folder}/data.pkl") as data:
                    held = data.read(MOST_PICKLE_BYTES + 1)
        except (zipfile.BadZipFile, KeyError, OSError, RuntimeError, ValueError) as error:
            raise NotPeekable(f"not an archive of torch.save ({type(error).__name__})") from error
    if len(held) > MOST_PICKLE_BYTES:
        raise NotPeekable("its pickle is larger than any this tool writes")
    return held


def peek(path: str | Path) -> object:
    """What the pickle in the torch archive at `path` describes, with Inert stand-ins for what
    it names and Stored placeholders for its tensors' data; NotPeekable for any other file."""
    held = pickle_bytes(path)
    try:
        return InertUnpickler(io.BytesIO(held)).load()
    except Exception as error:  # whatever a damaged or foreign pickle makes the unpickler raise
        raise NotPeekable(f"an unreadable pickle ({type(error).__name__})") from error
