"""The fenced code blocks of README.md and docs/*.md, read by the tests that run them, so that
what a reader copies is what the suite ran. One extractor for every page."""

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str  # the fence's first word: python, bash, ...
    tags: tuple[str, ...]  # the fence's further words
    heading: str  # the nearest heading above
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of a markdown page, in order."""
    found, heading, opening = [], "", None
    lines = page.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if opening is None and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif opening is None and line.startswith("```"):
            opening, info = number, line[3:].split()
        elif opening is not None and line.strip() == "```":
            language, *tags = info or [""]
            text = "\n".join(lines[opening : number - 1]) + "\n"
            found.append(Block(page, opening, language, tuple(tags), heading, text))
            opening = None
    return found


def pages() -> list[Path]:
    """README.md and every page of docs/."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def code_block(page: Path, after: str, language: str = "python") -> str:
    """The first block of `language` below the first line of `page` that starts with `after`."""
    lines = page.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines, 1) if line.startswith(after))
    return next(b.text for b in blocks(page) if b.line > start and b.language == language)
