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


def slurm_commands(cwd: Path, monkeypatch, cpus: int, memory_mb: int) -> None:
    """Slurm's query commands answering for one partition, `debug`, of one node of `cpus` CPUs
    and `memory_mb` MB, put first on PATH; sbatch fails. For the refusals a launch makes before
    it submits anything; what reaches a real cluster is tested against .ci/slurm-cluster."""
    tools = cwd / "slurm"
    tools.mkdir()
    node, total = f"node1|{cpus}|{memory_mb}|(null)", f"TotalCPUs={cpus}"
    scripts = {
        "sinfo": f'case "$*" in *-N*) echo "{node}";; *) echo "debug*";; esac',
        "scontrol": f'echo "PartitionName=debug MaxCPUsPerNode=UNLIMITED State=UP {total}"',
        "sbatch": "exit 1",
    }
    for name, body in scripts.items():
        (tools / name).write_text(f"#!/bin/sh\n{body}\n")
        (tools / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_CONF", raising=False)
