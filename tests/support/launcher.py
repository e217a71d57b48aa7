"""The sweep launcher (python -m experiments) as the tests drive it: its cheap commands run in this
process, and the environment that reaches the single-node Slurm cluster .ci/slurm-cluster starts
for the tests, when one answers."""

import os
import subprocess
from pathlib import Path

from experiments import __main__ as launcher

SLURM_CONF = Path("/tmp/flipout-slurm/slurm.conf")


def in_process(capsys, *argv: str) -> tuple[int, str, str]:
    """`python -m experiments ...` in this process: the cheap commands need no fresh interpreter."""
    code = launcher.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def slurm_environment() -> dict | None:
    """The environment that reaches the test cluster, or None when none answers."""
    conf = os.environ.get("SLURM_CONF") or (str(SLURM_CONF) if SLURM_CONF.exists() else None)
    if conf is None:
        return None
    environment = {**os.environ, "SLURM_CONF": conf}
    try:
        answer = subprocess.run(["sinfo", "-h"], env=environment, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return environment if answer.returncode == 0 else None
