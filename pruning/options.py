"""Options that a component declares itself, so that the command line is built from the component
rather than the component from the command line.

A pruning criterion or schedule is a dataclass; each field that is also a flag of main.py carries
its flag's name, parser, default and help:

    @dataclass
    class FlipOut(Criterion):
        p: float = option("flipout_p", POSITIVE, 2.0, "FlipOut score |w|^p / (flips + 1)")

`FlipOut(p=1)` is the library's spelling, `--flipout_p 1` the command line's; both are checked by
the same parser (`Bounded.check`), and cli.py adds the flag from the field. Fields without an
option (a schedule's `epochs`, which is `-e`) are filled from the context the caller gives.
"""

import argparse
import contextlib
import contextvars
import dataclasses
import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from typing import Any

# Whether messages name options by their flags (built from the command line) or by their
# keywords (built in Python).
_BY_FLAG = contextvars.ContextVar("by_flag", default=False)


class Bounded:
    """An argparse `type` and a value check in one: a finite number of `kind` with
    low <= x <= high and above < x < below; the values in `also` (such as -1 for "never") are
    accepted as they are."""

    def __init__(
        self,
        kind: type,
        low: float | None = None,
        high: float | None = None,
        *,
        above: float | None = None,
        below: float | None = None,
        also: tuple = (),
    ):
        self.kind, self.also = kind, also
        self.bounds = ((low, "at least"), (high, "at most"), (above, "greater than"),
                       (below, "less than"))  # fmt: skip
        self.__name__ = kind.__name__  # argparse names the type in its messages

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            noun = "an integer" if self.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        problem = self.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value

    def problem(self, value) -> str | None:
        """Why `value` is out of range, or None."""
        if value in self.also:
            return None
        if self.kind is float and not math.isfinite(value):
            return "must be a finite number"
        fails = {
            "at least": lambda b: value < b,
            "at most": lambda b: value > b,
            "greater than": lambda b: value <= b,
            "less than": lambda b: value >= b,
        }
        for bound, words in self.bounds:
            if bound is not None and fails[words](bound):
                extra = f" (or {', '.join(map(str, self.also))})" if self.also else ""
                shown = bound if self.kind is int else f"{bound:g}"
                return f"must be {words} {shown}{extra}"
        return None

    def check(self, name: str, value) -> None:
        """ValueError naming `name` unless `value` is a number of this kind and in range."""
        wrong_kind = isinstance(value, bool) or not isinstance(
            value, numbers.Integral if self.kind is int else numbers.Real
        )
        if wrong_kind:
            noun = "an integer" if self.kind is int else "a number"
            raise ValueError(f"{name} must be {noun}, got {value!r}")
        problem = self.problem(value)
        if problem:
            raise ValueError(f"{name} {problem}, got {value}")


class Choice:
    """An argparse `type` and a value check in one, as Bounded is for numbers, for an option that
    is one of a few words."""

    def __init__(self, *words: str):
        self.words = words
        self.__name__ = "choice"  # argparse names the type in its messages

    def __call__(self, text: str) -> str:
        if text not in self.words:
            raise argparse.ArgumentTypeError(f"choose {' or '.join(self.words)}, got {text!r}")
        return text

    def check(self, name: str, value) -> None:
        """ValueError naming `name` unless `value` is one of the words."""
        if value not in self.words:
            raise ValueError(f"{name} must be {' or '.join(map(repr, self.words))}, got {value!r}")


# fractions of the weights: a sparsity may be 0, a rate must remove something; neither reaches 1
SPARSITY = Bounded(float, low=0, below=1)
RATE = Bounded(float, above=0, below=1)


@dataclasses.dataclass(frozen=True)
class Option:
    """A field's command-line flag: `--{flag}`, parsed by `parse`, with its default and help.
    `level`: the option sets how far the method prunes (a rate, a target), which a curve of
    accuracy against sparsity varies from point to point, rather than which method it is."""

    flag: str
    parse: Callable[[str], Any] | None
    default: Any
    help: str
    level: bool = False

    def argparse_kwargs(self) -> dict:
        if self.parse is bool:
            return {"action": "store_true", "help": self.help}
        kwargs = {"type": self.parse, "default": self.default, "help": self.help}
        if isinstance(self.parse, Choice):
            kwargs["metavar"] = "{" + ",".join(self.parse.words) + "}"
        return kwargs


def option(flag: str, parse, default, help: str, *, level: bool = False):
    """A dataclass field that is also the flag `--{flag}` (parse=bool: a switch); `level`: it
    sets how far the method prunes (Option)."""
    spec = Option(flag, parse, default, help, level)
    return dataclasses.field(default=default, metadata={"option": spec})


def options_of(cls) -> Iterator[tuple[str, Option]]:
    """(field name, Option) for each field of the dataclass `cls` that is a flag."""
    if not dataclasses.is_dataclass(cls):
        return
    for field in dataclasses.fields(cls):
        if "option" in field.metadata:
            yield field.name, field.metadata["option"]


def flags_named() -> bool:
    """Whether messages name options by their flags (inside `by_flag`)."""
    return _BY_FLAG.get()


def spelled(keyword: str) -> str:
    """How messages name an argument: its flag from the command line, its keyword in Python."""
    return f"--{keyword}" if flags_named() else keyword


def named(cls, field: str) -> str:
    """How messages name `field` of `cls`: `--flag` when built from the command line, the
    keyword otherwise."""
    flags = dict(options_of(cls))
    if flags_named() and field in flags:
        return f"--{flags[field].flag}"
    return field


def check_fields(obj) -> None:
    """Check every option of a dataclass instance that has a checking parser (Bounded, Choice)."""
    for name, spec in options_of(type(obj)):
        value = getattr(obj, name)
        # None is a value only where it is the default ("not set")
        unset = value is None and spec.default is None
        if isinstance(spec.parse, Bounded | Choice) and not unset:
            spec.parse.check(named(type(obj), name), value)


@contextlib.contextmanager
def by_flag():
    token = _BY_FLAG.set(True)
    try:
        yield
    finally:
        _BY_FLAG.reset(token)


def from_values(cls, values: Mapping[str, Any], **context):
    """An instance of `cls` with each field taken from `context` where it names the field, else
    from `values` (keyed by flag, as argparse's namespace) where the field is an option; messages
    name flags."""
    kwargs = {}
    for field in dataclasses.fields(cls):
        spec = field.metadata.get("option")
        if field.name in context:
            kwargs[field.name] = context[field.name]
        elif spec is not None and spec.flag in values:
            kwargs[field.name] = values[spec.flag]
    with by_flag():
        return cls(**kwargs)


def describe_options(obj) -> dict[str, Any]:
    """The instance's options under their flags, as a run's summary records them."""
    return {spec.flag: getattr(obj, name) for name, spec in options_of(type(obj))}
