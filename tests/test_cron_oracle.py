"""Hypothesis: CronSchedule agrees with a slow brute-force oracle of the documented
dialect and DST rules.

Profiles (tests/conftest.py): "ci" by default; HYPOTHESIS_PROFILE=long for bug hunts.
"""

from __future__ import annotations

import calendar
import functools
import zoneinfo
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Optional

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from memory_scheduler import (
    CronSchedule,
    InvalidCron,
)

UTC = timezone.utc

ZONES = sorted(zoneinfo.available_timezones())


FIELD_RANGES = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23), "dom": (1, 31),
                "month": (1, 12), "dow": (0, 6)}


@st.composite
def element(draw: st.DrawFn, field: str) -> tuple[str, set[int]]:
    lo, hi = FIELD_RANGES[field]
    kind = draw(st.sampled_from(["value", "range", "range_step", "start_step"]))
    a = draw(st.integers(lo, hi))
    if kind == "value":
        return str(a), {a}
    b = draw(st.integers(a, hi))
    if kind == "range":
        return f"{a}-{b}", set(range(a, b + 1))
    step = draw(st.integers(1, hi - lo + 1))
    if kind == "range_step":
        return f"{a}-{b}/{step}", set(range(a, b + 1, step))
    return f"{a}/{step}", set(range(a, hi + 1, step))


@st.composite
def field_spec(draw: st.DrawFn, field: str) -> tuple[str, set[int]]:
    lo, hi = FIELD_RANGES[field]
    if draw(st.booleans()):
        step = draw(st.sampled_from([s for s in (1, 1, 2, 3, 5, 7, 15) if s <= hi - lo + 1]))
        if step == 1:
            return "*", set(range(lo, hi + 1))
        return f"*/{step}", set(range(lo, hi + 1, step))
    parts = draw(st.lists(element(field), min_size=1, max_size=3))
    return ",".join(p[0] for p in parts), set().union(*(p[1] for p in parts))


@st.composite
def expressions(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    """A valid expression and the structure the oracle evaluates it from."""
    six = draw(st.booleans())
    sec = draw(field_spec("second")) if six else ("0", {0})
    minute, hour = draw(field_spec("minute")), draw(field_spec("hour"))
    dom, month = draw(field_spec("dom")), draw(field_spec("month"))
    dow = draw(field_spec("dow"))
    dom_last = False
    nth: set[tuple[int, int]] = set()
    last_dow: set[int] = set()
    special = draw(st.sampled_from(["none", "none", "L", "nth", "lastdow"]))
    dom_text, dow_text = dom[0], dow[0]
    if special == "L":
        dom_text, dom_last = dom_text + ",L", True
    elif special == "nth":
        d, k = draw(st.integers(0, 7)), draw(st.integers(1, 5))
        dow_text, nth = dow_text + f",{d}#{k}", {(d % 7, k)}
    elif special == "lastdow":
        d = draw(st.integers(0, 7))
        dow_text, last_dow = dow_text + f",{d}L", {d % 7}
    fields = [minute[0], hour[0], dom_text, month[0], dow_text]
    if six:
        fields.insert(0, sec[0])
    return " ".join(fields), {
        "sec": sorted(sec[1]), "min": sorted(minute[1]), "hour": sorted(hour[1]),
        "dom": dom[1], "dom_last": dom_last, "month": month[1], "dow": dow[1],
        "nth": nth, "last_dow": last_dow,
        "dom_restricted": not dom_text.startswith("*"),
        "dow_restricted": not dow_text.startswith("*"),
        "fixed": not minute[0].startswith("*") and not hour[0].startswith("*"),
    }


def day_matches(spec: dict[str, object], day: datetime) -> bool:
    if day.month not in spec["month"]:  # type: ignore[operator]
        return False
    last = calendar.monthrange(day.year, day.month)[1]
    weekday = (day.weekday() + 1) % 7
    dom_ok = day.day in spec["dom"] or (spec["dom_last"] and day.day == last)  # type: ignore
    dow_ok = (weekday in spec["dow"]  # type: ignore[operator]
              or (weekday, (day.day - 1) // 7 + 1) in spec["nth"]  # type: ignore[operator]
              or (weekday in spec["last_dow"] and day.day + 7 > last))  # type: ignore
    if spec["dom_restricted"] and spec["dow_restricted"]:
        return bool(dom_ok or dow_ok)
    return bool(dom_ok and dow_ok)


def wall_instants(wall: datetime, zone: tzinfo, fixed: bool) -> list[datetime]:
    """The documented DST rules, computed the slow way."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    exists = first.astimezone(zone).replace(tzinfo=None) == wall
    if not exists:  # in a spring-forward gap
        if not fixed:
            return []
        return [_gap_end(wall, zone)]
    if first == second or fixed:
        return [first]
    return sorted({first, second})


def _gap_end(wall: datetime, zone: tzinfo) -> datetime:
    """The instant the clocks jumped over ``wall``: find the first whole minute after it
    that exists, then walk back a second at a time while the wall clock stays past
    ``wall``."""
    probe = wall.replace(second=0)
    while True:
        probe += timedelta(minutes=1)
        instant = probe.replace(tzinfo=zone).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == probe:
            break
    while (instant - timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None) > wall:
        instant -= timedelta(seconds=1)
    return instant


def oracle_next(spec: dict[str, object], zone: tzinfo, after: datetime,
                horizon_days: int = 800) -> Optional[datetime]:
    """The first run strictly after ``after``: walk local days, and in each matching
    day every wall time of the fields, applying the DST rules to each."""
    local = after.astimezone(zone).replace(tzinfo=None)
    day = datetime(local.year, local.month, local.day) - timedelta(days=1)
    best: Optional[datetime] = None
    for _ in range(horizon_days):
        if day_matches(spec, day):
            for h in spec["hour"]:  # type: ignore[attr-defined]
                for m in spec["min"]:  # type: ignore[attr-defined]
                    for s in spec["sec"]:  # type: ignore[attr-defined]
                        wall = day.replace(hour=h, minute=m, second=s)
                        if wall < local - timedelta(hours=4):
                            continue
                        for instant in wall_instants(wall, zone, bool(spec["fixed"])):
                            if instant > after and (best is None or instant < best):
                                best = instant
                        if best is not None and wall > best.astimezone(zone).replace(
                                tzinfo=None) + timedelta(hours=4):
                            return best
        if best is not None and day > best.astimezone(zone).replace(tzinfo=None) + \
                timedelta(days=1):
            return best
        day += timedelta(days=1)
    return best


INSTANTS = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 1, 1),
                        timezones=st.just(UTC))


@functools.lru_cache(maxsize=4096)
def transitions(zone_name: str, year: int) -> tuple[datetime, ...]:
    """UTC hours in ``year`` just before the zone's offset changes."""
    zone = zoneinfo.ZoneInfo(zone_name)
    t = datetime(year, 1, 1, tzinfo=UTC)
    found = []
    offset = t.astimezone(zone).utcoffset()
    while t.year == year:
        nxt = t + timedelta(hours=1)
        new = nxt.astimezone(zone).utcoffset()
        if new != offset:
            found.append(t)
            offset = new
        t = nxt
    return tuple(found)


@st.composite
def zone_and_start(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone, and an instant that is half of the time within two days of one of its
    offset changes: uniform instants would almost never meet a DST transition."""
    zone_name = draw(st.sampled_from(ZONES))
    start = draw(INSTANTS)
    changes = transitions(zone_name, start.year)
    if changes and draw(st.booleans()):
        change = draw(st.sampled_from(changes))
        start = change + timedelta(seconds=draw(st.integers(-2 * 86400, 2 * 86400)))
    return zone_name, start


@settings(deadline=timedelta(seconds=20), suppress_health_check=[HealthCheck.too_slow])
@given(expr=expressions(), zone_start=zone_and_start())
def test_next_after_agrees_with_the_oracle(expr: tuple[str, dict[str, object]],
                                           zone_start: tuple[str, datetime]) -> None:
    text, spec = expr
    zone_name, start = zone_start
    zone = zoneinfo.ZoneInfo(zone_name)
    try:
        schedule = CronSchedule(text, zone)
    except InvalidCron as exc:
        assert "never fire" in str(exc), exc
        return
    expected = oracle_next(spec, zone, start)
    assume(expected is not None)  # rarer than the oracle's horizon
    got = schedule.next_after(start)
    assert got.astimezone(UTC) == expected, (text, zone_name, start, got, expected)
    assert got.tzinfo is schedule.timezone
    # Two more steps: strictly increasing, and agreeing with the oracle again.
    for _ in range(2):
        nxt = schedule.next_after(got)
        assert nxt.astimezone(UTC) > got.astimezone(UTC)
        expected = oracle_next(spec, zone, got)
        assume(expected is not None)
        assert nxt.astimezone(UTC) == expected, (text, zone_name, got, nxt, expected)
        got = nxt


@settings(deadline=timedelta(seconds=20), suppress_health_check=[HealthCheck.too_slow])
@given(expr=expressions(), zone_start=zone_and_start())
def test_fixed_time_jobs_never_fire_twice_in_a_repeated_hour(
        expr: tuple[str, dict[str, object]], zone_start: tuple[str, datetime]) -> None:
    text, spec = expr
    zone_name, start = zone_start
    assume(spec["fixed"])
    zone = zoneinfo.ZoneInfo(zone_name)
    try:
        schedule = CronSchedule(text, zone)
    except InvalidCron:
        return
    dt = start - timedelta(days=1)
    seen: set[tuple[int, ...]] = set()
    for _ in range(300):
        dt = schedule.next_after(dt)
        key = (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
        assert key not in seen, f"{text!r} in {zone_name} ran twice at {key}"
        seen.add(key)


def test_the_oracle_knows_the_readme_cases() -> None:
    # Guard the guard: the oracle itself reproduces the documented examples.
    ny = zoneinfo.ZoneInfo("America/New_York")
    nightly = {"sec": [0], "min": [30], "hour": [2], "dom": set(range(1, 32)),
               "dom_last": False, "month": set(range(1, 13)), "dow": set(range(7)),
               "nth": set(), "last_dow": set(), "dom_restricted": False,
               "dow_restricted": False, "fixed": True}
    got = oracle_next(nightly, ny, datetime(2026, 3, 7, 12, tzinfo=UTC))
    assert got is not None and got.astimezone(ny).isoformat() == "2026-03-08T03:00:00-04:00"
    hourly = {**nightly, "min": [0], "hour": list(range(24)), "fixed": False}
    got = oracle_next(hourly, ny, datetime(2026, 11, 1, 5, tzinfo=UTC))  # 01:00 EDT
    assert got is not None and got.astimezone(ny).isoformat() == "2026-11-01T01:00:00-05:00"



DST_ZONES = [z for z in ZONES if transitions(z, 2026)]


@st.composite
def dst_case(draw: st.DrawFn) -> tuple[str, dict[str, object], str, datetime]:
    """An expression aimed at one DST transition: its hour field holds the local hours
    around the change, so gap and repeated-hour rules are exercised every time."""
    zone_name = draw(st.sampled_from(DST_ZONES))
    year = draw(st.integers(1990, 2059))
    changes = transitions(zone_name, year)
    assume(changes)
    change = draw(st.sampled_from(changes))
    zone = zoneinfo.ZoneInfo(zone_name)
    old_offset = change.astimezone(zone).utcoffset()
    assert old_offset is not None
    hours: set[int] = set()
    for m in (-60, 0, 30, 60, 90, 120):
        instant = change + timedelta(minutes=m)
        hours.add(instant.astimezone(zone).hour)
        hours.add((instant + old_offset).hour)  # wall hours as the old offset reads them,
        # which include the hours a spring-forward gap skips
    minute = draw(field_spec("minute"))
    # Sparse seconds keep the oracle's walk over every wall time cheap.
    sec_text = draw(st.sampled_from([None, "0", "30", "0,30", "*/20", "5-10/5"]))
    sec_values = {"0": {0}, "30": {30}, "0,30": {0, 30}, "*/20": {0, 20, 40},
                  "5-10/5": {5, 10}, None: {0}}[sec_text]
    fields = [minute[0], ",".join(str(h) for h in sorted(hours)), "*", "*", "*"]
    if sec_text is not None:
        fields.insert(0, sec_text)
    spec = {"sec": sorted(sec_values), "min": sorted(minute[1]), "hour": sorted(hours),
            "dom": set(range(1, 32)), "dom_last": False, "month": set(range(1, 13)),
            "dow": set(range(7)), "nth": set(), "last_dow": set(),
            "dom_restricted": False, "dow_restricted": False,
            "fixed": not minute[0].startswith("*")}
    # The offset changes during the hour after ``change``; start up to 90 min before.
    start = change + timedelta(minutes=60) - timedelta(seconds=draw(st.integers(0, 5400)))
    return " ".join(fields), spec, zone_name, start


def oracle_window(spec: dict[str, object], zone: tzinfo, start: datetime,
                  end: datetime) -> list[datetime]:
    """Every run in (start, end], the slow way: every wall time of every day around
    the window, through the DST rules, sorted; equal instants (several gap times of a
    fixed-time job) count once."""
    found: set[datetime] = set()
    first = (start.astimezone(zone) - timedelta(days=1)).replace(tzinfo=None)
    day = datetime(first.year, first.month, first.day)
    last = (end.astimezone(zone) + timedelta(days=1)).replace(tzinfo=None)
    while day <= last:
        if day_matches(spec, day):
            for h in spec["hour"]:  # type: ignore[attr-defined]
                for m in spec["min"]:  # type: ignore[attr-defined]
                    for sec in spec["sec"]:  # type: ignore[attr-defined]
                        wall = day.replace(hour=h, minute=m, second=sec)
                        for instant in wall_instants(wall, zone, bool(spec["fixed"])):
                            if start < instant <= end:
                                found.add(instant)
        day += timedelta(days=1)
    return sorted(found)


@settings(deadline=timedelta(seconds=20), suppress_health_check=[HealthCheck.too_slow])
@given(dst_case())
def test_runs_across_transitions_match_the_oracle(
        case: tuple[str, dict[str, object], str, datetime]) -> None:
    text, spec, zone_name, start = case
    zone = zoneinfo.ZoneInfo(zone_name)
    schedule = CronSchedule(text, zone)
    end = start + timedelta(hours=3)
    expected = oracle_window(spec, zone, start, end)
    got: list[datetime] = []
    dt = start
    while True:
        dt = schedule.next_after(dt)
        if dt.astimezone(UTC) > end:
            break
        got.append(dt.astimezone(UTC))  # in UTC: see PEP 495 on comparing folds
    assert got == expected, (text, zone_name, start)
    if spec["fixed"]:
        walls = [g.astimezone(zone).replace(tzinfo=None) for g in got]
        assert len(walls) == len(set(walls)), f"{text!r} ran twice at one wall time"
