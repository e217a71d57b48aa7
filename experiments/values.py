"""What a value read from a run's files may be, for the report and the launcher alike: a number
arithmetic can use, an accuracy, a count of epochs; and how a message or a table cell quotes a
value from a file that may hold anything (on one line, cut short)."""

# one definition: the method labels (pruning/registry.py) check a noise scale with it too
from pruning.registry import finite_number

# a damaged file can hold a value of any size; messages and table cells show this much of it
SHOWN_CHARACTERS = 40


def one_line(text: str) -> str:
    """`text` fit for a report line or a table cell: on one line, cut short when long, without
    the `|` that would split a markdown cell."""
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 1] + "…"


def shown(value) -> str:
    """A value from a file as a message quotes it."""
    return one_line(repr(value))


def cell(value) -> str:
    """A value from a file as a table cell shows it."""
    return one_line(str(value))


def is_percentage(value) -> bool:
    """Whether `value` can be an accuracy as a summary.json records it: a number from 0 to 100."""
    return finite_number(value) and 0 <= value <= 100


def is_count(value, least: int) -> bool:
    """Whether `value` is a JSON integer (not a bool) of at least `least`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def epochs_problem(summary: dict) -> str | None:
    """Why a summary's count of epochs cannot be a run's, or None: where recorded, `epochs` (all
    it trains) a whole number from 1 and `epochs_completed` one from 0; a completed run has
    trained all its epochs (more, where a resume with a shorter -e ended it as it was, main.py's
    "nothing to train")."""
    completed = summary.get("status") == "completed"
    lead = "completed, but " if completed else ""
    for key, least in (("epochs", 1), ("epochs_completed", 0)):
        value = summary.get(key)
        if value is not None and not is_count(value, least):
            return f"{lead}{key} is {shown(value)}, not a whole number from {least}"
    done, planned = summary.get("epochs_completed"), summary.get("epochs")
    if completed and done is not None and planned is not None and done < planned:
        return f"completed, but epochs_completed is {done}, fewer than its epochs ({planned})"
    return None
