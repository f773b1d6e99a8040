"""The cron dialect, and :class:`CronSchedule` which evaluates it on a zone's wall clock.

Pure time arithmetic: nothing here reads the clock; "now" is always an argument.

Evaluation happens in two layers:

* ``_Spec`` finds the next *wall-clock* time (a naive datetime) that matches the
  fields, as if the zone had no daylight-saving changes.
* ``CronSchedule`` maps each wall time to real instants with the DST rules of the
  README: a fixed-time job whose time falls in a spring-forward gap runs once at the
  end of the gap and runs only the first of two repeated times; a wildcard job skips
  gap times and runs both repeated times.
"""

from __future__ import annotations

import calendar
import hashlib
import re
from bisect import bisect_left
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Iterator, NamedTuple

from .errors import InvalidCron, InvalidValue
from .timezones import ZoneLike, resolve_zone, to_local, zone_name

__all__ = ["CronSchedule", "validate_cron_expression"]

_UTC = timezone.utc
_ONE_SECOND = timedelta(seconds=1)

# Longer strings are rejected before any parsing so that hostile input stays cheap.
_MAX_EXPR_LEN = 1024

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_NAMES = {
    name: i
    for i, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_DOW_NAMES = {
    name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}


class _Field(NamedTuple):
    name: str
    low: int
    high: int
    names: dict[str, int]


_SECOND = _Field("second", 0, 59, {})
_MINUTE = _Field("minute", 0, 59, {})
_HOUR = _Field("hour", 0, 23, {})
# Jenkins hashes H in day-of-month into 1-28 so that short months never skip a job.
_DOM = _Field("day-of-month", 1, 31, {})
_MONTH = _Field("month", 1, 12, _MONTH_NAMES)
_DOW = _Field("day-of-week", 0, 7, _DOW_NAMES)
_FIELDS = (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW)

# re.ASCII: \d and \w would otherwise accept '٣' and friends, which int() converts.
_TOKEN = r"(?:[0-9]{1,4}|[a-z]{3})"
_ELEMENT_RE = re.compile(
    rf"""
    (?:
        (?P<star>\*)
      | (?P<hash>h)(?:\((?P<hlo>[0-9]{{1,4}})-(?P<hhi>[0-9]{{1,4}})\))?
      | (?P<lo>{_TOKEN})(?:-(?P<hi>{_TOKEN}))?
    )
    (?:/(?P<step>[0-9]{{1,4}}))?
    """,
    re.ASCII | re.VERBOSE,
)
_NTH_RE = re.compile(rf"(?P<dow>{_TOKEN})#(?P<nth>[0-9]{{1,4}})", re.ASCII)
_LAST_DOW_RE = re.compile(rf"(?P<dow>{_TOKEN})l", re.ASCII)


class _FieldError(Exception):
    """Raised inside the parser; turned into InvalidCron with the expression quoted."""


def _value(token: str, field: _Field) -> int:
    if token.isdigit():
        number = int(token)
    elif token in field.names:
        number = field.names[token]
    else:
        if field.names:
            raise _FieldError(f"unknown name {token!r}")
        raise _FieldError(f"{token!r} is not a number")
    if not field.low <= number <= field.high:
        raise _FieldError(f"value {number} is out of range {field.low}-{field.high}")
    return number


def _hashed(hash_id: str | None, field: _Field, low: int, high: int) -> int:
    if hash_id is None:
        raise _FieldError("'H' needs a job name to hash; give the schedule a hash_id")
    digest = hashlib.sha256(f"{hash_id}\x00{field.name}".encode()).digest()
    return low + int.from_bytes(digest[:8], "big") % (high - low + 1)


def _element(text: str, field: _Field, hash_id: str | None) -> range:
    match = _ELEMENT_RE.fullmatch(text)
    if match is None:
        raise _FieldError(f"cannot parse {text!r}")
    step_text = match["step"]
    step = 1
    if step_text is not None:
        step = int(step_text)
        width = field.high - field.low + 1
        if not 1 <= step <= width:
            raise _FieldError(f"step {step_text} must be between 1 and {width}")
    # 7 is Sunday only when written out; '*', 'H' and 'a/n' stop at Saturday so that
    # Sunday is not produced twice.
    low, high = field.low, (6 if field is _DOW else field.high)
    if match["hash"]:
        pick_high = high
        if match["hlo"] is not None:
            low, high = _value(match["hlo"], field), _value(match["hhi"], field)
            if low > high:
                raise _FieldError(f"range H({low}-{high}) is reversed")
            pick_high = high
        elif field is _DOM:
            pick_high = 28  # as Jenkins: short months never skip a hashed day
        if step_text is None:
            start = _hashed(hash_id, field, low, pick_high)
            return range(start, start + 1)
        start = _hashed(hash_id, field, low, min(low + step - 1, pick_high))
        return range(start, high + 1, step)
    if match["lo"] is not None:
        low = _value(match["lo"], field)
        if match["hi"] is not None:
            high = _value(match["hi"], field)
            if low > high:
                raise _FieldError(f"range {match['lo']}-{match['hi']} is reversed")
        elif step_text is None:
            high = low
        # "a/n" means a, a+n, ... up to the field's maximum, as in cronie.
    return range(low, high + 1, step)


class _Parsed(NamedTuple):
    values: tuple[int, ...]  # ascending
    members: frozenset[int]  # the same values, for membership tests
    restricted: bool  # Vixie: a field is restricted unless it starts with '*'
    last_dom: bool = False
    nth_dow: frozenset[tuple[int, int]] = frozenset()
    last_dow: frozenset[int] = frozenset()


def _parse_field(text: str, field: _Field, hash_id: str | None) -> _Parsed:
    values: set[int] = set()
    last_dom = False
    nth: set[tuple[int, int]] = set()
    last_dow: set[int] = set()
    for part in text.split(","):
        if not part:
            raise _FieldError("empty list element")
        if field is _DOM and part == "l":
            last_dom = True
            continue
        if field is _DOW:
            m = _NTH_RE.fullmatch(part)
            if m:
                k = int(m["nth"])
                if not 1 <= k <= 5:
                    raise _FieldError(f"'#{m['nth']}' must be between #1 and #5")
                nth.add((_value(m["dow"], field) % 7, k))
                continue
            m = _LAST_DOW_RE.fullmatch(part)
            if m:
                last_dow.add(_value(m["dow"], field) % 7)
                continue
            if part == "l":
                raise _FieldError("'L' alone is ambiguous here; write e.g. '5L' (last Friday)")
        if "l" in part and field is _DOM:
            raise _FieldError(f"{part!r}: only a plain 'L' (last day of the month) is supported")
        if "?" in part or part[:1] == "r" or ("w" in part and field is _DOM):
            raise _FieldError(f"{part!r} is not supported (no '?', 'R' or 'W' in this dialect)")
        rng = _element(part, field, hash_id)
        values.update(v % 7 if field is _DOW else v for v in rng)
    return _Parsed(tuple(sorted(values)), frozenset(values), not text.startswith("*"),
                   last_dom, frozenset(nth), frozenset(last_dow))


def _parse_field_shared(text: str, field: _Field, hash_id: str | None) -> _Parsed:
    """Parsed fields are immutable: "*" and friends are parsed once per process."""
    if "h" in text:  # hashed: depends on the name
        return _parse_field(text, field, hash_id)
    key = (text, field.name)
    parsed = _FIELDS_CACHE.get(key)
    if parsed is None:
        parsed = _parse_field(text, field, hash_id)
        if len(_FIELDS_CACHE) >= _CACHE_MAX:
            _FIELDS_CACHE.clear()
        _FIELDS_CACHE[key] = parsed
    return parsed


class _Spec:
    """Parsed fields; finds the next matching wall-clock time. Immutable once built
    apart from its per-month day cache, which only ever memoises a pure function."""

    __slots__ = ("seconds", "minutes", "hours", "months", "_dom", "_dow", "day_or",
                 "_days_cache", "fixed_time")

    def __init__(self, fields: list[_Parsed], fixed_time: bool) -> None:
        sec, minute, hour, dom, month, dow = fields
        self.seconds = sec.values
        self.minutes = minute.values
        self.hours = hour.values
        self.months = month.values
        self._dom = dom
        self._dow = dow
        # Vixie cron: both day fields restricted -> either may match; else both must.
        self.day_or = dom.restricted and dow.restricted
        self._days_cache: dict[int, tuple[int, ...]] = {}
        self.fixed_time = fixed_time

    def days(self, year: int, month: int) -> tuple[int, ...]:
        """The matching days of a month, ascending."""
        key = year * 16 + month
        cached = self._days_cache.get(key)
        if cached is not None:
            return cached
        first_weekday, ndays = calendar.monthrange(year, month)
        dom, dow = self._dom, self._dow
        dom_all = len(dom.members) == 31
        dow_all = len(dow.members) == 7
        if (dom_all or dow_all) if self.day_or else (dom_all and dow_all):
            result = _ALL_DAYS[ndays]  # the common "*" case, without a loop
        elif dow_all and not self.day_or:
            result = tuple(d for d in dom.values if d <= ndays)  # day-of-month decides
            if dom.last_dom and (not result or result[-1] != ndays):
                result = (*result, ndays)
        else:
            result = self._days_by_walk(first_weekday, ndays)
        if len(self._days_cache) >= 512:
            self._days_cache.clear()
        self._days_cache[key] = result
        return result

    def _days_by_walk(self, first_weekday: int, ndays: int) -> tuple[int, ...]:
        dom, dow = self._dom, self._dow
        found = []
        for day in range(1, ndays + 1):
            weekday = (first_weekday + day) % 7  # Sunday = 0 (monthrange: Monday = 0)
            dom_ok = day in dom.members or (dom.last_dom and day == ndays)
            dow_ok = (
                weekday in dow.members
                or (weekday, (day - 1) // 7 + 1) in dow.nth_dow
                or (weekday in dow.last_dow and day + 7 > ndays)
            )
            if (dom_ok or dow_ok) if self.day_or else (dom_ok and dow_ok):
                found.append(day)
        return tuple(found)

    def _time_in_day(self, h: int, m: int, s: int) -> tuple[int, int, int] | None:
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        hi = bisect_left(hours, h)
        if hi == len(hours):
            return None
        if hours[hi] != h:
            return hours[hi], minutes[0], seconds[0]
        mi = bisect_left(minutes, m)
        if mi < len(minutes):
            if minutes[mi] != m:
                return h, minutes[mi], seconds[0]
            si = bisect_left(seconds, s)
            if si < len(seconds):
                return h, m, seconds[si]
            if mi + 1 < len(minutes):
                return h, minutes[mi + 1], seconds[0]
        if hi + 1 < len(hours):
            return hours[hi + 1], minutes[0], seconds[0]
        return None

    def next_wall(self, after: datetime, max_years: int = 400) -> datetime | None:
        """The first matching naive wall time strictly after ``after``, whole seconds."""
        t = after.replace(microsecond=0) + _ONE_SECOND
        y, mo, d, h, mi, s = t.year, t.month, t.day, t.hour, t.minute, t.second
        months = self.months
        last_year = min(y + max_years, 9999)
        while y <= last_year:
            i = bisect_left(months, mo)
            if i == len(months):
                y, mo, d, h, mi, s = y + 1, months[0], 1, 0, 0, 0
                continue
            if months[i] != mo:
                mo, d, h, mi, s = months[i], 1, 0, 0, 0
            days = self.days(y, mo)
            j = bisect_left(days, d)
            while j < len(days):
                if days[j] != d:
                    d, h, mi, s = days[j], 0, 0, 0
                hms = self._time_in_day(h, mi, s)
                if hms is not None:
                    return datetime(y, mo, d, *hms)
                j += 1
                h = mi = s = 0
                d = days[j] if j < len(days) else 32
            mo, d, h, mi, s = mo + 1, 1, 0, 0, 0
            if mo > 12:
                y, mo = y + 1, 1
        return None


def _parse(expression: object, hash_id: str | None) -> _Spec:
    """The parsed expression, from a process-wide cache: jobs that share an expression
    share its parse (and its per-month day cache)."""
    if not isinstance(expression, str):
        raise TypeError(
            f"cron expression must be a str, not {type(expression).__name__}"
        )
    # Expressions without H are cached under the bare text, so the common lookup
    # needs neither the regex nor a key tuple; H ones under (text, hash_id).
    spec = _SPECS.get(expression)
    if spec is None:
        key: str | tuple[str, str | None] = expression
        if _USES_HASH.search(expression):
            key = (expression, hash_id)
            spec = _SPECS.get(key)
        if spec is None:
            spec = _parse_uncached(expression, hash_id)
            if len(_SPECS) >= _CACHE_MAX:
                _SPECS.clear()  # distinct expressions gain nothing from the cache
            _SPECS[key] = spec
    return spec


def _parse_uncached(expression: str, hash_id: str | None) -> _Spec:
    def fail(reason: str) -> InvalidCron:
        shown = expression if len(expression) <= 80 else expression[:77] + "..."
        return InvalidCron(f"invalid cron expression {shown!r}: {reason}")

    if len(expression) > _MAX_EXPR_LEN:
        raise fail(f"longer than {_MAX_EXPR_LEN} characters")
    text = expression.strip(" \t\r\n").lower()
    if not text:
        raise fail("the expression is empty")
    if text.startswith("@"):
        if text not in _MACROS:
            raise fail(f"unknown macro; expected one of {', '.join(sorted(_MACROS))}")
        text = _MACROS[text]
    parts = re.split(r"[ \t]+", text)
    if len(parts) == 5:
        parts.insert(0, "0")
    elif len(parts) != 6:
        raise fail(
            f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 "
            f"(second first), got {len(parts)}"
        )
    parsed = []
    for part, field in zip(parts, _FIELDS):
        try:
            parsed.append(_parse_field_shared(part, field, hash_id))
        except _FieldError as exc:
            raise fail(f"{field.name} field {part!r}: {exc}") from None
    fixed = not parts[1].startswith("*") and not parts[2].startswith("*")
    spec = _Spec(parsed, fixed)
    # A full Gregorian cycle is 400 years: no match in one means no match ever. The
    # search is skipped where a match plainly exists: some day 1-28 (or L) in every
    # month, either alone or with weekdays that recur every week.
    dom, dow = parsed[3], parsed[5]
    some_day = dom.last_dom or (bool(dom.values) and dom.values[0] <= 28)
    every_weekday = len(dow.members) == 7
    every_day = len(dom.members) == 31
    plainly_fires = (some_day or bool(dow.members)) if spec.day_or else (
        (some_day and every_weekday) or (every_day and bool(dow.members)))
    if not plainly_fires and spec.next_wall(datetime(2000, 1, 1) - _ONE_SECOND,
                                            max_years=399) is None:
        raise fail("it can never fire (no day matches its day and month fields)")
    return spec


def validate_cron_expression(expr: str) -> None:
    """Check ``expr`` against the dialect.

    ``H`` fields are checked with a placeholder name. Raises :class:`InvalidCron`
    (and ``TypeError`` for a non-string), nothing else.
    """
    _parse(expr, "validate")


class CronSchedule:
    """A cron expression bound to a time zone.

    Args:
        expr: 5 fields (``min hour dom mon dow``) or 6 (seconds first), or a macro.
        timezone: IANA name or PEP 495 tzinfo; default UTC.
        hash_id: the text ``H`` fields hash (the job's name in a service).

    Raises:
        InvalidCron, InvalidTimezone; ``TypeError`` if ``expr`` is not a string.
    """

    __slots__ = ("expression", "timezone", "_spec", "_fixed_offset", "_memo")

    def __init__(self, expr: str, timezone: ZoneLike = "UTC", *,
                 hash_id: str | None = None) -> None:
        self._spec = _parse(expr, hash_id)
        self.expression: str = expr
        self.timezone: tzinfo = resolve_zone(timezone)
        self._fixed_offset = _fixed_offset(self.timezone)
        # (input, output) of the last next_after call: many jobs share one schedule and
        # ask it the same question at the same due instant.
        self._memo: tuple[datetime, datetime] | None = None

    @classmethod
    def shared(cls, expr: str, timezone: ZoneLike = "UTC", hash_id: str | None = None
               ) -> CronSchedule:
        """A schedule from a process-wide cache, so that jobs with the same expression
        and zone share one parsed schedule (and its memo of the last next time)."""
        # As in _parse: (text, zone) for expressions without H, (text, zone, hash_id)
        # for those with it, so the common lookup skips the regex.
        key: tuple[object, ...] = (expr, timezone)
        try:
            cached = _SHARED.get(key)
        except TypeError:  # an unhashable tzinfo
            return cls(expr, timezone, hash_id=hash_id)
        if cached is None and isinstance(expr, str) and _USES_HASH.search(expr):
            key = (expr, timezone, hash_id)
            cached = _SHARED.get(key)
        if cached is None:
            cached = cls(expr, timezone, hash_id=hash_id)
            if len(_SHARED) >= _CACHE_MAX:
                _SHARED.clear()  # distinct expressions gain nothing from the cache
            _SHARED[key] = cached
        return cached

    @property
    def fixed_time(self) -> bool:
        """True when neither the minute nor the hour field starts with ``*``."""
        return self._spec.fixed_time

    @property
    def zone_name(self) -> str:
        return zone_name(self.timezone)

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self.zone_name!r})"

    def next_after(self, dt: datetime) -> datetime:
        """The first run strictly after ``dt``, aware, in the schedule's zone.

        Raises:
            InvalidValue: ``dt`` is naive, or the schedule has no run before year 9999.
        """
        return to_local(self.next_utc(dt), self.timezone)

    def next_utc(self, dt: datetime) -> datetime:
        """``next_after`` in UTC: what the scheduler's heap keeps, without the round
        trip through the schedule's zone."""
        # Runs fall on whole seconds, so the answer for dt is the answer for dt
        # truncated to the second; truncating lets jobs share the memo. In UTC,
        # because aware datetimes sharing a tzinfo compare by wall time and ignore
        # fold (01:30 EDT would equal 01:30 EST).
        if isinstance(dt, datetime) and dt.tzinfo is _UTC:  # the scheduler's own clock
            u = dt.replace(microsecond=0) if dt.microsecond else dt
        elif not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
            raise InvalidValue(f"next_after needs an aware datetime, got {dt!r}")
        else:
            try:
                u = dt.astimezone(_UTC).replace(microsecond=0)
            except OverflowError:
                raise InvalidValue(f"{self!r} has no run after {dt.isoformat()}") from None
        try:
            memo = self._memo
            if memo is not None and memo[0] == u:
                return memo[1]
            instant = self._next_instant(u)
        except OverflowError:
            instant = None
        if instant is None:
            raise InvalidValue(f"{self!r} has no run after {dt.isoformat()}")
        self._memo = (u, instant)
        return instant

    def iter_after(self, dt: datetime) -> Iterator[datetime]:
        """Successive runs after ``dt`` (endless)."""
        while True:
            dt = self.next_after(dt)
            yield dt

    # -- DST handling -------------------------------------------------------------

    def _next_instant(self, u: datetime) -> datetime | None:
        spec = self._spec
        if self._fixed_offset is not None:
            off = self._fixed_offset
            wall = spec.next_wall((u + off).replace(tzinfo=None))
            return None if wall is None else (wall - off).replace(tzinfo=_UTC)
        zone = self.timezone
        local = to_local(u, zone)
        wall = local.replace(tzinfo=None, fold=0)
        start = wall
        look_back = False
        if local.fold == 0 and not spec.fixed_time:
            off0, off1 = _offsets(zone, wall)
            if off0 > off1:
                # u is in the first pass of a repeated hour: wall times just before it
                # come round again after the transition, and a wildcard job runs them.
                start = wall - (off0 - off1)
                look_back = True
        best: datetime | None = None
        candidate: datetime | None = start
        while True:
            candidate = spec.next_wall(candidate)  # type: ignore[arg-type]
            if candidate is None:
                return best
            instants = self._instants(candidate)
            later = [i for i in instants if i > u]
            if later:
                if best is None or later[0] < best:
                    best = later[0]
                if not look_back or instants[0] > u:
                    return best

    def _instants(self, wall: datetime) -> list[datetime]:
        """The real instants at which wall time ``wall`` runs, ascending."""
        zone = self.timezone
        off0, off1 = _offsets(zone, wall)
        first = (wall - off0).replace(tzinfo=_UTC)
        if off0 == off1:
            return [first]
        if off0 > off1:  # repeated (fall-back): fold=1 is the second pass
            if self._spec.fixed_time:
                return [first]
            return [first, (wall - off1).replace(tzinfo=_UTC)]
        # In a spring-forward gap: wildcard jobs skip it, fixed-time jobs run once at
        # the transition instant, the first real instant after the gap.
        if not self._spec.fixed_time:
            return []
        return [_transition(zone, (wall - off1).replace(tzinfo=_UTC), first)]


def _offsets(zone: tzinfo, wall: datetime) -> tuple[timedelta, timedelta]:
    off0 = zone.utcoffset(wall)
    off1 = zone.utcoffset(wall.replace(fold=1))
    if off0 is None or off1 is None:
        raise InvalidValue(f"time zone {zone!r} returns no UTC offset")
    return off0, off1


def _transition(zone: tzinfo, before: datetime, after: datetime) -> datetime:
    """The first instant in (before, after] whose offset equals ``after``'s."""
    target = to_local(after, zone).utcoffset()
    lo, hi = before, after
    while hi - lo > _ONE_SECOND:
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid <= lo:
            mid = lo + _ONE_SECOND
        if to_local(mid, zone).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return hi


# Process-wide caches. Plain dicts: a get or set is atomic under the GIL, and a race
# between two threads only builds an equal object twice.
_SHARED: dict[tuple[object, ...], CronSchedule] = {}
_SPECS: dict[str | tuple[str, str | None], _Spec] = {}
_FIELDS_CACHE: dict[tuple[str, str], _Parsed] = {}
_ALL_DAYS = {n: tuple(range(1, n + 1)) for n in (28, 29, 30, 31)}
_CACHE_MAX = 4096
_USES_HASH = re.compile(r"(?:^|[\s,])[hH](?:$|[\s,(/])")

_FIXED_KEYS = {"UTC", "Etc/UTC", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu",
               "GMT", "Etc/GMT", "Etc/GMT0", "Etc/GMT+0", "Etc/GMT-0", "Etc/Greenwich",
               "Greenwich", "GMT0", "GMT+0", "GMT-0", "UCT", "Etc/UCT"}


def _fixed_offset(zone: tzinfo) -> timedelta | None:
    if isinstance(zone, timezone):
        return zone.utcoffset(None)
    if getattr(zone, "key", None) in _FIXED_KEYS:
        return timedelta(0)
    return None
