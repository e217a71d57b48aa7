"""Tie a run's process to the launcher that starts it: when the launcher dies, however it dies
(SIGKILL included), the run is sent SIGTERM, stops at a safe point keeping its checkpoint, and
is not left training unsupervised.

    python -I experiments/tether.py LAUNCHER_PID CORES PROGRAM [ARGS...]

runs as the launcher's child, asks Linux to send it SIGTERM when its parent dies
(prctl PR_SET_PDEATHSIG, which survives the exec below), checks that the parent is still
LAUNCHER_PID (a launcher that died before the prctl would otherwise never be noticed), pins
itself to CORES ("0,1", or "-" for no pinning) and then replaces itself with
`python PROGRAM ARGS...`: the run keeps this process's pid, so the launcher's handle on it stays
valid. Doing this here rather than in a `preexec_fn` keeps Python code out of the moment between
fork and exec, which is unsafe in a launcher with threads (its live view has one).

The signal goes when the thread that started the child ends; launchers start their runs from
their main thread. It is a stdlib-only script, run by path and isolated (`-I`: neither this
folder nor PYTHONPATH on its path), so that it works from any working directory. Elsewhere than
on Linux there is no prctl, and runs are not tied to their launcher.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
# what a run that lost its launcher before it started ends with: stopped, as by SIGTERM
EXIT_PARENT_GONE = 128 + signal.SIGTERM


def tie_to_parent(parent_pid: int) -> bool:
    """Ask for SIGTERM when the parent dies; False when it is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # after the prctl: a parent that dies from now on is noticed by the kernel; one that died
    # before it has left this process to another parent (init, or a subreaper)
    return os.getppid() == parent_pid


def main(argv: list[str]) -> int:
    parent_pid, cores, program, *arguments = argv
    if not tie_to_parent(int(parent_pid)):
        return EXIT_PARENT_GONE
    if cores != "-":
        os.sched_setaffinity(0, [int(core) for core in cores.split(",")])
    os.execv(sys.executable, [sys.executable, program, *arguments])
    return 0  # not reached: execv replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
