"""The fenced code blocks, headings and links of README.md and docs/*.md, read by the tests that
run them and check them, so that what a reader copies is what the suite ran. One extractor for
every page.

A fence's info string is the block's language and then its tags, ```` ```bash gpu ````: the
language says how the block runs (tests/test_docs.py), a tag why it is not run there.
"""

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT

README = ROOT / "README.md"
FENCE = "```"
# python -m MODULE -> the module whose main(argv) it runs
MODULES = {
    "experiments": "experiments.__main__",
    "experiments.report": "experiments.report",
    "export": "export.formats",
    "export.inspect": "export.inspect",
}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str  # the fence's first word: python, bash, text
    tags: tuple[str, ...]  # the fence's further words
    heading: str  # the nearest heading above
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def commands(self) -> list[list[str]]:
        """A bash block's commands, one per line once continuation lines are joined, as argv
        lists without comments."""
        joined = self.text.replace("\\\n", " ")
        return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def blocks(page: Path) -> list[Block]:
    """Every fenced block of a markdown page, in order."""
    found, heading, opening = [], "", None
    lines = page.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if opening is None and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif opening is None and line.startswith(FENCE):
            opening, info = number, line[3:].split()
        elif opening is not None and line.strip() == FENCE:
            language, *tags = info or [""]
            text = "\n".join(lines[opening : number - 1]) + "\n"
            found.append(Block(page, opening, language, tuple(tags), heading, text))
            opening = None
    return found


def pages() -> list[Path]:
    """README.md and every page of docs/."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def find_block(page: Path, after: str, language: str = "python") -> Block:
    """The first block of `language` below the first line of `page` that starts with `after`."""
    lines = page.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines, 1) if line.startswith(after))
    return next(b for b in blocks(page) if b.line > start and b.language == language)


def code_block(page: Path, after: str, language: str = "python") -> str:
    """The text of `find_block(page, after, language)`."""
    return find_block(page, after, language).text


def in_repository(code: str) -> str:
    """A snippet that imports the installed library (`flipout`) as the repository names it."""
    return code.replace("from flipout import", "from pruning import")


# -- headings and links ------------------------------------------------------------------------


def prose(page: Path) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced blocks."""
    inside, found = False, []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith(FENCE):
            inside = not inside
        elif not inside:
            found.append((number, line))
    return found


def headings(page: Path) -> list[tuple[int, str]]:
    """(level, text) of every heading, in order."""
    found = []
    for _, line in prose(page):
        match = re.match(r"(#{1,6}) (.+)", line)
        if match:
            found.append((len(match[1]), match[2].strip()))
    return found


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on `page`; a repeated heading's gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, text in headings(page):
        base = slug(text)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link outside code, in order."""
    found = []
    for number, line in prose(page):
        line = re.sub(r"`[^`]*`", "", line)  # a link in inline code is not a link
        found += [(number, target) for target in re.findall(r"\]\(([^)\s]+)\)", line)]
    return found
