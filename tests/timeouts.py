"""A time limit for a call that must answer (no hang): shared by the bad-input and privacy tests."""
import signal
from contextlib import contextmanager


@contextmanager
def time_limit(seconds: float):
    """Raise TimeoutError in the block once ``seconds`` have passed (SIGALRM: main thread, POSIX)."""

    def stop(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
