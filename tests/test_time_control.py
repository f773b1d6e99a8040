"""The service under frozen and travelling clocks: freezegun and time-machine,
ticking and not; run_pending(); memory_scheduler.testing.simulate and fixtures."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from helpers import events_of, get, library_threads, log_records

from memory_scheduler import (
    AlreadyRunning,
    EventKind,
    InvalidValue,
    RunStatus,
    SchedulerService,
    current_run,
)
from memory_scheduler.testing import simulate

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
Factory = Callable[..., SchedulerService]


class Driver:
    """One interface over freezegun's factory (``tick``) and time-machine's traveller
    (``shift``); both have ``move_to``."""

    def __init__(self, handle: Any, shift_method: str) -> None:
        self.handle = handle
        self._shift = getattr(handle, shift_method)

    def shift(self, seconds: float) -> None:
        self._shift(timedelta(seconds=seconds))

    def move_to(self, when: datetime) -> None:
        self.handle.move_to(when)


@contextlib.contextmanager
def frozen_clock(kind: str, start: datetime, tick: bool) -> Iterator[Driver]:
    if kind == "freezegun":
        with freeze_time(start, tick=tick) as handle:
            yield Driver(handle, "tick")
    else:
        time_machine = pytest.importorskip("time_machine")
        with time_machine.travel(start, tick=tick) as handle:
            yield Driver(handle, "shift")


CLOCKS = ["freezegun", "time-machine"]
START = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(params=CLOCKS)
def clock_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_wakeup_after_tick_runs_the_due_job_at_once(make_scheduler: Factory,
                                                    clock_kind: str) -> None:
    ran: queue.Queue[datetime] = queue.Queue()
    with frozen_clock(clock_kind, START, tick=False) as clock:
        # An hour of maximum sleep: only wakeup() can make it look at the clock.
        svc = make_scheduler(max_sleep_secs=3600)
        svc.add_cron_job("m", "* * * * *", lambda: ran.put(current_run().scheduled_time))
        svc.start()
        clock.shift(61)
        svc.wakeup()
        assert get(ran, 2) == START + timedelta(minutes=1)
        clock.move_to(START + timedelta(minutes=5, seconds=1))
        svc.wakeup()
        assert get(ran, 2) == START + timedelta(minutes=2)  # coalesced catch-up
        svc.shutdown(timeout=1)


def test_without_wakeup_the_max_sleep_bounds_the_delay(make_scheduler: Factory,
                                                       clock_kind: str) -> None:
    ran: queue.Queue[datetime] = queue.Queue()
    with frozen_clock(clock_kind, START, tick=False) as clock:
        svc = make_scheduler(max_sleep_secs=0.05)
        svc.add_cron_job("m", "* * * * *", lambda: ran.put(current_run().scheduled_time))
        svc.start()
        clock.shift(60)
        assert get(ran, 2) == START + timedelta(minutes=1)
        svc.shutdown(timeout=1)


@pytest.mark.parametrize("tick", [False, True])
def test_whole_lifecycle_never_hangs(make_scheduler: Factory, clock_kind: str,
                                     tick: bool) -> None:
    ran: queue.Queue[str] = queue.Queue()
    stubborn_started = threading.Event()
    release = threading.Event()

    def stubborn() -> None:
        stubborn_started.set()
        release.wait(5)  # ignores its token

    with frozen_clock(clock_kind, START, tick=tick) as clock:
        svc = make_scheduler(max_sleep_secs=0.05)
        svc.add_cron_job("a", "* * * * *", lambda: ran.put("a"))
        svc.add_cron_job("b", "*/2 * * * *", lambda: ran.put("b"))
        svc.add_cron_job("stubborn", "*/3 * * * *", stubborn)
        svc.start()
        clock.shift(60)
        svc.wakeup()
        assert get(ran, 2) == "a"
        svc.pause_job("a")
        svc.remove_job("b")
        clock.shift(120)
        svc.wakeup()
        assert stubborn_started.wait(2)
        svc.shutdown(timeout=0.2)  # returns although "stubborn" ignores its token
        assert not svc.is_running()
        assert not release.is_set()
        release.set()
    for t in library_threads():
        t.join(2)
    assert library_threads() == []


def test_backward_and_forward_jumps(make_scheduler: Factory, clock_kind: str) -> None:
    ran: queue.Queue[tuple[str, datetime]] = queue.Queue()
    start = datetime(2026, 3, 1, 1, 59, 30, tzinfo=UTC)
    with frozen_clock(clock_kind, start, tick=False) as clock, log_records() as records:
        svc = make_scheduler(max_sleep_secs=3600)
        for name, expr in (("fixed", "0 2 * * *"), ("wild", "*/10 * * * *")):
            svc.add_cron_job(name, expr,
                             lambda name=name: ran.put((name, current_run().scheduled_time)))
        svc.start()
        clock.move_to(datetime(2026, 3, 1, 2, 0, 1, tzinfo=UTC))
        svc.wakeup()
        assert sorted([get(ran, 2), get(ran, 2)]) == [
            ("fixed", datetime(2026, 3, 1, 2, tzinfo=UTC)),
            ("wild", datetime(2026, 3, 1, 2, tzinfo=UTC))]
        # Back by two hours: the wildcard job does not stall for two hours...
        clock.move_to(datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC))
        svc.wakeup()
        # No event marks a clock jump; its log record, made by the dispatcher's pass,
        # is emitted by the notifier thread once that pass has recomputed the schedules.
        jump = get(records)
        while not jump.getMessage().startswith("clock moved back"):
            jump = get(records)
        assert jump.threadName == f"{svc.config.thread_name_prefix}-events"
        assert svc.get_job("wild").next_run_time == datetime(2026, 3, 1, 0, 10, tzinfo=UTC)
        clock.shift(600)
        svc.wakeup()
        assert get(ran, 2) == ("wild", datetime(2026, 3, 1, 0, 10, tzinfo=UTC))
        # ... and forward again past 02:00: the fixed job does not run 02:00 twice.
        clock.move_to(datetime(2026, 3, 1, 2, 5, tzinfo=UTC))
        svc.wakeup()
        assert get(ran, 2) == ("wild", datetime(2026, 3, 1, 0, 20, tzinfo=UTC))
        with pytest.raises(queue.Empty):
            get(ran, 0.1)
        assert svc.get_job("fixed").run_count == 1
        assert svc.get_job("fixed").next_run_time == datetime(2026, 3, 2, 2, tzinfo=UTC)
        svc.shutdown(timeout=1)


def test_run_pending_and_the_dispatcher_never_share_an_occurrence(
        make_scheduler: Factory) -> None:
    counts: dict[datetime, int] = {}
    lock = threading.Lock()

    def job() -> None:
        with lock:
            when = current_run().scheduled_time
            counts[when] = counts.get(when, 0) + 1

    with freeze_time(START) as frozen:
        svc = make_scheduler(max_sleep_secs=0.001)
        finished = events_of(svc, EventKind.RUN_SUCCEEDED, EventKind.RUN_FAILED)
        for i in range(20):
            svc.add_cron_job(f"j{i}", "* * * * * *", job, overlap="concurrent")
        svc.start()
        for _ in range(30):
            frozen.tick(1)
            svc.wakeup()
            svc.run_pending()
        # Runs the dispatcher took for the last instant may still be waiting for a
        # worker, and shutdown() stops starting runs at once: let them finish first.
        for _ in range(20 * 30):
            assert get(finished, 5).kind is EventKind.RUN_SUCCEEDED
        svc.shutdown(timeout=2)
    assert sum(counts.values()) == 20 * 30
    assert set(counts.values()) == {20}


def test_run_pending_works_without_start_and_reports_in_order(make_scheduler: Factory) -> None:
    with freeze_time(START) as frozen:
        svc = make_scheduler(default_timezone="America/New_York")
        svc.add_cron_job("b", "0 * * * *", lambda: None)
        svc.add_cron_job("a", "30 * * * *", lambda: None)
        svc.add_cron_job("boom", "15 * * * *", lambda: 1 / 0)
        frozen.tick(timedelta(hours=1))
        results = svc.run_pending()
        assert [(r.job_name, r.status) for r in results] == [
            ("boom", RunStatus.FAILED), ("a", RunStatus.SUCCESS), ("b", RunStatus.SUCCESS)]
        assert results[0].error == "ZeroDivisionError: division by zero"
        assert results[0].scheduled_time.tzinfo == NY
        assert svc.run_pending() == []


def test_run_pending_lets_keyboard_interrupt_through_but_records_it(
        make_scheduler: Factory) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with freeze_time(START) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("ctrl-c", "* * * * *", interrupted)
        frozen.tick(60)
        with pytest.raises(KeyboardInterrupt):
            svc.run_pending()
        info = svc.get_job("ctrl-c")
        assert (info.failure_count, info.running) == (1, 0)


@pytest.mark.parametrize("kind", CLOCKS)
def test_simulate_the_dst_fortnight(make_scheduler: Factory, kind: str) -> None:
    with frozen_clock(kind, datetime(2026, 3, 1, tzinfo=NY), tick=False) as clock:
        svc = make_scheduler(default_timezone="America/New_York")
        svc.add_cron_job("nightly", "30 2 * * *", lambda: None)
        runs = simulate(svc, clock.handle, datetime(2026, 3, 15, 23, 59, tzinfo=NY))
        local = [r.scheduled_time.strftime("%m-%d %H:%M") for r in runs]
        assert local == [f"03-{day:02d} {'03:00' if day == 8 else '02:30'}"
                         for day in range(1, 16)]
        assert all(r.status is RunStatus.SUCCESS for r in runs)
        assert datetime.now(UTC) == datetime(2026, 3, 15, 23, 59, tzinfo=NY)


def test_simulate_a_week_of_mixed_jobs(make_scheduler: Factory) -> None:
    with freeze_time("2026-10-30 00:00:00") as frozen:
        svc = make_scheduler(default_timezone="Europe/London")
        svc.add_cron_job("hourly", "0 * * * *", lambda: None)
        svc.add_cron_job("nightly", "30 1 * * *", lambda: None)
        runs = simulate(svc, frozen, "2026-11-06T00:00:00+00:00")
    hourly = [r for r in runs if r.job_name == "hourly"]
    nightly = [r for r in runs if r.job_name == "nightly"]
    # 7 days of hours plus the repeated 01:00 of the fall-back night (October 25 is
    # before the window, so no extra hour here): 168 runs.
    assert len(hourly) == 7 * 24
    assert len(nightly) == 7
    times = [r.scheduled_time for r in runs]
    assert times == sorted(times)


def test_simulate_refuses_a_running_service(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    svc.start()
    with freeze_time(START) as frozen, pytest.raises(AlreadyRunning):
        simulate(svc, frozen, START)
    with freeze_time(START) as frozen, pytest.raises(InvalidValue):
        svc.shutdown()
        simulate(svc, frozen, "next tuesday")


def test_scheduler_fixture(scheduler: SchedulerService) -> None:
    ran = threading.Event()
    scheduler.add_cron_job("s", "* * * * * *", ran.set)
    scheduler.start()
    assert ran.wait(2)
    assert scheduler.config.shutdown_timeout_secs == 1.0


def test_make_scheduler_fixture(make_scheduler: Callable[..., SchedulerService]) -> None:
    svc = make_scheduler(default_timezone="Europe/Paris")
    assert svc.config.default_timezone == "Europe/Paris"


def test_fixture_fails_a_test_that_leaves_a_thread(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["memory_scheduler.testing"]')
    pytester.makepyfile("""
        import threading
        release = threading.Event()

        def test_leaky(make_scheduler):
            svc = make_scheduler(shutdown_timeout_secs=0.1)
            started = threading.Event()
            def stubborn():
                started.set()
                release.wait(1.5)  # outlives the fixture's shutdown and join
            svc.add_cron_job("stubborn", "* * * * * *", stubborn)
            svc.start()
            assert started.wait(2)

        def test_clean(scheduler):
            scheduler.start()
    """)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*threads left alive after the test*"])


@pytest.mark.parametrize("clock_kind", CLOCKS)
def test_the_second_pass_of_a_fall_back_hour_keeps_its_fold(make_scheduler: Factory,
                                                            clock_kind: str) -> None:
    # freezegun's datetime drops fold in astimezone(): every local time handed out for
    # 01:00-01:59 EST (the second pass) named the instant an hour earlier.
    seen: list[datetime] = []
    events: list[datetime] = []
    night = datetime(2026, 11, 1, 4, 50, tzinfo=UTC)  # 00:50 EDT
    with frozen_clock(clock_kind, night, tick=False) as clock:
        svc = make_scheduler(default_timezone="America/New_York")
        svc.add_listener(lambda e: events.append(e.scheduled_time),  # type: ignore[arg-type]
                         events=["run_started"])
        svc.add_cron_job("half-hourly", "*/30 * * * *",
                         lambda: seen.append(current_run().scheduled_time))
        next_times = []
        results = []
        for _ in range(5):
            due = svc.next_run_time()
            assert due is not None
            next_times.append(svc.get_job("half-hourly").next_run_time)
            clock.move_to(due)
            results.extend(svc.run_pending())
    wall = ["01:00 -4", "01:30 -4", "01:00 -5", "01:30 -5", "02:00 -5"]
    for times in (seen, events, [r.scheduled_time for r in results], next_times):
        assert [f"{t:%H:%M} {t.utcoffset() // timedelta(hours=1)}" for t in times] == wall
        utc = [t.astimezone(UTC) for t in times]
        assert utc == sorted(set(utc))  # five distinct instants, in order
