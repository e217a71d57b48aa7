"""A guard for the tests of what must never block, such as a FIFO where a file is read: a
regression fails its test within seconds instead of hanging the suite."""

import contextlib
import signal


@contextlib.contextmanager
def deadline(seconds: float, what: str):
    """Inside the block, a call still blocked after `seconds` (an open() of a FIFO waiting for a
    writer) is interrupted by SIGALRM, and the test fails naming `what`. Main thread only."""

    def expire(signum, frame):
        raise AssertionError(f"{what}: still blocked after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
