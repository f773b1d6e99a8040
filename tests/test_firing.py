"""firing.decide() by tables (no threads, no clock), the slices of collect_due, and the
rule that every occurrence ends in exactly one counter."""

from __future__ import annotations

import queue
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable, List, Optional, Tuple

import pytest
from freezegun import freeze_time
from helpers import get

from memory_scheduler import EventKind, RunStatus, SchedulerEvent, SchedulerService
from memory_scheduler.firing import MAX_MISSED_LISTED, Decision, decide

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)
Factory = Callable[..., SchedulerService]


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def every_minute(t: datetime) -> Optional[datetime]:
    return (t.replace(second=0, microsecond=0) + timedelta(minutes=1))


def until(last: int) -> Callable[[datetime], Optional[datetime]]:
    """An every-minute schedule whose last occurrence is minute ``last``."""
    def next_after(t: datetime) -> Optional[datetime]:
        following = every_minute(t)
        return following if following is not None and following <= minute(last) else None
    return next_after


def minutes(*ns: int) -> Tuple[datetime, ...]:
    return tuple(minute(n) for n in ns)


# (first due, now (minutes, seconds), grace, coalesce, busy, limit) -> (run, skipped, missed)
TABLE: List[Tuple[int, Tuple[int, int], Optional[float], bool, bool, int,
                  Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]]] = [
    # on time
    (1, (1, 0), None, True, False, 100, ((1,), (), ())),
    (1, (1, 0), None, False, False, 100, ((1,), (), ())),
    # late, no grace: coalesce runs the oldest once; otherwise each, oldest first
    (1, (4, 10), None, True, False, 100, ((1,), (), ())),
    (1, (4, 10), None, False, False, 100, ((1, 2, 3, 4), (), ())),
    # a grace of 150 s at 04:10: 01 and 02 are past it (cutoff 01:40)
    (1, (4, 10), 150, True, False, 100, ((2,), (), (1,))),
    (1, (4, 10), 150, False, False, 100, ((2, 3, 4), (), (1,))),
    # everything past the grace
    (1, (4, 10), 5, True, False, 100, ((), (), (1,))),
    (1, (4, 10), 5, False, False, 100, ((), (), (1, 2, 3, 4))),
    # the catch-up bound: the rest are missed, one by one
    (1, (6, 0), None, False, False, 2, ((1, 2), (), (3, 4, 5, 6))),
    # busy: what would run is skipped, every occurrence of it
    (1, (4, 10), None, True, True, 100, ((), (1,), ())),
    (1, (4, 10), None, False, True, 100, ((), (1, 2, 3, 4), ())),
    (1, (4, 10), 150, False, True, 100, ((), (2, 3, 4), (1,))),
]


@pytest.mark.parametrize(("first", "now", "grace", "coalesce", "busy", "limit", "expected"),
                         TABLE)
def test_decide(first: int, now: Tuple[int, int], grace: Optional[float], coalesce: bool,
                busy: bool, limit: int,
                expected: Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]) -> None:
    at = minute(now[0]) + timedelta(seconds=now[1])
    decision = decide(every_minute, minute(first), at, grace=grace, coalesce=coalesce,
                      busy=busy, limit=limit)
    run, skipped, missed = expected
    assert decision == Decision(minutes(*run), minutes(*skipped), minutes(*missed), False,
                                max(minutes(*run, *skipped), default=minute(first)))


def test_decide_counts_at_most_max_missed_listed_and_says_so() -> None:
    decision = decide(every_minute, minute(0), minute(5000), grace=None, coalesce=False,
                      busy=False, limit=100)
    assert len(decision.run) == 100
    assert len(decision.missed) == MAX_MISSED_LISTED and decision.more_missed


def test_decide_stops_where_the_schedule_ends() -> None:
    decision = decide(until(2), minute(1), minute(10), grace=None, coalesce=False,
                      busy=False, limit=100)
    assert decision.run == minutes(1, 2) and decision.missed == ()
    decision = decide(until(2), minute(1), minute(10), grace=30, coalesce=False,
                      busy=False, limit=100)
    assert decision.run == () and decision.missed == minutes(1, 2)


def test_run_pending_hands_a_big_instant_over_in_slices(make_scheduler: Factory) -> None:
    # The due items of one instant are collected a slice at a time (dispatcher.SLICE),
    # with the lock released in between; the result is the same as in one piece.
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        for i in range(2500):
            svc.add_cron_job(f"j{i:04}", "* * * * *", lambda: None)
        frozen.move_to(minute(1))
        results = svc.run_pending()
    assert len(results) == 2500
    assert {r.status for r in results} == {RunStatus.SUCCESS}
    assert [r.job_name for r in results] == [f"j{i:04}" for i in range(2500)]


def test_coalesce_false_occurrences_due_while_running_are_each_skipped(
        make_scheduler: Factory) -> None:
    started = threading.Event()
    release = threading.Event()
    skipped: queue.Queue[SchedulerEvent] = queue.Queue()

    def slow() -> None:
        started.set()
        release.wait(5)

    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_listener(skipped.put, events=[EventKind.RUN_SKIPPED])
        svc.add_cron_job("slow", "* * * * *", slow, coalesce=False)
        svc.start()
        frozen.move_to(minute(1))
        svc.wakeup()
        assert started.wait(2)
        frozen.move_to(minute(4))  # 02, 03 and 04 come due while 01 is still running
        svc.wakeup()
        times = [get(skipped).scheduled_time for _ in range(3)]
        assert times == list(minutes(2, 3, 4))
        info = svc.get_job("slow")
        assert (info.run_count, info.skip_count, info.missed_count) == (1, 3, 0)
        release.set()
