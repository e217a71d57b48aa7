"""Stopping on SIGINT and SIGTERM without ever losing the signal, and within a bounded time.

Python runs a signal handler in the main thread between two bytecodes, wherever that thread is,
also inside a library's cleanup code, where an exception the handler raises can be swallowed
("Exception ignored in ..."). A DataLoader starting its workers forks, and a handler that raised
during the fork was lost with its signal, after it had already set both signals to be ignored.
So the handlers here only record the signal. The run stops at the next safe point, after a
training step, an evaluation batch or a checkpoint write, by raising Interrupted there; under
torchrun the ranks agree at points where they synchronise anyway, so that none is left waiting in
a collective.

A watchdog thread bounds the time from the signal to the exit. If the main thread has not stopped
`grace` seconds after the first signal (blocked in a collective, a long kernel, a hung file
system), the watchdog calls the run's `on_forced_exit` (which writes the summary) and ends the
process with `os._exit`. That is safe at any moment: every file a run replaces is replaced
atomically, and the files it appends to are rebuilt from the checkpoint when it resumes. It waits
longer while a checkpoint is being written (`critical`), so that a finished epoch is not lost.
"""

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Slurm sends SIGKILL 30 s after SIGTERM by default (KillWait), and torchrun waits 30 s for its
# workers: 20 s leaves room for the summary and the process's own exit.
GRACE_SECONDS = 20.0
# a checkpoint write in progress may extend the grace up to this
CRITICAL_GRACE_SECONDS = 60.0


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the run stops and keeps its last checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Records SIGINT and SIGTERM (the first one decides the exit code; any number may follow)
    and enforces the grace period. `install` at the very start, `release` at the very end."""

    def __init__(
        self, grace: float = GRACE_SECONDS, critical_grace: float = CRITICAL_GRACE_SECONDS
    ):
        self.grace = grace
        self.critical_grace = critical_grace
        self.signum: int | None = None
        self.received_at: float | None = None
        self.count = 0
        # Called by the watchdog, from its thread, before a forced exit, with the signal; returns
        # the line to print (None: print nothing) and the exit code.
        self.on_forced_exit: Callable[[int], tuple[str | None, int]] | None = None
        self._acted = False
        self._critical = 0
        self._previous: dict = {}
        self._released = threading.Event()
        self._watchdog: threading.Thread | None = None

    # -- the signal side ------------------------------------------------------------------------

    def install(self) -> "StopSignals":
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._record)
        self._watchdog = threading.Thread(target=self._watch, name="stop-watchdog", daemon=True)
        self._watchdog.start()
        return self

    def _record(self, signum, frame) -> None:
        # Only assignments: nothing here can raise or take a lock the interrupted code holds.
        self.count += 1
        if self.signum is None:
            self.received_at = time.monotonic()
            self.signum = signum

    def release(self, ignore_further: bool = False) -> None:
        """Stop the watchdog; restore the previous handlers, or ignore any further signal (for a
        process that is about to exit, so that a late Ctrl-C cannot print a traceback)."""
        self._released.set()
        for sig, previous in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if ignore_further else previous)
        self._previous = {}

    # -- the main thread's side -------------------------------------------------------------------

    @property
    def requested(self) -> int | None:
        """The first signal received and not yet acted on, or None."""
        return None if self._acted else self.signum

    def check(self) -> None:
        """Raise Interrupted if a signal arrived: a safe point to stop at."""
        if self.requested is not None:
            raise self.interrupted()

    def interrupted(self, signum: int | None = None) -> Interrupted:
        """The exception to stop with, for this process's signal or, under torchrun, for one
        another rank received; from now on `requested` is None."""
        self._acted = True
        return Interrupted(signum or self.signum)

    @contextlib.contextmanager
    def critical(self):
        """A section the watchdog lets finish (within `critical_grace`): a checkpoint write."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1

    # -- the watchdog ---------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._released.wait(0.1):
            if self.received_at is None:
                continue
            waited = time.monotonic() - self.received_at
            limit = self.critical_grace if self._critical else self.grace
            if waited >= limit:
                self._force_exit(self.signum)

    def _force_exit(self, signum: int) -> None:
        name = signal.Signals(signum).name
        line = f"interrupted by {name}; no safe point to stop at was reached in {self.grace:.0f} s"
        code = 128 + signum
        if self.on_forced_exit is not None:
            # the exit must happen whatever the summary's fate
            with contextlib.suppress(BaseException):
                line, code = self.on_forced_exit(signum)
        if line:
            print(line, file=sys.stderr, flush=True)
        os._exit(code)
