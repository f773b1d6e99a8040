"""Daylight-saving rules, zone by zone.

Fixed-time jobs (minute and hour fields not starting with '*'): a time in a
spring-forward gap runs once at the end of the gap; a repeated time runs once, on
its first occurrence. Wildcard jobs: gap times are skipped; repeated times run twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from memory_scheduler import CronSchedule

UTC = timezone.utc


def local_runs(expr: str, tz: str, start: str, until: str) -> list[str]:
    """Runs in (start, until], local ISO times with offsets."""
    schedule = CronSchedule(expr, tz)
    dt = datetime.fromisoformat(start).replace(tzinfo=schedule.timezone)
    end = datetime.fromisoformat(until).replace(tzinfo=schedule.timezone)
    out = []
    for when in schedule.iter_after(dt):
        if when > end:
            return out
        out.append(when.isoformat())
    raise AssertionError("unreachable")


CASES = [
    # --- America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST
    ("30 2 * * *", "America/New_York", "2026-03-07 00:00", "2026-03-09 23:00",
     ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    # several gap times run once at the end of the gap; 03:00 itself is the same instant
    ("0,15,30 2,3 * * *", "America/New_York", "2026-03-08 00:00", "2026-03-08 03:59",
     ["2026-03-08T03:00:00-04:00", "2026-03-08T03:15:00-04:00", "2026-03-08T03:30:00-04:00"]),
    ("*/30 * * * *", "America/New_York", "2026-03-08 01:00", "2026-03-08 03:30",
     ["2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"]),
    ("30 * * * *", "America/New_York", "2026-03-08 00:00", "2026-03-08 04:00",
     ["2026-03-08T00:30:00-05:00", "2026-03-08T01:30:00-05:00", "2026-03-08T03:30:00-04:00"]),
    ("30 1 * * *", "America/New_York", "2026-10-31 00:00", "2026-11-02 23:00",
     ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    ("0 * * * *", "America/New_York", "2026-11-01 00:00", "2026-11-01 02:00",
     ["2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]),
    ("*/20 1 * * *", "America/New_York", "2026-11-01 00:00", "2026-11-01 03:00",
     # minute starts with '*': a wildcard job, so both passes of 01:xx run
     ["2026-11-01T01:00:00-04:00", "2026-11-01T01:20:00-04:00", "2026-11-01T01:40:00-04:00",
      "2026-11-01T01:00:00-05:00", "2026-11-01T01:20:00-05:00", "2026-11-01T01:40:00-05:00"]),
    ("0,30 1 * * *", "America/New_York", "2026-11-01 00:00", "2026-11-01 03:00",
     ["2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00"]),
    ("@daily", "America/New_York", "2026-03-07 12:00", "2026-03-09 01:00",
     ["2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"]),
    ("@hourly", "America/New_York", "2026-03-08 00:30", "2026-03-08 04:00",
     ["2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"]),
    # 6 fields: only minute and hour decide; this is fixed-time despite '*' seconds
    ("*/20 30 2 * * *", "America/New_York", "2026-03-08 00:00", "2026-03-08 04:00",
     ["2026-03-08T03:00:00-04:00"]),
    # --- Europe/London: 2026-03-29 01:00 GMT -> 02:00 BST; 2026-10-25 02:00 BST -> 01:00 GMT
    ("30 1 * * *", "Europe/London", "2026-03-28 12:00", "2026-03-30 12:00",
     ["2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"]),
    ("30 1 * * *", "Europe/London", "2026-10-24 12:00", "2026-10-26 12:00",
     ["2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"]),
    ("*/30 * * * *", "Europe/London", "2026-10-25 00:45", "2026-10-25 02:00",
     ["2026-10-25T01:00:00+01:00", "2026-10-25T01:30:00+01:00", "2026-10-25T01:00:00+00:00",
      "2026-10-25T01:30:00+00:00", "2026-10-25T02:00:00+00:00"]),
    # --- Australia/Sydney (south): 2026-10-04 02:00 -> 03:00; 2026-04-05 03:00 -> 02:00
    ("30 2 * * *", "Australia/Sydney", "2026-10-03 12:00", "2026-10-05 12:00",
     ["2026-10-04T03:00:00+11:00", "2026-10-05T02:30:00+11:00"]),
    ("30 2 * * *", "Australia/Sydney", "2026-04-04 12:00", "2026-04-06 12:00",
     ["2026-04-05T02:30:00+11:00", "2026-04-06T02:30:00+10:00"]),
    ("0 * * * *", "Australia/Sydney", "2026-04-05 01:30", "2026-04-05 03:00",
     ["2026-04-05T02:00:00+11:00", "2026-04-05T02:00:00+10:00", "2026-04-05T03:00:00+10:00"]),
    # --- Australia/Lord_Howe, 30-minute shifts: 2026-10-04 02:00 -> 02:30; 04-05 02:00 -> 01:30
    ("0 2 * * *", "Australia/Lord_Howe", "2026-10-03 12:00", "2026-10-05 12:00",
     ["2026-10-04T02:30:00+11:00", "2026-10-05T02:00:00+11:00"]),
    ("15 2 * * *", "Australia/Lord_Howe", "2026-10-03 12:00", "2026-10-04 12:00",
     ["2026-10-04T02:30:00+11:00"]),
    ("*/15 * * * *", "Australia/Lord_Howe", "2026-10-04 01:40", "2026-10-04 02:50",
     ["2026-10-04T01:45:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-04T02:45:00+11:00"]),
    ("45 1 * * *", "Australia/Lord_Howe", "2026-04-04 12:00", "2026-04-05 12:00",
     ["2026-04-05T01:45:00+11:00"]),
    ("*/15 * * * *", "Australia/Lord_Howe", "2026-04-05 01:20", "2026-04-05 02:00",
     ["2026-04-05T01:30:00+11:00", "2026-04-05T01:45:00+11:00", "2026-04-05T01:30:00+10:30",
      "2026-04-05T01:45:00+10:30", "2026-04-05T02:00:00+10:30"]),
    # --- America/Havana: the transition is at midnight (2026-03-08 00:00 -> 01:00)
    ("0 0 * * *", "America/Havana", "2026-03-06 12:00", "2026-03-09 12:00",
     ["2026-03-07T00:00:00-05:00", "2026-03-08T01:00:00-04:00", "2026-03-09T00:00:00-04:00"]),
    ("@daily", "America/Havana", "2026-10-31 12:00", "2026-11-02 12:00",
     # 2026-11-01 01:00 CDT -> 00:00 CST: midnight repeats; runs once
     ["2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"]),
    # --- America/Santiago: midnight gap on 2026-09-06, 23:xx repeated on 2026-04-04
    ("30 0 * * *", "America/Santiago", "2026-09-05 12:00", "2026-09-06 12:00",
     ["2026-09-06T01:00:00-03:00"]),
    ("30 23 * * *", "America/Santiago", "2026-04-04 12:00", "2026-04-05 12:00",
     ["2026-04-04T23:30:00-03:00"]),
    # --- Quarter-hour offsets: Asia/Kathmandu (+05:45, no DST), Pacific/Chatham (+12:45/+13:45)
    ("0 0 * * *", "Asia/Kathmandu", "2026-01-01 12:00", "2026-01-02 12:00",
     ["2026-01-02T00:00:00+05:45"]),
    ("0 3 * * *", "Pacific/Chatham", "2026-09-26 12:00", "2026-09-28 12:00",
     ["2026-09-27T03:45:00+13:45", "2026-09-28T03:00:00+13:45"]),
    ("0 3 * * *", "Pacific/Chatham", "2026-04-04 12:00", "2026-04-06 12:00",
     ["2026-04-05T03:00:00+13:45", "2026-04-06T03:00:00+12:45"]),
    ("0 * * * *", "Pacific/Chatham", "2026-04-05 02:00", "2026-04-05 04:00",
     ["2026-04-05T03:00:00+13:45", "2026-04-05T03:00:00+12:45", "2026-04-05T04:00:00+12:45"]),
]


@pytest.mark.parametrize(("expr", "tz", "start", "until", "expected"), CASES)
def test_dst_rules(expr: str, tz: str, start: str, until: str, expected: list[str]) -> None:
    assert local_runs(expr, tz, start, until) == expected


def test_fall_back_from_inside_the_first_pass() -> None:
    # 01:50 EDT is in the first pass; the next quarter hour is 01:00 EST (one real
    # minute... ten minutes later), not 02:00.
    schedule = CronSchedule("*/15 * * * *", "America/New_York")
    first_pass = datetime(2026, 11, 1, 5, 50, tzinfo=UTC)  # 01:50 EDT
    assert schedule.next_after(first_pass).isoformat() == "2026-11-01T01:00:00-05:00"
    second_pass = datetime(2026, 11, 1, 6, 50, tzinfo=UTC)  # 01:50 EST
    assert schedule.next_after(second_pass).isoformat() == "2026-11-01T02:00:00-05:00"
    # A fixed-time job seen from the second pass waits for tomorrow.
    fixed = CronSchedule("55 1 * * *", "America/New_York")
    assert fixed.next_after(second_pass).isoformat() == "2026-11-02T01:55:00-05:00"
    assert fixed.next_after(first_pass).isoformat() == "2026-11-01T01:55:00-04:00"


def test_offset_is_computed_per_run_not_at_creation() -> None:
    schedule = CronSchedule("0 12 * * *", "Europe/Berlin")
    winter = schedule.next_after(datetime(2026, 1, 10, tzinfo=UTC))
    summer = schedule.next_after(datetime(2026, 7, 10, tzinfo=UTC))
    assert winter.astimezone(UTC).hour == 11
    assert summer.astimezone(UTC).hour == 10


def transitions(tz: str, year: int) -> list[datetime]:
    """UTC hours at which the zone's offset changes during ``year``."""
    zone = CronSchedule("* * * * *", tz).timezone
    t = datetime(year, 1, 1, tzinfo=UTC)
    found = []
    while t.year == year:
        if (t + timedelta(hours=1)).astimezone(zone).utcoffset() != t.astimezone(zone).utcoffset():
            found.append(t)
        t += timedelta(hours=1)
    return found


@pytest.mark.parametrize("tz", ["America/New_York", "Europe/London", "Australia/Sydney",
                                "Australia/Lord_Howe", "Pacific/Chatham", "America/Havana"])
@pytest.mark.parametrize("expr", ["*/7 * * * *", "0 * * * *", "30 2 * * *", "0 0 * * *",
                                  "*/20 * 1 * * *", "0,30 1,2,3 * * *"])
def test_runs_strictly_increase_around_transitions(tz: str, expr: str) -> None:
    schedule = CronSchedule(expr, tz)
    changes = transitions(tz, 2026)
    assert len(changes) == 2
    for change in changes:
        dt = change - timedelta(days=2)
        seen: set[tuple[object, ...]] = set()
        while dt < change + timedelta(days=2):
            nxt = schedule.next_after(dt)
            # Compare in UTC: aware datetimes sharing a tzinfo compare by wall time.
            assert nxt.astimezone(UTC) > dt.astimezone(UTC)
            assert nxt.tzinfo is schedule.timezone
            if schedule.fixed_time:
                key = (nxt.date(), nxt.hour, nxt.minute, nxt.second)
                assert key not in seen, f"fixed-time job ran twice at {key}"
                seen.add(key)
            dt = nxt


def test_dst_rules_in_utc_are_trivial() -> None:
    schedule = CronSchedule("30 2 * * *", timezone.utc)
    dt = datetime(2026, 3, 8, tzinfo=UTC)
    assert schedule.next_after(dt) == dt + timedelta(hours=2, minutes=30)


def test_next_after_under_freezegun_never_goes_back_in_a_fall_back_hour() -> None:
    # freezegun's datetime drops fold in astimezone(); iterating from its "now" once
    # returned 01:00 EDT after 01:30 EST.
    schedule = CronSchedule("*/30 * * * *", "America/New_York")
    with freeze_time("2026-11-01 04:50:00"):
        t = datetime.now(timezone.utc)
        instants = []
        for _ in range(6):
            t = schedule.next_after(t)
            instants.append(t.astimezone(timezone.utc))
    assert instants == sorted(set(instants))
    assert [f"{i:%H:%M}" for i in instants] == ["05:00", "05:30", "06:00", "06:30", "07:00",
                                                "07:30"]
