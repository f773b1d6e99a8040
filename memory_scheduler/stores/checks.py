"""Argument checks shared by the stores, and the stored form of instants.

Every instant is stored as epoch microseconds (UTC): :func:`to_us` checks and converts
one, :func:`from_us` and :class:`InstantCache` convert back. The checks raise
:class:`~memory_scheduler.errors.InvalidValue` before a store writes anything.
"""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta, timezone
from typing import Collection, Dict, List, Sequence, Tuple

from ..errors import InvalidValue
from .records import ClaimRequest, RunState

__all__ = [
    "InstantCache",
    "check_name",
    "check_requests",
    "check_state",
    "from_us",
    "seconds_us",
    "to_us",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def to_us(value: datetime, what: str = "scheduled_utc") -> int:
    """Epoch microseconds of an aware datetime: the stored form of every instant."""
    if not isinstance(value, datetime):
        raise InvalidValue(f"{what}={value!r}: expected an aware datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidValue(f"{what}={value!r}: naive datetime; give an aware (UTC) one")
    return (value - _EPOCH) // _US


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def seconds_us(name: str, value: object, *, allow_zero: bool = False) -> int:
    """A positive, finite number of seconds as microseconds, or InvalidValue."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero) \
            or value > threading.TIMEOUT_MAX:
        raise InvalidValue(f"{name}={value!r}: expected a number of seconds "
                           f"{'>= 0' if allow_zero else '> 0'}")
    return round(value * 1_000_000)


def check_name(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidValue(f"{name}={value!r}: expected a non-empty string")
    return value


def check_state(value: object, allowed: Collection[RunState], method: str) -> RunState:
    try:
        state = RunState(value)
    except ValueError:
        state = None
    if state is None or state not in allowed:
        names = ", ".join(sorted(s.value for s in allowed))
        raise InvalidValue(f"{method}(state={value!r}): expected one of {names}")
    return state


def check_requests(items: Sequence[ClaimRequest]) -> List[Tuple[str, int, bool]]:
    """Validate a batch before anything is written: (job, epoch µs, exclusive) each.

    A burst names one instant many times: each distinct datetime is converted once.
    """
    out = []
    seen: Dict[datetime, int] = {}
    for item in items:
        if not isinstance(item, tuple) or len(item) not in (2, 3):
            raise InvalidValue(f"claim request {item!r}: expected ClaimRequest(job, "
                               "scheduled_utc, exclusive=False)")
        job, when = item[0], item[1]
        if type(job) is not str or not job:
            check_name("job", job)
        try:
            at = seen[when]
        except (KeyError, TypeError):  # TypeError: unhashable, to_us will say what it is
            at = seen[when] = to_us(when)
        out.append((job, at, len(item) == 3 and bool(item[2])))
    return out


class InstantCache(Dict[int, datetime]):
    """:func:`from_us` memoised for one batch, where one instant recurs many times."""

    def __missing__(self, key: int) -> datetime:
        value = self[key] = from_us(key)
        return value
