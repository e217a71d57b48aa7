"""The architecture as a test: which room of the repository may import which.

LAYERS below is the picture (docs/architecture.md explains it). Each top-level package or module
names the rooms it may import from; every import statement in the tree, at module level or inside
a function, is read with ast and checked against it. An import that runs upward, or a room that
is not in the picture, fails with the edge named. The picture itself must be free of cycles, so
no two rooms can import each other, however indirectly.
"""

import ast
import collections
import functools
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

# room -> the rooms below it that it may import; read from the top down
LAYERS: dict[str, set[str]] = {
    # on top: the paper's sweeps, their launcher and the report; benchmarks
    "experiments": {
        "main",
        "cli",
        "record",
        "training",
        "export",
        "models",
        "data",
        "pruning",
        "utils",
    },
    "bench": {"main", "cli", "record", "training", "export", "models", "data", "pruning", "utils"},
    # the command line and the run it drives, read as phases
    "main": {"cli", "record", "training", "export", "models", "data", "pruning", "utils"},
    "cli": {"record", "training", "models", "data", "pruning", "utils"},
    # the run as one typed record: its options by section, each with its role
    "record": {"pruning", "utils"},
    # one epoch of training and one of evaluation
    "training": {"data", "pruning", "utils"},
    # what leaves the tool: compaction, sparse runtime, formats, loading, inspection, FLOPs
    "export": {"models", "pruning", "utils"},
    # one file per network family and per dataset
    "models": {"utils"},
    "data": {"utils"},
    # leaf infrastructure: errors, io, locks, stop signals, checkpoints, logging, torchrun
    "utils": set(),
    # the library, at the bottom: torch and the standard library only
    "pruning": set(),
}

# what the library may import besides itself and the standard library
LIBRARY_DEPENDENCIES = {"torch"}

NOT_ROOMS = {"tests", "docs", ".venv", ".ci", "runs", "build", "dist"}


def rooms() -> dict[str, list[Path]]:
    """Every top-level package or module of the repository, with its Python files."""
    found: dict[str, list[Path]] = {}
    for path in sorted(ROOT.iterdir()):
        if path.name.startswith(".") or path.name in NOT_ROOMS | plugins_beside_main():
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            found[path.name] = sorted(path.rglob("*.py"))
        elif path.suffix == ".py":
            found[path.stem] = [path]
    return found


@functools.cache
def plugins_beside_main() -> set[str]:
    """A researcher's own modules beside main.py, which `--plugins` imports
    (docs/library.md#extending-the-repository): not rooms of the repository. They are the
    top-level modules that git does not track and that no file of the tree imports; outside a
    git checkout, none."""
    try:
        untracked = subprocess.run(
            ["git", "ls-files", "--others", "--exclude-standard", "--", "*.py"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return set()
    own = {name for name in untracked if "/" not in name}
    tree = [path for path in ROOT.iterdir()
            if not path.name.startswith(".") and path.name not in NOT_ROOMS | own]  # fmt: skip
    files = [file for path in tree for file in (path.rglob("*.py") if path.is_dir() else [path])]
    imported = {name.split(".")[0] for file in files if file.suffix == ".py"
                for _, name in imported_names(file)}  # fmt: skip
    return {name for name in own if Path(name).stem not in imported}


def imported_names(path: Path, members: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of every absolute import in the file; relative ones stay inside. With
    `members`, `from package import name` also gives package.name, which may be a module."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
            if members:
                names += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return names


def edges() -> list[tuple[str, str, str]]:
    """(room, imported room, where) for every import of one room by another."""
    found = rooms()
    result = []
    for room, files in found.items():
        for path in files:
            for line, name in imported_names(path):
                target = name.split(".")[0]
                if target in found and target != room:
                    result.append((room, target, f"{path.relative_to(ROOT)}:{line} imports {name}"))
    return result


def test_every_room_is_in_the_picture():
    unknown = sorted(set(rooms()) - set(LAYERS))
    assert not unknown, (
        f"{unknown} not in tests/test_architecture.py's LAYERS: place each new folder or "
        "top-level module in the picture (and in docs/architecture.md)"
    )


def test_the_picture_has_no_cycle():
    done: set[str] = set()

    def visit(room: str, path: tuple[str, ...]) -> None:
        if room in path:
            raise AssertionError(f"LAYERS has a cycle: {' -> '.join((*path, room))}")
        if room not in done:
            for below in LAYERS[room]:
                visit(below, (*path, room))
            done.add(room)

    for room in LAYERS:
        visit(room, ())


def test_no_import_runs_upward():
    upward = [where for room, target, where in edges() if target not in LAYERS.get(room, set())]
    assert not upward, "imports against the layers (tests/test_architecture.py):\n" + "\n".join(
        upward
    )


def test_the_library_needs_nothing_but_torch():
    outside = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in rooms()["pruning"]
        for line, name in imported_names(path)
        if name.split(".")[0] not in sys.stdlib_module_names | LIBRARY_DEPENDENCIES
    ]
    assert not outside, "pruning/ imports beyond torch and the standard library:\n" + "\n".join(
        outside
    )


def test_importing_the_library_loads_no_tensorboard_and_no_launcher():
    code = (
        "import sys, torch; before = set(sys.modules); import pruning; "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] != 'pruning'))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for heavy in ("tensorboard", "torch.distributed.run", "torch.distributed.elastic", "utils"):
        assert f"'{heavy}" not in loaded, f"import pruning loads {heavy}: {loaded}"


def test_no_test_module_imports_another():
    """Tests stand on tests/support/ (and conftest's fixtures), never on each other."""
    tests = ROOT / "tests"
    leaning = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted(tests.glob("test_*.py"))
        for line, name in imported_names(path, members=True)
        if name.startswith("tests.") and name.split(".")[1].startswith(("test_", "conftest"))
    ]
    assert not leaning, "test modules importing test modules:\n" + "\n".join(leaning)


def module_name(path: Path) -> str:
    """The dotted name a file is imported by: pruning/criteria.py is pruning.criteria, a package's
    __init__.py the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, at module level or inside a function, of one
    of `modules`: `from package import name` imports package.name where that is a module, and
    the package itself otherwise; relative imports are resolved against the file's package."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                member = f"{base}.{alias.name}"
                found.append((node.lineno, member if member in modules else base))
    return [(line, name) for line, name in found if name in modules and name != own]


def module_graph(files: list[Path]) -> dict[str, dict[str, str]]:
    """module -> {module of the same room it imports: where}."""
    modules = {module_name(path) for path in files}
    graph: dict[str, dict[str, str]] = {name: {} for name in modules}
    for path in files:
        for line, name in imported_modules(path, modules):
            where = f"{path.relative_to(ROOT)}:{line}"
            graph[module_name(path)].setdefault(name, where)
    return graph


def shortest_cycle(graph: dict[str, dict[str, str]], start: str) -> list[str] | None:
    """The shortest way from `start` through its imports back to it, as the modules along it."""
    paths = {start: [start]}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node]):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    return None


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The shortest cycle through each module that lies on one, each cycle once (from its
    first module in sorted order)."""
    found = []
    for start in sorted(graph):
        cycle = shortest_cycle(graph, start)
        if cycle is None:
            continue
        first = cycle.index(min(cycle[:-1]))
        rotated = [*cycle[first:-1], *cycle[:first], cycle[first]]
        if rotated not in found:
            found.append(rotated)
    return found


@pytest.mark.parametrize("room", sorted(room for room in rooms() if len(rooms()[room]) > 1))
def test_no_import_cycle_within_a_room(room):
    """Modules of one room import each other one way only, inside functions too: a cycle
    deferred into a function still ties the two modules into one, and breaks as soon as either
    import moves to the top of its file."""
    graph = module_graph(rooms()[room])
    found = [
        " -> ".join(cycle)
        + " ("
        + ", ".join(graph[source][target] for source, target in itertools.pairwise(cycle))
        + ")"
        for cycle in cycles(graph)
    ]
    assert not found, f"import cycles within {room}/:\n" + "\n".join(found)
