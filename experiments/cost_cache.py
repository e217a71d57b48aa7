"""What `python -m experiments list` shows of each sweep, kept between its calls: resolving the
sweeps' ~500 commands with main.py's parser takes seconds (and imports torch and timm), while
what it finds changes only with the code.

The cache is one file in the user's cache folder ($XDG_CACHE_HOME, else ~/.cache, then
flipout/experiments-list.json), never under runs/. It holds each sweep's Cost (experiments/cost.py)
under a digest of everything that decides them: the tree's modules and JSON files (those of its
top level and its packages, not tests/; the published results the sweeps are made of among them),
the plugin modules loaded (utils/plugins.py: the files of the modules of --plugins and of the
entry-point group), and the versions of Python, torch, torchvision and timm, read from the
packages' metadata, not imported. Costs are read only under the same digest, so a cache hit
imports neither torch nor timm, and after a change to any of these the sweeps are resolved again:
a sweep whose commands no longer parse fails as it always did.

The file starts with its own mark (`MARK`). One that does not is someone else's: it is read as
no cache and never replaced. One of ours that is damaged is read as no cache and written afresh.
A cache folder that cannot be written only costs the next call the seconds.
"""

import hashlib
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path

from experiments.cost import Cost, cost_of
from experiments.files import replace_problem
from utils import plugins
from utils.errors import StorageError
from utils.io import read_bytes, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
CACHE_NAME = "experiments-list.json"
WRITER = "python -m experiments list"
# how every cache file starts: json.dumps of {"written_by": WRITER, "tables": ...}
MARK = f'{{"written_by": {json.dumps(WRITER)}'.encode()
# a file longer than this is no cache of ours (8 digests of ~15 sweeps take a few kB)
MOST_BYTES = 1 << 20
# the tables kept, by digest, the latest last: several trees or plugin sets on one machine
KEPT = 8
# the tree's files that decide a resolution: its modules, and data such as the published results
# that sweeps.py makes commands of (experiments/paper_results.json)
SOURCE_SUFFIXES = (".py", ".json")
# what resolving a command depends on beside the tree's own files
DISTRIBUTIONS = ("torch", "torchvision", "timm")
# the layout of a table; a new layout gives new digests, so an older file is never misread
LAYOUT = 1


def sweep_costs(sweeps: Mapping, plugin_modules: Sequence[str] = ()) -> Iterator[tuple[str, Cost]]:
    """Each sweep's (name, Cost) at its default seeds, in order: from the cache where it holds
    them for this code, else resolved one sweep after the other (a UserError naming the command
    where one does not parse) and cached once all are. `plugin_modules`: those of --plugins."""
    path, key = cache_file(), digest(plugin_modules)
    tables = read_tables(path)
    cached = tables.get(key, {})
    if cached.keys() >= sweeps.keys():
        yield from ((name, cached[name]) for name in sweeps)
        return
    from experiments.runs import resolve_all  # main.py's parser: torch, timm's names

    found = {}
    for name, sweep in sweeps.items():
        found[name] = cost_of(resolve_all(sweep.commands(sweep.default_seeds)))
        yield name, found[name]
    tables.pop(key, None)
    write_tables(path, {**tables, key: found})


def cache_file() -> Path | None:
    """Where the cache lives; None where the user has no home to keep one in."""
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:
        return None
    return Path(base) / "flipout" / CACHE_NAME


def digest(plugin_modules: Sequence[str]) -> str:
    """A digest of what decides the costs (this module's docstring)."""
    versions = {name: installed_version(name) for name in DISTRIBUTIONS}
    hasher = hashlib.sha256(json.dumps([LAYOUT, sys.version, versions]).encode())
    for name, path in [*tree_files(), *plugin_files(plugin_modules)]:
        try:
            content = hashlib.sha256(read_bytes(path)).hexdigest()
        except OSError as error:  # resolving the sweeps says what is wrong with it
            content = f"unreadable: {error.strerror}"
        hasher.update(f"{name}\0{content}\n".encode())
    return hasher.hexdigest()


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def tree_files() -> list[tuple[str, Path]]:
    """The tree's own modules and data files, by path from its root: those of its top level and
    of its packages (folders with an __init__.py, and theirs within). tests/ is no package, and
    the datasets that data/ may hold are neither modules nor JSON."""
    files = sorted(ROOT.glob("*.py"))
    packages = sorted(init.parent for init in ROOT.glob("*/__init__.py"))
    while packages:
        package = packages.pop()
        files += sorted(path for path in package.iterdir() if path.suffix in SOURCE_SUFFIXES)
        packages += sorted(init.parent for init in package.glob("*/__init__.py"))
    return [(path.relative_to(ROOT).as_posix(), path) for path in files if path.is_file()]


def plugin_files(named: Sequence[str]) -> list[tuple[str, Path]]:
    """The files of the plugin modules loaded, and of the modules within them that are loaded:
    those `named` and those of the entry-point group."""
    group = [entry.module for entry in plugins.group_entries(tuple(sys.path))]
    roots = {*group, *named}
    files = []
    for name, module in sorted(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and any(name == root or name.startswith(f"{root}.") for root in roots):
            files.append((f"plugin {name}", Path(file)))
    return files


def read_tables(path: Path | None) -> dict[str, dict[str, Cost]]:
    """The tables of the cache at `path`, by digest; {} where there is none, or it is damaged or
    not ours."""
    try:
        cache = json.loads(read_bytes(path, MOST_BYTES)) if path is not None else None
    except (OSError, ValueError):
        return {}
    if not isinstance(cache, dict) or cache.get("written_by") != WRITER:
        return {}
    tables = cache.get("tables")
    if not isinstance(tables, dict):
        return {}
    read = {key: table_of(entries) for key, entries in tables.items()}
    return {key: table for key, table in read.items() if table is not None}


def table_of(entries) -> dict[str, Cost] | None:
    """One digest's costs by sweep, as the cache keeps them; None where any is damaged."""
    if not isinstance(entries, dict):
        return None
    table = {}
    for name, entry in entries.items():
        runs = entry.get("runs") if isinstance(entry, dict) else None
        epochs = entry.get("epochs") if isinstance(entry, dict) else None
        if not is_count(runs) or not isinstance(epochs, dict):
            return None
        if not all(isinstance(network, str) and is_count(n) for network, n in epochs.items()):
            return None
        table[name] = Cost(runs, dict(epochs))
    return table


def is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def write_tables(path: Path | None, tables: dict[str, dict[str, Cost]]) -> None:
    """Write the latest KEPT tables to `path`, unless what is there is not ours; where that
    fails, the cache is only not kept."""
    if path is None:
        return
    kept = dict(list(tables.items())[-KEPT:])
    cache = {
        "written_by": WRITER,
        "tables": {
            key: {name: {"runs": c.runs, "epochs": c.epochs_by_network} for name, c in t.items()}
            for key, t in kept.items()
        },
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if replace_problem(path, lambda head: head.startswith(MARK), "this cache") is None:
            write_text_atomic(path, json.dumps(cache))
    except (OSError, StorageError):
        pass
