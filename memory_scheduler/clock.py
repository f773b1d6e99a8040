"""The one reader of the clock, and the detection of backward jumps.

Every "now" in the library comes from :func:`utc_now`, so freezegun and time-machine,
which patch ``datetime.now``, control the whole library. Nothing here waits: waits hand
their timeouts to threading primitives, which count real time even under a frozen clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional

__all__ = ["BACKWARD_JUMP", "ClockWatch", "utc_now"]

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
