"""The paper's experiments as named sweeps of main.py runs, and the launcher that runs them on
this machine or on a Slurm cluster: `python -m experiments` (see experiments/__main__.py)."""
