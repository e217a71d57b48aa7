"""docs/library.md's recipes, each applied where its text says to a copy of the tree and run there.

A recipe is the blocks tagged `recipe` after a paragraph that starts with its bold title
(tests/test_docs.py leaves them to this test). A python block's first line says where it goes:
`# my_criteria.py`, a plugin module in the folder commands run from; `# at the end of FILE`;
`# a line of NAME in FILE`, a line of the dict NAME. Its bash blocks are its commands, run in the
copy through each entry point's main(argv), all of one copy in one process; `main.py` trains and
evaluates on one batch an epoch.

Each recipe runs as written, and those that are plugin modules once more as the prose says to move
them into the repository (IN_TREE), in a second copy, their commands without `--plugins`. What a
reader would look at is checked in both: the run's summary.json, `--help`, `experiments list`.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.blocks import MODULES, ROOT, Block, blocks, prose

PAGE = ROOT / "docs" / "library.md"
SHORT = ["--limit_batches", "1", "--num_workers", "0", "--quiet"]
AS_WRITTEN, IN_THE_TREE = "as written", "in the tree"


@dataclass(frozen=True)
class Recipe:
    title: str  # of the paragraph it follows: "A pruning criterion"
    blocks: tuple[Block, ...]
    words: str  # its text outside the blocks, from the title to the next recipe's, on one line

    @property
    def modules(self) -> dict[str, str]:
        """Its plugin modules: file name -> code."""
        return {name: block.text for block in self.code() if (name := plugin_file(block))}

    def code(self) -> list[Block]:
        return [block for block in self.blocks if block.language == "python"]

    def commands(self) -> list[list[str]]:
        return [
            argv for block in self.blocks if block.language == "bash" for argv in block.commands()
        ]


def recipes() -> list[Recipe]:
    """The recipes of the page, in order."""
    text = prose(PAGE)
    titles = [(number, match[1]) for number, line in text
              if (match := re.match(r"\*\*(.+?)\.\*\*", line))]  # fmt: skip
    found = []
    for index, (start, title) in enumerate(titles):
        end = titles[index + 1][0] if index + 1 < len(titles) else math.inf
        tagged = [b for b in blocks(PAGE) if "recipe" in b.tags and start < b.line < end]
        words = " ".join(line for number, line in text if start <= number < end).split()
        if tagged:
            found.append(Recipe(title, tuple(tagged), " ".join(words)))
    return found


def plugin_file(block: Block) -> str | None:
    match = re.fullmatch(r"# (\w+\.py)", block.text.splitlines()[0])
    return match[1] if match else None


# -- applying a recipe -------------------------------------------------------------------------


def copy_tree(destination: Path) -> Path:
    """The tree's source files (git's, tracked or new; not .venv, runs or downloaded data)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination / name)
    return destination


def body(code: str) -> str:
    """A block's code without its first line, which says where it goes."""
    return code.split("\n", 1)[1]


def append(path: Path, code: str) -> None:
    path.write_text(f"{path.read_text()}\n\n{code}")


def insert(path: Path, text: str, where: Callable[[str], bool], after: bool = True) -> None:
    """`text` as lines after (or before) the first line for which `where` holds."""
    lines = path.read_text().splitlines(keepends=True)
    index = next(number for number, line in enumerate(lines) if where(line))
    lines.insert(index + after, text.rstrip("\n") + "\n")
    path.write_text("".join(lines))


def opening(name: str) -> Callable[[str], bool]:
    """The line that opens the dict literal `name`."""
    return lambda line: line.startswith(name) and line.rstrip().endswith("{")


def apply(block: Block, tree: Path) -> None:
    """A python block, where its first line says."""
    where, code = block.text.splitlines()[0], body(block.text)
    if name := plugin_file(block):
        (tree / name).write_text(code)
    elif match := re.fullmatch(r"# at the end of (\S+)", where):
        append(tree / match[1], code)
    elif match := re.fullmatch(r"# a line of (\w+) in (\S+)", where):
        insert(tree / match[2], code, opening(match[1]))
    else:
        raise AssertionError(f"{block.where}: its first line does not say where it goes: {where}")


# -- the same recipes in the repository, as each says after its module --------------------------


def definitions(code: str) -> str:
    """A plugin module's own code: without its imports and its last line, which registers it."""
    lines = body(code).rstrip("\n").splitlines()[:-1]
    return "\n".join(line for line in lines if not line.startswith(("import ", "from "))).strip()


def without_registry(code: str, registry: str) -> str:
    """A plugin module as a file of the tree: without its import of `registry` and its last line."""
    lines = body(code).rstrip("\n").splitlines()[:-1]
    return "\n".join(line for line in lines if not re.match(rf"from \S+ import {registry}$", line))


@dataclass(frozen=True)
class InTree:
    move: Callable[[Path, str], None]  # (the copy, the module's code)
    named: tuple[str, ...]  # what the recipe's prose must name for the move to be the one it says


def criterion_in_tree(tree: Path, code: str) -> None:
    append(tree / "pruning/criteria.py", definitions(code) + "\n")
    registry = tree / "pruning/registry.py"
    insert(registry, "    Lowest,", lambda line: line.startswith("from .criteria import ("))
    insert(registry, '    "lowest": Lowest,', opening("CRITERIA"))


def schedule_in_tree(tree: Path, code: str) -> None:
    schedules = tree / "pruning/schedule.py"
    insert(schedules, definitions(code) + "\n\n", opening("SCHEDULES"), after=False)
    insert(schedules, '    "linear": Linear,', opening("SCHEDULES"))


def model_in_tree(tree: Path, code: str) -> None:
    (tree / "models/mlp.py").write_text(without_registry(code, "MODELS") + "\n")
    models = tree / "models/__init__.py"
    insert(models, "from .mlp import mlp", lambda line: line.startswith("from .lenet import"))
    insert(models, '    "mlp": mlp,', opening("MODELS"))


def dataset_in_tree(tree: Path, code: str) -> None:
    (tree / "data/stripes.py").write_text(without_registry(code, "DATASETS") + "\n")
    insert(tree / "data/__init__.py", '    "stripes": "data.stripes",', opening("DATASETS"))


def sweep_in_tree(tree: Path, code: str) -> None:
    sweeps = tree / "experiments/sweeps.py"
    insert(sweeps, definitions(code) + "\n\n", opening("SWEEPS"), after=False)
    tiny = '        Sweep("tiny", "FlipOut on digits, 4 epochs", tiny),'
    insert(sweeps, tiny, lambda line: line.startswith("    for sweep in ("))


# plugin module -> how its recipe's prose moves it into the tree
IN_TREE = {
    "my_criteria.py": InTree(
        criterion_in_tree,
        (
            "end of `pruning/criteria.py`",
            '`"lowest": Lowest,` in `CRITERIA` in `pruning/registry.py`',
            "`Lowest` among the names it imports from `.criteria`",
        ),
    ),
    "my_schedules.py": InTree(
        schedule_in_tree, ("above `SCHEDULES` in `pruning/schedule.py`", '`"linear": Linear,`')
    ),
    "my_models.py": InTree(
        model_in_tree,
        (
            "`models/mlp.py`",
            '`"mlp": mlp,` in `MODELS` in `models/__init__.py`',
            "`from .mlp import mlp`",
        ),
    ),
    "my_data.py": InTree(
        dataset_in_tree,
        ("`data/stripes.py`", '`"stripes": "data.stripes",` in `DATASETS` in `data/__init__.py`'),
    ),
    "my_sweeps.py": InTree(
        sweep_in_tree,
        (
            "above `SWEEPS` in `experiments/sweeps.py`",
            '`Sweep("tiny", "FlipOut on digits, 4 epochs", tiny),`',
        ),
    ),
}


def without_plugins(argv: list[str]) -> list[str]:
    """argv without `--plugins` and its modules: main.py's takes several, the launcher's one."""
    if "--plugins" not in argv:
        return argv
    at = argv.index("--plugins")
    end = at + 2
    while argv[1] == "main.py" and end < len(argv) and not argv[end].startswith("-"):
        end += 1
    return without_plugins([*argv[:at], *argv[end:]])


# -- running them ------------------------------------------------------------------------------

# In the copy: run each step (a command through its entry point, or python code that sets
# `result`) in this one process, and write what each printed, returned and left in runs/ (the
# summary and config of every run it made).
DRIVER = r"""
import contextlib, importlib, io, json, sys, time
from pathlib import Path

modules = json.loads(Path("modules.json").read_text())
steps = json.loads(Path("steps.json").read_text())
PLACEHOLDER = "runs/<logdir>/<run>"


def made():
    return {path.parent for path in Path("runs").rglob("summary.json")}


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if argv[1] == "main.py":
                code = importlib.import_module("main").main(argv[2:])
            else:
                code = importlib.import_module(modules[argv[2]]).main(argv[3:])
        except SystemExit as exit:
            code = exit.code or 0
    return code, out.getvalue(), err.getvalue()


results, latest = [], None
for step in steps:
    before = made()
    if "python" in step:
        scope = {}
        exec(step["python"], scope)
        results.append({**step, "result": scope["result"]})
        continue
    argv = [str(latest) if word == PLACEHOLDER else word for word in step["argv"]]
    started = time.perf_counter()
    code, out, err = run(argv)
    seconds = time.perf_counter() - started
    new = sorted(made() - before)
    runs = [{name: json.loads((d / f"{name}.json").read_text()) for name in ("summary", "config")}
            for d in new]
    latest = new[-1] if new else latest
    results.append({**step, "code": code, "out": out, "err": err, "runs": runs, "seconds": seconds})
Path("results.json").write_text(json.dumps(results))
"""

# what a reader would try beside a recipe's own commands (main.py's --plugins left out in the tree)
PROBES = {
    "A pruning criterion": [{"argv": ["python", "main.py", "--plugins", "my_criteria", "--help"]}],
    "An export format": [
        {"argv": ["python", "-m", "export", "--help"]},
        {"python": "from export import load\nresult = load('half.pt').training"},
    ],
}
# before any plugin is imported: main.py's --help, which must show none of theirs
FIRST = {"recipe": "", "argv": ["python", "main.py", "--help"]}


def steps_of(recipe: Recipe, way: str) -> list[dict]:
    steps = []
    for argv in recipe.commands():
        if argv[:2] == ["python", "main.py"] and "--help" not in argv:
            argv = [*argv, *SHORT]
        steps.append({"argv": argv})
    steps += PROBES.get(recipe.title, [])
    if way == IN_THE_TREE:
        steps = [{**step, "argv": without_plugins(step["argv"])} if "argv" in step else step
                 for step in steps]  # fmt: skip
    return [{**step, "recipe": recipe.title} for step in steps]


def prepare(tree: Path, way: str) -> None:
    """Apply the recipes to the copy `tree` as `way` says, and write the steps to run there."""
    steps = [FIRST] if way == AS_WRITTEN else []
    for recipe in recipes():
        if way == IN_THE_TREE and not recipe.modules:
            continue
        for block in recipe.code():
            name = plugin_file(block)
            if way == IN_THE_TREE and name:
                IN_TREE[name].move(tree, block.text)
            else:
                apply(block, tree)
        steps += steps_of(recipe, way)
    (tree / "steps.json").write_text(json.dumps(steps))
    (tree / "modules.json").write_text(json.dumps(MODULES))


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """A copy of the tree for each way, the recipes applied."""
    made = {}
    for way in (AS_WRITTEN, IN_THE_TREE):
        made[way] = copy_tree(tmp_path_factory.mktemp(way.replace(" ", "_")))
        prepare(made[way], way)
    return made


@pytest.fixture(scope="module")
def ran(trees) -> dict[str, list[dict]]:
    """way -> the results of its steps: both copies at once, each in a process of its own."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    processes = {
        way: subprocess.Popen([sys.executable, "-c", DRIVER], cwd=tree, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for way, tree in trees.items()
    }  # fmt: skip
    results = {}
    for way, process in processes.items():
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"{way}: the recipes' process failed:\n{output}"
        results[way] = json.loads((trees[way] / "results.json").read_text())
    return results


# -- what each recipe promises -----------------------------------------------------------------


def step(results: list[dict], *words: str) -> dict:
    """The result of the one step whose argv holds `words`, having exited 0."""
    (found,) = [r for r in results if "argv" in r and all(w in r["argv"] for w in words)]
    assert found["code"] == 0, f"{found['argv']}: exit {found['code']}\n{found['err']}"
    return found


def only_run(results: list[dict], *words: str) -> dict:
    (run,) = step(results, *words)["runs"]
    assert run["summary"]["status"] == "completed"
    return run


def plugins(way: str, *modules: str) -> list[str] | None:
    return list(modules) if way == AS_WRITTEN else None


def check_criterion(results, way):
    assert "--lowest_power" in step(results, "--help")["out"]
    run = only_run(results, "--lowest_power")
    summary = run["summary"]
    assert summary["criterion"] == {"name": "lowest", "label": "Lowest power", "lowest_power": 3.0}
    assert summary["method"] == "Lowest power" and summary["final_sparsity"] == 0.5
    assert run["config"]["plugins"] == plugins(way, "my_criteria")


def check_schedule(results, way):
    summary = only_run(results, "linear")["summary"]
    schedule = summary["schedule"]
    assert schedule["name"] == "linear" and schedule["epochs_pruned"] == [1, 2]
    assert summary["final_sparsity"] == pytest.approx(0.8)


def check_model(results, way):
    summary = only_run(results, "mlp")["summary"]
    assert summary["model"] == "mlp" and summary["compact"]["params_before"] == 792_586


def check_dataset(results, way):
    summary = only_run(results, "stripes")["summary"]
    # lenet300 on 16x16 images of one channel and two classes: 256*300 + 300*100 + 100*2
    assert summary["dataset"] == "stripes" and summary["flops_dense"] == 107_000


def check_optimizer(results, way):
    assert only_run(results, "nadam")["summary"]["options"]["opt"] == "nadam"


def check_export_format(results, way):
    assert step(results, "--to", "half")["out"].startswith("wrote half.pt (half")
    # the help's description wraps where the formats' summaries fall: compared word by word
    assert "a float16 state dict" in " ".join(step(results, "export", "--help")["out"].split())
    (loaded,) = [r for r in results if "python" in r]
    assert loaded["result"] is False  # the network, in eval mode


def check_sweep(results, way):
    listed = step(results, "list")["out"].splitlines()
    # its three runs of four epochs at its default seeds
    assert any(re.match(r"tiny +3 +12 .*FlipOut on digits, 4 epochs$", line) for line in listed)
    commands = step(results, "--dry-run")["out"].splitlines()
    assert len(commands) == 2
    for seed, line in enumerate(commands):
        assert line.startswith(f"python main.py -d digits -e 4 --seed {seed} --logdir tiny ")
        assert ("--plugins my_sweeps" in line) == (way == AS_WRITTEN)


CHECKS = {
    "A pruning criterion": check_criterion,
    "A schedule": check_schedule,
    "A model": check_model,
    "A dataset": check_dataset,
    "An optimizer": check_optimizer,
    "An export format": check_export_format,
    "A sweep": check_sweep,
}
CASES = [
    (recipe.title, way)
    for recipe in recipes()
    for way in ((AS_WRITTEN, IN_THE_TREE) if recipe.modules else (AS_WRITTEN,))
]


def test_every_recipe_is_checked_and_says_where_its_code_goes():
    found = recipes()
    assert [recipe.title for recipe in found] == list(CHECKS)
    every = {block for block in blocks(PAGE) if "recipe" in block.tags}
    assert every == {block for recipe in found for block in recipe.blocks}
    for recipe in found:
        for name in recipe.modules:
            missing = [words for words in IN_TREE[name].named if words not in recipe.words]
            assert not missing, f"{recipe.title}: the prose no longer says {missing}"


@pytest.mark.parametrize(("title", "way"), CASES, ids=[f"{t}, {w}" for t, w in CASES])
def test_the_recipe_works_where_it_says(ran, title, way):
    CHECKS[title]([r for r in ran[way] if r["recipe"] == title], way)


def test_without_its_plugin_the_command_line_has_none_of_its_names(ran):
    (first,) = [r for r in ran[AS_WRITTEN] if r["recipe"] == ""]
    assert first["code"] == 0
    for name in ("lowest", "--lowest_power", "--linear_ramp", "mlp", "stripes"):
        assert name not in first["out"]


def test_the_plugin_modules_are_in_the_house_style(trees):
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed beside this Python")
    modules = [name for recipe in recipes() for name in recipe.modules]
    tree = trees[AS_WRITTEN]
    for command in (["check"], ["format", "--check", "--diff"]):
        done = subprocess.run([ruff, *command, *modules], cwd=tree, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
