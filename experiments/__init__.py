"""The paper's experiments as named sweeps of main.py runs, and the launcher that runs them on
this machine or on a Slurm cluster: `python -m experiments` (see experiments/__main__.py)."""

from pathlib import Path


def shown(path: Path) -> str:
    """A path as the launcher's lines show it: relative to the working directory where it is
    below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
