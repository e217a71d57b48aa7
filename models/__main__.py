"""`python -m models list [GLOB]`: the names `-m` takes, one a line: the built-in networks, then
timm's (`timm.list_models(GLOB)`) and torchvision's classification models, prefixed as `-m` takes
them. GLOB is matched against the library's own name (`'vit_tiny*'`); with a prefix
(`'timm:vit_tiny*'`) only that library is listed. Without timm installed, its names are left out
with a note on stderr.
"""

import fnmatch
import sys

from models import MODELS, SOURCES
from utils.errors import OneLineParser, UserError, command


def names(pattern: str) -> list[str]:
    prefix, colon, rest = pattern.partition(":")
    only = prefix if colon and prefix in SOURCES else None
    pattern = rest if only else pattern
    found = [] if only else fnmatch.filter(sorted(MODELS), pattern)
    for name, source in SOURCES.items():
        if only not in (None, name):
            continue
        try:
            found += [f"{name}:{arch}" for arch in source.names(pattern)]
        except UserError as error:  # the library is not installed
            print(f"note: {error}", file=sys.stderr)
    return found


@command
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m models", description="List the networks that main.py's -m takes."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="the names -m takes, one a line")
    listing.add_argument(
        "pattern", metavar="GLOB", nargs="?", default="*",
        help="only names that match, such as 'vit_tiny*' or 'timm:resnet*' (default: all)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    found = names(args.pattern)
    for name in found:
        print(name)
    if not found:
        print(f"no model name matches {args.pattern!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
