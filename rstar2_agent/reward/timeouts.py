"""A soft, signal-based time limit for Python-level work (sympy, math-verify) in the main thread.

Why "soft": ``SIGALRM`` interrupts Python bytecode but not a long C call (a huge integer power),
so this only shortens the common slow cases. The hard limit is :class:`rstar2_agent.reward.pool.RewardPool`,
which kills the worker process.

The alarm is used only when it is safe: in the main thread, and only when no other ``ITIMER_REAL``
timer is armed (an outer caller such as verl's naive reward manager may own the alarm; replacing
or cancelling its timer would break its own limit).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["SoftTimeout", "alarm_available", "soft_time_limit"]


class SoftTimeout(Exception):
    """Raised inside a :func:`soft_time_limit` block when its time is up."""


def alarm_available() -> bool:
    """True when this thread may arm ``SIGALRM`` without disturbing anyone else.

    >>> isinstance(alarm_available(), bool)
    True
    """
    if not hasattr(signal, "setitimer"):
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    return signal.getitimer(signal.ITIMER_REAL)[0] == 0.0


@contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`SoftTimeout` in the block after ``seconds``; a no-op when unavailable.

    >>> with soft_time_limit(1.0):
    ...     x = 1 + 1
    """
    if not seconds or seconds <= 0 or not alarm_available():
        yield
        return

    def _on_alarm(signum, frame):  # noqa: ARG001 - signal handler signature
        raise SoftTimeout(f"soft time limit of {seconds}s exceeded")

    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
