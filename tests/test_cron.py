"""The cron dialect as a table: expression, start, expected next run times (UTC)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from croniter import croniter

from memory_scheduler import CronSchedule, InvalidCron, InvalidValue, validate_cron_expression

UTC = timezone.utc


def runs(expr: str, start: str, n: int, tz: str = "UTC", **kw: str) -> list[str]:
    schedule = CronSchedule(expr, tz, **kw)
    dt = datetime.fromisoformat(start).replace(tzinfo=schedule.timezone)
    out = []
    for when in schedule.iter_after(dt):
        out.append(when.strftime("%Y-%m-%d %H:%M:%S %a"))
        if len(out) == n:
            return out
    raise AssertionError("unreachable")


DIALECT = [
    # expression, start (UTC), expected next runs
    ("* * * * *", "2026-01-01 00:00:30", ["2026-01-01 00:01:00 Thu", "2026-01-01 00:02:00 Thu"]),
    ("*/15 * * * *", "2026-01-01 00:00", ["2026-01-01 00:15:00 Thu", "2026-01-01 00:30:00 Thu"]),
    ("5,10-12 3 * * *", "2026-01-01 00:00",
     ["2026-01-01 03:05:00 Thu", "2026-01-01 03:10:00 Thu", "2026-01-01 03:11:00 Thu",
      "2026-01-01 03:12:00 Thu", "2026-01-02 03:05:00 Fri"]),
    ("10-40/15 * * * *", "2026-01-01 00:00",
     ["2026-01-01 00:10:00 Thu", "2026-01-01 00:25:00 Thu", "2026-01-01 00:40:00 Thu",
      "2026-01-01 01:10:00 Thu"]),
    ("50/5 * * * *", "2026-01-01 00:00", ["2026-01-01 00:50:00 Thu", "2026-01-01 00:55:00 Thu",
                                          "2026-01-01 01:50:00 Thu"]),
    ("0 0 1 jan,JUL *", "2026-01-01 00:00", ["2026-07-01 00:00:00 Wed", "2027-01-01 00:00:00 Fri"]),
    ("0 0 * Feb-Mar Mon-wed", "2026-01-01", ["2026-02-02 00:00:00 Mon", "2026-02-03 00:00:00 Tue"]),
    ("0 0 * * 0", "2026-01-01", ["2026-01-04 00:00:00 Sun", "2026-01-11 00:00:00 Sun"]),
    ("0 0 * * 7", "2026-01-01", ["2026-01-04 00:00:00 Sun", "2026-01-11 00:00:00 Sun"]),
    ("0 0 * * 5-7", "2026-01-01",
     ["2026-01-02 00:00:00 Fri", "2026-01-03 00:00:00 Sat", "2026-01-04 00:00:00 Sun",
      "2026-01-09 00:00:00 Fri"]),
    ("0 0 * * */2", "2026-01-01",
     ["2026-01-03 00:00:00 Sat", "2026-01-04 00:00:00 Sun", "2026-01-06 00:00:00 Tue"]),
    ("@yearly", "2026-06-01", ["2027-01-01 00:00:00 Fri", "2028-01-01 00:00:00 Sat"]),
    ("@annually", "2026-06-01", ["2027-01-01 00:00:00 Fri"]),
    ("@monthly", "2026-06-01", ["2026-07-01 00:00:00 Wed", "2026-08-01 00:00:00 Sat"]),
    ("@weekly", "2026-06-01", ["2026-06-07 00:00:00 Sun", "2026-06-14 00:00:00 Sun"]),
    ("@daily", "2026-06-01 12:00", ["2026-06-02 00:00:00 Tue"]),
    ("@midnight", "2026-06-01 12:00", ["2026-06-02 00:00:00 Tue"]),
    ("@HOURLY", "2026-06-01 12:00", ["2026-06-01 13:00:00 Mon", "2026-06-01 14:00:00 Mon"]),
    # L in day-of-month: last day, leap years included
    ("0 0 L * *", "2028-01-15", ["2028-01-31 00:00:00 Mon", "2028-02-29 00:00:00 Tue",
                                 "2028-03-31 00:00:00 Fri", "2028-04-30 00:00:00 Sun"]),
    ("0 0 1,L * *", "2026-01-15", ["2026-01-31 00:00:00 Sat", "2026-02-01 00:00:00 Sun"]),
    # n#k: k-th weekday n; nL: last weekday n
    ("0 9 * * 1#2", "2026-01-01", ["2026-01-12 09:00:00 Mon", "2026-02-09 09:00:00 Mon"]),
    ("0 9 * * mon#5", "2026-01-01", ["2026-03-30 09:00:00 Mon", "2026-06-29 09:00:00 Mon"]),
    ("0 9 * * 5L", "2026-01-01", ["2026-01-30 09:00:00 Fri", "2026-02-27 09:00:00 Fri"]),
    ("0 9 * * friL", "2026-01-01", ["2026-01-30 09:00:00 Fri"]),
    ("0 9 * * 7L", "2026-01-01", ["2026-01-25 09:00:00 Sun", "2026-02-22 09:00:00 Sun"]),
    ("0 9 * * 1#1,5L", "2026-01-01",
     ["2026-01-05 09:00:00 Mon", "2026-01-30 09:00:00 Fri", "2026-02-02 09:00:00 Mon"]),
    # Vixie: both day fields restricted -> OR
    ("0 0 13 * 5", "2026-02-01",
     ["2026-02-06 00:00:00 Fri", "2026-02-13 00:00:00 Fri", "2026-02-20 00:00:00 Fri"]),
    ("0 0 1 * 1", "2026-02-25", ["2026-03-01 00:00:00 Sun", "2026-03-02 00:00:00 Mon"]),
    # ... a field starting with '*' is unrestricted -> AND
    ("0 0 */2 * 1", "2026-03-07", ["2026-03-09 00:00:00 Mon", "2026-03-23 00:00:00 Mon",
                                   "2026-04-13 00:00:00 Mon"]),
    ("0 0 * * 1", "2026-03-07", ["2026-03-09 00:00:00 Mon", "2026-03-16 00:00:00 Mon"]),
    ("0 0 1 * */7", "2026-03-07", ["2026-11-01 00:00:00 Sun", "2027-08-01 00:00:00 Sun"]),
    # 6 fields: seconds first
    ("30 * * * * *", "2026-01-01 00:00", ["2026-01-01 00:00:30 Thu", "2026-01-01 00:01:30 Thu"]),
    ("*/20 0 0 * * *", "2026-01-01 00:00",
     ["2026-01-01 00:00:20 Thu", "2026-01-01 00:00:40 Thu", "2026-01-02 00:00:00 Fri"]),
    ("0 30 9 * * mon-fri", "2026-01-02 10:00", ["2026-01-05 09:30:00 Mon"]),
    # leap day
    ("0 0 29 2 *", "2026-01-01", ["2028-02-29 00:00:00 Tue", "2032-02-29 00:00:00 Sun"]),
    # whitespace and case
    ("  0\t0  *  *  SUN ", "2026-01-01", ["2026-01-04 00:00:00 Sun"]),
]


@pytest.mark.parametrize(("expr", "start", "expected"), DIALECT)
def test_dialect(expr: str, start: str, expected: list[str]) -> None:
    assert runs(expr, start, len(expected)) == expected


SECONDS_FIRST = ["30 * * * * *", "0 */5 * * * *", "15,45 10 3 * * mon", "*/7 0 12 1 * *"]


@pytest.mark.parametrize("expr", SECONDS_FIRST)
def test_six_fields_match_croniter_with_second_at_beginning(expr: str) -> None:
    # croniter reads a 6th field as seconds *last* unless told otherwise; our dialect
    # is seconds first, which is what croniter does with second_at_beginning=True.
    start = datetime(2026, 5, 17, 11, 59, 58, tzinfo=UTC)
    it = croniter(expr, start, second_at_beginning=True)
    schedule = CronSchedule(expr)
    dt = start
    for _ in range(20):
        dt = schedule.next_after(dt)
        assert dt == it.get_next(datetime)


def test_six_fields_are_not_seconds_last() -> None:
    # If the 6th field were seconds, "5 0 0 * * *" would be 00:05 with a year field;
    # seconds first makes it 00:00:05 every day.
    assert runs("5 0 0 * * *", "2026-01-01 00:00", 1) == ["2026-01-01 00:00:05 Thu"]


def test_next_after_is_strict_and_keeps_the_zone() -> None:
    schedule = CronSchedule("0 * * * *", "Europe/Paris")
    at = datetime(2026, 1, 1, 10, 0, tzinfo=schedule.timezone)
    nxt = schedule.next_after(at)
    assert nxt == datetime(2026, 1, 1, 11, 0, tzinfo=schedule.timezone)
    assert nxt.tzinfo is schedule.timezone
    # Sub-second inputs: the next whole-second run strictly after.
    assert schedule.next_after(at - timedelta(microseconds=1)) == at


def test_next_after_accepts_any_aware_datetime() -> None:
    schedule = CronSchedule("0 12 * * *", "Asia/Tokyo")
    # 03:00 UTC is 12:00 in Tokyo
    assert schedule.next_after(datetime(2026, 1, 1, 2, 0, tzinfo=UTC)).astimezone(UTC) == (
        datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    )


def test_next_after_rejects_naive_datetimes() -> None:
    with pytest.raises(InvalidValue, match="aware"):
        CronSchedule("* * * * *").next_after(datetime(2026, 1, 1))


def test_next_after_near_the_end_of_time() -> None:
    with pytest.raises(InvalidValue, match="no run after"):
        CronSchedule("0 0 1 1 *").next_after(datetime(9999, 6, 1, tzinfo=UTC))


def test_fixed_time_classification() -> None:
    assert CronSchedule("30 2 * * *").fixed_time
    assert CronSchedule("0-59 1 * * *").fixed_time  # only a leading '*' makes a wildcard
    assert CronSchedule("@daily").fixed_time
    assert not CronSchedule("@hourly").fixed_time
    assert not CronSchedule("*/15 * * * *").fixed_time
    assert not CronSchedule("30 * * * *").fixed_time
    assert not CronSchedule("0 * 2 * * *").fixed_time  # 6 fields: minute is the 2nd
    assert CronSchedule("* 0 2 * * *").fixed_time  # seconds do not count


def test_hashed_fields_are_deterministic_per_name_and_spread() -> None:
    a1 = CronSchedule("H H * * *", hash_id="backup")
    a2 = CronSchedule("H H * * *", hash_id="backup")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert a1.next_after(start) == a2.next_after(start)
    firsts = {CronSchedule("H * * * *", hash_id=f"job{i}").next_after(start).minute
              for i in range(50)}
    assert len(firsts) > 20  # spread over the hour, not all at :00


@pytest.mark.parametrize(("expr", "field", "low", "high", "step"), [
    ("H * * * *", "minute", 0, 59, None),
    ("0 H * * *", "hour", 0, 23, None),
    ("0 0 H * *", "dom", 1, 28, None),  # as Jenkins: 1-28 so short months never skip it
    ("0 0 * * H", "dow", 0, 6, None),
    ("H(10-20) * * * *", "minute", 10, 20, None),
    ("H/15 * * * *", "minute", 0, 59, 15),
    ("H(0-29)/10 * * * *", "minute", 0, 29, 10),
])
def test_hashed_field_ranges(expr: str, field: str, low: int, high: int,
                             step: int | None) -> None:
    # Read the field's values off the runs themselves, over a span that shows each.
    span = {"minute": timedelta(hours=1), "hour": timedelta(days=1),
            "dom": timedelta(days=366), "dow": timedelta(days=7)}[field]
    start = datetime(2026, 1, 1, tzinfo=UTC) - timedelta(microseconds=1)
    for i in range(40):
        schedule = CronSchedule(expr, hash_id=f"name-{i}")
        runs = []
        for when in schedule.iter_after(start):
            if when > start + span:
                break
            runs.append(when)
        value_of = {"minute": lambda t: t.minute, "hour": lambda t: t.hour,
                    "dom": lambda t: t.day, "dow": lambda t: t.isoweekday() % 7}[field]
        values = sorted({value_of(t) for t in runs})
        assert all(low <= v <= high for v in values)
        if step is None:
            assert len(values) == 1
        else:
            assert values[0] < low + step
            assert all(b - a == step for a, b in zip(values, values[1:]))


def test_hash_without_name_is_rejected_but_validates() -> None:
    validate_cron_expression("H H * * *")
    with pytest.raises(InvalidCron, match="'H' needs a job name"):
        CronSchedule("H * * * *")


INVALID = [
    ("", "empty"),
    ("   ", "empty"),
    ("* * * *", "expected 5 fields"),
    ("* * * * * * *", "got 7"),
    ("60 * * * *", "minute field '60': value 60 is out of range 0-59"),
    ("* 24 * * *", "hour field"),
    ("* * 0 * *", "day-of-month field '0': value 0 is out of range 1-31"),
    ("* * 32 * *", "day-of-month"),
    ("* * * 13 *", "month field"),
    ("* * * * 8", "day-of-week field '8'"),
    ("60 * * * * *", "second field"),
    ("* * * foo *", "month field 'foo': unknown name 'foo'"),
    ("* * * * funday", "day-of-week"),
    ("* * * * mon-funday", "day-of-week"),
    ("*/0 * * * *", "step 0 must be between 1 and 60"),
    ("*/61 * * * *", "step 61"),
    ("1-2/ * * * *", "cannot parse"),
    ("5-3 * * * *", "range 5-3 is reversed"),
    ("1,,2 * * * *", "empty list element"),
    ("0 0 30 2 *", "can never fire"),
    ("0 0 31 4,6,9,11 *", "can never fire"),
    ("R * * * *", "'R'"),
    ("0 0 ? * *", "'?'"),
    ("0 0 15W * *", "'W'"),
    ("0 0 * * L", "'L' alone"),
    ("0 0 L-2 * *", "only a plain 'L'"),
    ("0 0 * * 1#6", "#1 and #5"),
    ("0 0 * * 1#0", "#1 and #5"),
    ("@reboot", "unknown macro"),
    ("@every 5m", "unknown macro"),
    ("\u0663 * * * *", "minute field"),  # Arabic-Indic digit three
    ("\uff11 * * * *", "minute field"),  # full-width 1
    ("9" * 50 + " * * * *", "minute field"),
    ("* * * * * " * 300, "longer than"),
    ("0 0\n* * *", "got 4"),
    ("H(30-10) * * * *", "reversed"),
    ("H(0-99) * * * *", "out of range"),
]


@pytest.mark.parametrize(("expr", "message"), INVALID)
def test_invalid_expressions(expr: str, message: str) -> None:
    with pytest.raises(InvalidCron) as info:
        validate_cron_expression(expr)
    text = str(info.value)
    assert message in text
    shown = expr if len(expr) <= 80 else expr[:77] + "..."
    assert repr(shown) in text  # the expression is quoted
    with pytest.raises(InvalidCron):
        CronSchedule(expr)


@pytest.mark.parametrize("value", [None, 5, b"* * * * *", ["*"] * 5])
def test_non_string_expression_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        validate_cron_expression(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CronSchedule(value)  # type: ignore[arg-type]


def test_invalid_cron_is_a_value_error_and_a_scheduler_error() -> None:
    from memory_scheduler import SchedulerError

    with pytest.raises(ValueError):
        validate_cron_expression("nope")
    with pytest.raises(SchedulerError):
        validate_cron_expression("nope")


def test_shared_schedules_are_reused_per_expression_and_zone() -> None:
    a = CronSchedule.shared("*/5 * * * *", "Europe/Berlin")
    assert CronSchedule.shared("*/5 * * * *", "Europe/Berlin") is a
    assert CronSchedule.shared("*/5 * * * *", "UTC") is not a
    # Hashed expressions are per name; plain ones ignore the name.
    assert CronSchedule.shared("H * * * *", "UTC", "x") is not CronSchedule.shared(
        "H * * * *", "UTC", "y")
    assert CronSchedule.shared("0 * * * thu", "UTC", "x") is CronSchedule.shared(
        "0 * * * thu", "UTC", "y")
