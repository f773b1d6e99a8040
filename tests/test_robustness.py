"""Regression tests for the robustness defects found in review: no foreign code under
the lock, a dispatcher that never dies, shutdown that drops every backlog, restarts
after a timed-out shutdown, run_pending() interrupted, clock jumps and per-run timers,
events while the pool is full, and __exit__ after a shutdown elsewhere."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Callable, Iterator, List, Optional

import pytest
from freezegun import freeze_time
from helpers import Sentinel, events_of, get, library_threads

from memory_scheduler import (
    EventKind,
    NotRunning,
    RunResult,
    RunStatus,
    SchedulerEvent,
    SchedulerService,
)
from memory_scheduler.testing import check_invariants

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)
Factory = Callable[..., SchedulerService]


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


class CallsTheService(logging.Handler):
    """A handler that asks the service something for every record, as one adding
    ``len(svc.jobs())`` to records would."""

    def __init__(self, svc: SchedulerService) -> None:
        super().__init__()
        self.svc = svc
        self.counts: List[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.counts.append(len(self.svc.jobs()))


@pytest.fixture
def handler_calling(make_scheduler: Factory) -> Iterator[Callable[[SchedulerService],
                                                                  CallsTheService]]:
    logger = logging.getLogger("memory_scheduler")
    added: List[CallsTheService] = []
    level = logger.level

    def attach(svc: SchedulerService) -> CallsTheService:
        handler = CallsTheService(svc)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        added.append(handler)
        return handler

    yield attach
    for handler in added:
        logger.removeHandler(handler)
    logger.setLevel(level)


def in_thread(fn: Callable[[], object], timeout: float = 5.0) -> bool:
    """Run ``fn`` in a daemon thread; True if it returned within ``timeout``."""
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


# 1. No logging handler runs under the lock -------------------------------------------

def test_a_log_handler_calling_the_service_does_not_deadlock_run_pending(
        make_scheduler: Factory,
        handler_calling: Callable[[SchedulerService], CallsTheService]) -> None:
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("late", "* * * * *", lambda: None, misfire_grace_secs=1)
        svc.add_cron_job("ok", "* * * * *", lambda: None)
        handler = handler_calling(svc)
        frozen.move_to(minute(1) + timedelta(seconds=10))  # "late" misses, "ok" runs
        results: List[RunResult] = []
        assert in_thread(lambda: results.extend(svc.run_pending()))
        assert {r.status for r in results} == {RunStatus.MISSED, RunStatus.SUCCESS}
        assert handler.counts and set(handler.counts) == {2}


def test_a_log_handler_calling_the_service_does_not_deadlock_the_dispatcher(
        make_scheduler: Factory,
        handler_calling: Callable[[SchedulerService], CallsTheService]) -> None:
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        missed = events_of(svc, EventKind.RUN_MISSED)
        svc.add_cron_job("late", "* * * * *", lambda: None, misfire_grace_secs=1)
        handler_calling(svc)
        svc.start()
        frozen.move_to(minute(1) + timedelta(seconds=10))
        svc.wakeup()
        assert get(missed).job_name == "late"
        assert in_thread(svc.jobs, timeout=2)  # the lock is free


# 2. The dispatcher never dies ---------------------------------------------------------

def test_a_schedule_that_ends_is_reported_and_the_dispatcher_goes_on(
        make_scheduler: Factory) -> None:
    with freeze_time("9998-12-31 23:58:30") as frozen:
        svc = make_scheduler()
        ended = events_of(svc, EventKind.JOB_ENDED)
        ran = events_of(svc, EventKind.RUN_SUCCEEDED)
        svc.add_cron_job("new-year", "0 0 1 1 *", lambda: None)  # 9999-01-01 is its last
        svc.add_cron_job("minutely", "* * * * *", lambda: None)
        svc.start()
        frozen.move_to("9999-01-01 00:00:00")
        svc.wakeup()
        event = get(ended)
        assert (event.job_name, event.exception) == ("new-year", None)
        assert {get(ran).job_name, get(ran).job_name} == {"new-year", "minutely"}
        frozen.move_to("9999-01-01 00:01:00")  # the dispatcher is still alive
        svc.wakeup()
        assert get(ran).job_name == "minutely"
        info = svc.get_job("new-year")
        assert info.ended and info.next_run_time is None and not info.paused
        assert info.run_count == 1


class BreakingZone(tzinfo):
    """UTC until ``broken`` is set; then every offset lookup raises."""

    broken = False

    def utcoffset(self, dt: Optional[datetime]) -> timedelta:
        if self.broken:
            raise RuntimeError("zone database unavailable")
        return timedelta(0)

    def dst(self, dt: Optional[datetime]) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: Optional[datetime]) -> str:
        return "Breaking"


def test_an_error_in_one_jobs_handling_ends_that_job_only(make_scheduler: Factory) -> None:
    zone = BreakingZone()
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        ended = events_of(svc, EventKind.JOB_ENDED)
        ran = events_of(svc, EventKind.RUN_SUCCEEDED)
        svc.add_cron_job("fragile", "0 * * * *", lambda: None, timezone=zone)
        svc.add_cron_job("sturdy", "* * * * *", lambda: None)
        svc.start()
        zone.broken = True
        frozen.move_to(T0 + timedelta(hours=1))
        svc.wakeup()
        event = get(ended)
        assert event.job_name == "fragile"
        assert isinstance(event.exception, RuntimeError)
        assert get(ran).job_name == "sturdy"
        frozen.move_to(T0 + timedelta(hours=1, minutes=1))
        svc.wakeup()
        assert get(ran).job_name == "sturdy"
        assert svc.get_job("fragile").ended


# 3. Shutdown drops every backlog ------------------------------------------------------

def test_coalesce_false_backlog_does_not_run_after_shutdown(make_scheduler: Factory) -> None:
    started = threading.Event()
    release = threading.Event()
    calls: List[datetime] = []

    def slow() -> None:
        calls.append(datetime.now(UTC))
        started.set()
        release.wait(5)

    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        ended = events_of(svc, EventKind.RUN_SUCCEEDED, EventKind.RUN_FAILED)
        svc.add_cron_job("slow", "* * * * *", slow, coalesce=False)
        svc.start()
        frozen.move_to(minute(4))  # 01..04 due: one runs, three wait behind it
        svc.wakeup()
        assert started.wait(2)
        svc.shutdown(timeout=0.05)  # times out: "slow" ignores its token
        release.set()
        # The worker records the run, and would start the next catch-up run in the same
        # lock round, before delivering this event.
        assert get(ended).scheduled_time == minute(1)
        assert svc.get_job("slow").running == 0
        info = svc.get_job("slow")
        assert (info.run_count, info.missed_count) == (1, 3)
        assert len(calls) == 1


# 4. Each start has its own pool -------------------------------------------------------

def test_restart_after_a_timed_out_shutdown_runs_jobs_while_old_ones_are_stuck(
        make_scheduler: Factory) -> None:
    release = threading.Event()
    stuck = threading.Event()

    def hang() -> None:
        stuck.set()
        release.wait(10)

    with freeze_time(T0) as frozen:
        svc = make_scheduler(max_workers=1)
        svc.add_cron_job("hang", "0 * * * *", hang)
        svc.add_cron_job("work", "*/2 * * * *", lambda: None)
        svc.start()
        frozen.move_to(T0 + timedelta(hours=1))
        svc.wakeup()
        assert stuck.wait(2)
        svc.shutdown(timeout=0.05)
        ran = events_of(svc, EventKind.RUN_SUCCEEDED)
        svc.start()
        frozen.move_to(T0 + timedelta(hours=1, minutes=2))
        svc.wakeup()
        assert get(ran).job_name == "work"  # the one new worker is free
        release.set()
        svc.shutdown(timeout=2)  # waits for this start's pool only, not for "hang"
        assert get(ran).job_name == "hang"
        assert svc.get_job("hang").running == 0
        check_invariants(svc)


# 5. run_pending() interrupted ---------------------------------------------------------

@pytest.mark.parametrize("where", ["job", "listener"])
def test_run_pending_interrupted_leaves_no_job_reserved(make_scheduler: Factory,
                                                        where: str) -> None:
    interrupted: List[bool] = []

    def interrupt() -> None:
        if not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt

    def listener(event: SchedulerEvent) -> None:
        if event.job_name == "first" and event.kind is EventKind.RUN_SUCCEEDED:
            interrupt()

    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        if where == "job":
            svc.add_cron_job("first", "* * * * *", interrupt)
        else:
            svc.add_cron_job("first", "* * * * *", lambda: None)
            svc.add_listener(listener)
        svc.add_cron_job("second", "* * * * *", lambda: None)
        svc.add_cron_job("catching-up", "* * * * *", lambda: None, coalesce=False)
        frozen.move_to(minute(2))
        with pytest.raises(KeyboardInterrupt):
            svc.run_pending()
        assert [(i.name, i.running) for i in svc.jobs() if i.running] == []
        check_invariants(svc)
        frozen.move_to(minute(3))
        statuses = {r.job_name: r.status for r in svc.run_pending()
                    if r.job_name != "first"}
        assert statuses == {"second": RunStatus.SUCCESS, "catching-up": RunStatus.SUCCESS}


# 6. Per-run timers follow a backward clock jump ---------------------------------------

def test_a_jittered_start_keeps_its_delay_after_the_clock_goes_back(
        make_scheduler: Factory) -> None:
    with freeze_time(T0) as frozen:
        svc = make_scheduler(random_seed=7)
        started = events_of(svc, EventKind.RUN_STARTED, job="jittered")
        svc.add_cron_job("jittered", "0 * * * *", lambda: None, jitter_secs=10)
        sentinel = Sentinel(svc, "0 * * * *")
        svc.start()
        frozen.move_to(T0 + timedelta(hours=1))
        svc.wakeup()  # due: now waiting for its delay (< 10 s) in the timer heap
        sentinel.wait_past(T0 + timedelta(hours=1))  # the dispatcher has handled 01:00
        assert svc.get_job("jittered").running == 1
        frozen.move_to(T0 + timedelta(minutes=30))  # back by half an hour
        assert svc.run_pending() == []  # the service has seen the jump (nothing is due)
        frozen.tick(10)  # the delay has passed on the new timeline
        svc.wakeup()
        assert get(started).job_name == "jittered"


def test_a_timeout_keeps_its_length_after_the_clock_goes_back(make_scheduler: Factory) -> None:
    release = threading.Event()
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        started = events_of(svc, EventKind.RUN_STARTED)
        timed_out = events_of(svc, EventKind.RUN_TIMED_OUT)
        svc.add_cron_job("slow", "0 * * * *", lambda: release.wait(5), timeout_secs=30)
        svc.start()
        frozen.move_to(T0 + timedelta(hours=1))
        svc.wakeup()
        get(started)
        frozen.move_to(T0 + timedelta(minutes=30))
        assert svc.run_pending() == []  # the service has seen the jump (nothing is due)
        frozen.tick(31)
        svc.wakeup()
        assert get(timed_out).job_name == "slow"
        release.set()


# 7. Dispatcher events arrive while every worker is stuck ------------------------------

def test_skipped_and_timed_out_events_arrive_while_the_pool_is_full(
        make_scheduler: Factory) -> None:
    release = threading.Event()
    with freeze_time(T0) as frozen:
        svc = make_scheduler(max_workers=1)
        news = events_of(svc, EventKind.RUN_SKIPPED, EventKind.RUN_TIMED_OUT)
        started = events_of(svc, EventKind.RUN_STARTED)
        svc.add_cron_job("hang", "* * * * *", lambda: release.wait(10), timeout_secs=90)
        svc.start()
        frozen.move_to(minute(1))
        svc.wakeup()
        assert get(started).scheduled_time == minute(1)
        assert svc.get_job("hang").run_count == 1
        frozen.move_to(minute(2))  # due while running: skipped
        svc.wakeup()
        assert get(news).kind is EventKind.RUN_SKIPPED
        frozen.move_to(minute(2) + timedelta(seconds=31))  # 91 s after its start
        svc.wakeup()
        assert get(news).kind is EventKind.RUN_TIMED_OUT
        release.set()


# 10. A big instant does not hold the lock --------------------------------------------

def test_shutdown_from_a_job_during_a_big_instant_keeps_the_books(
        make_scheduler: Factory) -> None:
    done = threading.Event()

    def stop() -> None:
        svc.shutdown(timeout=0)
        done.set()

    with freeze_time(T0) as frozen:
        svc = make_scheduler(max_workers=2)
        svc.add_cron_job("stop", "* * * * *", stop)
        for i in range(20_000):
            svc.add_cron_job(f"j{i}", "* * * * *", lambda: None)
        svc.start()
        frozen.move_to(minute(1))
        svc.wakeup()
        assert done.wait(10)
        # No event marks "the dispatcher has dropped what it collected and the other
        # worker has recorded its last run" (the runs never reached make none), but each
        # ends with its thread: join them (shutdown(timeout=0) did not wait for them).
        for thread in library_threads(svc.config.thread_name_prefix):
            thread.join(5)
            assert not thread.is_alive(), thread.name
        assert [i.name for i in svc.jobs() if i.running] == []
        check_invariants(svc)
        infos = svc.jobs()
        # Each occurrence of the instant ran, was dropped (missed) or was never reached.
        for info in infos:
            reached = info.run_count + info.missed_count
            assert reached == 1 or (reached == 0 and info.next_run_time == minute(1))


# 11. __exit__ after a shutdown elsewhere ----------------------------------------------

def test_exit_does_not_raise_when_the_service_was_shut_down_meanwhile(
        make_scheduler: Factory) -> None:
    svc = make_scheduler()
    with svc:
        svc.shutdown()
        # Another thread shut it down between __exit__'s look and its call.
        svc.is_running = lambda: True  # type: ignore[method-assign]
    del svc.is_running
    with pytest.raises(NotRunning):
        svc.shutdown()


def test_shutdown_from_a_listener_on_the_notifier_thread(make_scheduler: Factory) -> None:
    # The dispatcher's events come from the notifier thread; shutting down from there
    # must not wait for that thread itself.
    done = threading.Event()

    def stop(event: SchedulerEvent) -> None:
        svc.shutdown(timeout=1)
        done.set()

    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_listener(stop, events=[EventKind.RUN_MISSED])
        svc.add_cron_job("late", "* * * * *", lambda: None, misfire_grace_secs=1)
        svc.start()
        frozen.move_to(minute(1) + timedelta(seconds=10))
        svc.wakeup()
        assert done.wait(5)
        assert not svc.is_running()


# Found in review: errors around a run, a listener's shutdown, dropped catch-up runs -----

class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("broken __str__")


def test_an_exception_whose_str_fails_keeps_the_books(make_scheduler: Factory) -> None:
    def job() -> None:
        raise Unprintable

    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        failed = events_of(svc, EventKind.RUN_FAILED)
        svc.add_cron_job("bad", "* * * * *", job)
        svc.start()
        frozen.move_to(minute(1))
        svc.wakeup()
        get(failed)
        info = svc.get_job("bad")
        assert (info.running, info.failure_count) == (0, 1)
        assert info.last_error == "Unprintable: <str() failed>"
        assert svc.run_job_now("bad") is True  # its overlap slot was given back


def test_shutdown_from_a_run_succeeded_listener_waits_for_the_other_runs(
        make_scheduler: Factory) -> None:
    slow_started = threading.Event()
    release = threading.Event()
    returned: List[bool] = []

    def stop(event: SchedulerEvent) -> None:
        if event.job_name == "quick":
            release.set()  # "slow" may finish now; shutdown must wait for it
            svc.shutdown(timeout=5)
            returned.append(svc.get_job("slow").running == 0)

    with freeze_time(T0):
        svc = make_scheduler(max_workers=2)
        svc.add_cron_job("slow", "0 0 1 1 *", lambda: (slow_started.set(), release.wait(5)))
        svc.add_cron_job("quick", "0 0 1 1 *", lambda: None)
        svc.add_listener(stop, events=[EventKind.RUN_SUCCEEDED])
        ended = events_of(svc, EventKind.SCHEDULER_SHUTDOWN)
        svc.start()
        svc.run_job_now("slow")
        assert slow_started.wait(2)
        svc.run_job_now("quick")
        get(ended, 5)
        assert returned == [True]


def test_catch_up_runs_of_an_interrupted_run_pending_are_counted(
        make_scheduler: Factory) -> None:
    def interrupt(event: SchedulerEvent) -> None:
        raise KeyboardInterrupt

    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("sync", "* * * * *", lambda: None, coalesce=False)
        frozen.move_to(minute(5))  # 01..05: one runs, four are its catch-up runs
        svc.add_listener(interrupt, events=[EventKind.RUN_STARTED])
        with pytest.raises(KeyboardInterrupt):
            svc.run_pending()
        info = svc.get_job("sync")
        assert (info.run_count, info.skip_count, info.missed_count, info.running) == (
            1, 0, 4, 0)


def test_a_zone_failing_at_add_registers_nothing(make_scheduler: Factory) -> None:
    zone = BreakingZone()
    zone.broken = True
    svc = make_scheduler()
    with pytest.raises(RuntimeError, match="zone database unavailable"):
        svc.add_cron_job("fragile", "0 * * * *", lambda: None, timezone=zone)
    assert svc.jobs() == []
    zone.broken = False
    svc.add_cron_job("fragile", "0 * * * *", lambda: None, timezone=zone)  # no DuplicateJob


def test_a_zone_failing_at_start_ends_that_job_and_the_service_starts(
        make_scheduler: Factory) -> None:
    zone = BreakingZone()
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        ended = events_of(svc, EventKind.JOB_ENDED)
        svc.add_cron_job("fragile", "0 * * * *", lambda: None, timezone=zone)
        svc.add_cron_job("sturdy", "* * * * *", lambda: None)
        frozen.move_to(T0 + timedelta(hours=2))  # both overdue at start()
        zone.broken = True
        svc.start()
        assert svc.is_running()
        assert get(ended).job_name == "fragile"
        assert svc.get_job("sturdy").next_run_time == T0 + timedelta(hours=2, minutes=1)


def test_a_zone_failing_after_a_clock_jump_ends_that_job_only(make_scheduler: Factory) -> None:
    zone = BreakingZone()
    with freeze_time(T0 + timedelta(hours=1)) as frozen:
        svc = make_scheduler()
        ended = events_of(svc, EventKind.JOB_ENDED)
        svc.add_cron_job("fragile", "0 * * * *", lambda: None, timezone=zone)
        svc.add_cron_job("sturdy", "* * * * *", lambda: None)
        svc.add_cron_job("over", "0 0 1 1 *", lambda: None)
        zone.broken = True
        frozen.move_to(T0)  # back an hour: every schedule is recomputed
        assert svc.run_pending() == []
        assert get(ended).job_name == "fragile"
        assert svc.get_job("sturdy").next_run_time == minute(1)
        frozen.move_to(T0 + timedelta(minutes=1))
        assert [r.job_name for r in svc.run_pending()] == ["sturdy"]
