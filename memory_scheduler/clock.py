"""The one reader of the clock, and the detection of backward jumps.

Every "now" in the library comes from :func:`utc_now`, so freezegun and time-machine,
which patch ``datetime.now``, control the whole library. Nothing here waits: waits hand
their timeouts to threading primitives, which count real time even under a frozen clock.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Optional

__all__ = ["BACKWARD_JUMP", "Budget", "ClockWatch", "utc_now"]

_UTC = timezone.utc

#: A step backwards by more than this recomputes every schedule; smaller steps (NTP
#: slewing) only delay runs by the step.
BACKWARD_JUMP = timedelta(seconds=1)


def utc_now() -> datetime:
    """The only clock read in the library; freezegun and time-machine patch it."""
    return datetime.now(_UTC)


class ClockWatch:
    """Remembers the last reading and tells when the clock went back.

    Not thread-safe on its own: the service calls it with its lock held.
    """

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: Optional[datetime] = None

    def observe(self, now: datetime) -> Optional[timedelta]:
        """Record ``now``; return how far the clock went back if that is more than
        :data:`BACKWARD_JUMP`, else None."""
        last, self.last = self.last, now
        if last is not None and now < last - BACKWARD_JUMP:
            return last - now
        return None


class Budget:
    """What is left of one timeout shared by several waits in a row (shutdown's).

    Each wait still hands its share to a threading primitive; nothing loops on this
    clock. It is ``time.monotonic``, real elapsed time, not the scheduler's clock. Under
    freezegun, which freezes it, every wait gets the whole timeout, as if alone.
    """

    __slots__ = ("_started", "_seconds")

    def __init__(self, seconds: float) -> None:
        self._started = time.monotonic()
        self._seconds = seconds

    def left(self) -> float:
        elapsed = time.monotonic() - self._started
        return max(0.0, self._seconds - max(0.0, elapsed))
