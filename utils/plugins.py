"""Modules of a researcher's own that extend the tool without a fork of it.

A plugin is a module that registers what it adds when it is imported: a criterion in
`pruning.CRITERIA`, a schedule in `SCHEDULES`, a network in `models.MODELS`, a dataset in
`data.DATASETS`, an optimizer in `training.OPTIMIZERS`, a sweep in `experiments.sweeps.SWEEPS`.
`load` imports the modules that `--plugins` names and those that installed packages list under
the entry-point group `flipout.plugins` (docs/library.md#extending-the-repository). main.py
loads them before its parser is built, so that their names are choices of its flags and their
options flags of their own; `python -m experiments` before it reads its sweeps.

A module is imported once however often it is named (Python keeps it in sys.modules), so it
registers once. One that cannot be found, or raises while it is imported, is a UserError naming
it and the reason, in one line.
"""

import functools
import importlib
import os
import sys
import traceback
from collections.abc import Mapping
from importlib import metadata

from utils.errors import UserError

GROUP = "flipout.plugins"


def load(named: Mapping[str, str] | None = None) -> None:
    """Import the modules of the entry-point group, then those of `named`: module -> the words
    that name it in an error ("--plugins"). The current directory is searched after the tree
    (as `python -m` would, but last), so that a plugin beside a command works and a folder
    there called `data` or `models` never hides the tree's own."""
    for entry in group_entries(tuple(sys.path)):
        where = f"{GROUP} entry point {entry.name} = {entry.value}"
        if entry.dist is not None:
            where += f" (of {entry.dist.name})"
        import_plugin(entry.module, where)
    if named:
        here = os.getcwd()
        if here not in {os.path.abspath(entry) for entry in sys.path}:
            sys.path.append(here)
        for name, where in named.items():
            import_plugin(name, f"{where} {name}")


@functools.cache
def group_entries(path: tuple[str, ...]) -> tuple[metadata.EntryPoint, ...]:
    """The group's entry points on `path` (sys.path): read once per path, since main.py's parser
    is built once for each command of a sweep."""
    return tuple(metadata.entry_points(group=GROUP))


def import_plugin(name: str, where: str) -> None:
    """Import the module `name`; a UserError worded from `where` if it cannot be."""
    if name.endswith(".py") or not all(part.isidentifier() for part in name.split(".")):
        raise UserError(f"{where}: not a module's name{file_hint(name)}")
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is None or not is_part_of(error.name, name):
            raise UserError(f"{where}: importing it raised {raised(error)}") from None
        raise UserError(
            f"{where}: no module {error.name} in the current directory or the installed packages"
        ) from None
    except Exception as error:  # the plugin's own mistake, whatever it is
        raise UserError(f"{where}: importing it raised {raised(error)}") from None


def is_part_of(missing: str, name: str) -> bool:
    """Whether the module that was not found is `name` or a package on its way."""
    return name == missing or name.startswith(f"{missing}.")


def file_hint(name: str) -> str:
    """The name to give instead of a file's (my_plugin.py, ./my_plugin.py: my_plugin)."""
    stem = name.rsplit("/", 1)[-1].removesuffix(".py")
    return f": give {stem}, without the folder and .py" if stem.isidentifier() else ""


def raised(error: Exception) -> str:
    """The exception in one line, with the line of the researcher's code it was raised from (not
    one of Python's or an installed library's): a syntax error carries its own."""
    message = " ".join(str(error).split())
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    if isinstance(error, SyntaxError):
        return text
    installed = (sys.prefix, sys.base_prefix, "<")
    frames = traceback.extract_tb(error.__traceback__)
    own = [frame for frame in frames if not frame.filename.startswith(installed)]
    return f"{text} ({shown_path(own[-1].filename)}:{own[-1].lineno})" if own else text


def shown_path(path: str) -> str:
    """`path` from the current directory when it is under it, else in full."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative
