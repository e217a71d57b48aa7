"""torchrun with main.py's endings: `python -m utils.launch` takes torchrun's arguments unchanged.

    python -m utils.launch --nproc_per_node 4 main.py -m vgg19 -d cifar10 -bs 128 ...
    python -m utils.launch --nproc_per_node 4 main.py --resume runs/vgg19/<run>

It runs torchrun's own launcher (the elastic agent) in this process; only the ending differs.
torchrun answers Ctrl-C or SIGTERM with a warning per worker, its agent's traceback and exit code
1, even when every worker stopped cleanly and wrote its summary; and a failed worker with a page
of error report. Here, a stop signal ends the launch with 130 / 143 once the workers have stopped
(each writes one line at most, rank 0 the resume command), and a failed worker with one line per
failed rank, saying how it ended, and the exit code of the first (see utils/errors.py).
"""

import logging
import signal
import sys

from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from utils.errors import quiet_closed_pipes

# what main.py's exit codes mean, for the line about a failed rank
ENDINGS = {
    2: "stopped on a mistake in its input (see its error line)",
    3: "diverged",
    4: "could not write its files",
    5: "found its run directory in use",
    6: "lost another rank",
}


def signal_name(number: int) -> str | None:
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def how_it_ended(exitcode: int) -> str:
    if exitcode < 0:
        return f"was killed by {signal_name(-exitcode) or f'signal {-exitcode}'}"
    if exitcode > 128 and signal_name(exitcode - 128):
        return f"stopped on {signal_name(exitcode - 128)}"
    return ENDINGS.get(exitcode, f"exited with code {exitcode}")


def exit_code(exitcode: int) -> int:
    """A worker's exit status as a shell would report it: 128 + n for death by signal n."""
    return 128 - exitcode if exitcode < 0 else exitcode


def quiet_torchrun() -> None:
    """torchrun's log lines (the OMP_NUM_THREADS banner, a line per signalled or failed worker)
    are noise here: the workers report for themselves, and so does main() below. torch sets
    levels on loggers of its own modules, so each one is set, not just their parent."""
    loggers = logging.root.manager.loggerDict
    for name in ["torch.distributed", *(n for n in loggers if n.startswith("torch.distributed"))]:
        logging.getLogger(name).setLevel(logging.CRITICAL)


@quiet_closed_pipes()
def main(argv: list[str] | None = None) -> int:
    quiet_torchrun()
    args = torchrun.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        torchrun.run(args)
    except SignalException as stopped:
        return 128 + int(stopped.sigval)
    except ChildFailedError as failed:
        failures = sorted(failed.failures.items())
        for rank, failure in failures:
            print(f"rank {rank} (pid {failure.pid}) {how_it_ended(failure.exitcode)}",
                  file=sys.stderr)  # fmt: skip
        return exit_code(failures[0][1].exitcode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
