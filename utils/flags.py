"""argparse actions for a flag given more than once, shared by main.py's parser (cli.py), the
launcher's and bench's: never the last occurrence silently winning. Imports nothing but argparse,
so that `python -m experiments` parses its command line without torch."""

import argparse


def occurrences_before(namespace: argparse.Namespace, action: argparse.Action) -> list | None:
    """The values that earlier occurrences of `action`'s flag gave in this parse, or None when
    this is its first (the namespace then holds the default itself, or, as given_options parses,
    nothing)."""
    before = getattr(namespace, action.dest, action.default)
    return None if before is action.default or before is argparse.SUPPRESS else before


class Accumulated(argparse.Action):
    """A flag of several values that may be given again: each occurrence adds the values not
    given before, in order (`--prune_exclude conv1 --prune_exclude fc` is `--prune_exclude conv1
    fc`). One occurrence stores its values as given, as it always did, so that every
    config.json parses again to the options its run had."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = occurrences_before(namespace, self)
        if before is None:
            setattr(namespace, self.dest, list(values))
            return
        added = list(before)
        added += [value for value in dict.fromkeys(values) if value not in before]
        setattr(namespace, self.dest, added)


class GivenOnce(argparse.Action):
    """A flag of several values that together are one setting (--milestones): given again, it is
    refused, with the one spelling of both."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = occurrences_before(namespace, self)
        if before is not None:
            together = " ".join(map(str, [*before, *values]))
            raise argparse.ArgumentError(
                self, f"given twice: give its values once, as in {option_string} {together}"
            )
        setattr(namespace, self.dest, list(values))


class KeywordArguments(argparse.Action):
    """--model_kwargs, which may be given again: the arguments of every occurrence, stored
    sorted, so that the same arguments in another order are the same options when a run is
    resumed. A key given twice with different values is refused; with the same value it is
    the same argument."""

    def __call__(self, parser, namespace, values, option_string=None):
        pairs = [*(occurrences_before(namespace, self) or ()), *values]
        by_key: dict[str, str] = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            if by_key.setdefault(key, value) != value:
                raise argparse.ArgumentError(
                    self, f"{key} is given twice, as {by_key[key]} and {value}: give it once"
                )
        setattr(namespace, self.dest, sorted(set(pairs)))
