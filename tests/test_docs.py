"""The front page and the docs as a reader meets them: every code block runs as written, or its
fence says why not; every link and table of contents leads somewhere; README.md stays a front page.

A fence's first word is the block's language, and that says how it runs:

- `python`: executed in this process, `from flipout import` read as `from pruning import` (the
  installed name and the repository's; tests/test_packaging.py runs the README's example against
  the installed wheel). A top-level `print(...)  # OUTPUT` must print the line OUTPUT.
- `bash`: each command, continuation lines joined and comments dropped, is one of the project's
  entry points and runs in this process through its `main(argv)`: `python main.py ...` (with
  `--limit_batches 2 --num_workers 0` added: the same epochs, prunes and files, on two batches an
  epoch), `python -m experiments`, `-m experiments.report`, `-m export`, `-m export.inspect`.
- `text`: output, a layout or a picture; not code.

A page's blocks run in order in one fresh directory, as a reader following the page would run
them, so a block may use what an earlier one made (a registered criterion, an exported file).
`runs/<logdir>/<run>` stands for the reader's own run: here a short FlipOut run on digits.

The words after the language are tags, each a reason why the block is not run here (TAGS). A
block that another test runs with more to check is left to it (RUN_ELSEWHERE). Any other python
or bash block runs, and the test checks that each did, so a new block cannot slip through.
"""

import contextlib
import dataclasses
import importlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import main as run_main
from data import DATASETS
from experiments.sweeps import SWEEPS
from export.formats import FORMATS
from models import MODELS
from pruning import CRITERIA, SCHEDULES
from tests.support.blocks import (
    MODULES,
    README,
    ROOT,
    Block,
    anchors,
    blocks,
    find_block,
    headings,
    in_repository,
    links,
    pages,
    prose,
    slug,
)
from training import OPTIMIZERS

TAGS = {
    "gpu": "needs a CUDA GPU, or is of use only with one",
    "paper": "the paper's scale: CIFAR-10 or Imagenette, days on a GPU, or the runs they leave",
    "slow": "runs offline on the CPU, but for minutes: the demo, the test suite itself, a sweep",
    "cluster": "needs Slurm or several machines",
    "server": "serves until stopped (TensorBoard)",
    "download": "installs packages from the network",
    "recipe": "a recipe that adds to the repository: tests/test_recipes.py applies it to a copy of "
    "the tree and runs it there",
}
# (page, the line above the block, language) -> the tests that run it, checking what it claims
RUN_ELSEWHERE = {
    ("README.md", "## FlipOut in your own training loop", "python"): (
        "tests/test_library.py",
        "tests/test_packaging.py",
    ),
    ("docs/runs.md", "`model.pt` (`--save_model`) loads", "python"): ("tests/test_robustness.py",),
    ("docs/sparsity.md", "`--init_from PATH`", "bash"): ("tests/test_faults_export_report.py",),
}
SHORT = ["--limit_batches", "2", "--num_workers", "0"]
PLACEHOLDER_RUN = "runs/<logdir>/<run>"
MAX_README_LINES = 260


def elsewhere() -> set[Block]:
    return {find_block(ROOT / page, after, language) for page, after, language in RUN_ELSEWHERE}


def to_run(page: Path) -> list[Block]:
    """The blocks of `page` that this test runs."""
    skipped = elsewhere()
    return [
        block
        for block in blocks(page)
        if block.language in ("python", "bash") and not block.tags and block not in skipped
    ]


@contextlib.contextmanager
def registries_kept() -> Iterator[None]:
    """A page may register a criterion, a sweep or an export format, as its recipe says; the
    next page must not see it."""
    kept = [(registry, dict(registry)) for registry in
            (CRITERIA, SCHEDULES, MODELS, DATASETS, OPTIMIZERS, SWEEPS, FORMATS)]  # fmt: skip
    try:
        yield
    finally:
        for registry, entries in kept:
            registry.clear()
            registry.update(entries)


def placeholder_run(here: Path) -> Path:
    """The reader's own run of `runs/<logdir>/<run>`: made once per page, when a block asks."""
    run_dir = here / "placeholder-run"
    if not run_dir.exists():
        argv = ["-e", "3", "--prune_freq", "1", "--quiet", "--run_dir", str(run_dir), *SHORT]
        assert run_main.main(argv) == 0
    return run_dir


def run_command(argv: list[str], block: Block) -> None:
    if argv[:2] == ["python", "main.py"]:
        code = run_main.main([*argv[2:], *SHORT])
    elif argv[:2] == ["python", "-m"] and argv[2] in MODULES:
        code = importlib.import_module(MODULES[argv[2]]).main(argv[3:])
    else:
        raise AssertionError(
            f"{block.where}: {' '.join(argv)} is not an entry point this test runs ({MODULES}, "
            f"main.py); tag the block with why it does not run here ({', '.join(TAGS)})"
        )
    assert code == 0, f"{block.where}: {' '.join(argv)} exited with {code}"


def run_block(block: Block, here: Path) -> None:
    text = block.text
    if PLACEHOLDER_RUN in text:
        text = text.replace(PLACEHOLDER_RUN, str(placeholder_run(here)))
    if block.language == "python":
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(in_repository(text), block.where, "exec"), {"__name__": "__main__"})
        for shown in re.findall(r"^print\(.*\)  # (.+)$", text, re.MULTILINE):
            assert shown in printed.getvalue().splitlines(), (
                f"{block.where}: the block says it prints {shown!r}; it printed "
                f"{printed.getvalue()!r}"
            )
    else:
        for argv in dataclasses.replace(block, text=text).commands():
            run_command(argv, block)


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_block_runs_or_says_why_not(page, tmp_path, monkeypatch):
    for block in blocks(page):
        assert block.language in ("python", "bash", "text"), (
            f"{block.where}: a fence names its language: python, bash, or text for output"
        )
        unknown = sorted(set(block.tags) - set(TAGS))
        assert not unknown, f"{block.where}: unknown tags {unknown}; the tags are {TAGS}"
        assert not (block.tags and block.language == "text"), f"{block.where}: text never runs"
    monkeypatch.chdir(tmp_path)
    ran = []
    with registries_kept():
        for block in to_run(page):
            run_block(block, tmp_path)
            ran.append(block)
    untagged = {b for b in blocks(page) if b.language != "text" and not b.tags}
    assert set(ran) == untagged - elsewhere(), "a block was neither run nor tagged"


def test_the_blocks_left_to_other_tests_are_read_there():
    for (page, after, language), tests in RUN_ELSEWHERE.items():
        block = find_block(ROOT / page, after, language)
        assert not block.tags, f"{block.where} is run elsewhere, so it needs no tag"
        for test in tests:
            source = (ROOT / test).read_text()
            assert after.lstrip("# ") in source, f"{test} no longer reads {block.where}"


def test_no_fence_is_indented_where_the_extractor_would_miss_it():
    for page in pages():
        for number, line in prose(page):
            assert not line.lstrip().startswith("```"), f"{page.name}:{number}: indented fence"


def test_every_relative_link_leads_to_a_file_and_heading():
    broken = []
    for page in pages():
        for number, target in links(page):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}:{number}: {target}: no such file")
            elif anchor and anchor not in anchors(file):
                broken.append(f"{page.name}:{number}: {target}: no such heading")
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_front_page_with_a_table_of_contents():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines: move detail to docs/"
    start = lines.index("## Contents")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("#"))
    contents = "\n".join(lines[start:end])
    sections = [text for level, text in headings(README) if level == 2 and text != "Contents"]
    for section in sections:
        anchor = f"(#{slug(section)})"
        assert anchor in contents, f"the contents do not list {section!r}"
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in contents, f"the contents do not list docs/{page.name}"
