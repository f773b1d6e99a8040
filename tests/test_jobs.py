"""Job lifecycle and policies: registry, pause/resume, overlap, misfire, coalescing,
jitter, timeouts, events and the decorator."""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable

import pytest
from freezegun import freeze_time
from helpers import Sentinel, events_of, get

from memory_scheduler import (
    MAX_CATCHUP_RUNS,
    DuplicateJob,
    EventKind,
    InvalidValue,
    Job,
    JobNotFound,
    NotRunning,
    RunStatus,
    SchedulerEvent,
    SchedulerService,
    current_run,
)
from memory_scheduler.job import new_job_id

UTC = timezone.utc
T0 = "2026-03-01 00:00:00"
Factory = Callable[..., SchedulerService]


def at(minute: int, second: int = 0, hour: int = 0) -> datetime:
    return datetime(2026, 3, 1, hour, minute, second, tzinfo=UTC)


def statuses(results: list) -> list[tuple[str, RunStatus, datetime]]:  # type: ignore[type-arg]
    return [(r.job_name, r.status, r.scheduled_time) for r in results]


# --- registry ---------------------------------------------------------------------------

def test_names_are_unique_unless_replace_existing(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    first = svc.add_cron_job("report", "0 * * * *", lambda: None)
    with pytest.raises(DuplicateJob, match="'report' already exists"):
        svc.add_cron_job("report", "30 * * * *", lambda: None)
    with pytest.raises(ValueError):
        svc.add_job(Job("report", "30 * * * *", lambda: None))
    second = svc.add_cron_job("report", "30 * * * *", lambda: None, replace_existing=True)
    assert second == first  # the replacement keeps the id
    assert [j.expression for j in svc.jobs()] == ["30 * * * *"]


def test_lookup_by_uuid_or_name(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    job_id = svc.add_cron_job("report", "0 * * * *", lambda: None)
    assert svc.get_job(job_id) == svc.get_job("report") == svc.get_job(str(job_id))
    for call in (svc.get_job, svc.remove_job, svc.pause_job, svc.resume_job):
        with pytest.raises(JobNotFound, match="'nope'"):
            call("nope")
        with pytest.raises(JobNotFound):
            call(uuid.uuid4())
    with pytest.raises(InvalidValue, match="expected a UUID or a job name"):
        svc.get_job(42)  # type: ignore[arg-type]


def test_job_info_fields_and_order(make_scheduler: Factory) -> None:
    with freeze_time(T0):
        svc = make_scheduler()
        svc.add_cron_job("later", "0 5 * * *", lambda: None, timezone="Asia/Tokyo")
        svc.add_cron_job("sooner", "*/5 * * * *", lambda: None, overlap="concurrent",
                         max_instances=3, misfire_grace_secs=10, coalesce=False,
                         jitter_secs=2, timeout_secs=60)
        svc.add_cron_job("paused", "* * * * *", lambda: None)
        svc.pause_job("paused")
        infos = svc.jobs()
        assert [i.name for i in infos] == ["sooner", "later", "paused"]
        sooner = infos[0]
        assert (sooner.overlap, sooner.max_instances, sooner.misfire_grace_secs,
                sooner.coalesce, sooner.jitter_secs, sooner.timeout_secs) == (
            "concurrent", 3, 10, False, 2, 60)
        assert sooner.next_run_time == at(5)
        assert (sooner.run_count, sooner.failure_count, sooner.skip_count, sooner.missed_count,
                sooner.timeout_count, sooner.running) == (0, 0, 0, 0, 0, 0)
        assert sooner.last_status is None and sooner.last_error is None
        later = infos[1]
        assert later.next_run_time is not None
        assert later.next_run_time.isoformat() == "2026-03-02T05:00:00+09:00"
        assert infos[2].paused and infos[2].next_run_time is None
        with pytest.raises(AttributeError):
            sooner.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(("options", "message"), [
    ({"overlap": "queue"}, "overlap='queue'"),
    ({"max_instances": 0}, "max_instances=0"),
    ({"max_instances": 2}, "applies to overlap='concurrent'"),
    ({"overlap": "concurrent", "max_instances": 1.5}, "max_instances=1.5"),
    ({"misfire_grace_secs": -1}, "misfire_grace_secs=-1"),
    ({"coalesce": "yes"}, "coalesce='yes'"),
    ({"jitter_secs": float("inf")}, "jitter_secs=inf"),
    ({"timeout_secs": 0}, "timeout_secs=0"),
    ({"replace_existing": 1}, "replace_existing=1"),
    ({"colaesce": False}, "unknown job option 'colaesce'"),
])
def test_bad_job_options_name_the_option(make_scheduler: Factory, options: dict[str, object],
                                         message: str) -> None:
    svc = make_scheduler()
    with pytest.raises(InvalidValue) as info:
        svc.add_cron_job("j", "* * * * *", lambda: None, **options)
    assert message in str(info.value)


def test_bad_job_names(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    for bad in ("", "   ", None, 3):
        with pytest.raises(InvalidValue, match="job name"):
            svc.add_cron_job(bad, "* * * * *", lambda: None)  # type: ignore[arg-type]


# --- pause / resume / run_job_now -----------------------------------------------------

def test_pause_and_resume_without_a_burst(make_scheduler: Factory) -> None:
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("m", "* * * * *", lambda: None)
        svc.pause_job("m")
        frozen.tick(timedelta(minutes=10))
        assert svc.run_pending() == []
        svc.resume_job("m")
        assert svc.get_job("m").next_run_time == at(11)
        assert svc.run_pending() == []  # nothing caught up
        frozen.tick(60)
        assert statuses(svc.run_pending()) == [("m", RunStatus.SUCCESS, at(11))]
        svc.pause_job("m")
        svc.pause_job("m")  # idempotent
        svc.resume_job("m")
        svc.resume_job("m")
        assert svc.get_job("m").run_count == 1


def test_pause_while_running_affects_only_later_runs(make_scheduler: Factory) -> None:
    started = threading.Event()
    release = threading.Event()
    with freeze_time(T0) as frozen:
        svc = make_scheduler(max_workers=1)

        def job() -> None:
            started.set()
            release.wait(5)

        svc.add_cron_job("j", "* * * * *", job)
        sentinel = Sentinel(svc)
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        assert started.wait(2)
        svc.pause_job("j")
        assert svc.get_job("j").running == 1  # the current run goes on
        release.set()
        sentinel.wait_past(at(1))  # it waited for the one worker
        frozen.tick(120)
        svc.wakeup()
        sentinel.wait_past(at(2))  # "j" would have run before it
        info = svc.get_job("j")
        assert (info.run_count, info.last_status, info.running) == (1, RunStatus.SUCCESS, 0)


def test_run_job_now_honours_overlap_and_keeps_the_schedule(make_scheduler: Factory) -> None:
    started: queue.Queue[datetime] = queue.Queue()
    release = threading.Event()
    with freeze_time("2026-03-01 00:00:30") as frozen:
        svc = make_scheduler()

        def job() -> None:
            started.put(current_run().scheduled_time)
            release.wait(5)

        svc.add_cron_job("j", "0 * * * *", job)
        with pytest.raises(NotRunning):
            svc.run_job_now("j")
        svc.start()
        assert svc.run_job_now("j") is True
        assert started.get(timeout=2) == datetime(2026, 3, 1, 0, 0, 30, tzinfo=UTC)
        assert svc.run_job_now("j") is False  # still running: skipped
        assert svc.get_job("j").skip_count == 1
        assert svc.get_job("j").next_run_time == at(0, hour=1)
        release.set()
        frozen.tick(1)


# --- overlap ----------------------------------------------------------------------------

def test_skip_is_counted_and_logged_once(make_scheduler: Factory,
                                         caplog_info: pytest.LogCaptureFixture) -> None:
    started = threading.Event()
    release = threading.Event()
    with freeze_time(T0) as frozen:
        svc = make_scheduler()

        def slow() -> None:
            started.set()
            release.wait(5)

        skipped = events_of(svc, EventKind.RUN_SKIPPED)
        svc.add_cron_job("slow", "* * * * * *", slow)
        svc.start()
        frozen.tick(1)
        svc.wakeup()
        assert started.wait(2)
        for n in range(1, 6):
            frozen.tick(1)
            svc.wakeup()
            assert get(skipped).scheduled_time == at(0, 1 + n)
            assert svc.get_job("slow").skip_count == n
        release.set()
    warnings = [r for r in caplog_info.records
                if r.levelno == logging.WARNING and "skipped" in r.getMessage()]
    assert len(warnings) == 1
    assert "'slow'" in warnings[0].getMessage()
    assert svc.get_job("slow").last_status in (RunStatus.SKIPPED, RunStatus.SUCCESS)


def test_concurrent_overlap_up_to_max_instances(make_scheduler: Factory) -> None:
    running: queue.Queue[datetime] = queue.Queue()
    release = threading.Event()
    with freeze_time(T0) as frozen:
        svc = make_scheduler()

        def slow() -> None:
            running.put(current_run().scheduled_time)
            release.wait(5)

        skipped = events_of(svc, EventKind.RUN_SKIPPED)
        ended = events_of(svc, EventKind.RUN_SUCCEEDED, EventKind.RUN_FAILED)
        svc.add_cron_job("slow", "* * * * * *", slow, overlap="concurrent", max_instances=2)
        svc.start()
        for second in (1, 2, 3):
            frozen.tick(1)
            svc.wakeup()
            if second < 3:
                assert running.get(timeout=2) == at(0, second)
        assert get(skipped).scheduled_time == at(0, 3)
        assert svc.get_job("slow").skip_count == 1
        assert svc.get_job("slow").running == 2
        release.set()
        assert {(e.kind, e.scheduled_time) for e in (get(ended), get(ended))} == {
            (EventKind.RUN_SUCCEEDED, at(0, 1)), (EventKind.RUN_SUCCEEDED, at(0, 2))}
        assert svc.get_job("slow").running == 0


def test_concurrent_without_limit_is_unlimited(make_scheduler: Factory) -> None:
    assert Job("j", "* * * * *", lambda: None, overlap="concurrent").instance_limit == float("inf")
    assert Job("j", "* * * * *", lambda: None).instance_limit == 1


def test_options_are_reported_as_given_even_when_equal_values_are_shared(
        make_scheduler: Factory) -> None:
    svc = make_scheduler()
    svc.add_cron_job("int", "* * * * *", lambda: None, misfire_grace_secs=1)
    svc.add_cron_job("float", "* * * * *", lambda: None, misfire_grace_secs=1.0)
    svc.add_job(Job("job", "* * * * *", lambda: None, misfire_grace_secs=1))
    graces = {name: svc.get_job(name).misfire_grace_secs for name in ("int", "float", "job")}
    assert graces == {"int": 1, "float": 1.0, "job": 1}
    assert [type(g) for g in graces.values()] == [int, float, int]


@freeze_time(T0)
def test_a_run_of_one_job_leaves_the_others_counters_alone(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    svc.add_cron_job("ran", "* * * * *", lambda: None)
    svc.add_cron_job("idle", "0 0 1 1 *", lambda: None)
    with freeze_time(at(1)):
        assert [r.status for r in svc.run_pending()] == [RunStatus.SUCCESS]
    ran, idle = svc.get_job("ran"), svc.get_job("idle")
    assert (ran.run_count, ran.last_status) == (1, RunStatus.SUCCESS)
    assert (idle.run_count, idle.last_status, idle.last_started) == (0, None, None)
    svc.add_cron_job("later", "0 0 1 1 *", lambda: None)
    assert svc.get_job("later").run_count == 0


def test_job_ids_are_version_4_and_unique(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    ids = [svc.add_cron_job(f"j{i}", "0 0 1 1 *", lambda: None) for i in range(2000)]
    assert len(set(ids)) == 2000
    assert {i.version for i in ids} == {4}
    assert {i.variant for i in ids} == {uuid.RFC_4122}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_job_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, new_job_id().bytes)
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert uuid.UUID(bytes=child) != new_job_id()


# --- misfire and coalescing --------------------------------------------------------------

def test_late_beyond_grace_is_missed(make_scheduler: Factory,
                                     caplog_info: pytest.LogCaptureFixture) -> None:
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("daily", "0 0 * * *", lambda: None, misfire_grace_secs=30)
        frozen.move_to("2026-03-02 00:00:45")  # 45 s late
        assert statuses(svc.run_pending()) == [
            ("daily", RunStatus.MISSED, datetime(2026, 3, 2, tzinfo=UTC))]
        info = svc.get_job("daily")
        assert (info.missed_count, info.run_count, info.last_status) == (1, 0, RunStatus.MISSED)
        assert info.next_run_time == datetime(2026, 3, 3, tzinfo=UTC)
        frozen.move_to("2026-03-03 00:00:29")  # 29 s late: within the grace
        assert statuses(svc.run_pending()) == [
            ("daily", RunStatus.SUCCESS, datetime(2026, 3, 3, tzinfo=UTC))]
    assert any("missed" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog_info.records)


def test_coalesced_run_uses_an_occurrence_within_the_grace(make_scheduler: Factory) -> None:
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("m", "* * * * *", lambda: None, misfire_grace_secs=90)
        frozen.move_to("2026-03-01 00:10:00")
        # 00:01 .. 00:08 are too late (one missed record), 00:09 is within 90 s.
        assert statuses(svc.run_pending()) == [
            ("m", RunStatus.MISSED, at(1)), ("m", RunStatus.SUCCESS, at(9))]


def test_coalesce_false_runs_each_missed_time_in_order(make_scheduler: Factory) -> None:
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("m", "* * * * *", lambda: None, coalesce=False)
        frozen.move_to("2026-03-01 00:04:30")
        assert statuses(svc.run_pending()) == [
            ("m", RunStatus.SUCCESS, at(i)) for i in range(1, 5)]
        assert svc.get_job("m").next_run_time == at(5)


def test_coalesce_false_is_bounded(make_scheduler: Factory) -> None:
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("s", "* * * * * *", lambda: None, coalesce=False)
        frozen.move_to("2026-03-02 00:00:00")  # a day: 86,400 missed seconds
        results = svc.run_pending()
        assert results[0].status is RunStatus.MISSED
        ran = [r for r in results if r.status is RunStatus.SUCCESS]
        assert len(ran) == MAX_CATCHUP_RUNS
        assert [r.scheduled_time for r in ran] == [
            at(0, 1) + timedelta(seconds=i) for i in range(MAX_CATCHUP_RUNS)]


def test_coalesce_false_catch_up_respects_the_grace(make_scheduler: Factory) -> None:
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("m", "* * * * *", lambda: None, coalesce=False,
                         misfire_grace_secs=150)
        frozen.move_to("2026-03-01 00:10:00")
        # Each occurrence ends in exactly one counter: 1-7 are past the grace.
        assert statuses(svc.run_pending()) == [
            *(("m", RunStatus.MISSED, at(i)) for i in range(1, 8)),
            ("m", RunStatus.SUCCESS, at(8)), ("m", RunStatus.SUCCESS, at(9)),
            ("m", RunStatus.SUCCESS, at(10))]
        assert svc.get_job("m").missed_count == 7


def test_lateness_is_measured_when_the_dispatcher_hands_over(make_scheduler: Factory) -> None:
    ran: queue.Queue[datetime] = queue.Queue()
    with freeze_time(T0) as frozen:
        svc = make_scheduler(max_sleep_secs=3600)
        missed = events_of(svc, EventKind.RUN_MISSED)
        svc.add_cron_job("m", "* * * * *", lambda: ran.put(current_run().scheduled_time),
                         misfire_grace_secs=5)
        svc.start()
        frozen.tick(64)  # the dispatcher only looks after the wakeup: 4 s late
        svc.wakeup()
        assert ran.get(timeout=2) == at(1)
        frozen.tick(62)  # 00:02:06: 6 s late
        svc.wakeup()
        assert get(missed).scheduled_time == at(2)
        assert svc.get_job("m").missed_count == 1


# --- jitter -----------------------------------------------------------------------------

def test_jitter_delays_the_start_but_not_the_scheduled_time(make_scheduler: Factory) -> None:
    ran: queue.Queue[tuple[datetime, datetime]] = queue.Queue()
    delay = random.Random(7).uniform(0, 30)
    with freeze_time(T0) as frozen:
        svc = make_scheduler(random_seed=7)

        def job() -> None:
            ran.put((current_run().scheduled_time, datetime.now(UTC)))

        svc.add_cron_job("j", "* * * * *", job, jitter_secs=30)
        sentinel = Sentinel(svc)
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        sentinel.wait_past(at(1))  # the dispatcher has handled 00:01, "j" included
        assert svc.get_job("j").running == 1  # reserved, waiting
        frozen.tick(max(0.0, delay - 0.5))
        svc.wakeup()
        with pytest.raises(queue.Empty):
            ran.get(timeout=0.05)
        frozen.tick(0.6)
        svc.wakeup()
        scheduled, started = ran.get(timeout=2)
        assert scheduled == at(1)
        assert timedelta(0) <= started - scheduled <= timedelta(seconds=30)


@pytest.mark.parametrize("seed", range(5))
def test_jitter_stays_within_bounds(make_scheduler: Factory, seed: int) -> None:
    ran: queue.Queue[datetime] = queue.Queue()
    with freeze_time(T0) as frozen:
        svc = make_scheduler(random_seed=seed)
        svc.add_cron_job("j", "* * * * *", lambda: ran.put(datetime.now(UTC)), jitter_secs=10)
        sentinel = Sentinel(svc)
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        sentinel.wait_past(at(1))  # the dispatcher has handled 00:01, "j" included
        assert svc.get_job("j").running == 1
        frozen.tick(10)  # the whole jitter window has passed
        svc.wakeup()
        assert at(1) <= ran.get(timeout=2) <= at(1, 10)


def test_jitter_is_cut_short_by_shutdown(make_scheduler: Factory) -> None:
    ran = threading.Event()
    with freeze_time(T0) as frozen:
        svc = make_scheduler(random_seed=1)
        svc.add_cron_job("j", "* * * * *", ran.set, jitter_secs=3600)
        sentinel = Sentinel(svc)
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        sentinel.wait_past(at(1))  # the dispatcher has handled 00:01, "j" included
        assert svc.get_job("j").running == 1
        svc.shutdown(timeout=5)
        assert not ran.is_set()
        assert svc.get_job("j").running == 0
        assert svc.get_job("j").run_count == 0


# --- timeouts and cancellation -------------------------------------------------------------

def test_timeout_is_recorded_while_the_function_still_runs(
        make_scheduler: Factory, caplog_info: pytest.LogCaptureFixture) -> None:
    started = threading.Event()
    token_seen = threading.Event()
    release = threading.Event()
    with freeze_time(T0) as frozen:
        svc = make_scheduler()

        def slow() -> None:
            started.set()
            if current_run().cancel_token.wait(5):
                token_seen.set()
            release.wait(5)

        timed_out = events_of(svc, EventKind.RUN_TIMED_OUT)
        ended = events_of(svc, EventKind.RUN_SUCCEEDED, EventKind.RUN_FAILED)
        svc.add_cron_job("slow", "0 * * * *", slow, timeout_secs=30)
        svc.start()
        frozen.tick(3600)
        svc.wakeup()
        assert started.wait(2)
        frozen.tick(31)
        svc.wakeup()
        assert token_seen.wait(2)
        get(timed_out)  # the log record is delivered before the event
        info = svc.get_job("slow")
        assert info.last_status is RunStatus.TIMED_OUT
        assert info.timeout_count == 1
        assert info.running == 1  # the slot is held until the function returns
        assert any("timed out" in r.getMessage() for r in caplog_info.records
                   if r.levelno == logging.WARNING)
        release.set()
        assert get(ended).kind is EventKind.RUN_SUCCEEDED  # the function returned normally
        assert svc.get_job("slow").running == 0
        assert svc.get_job("slow").last_status is RunStatus.TIMED_OUT


def test_run_context(make_scheduler: Factory) -> None:
    seen: list[object] = []
    with freeze_time(T0) as frozen:
        svc = make_scheduler(default_timezone="Asia/Tokyo")

        def job() -> None:
            ctx = current_run()
            seen.extend([ctx.job_id, ctx.job_name, ctx.scheduled_time.isoformat(),
                         ctx.cancelled])

        job_id = svc.add_cron_job("ctx", "0 * * * *", job)
        frozen.tick(3600)
        svc.run_pending()
    assert seen == [job_id, "ctx", "2026-03-01T10:00:00+09:00", False]
    with pytest.raises(LookupError):
        current_run()


# --- events ---------------------------------------------------------------------------

def test_listeners_receive_events_in_order_and_are_isolated(
        make_scheduler: Factory, caplog_info: pytest.LogCaptureFixture) -> None:
    first: list[SchedulerEvent] = []
    second: list[EventKind] = []
    only_failures: list[SchedulerEvent] = []

    def broken(event: SchedulerEvent) -> None:
        raise RuntimeError("listener bug")

    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_listener(first.append)
        svc.add_listener(broken)
        svc.add_listener(lambda e: second.append(e.kind))
        svc.add_listener(only_failures.append, events=["run_failed"])
        ok_id = svc.add_cron_job("ok", "* * * * *", lambda: None)
        svc.add_cron_job("bad", "* * * * *", lambda: 1 / 0)
        svc.pause_job("bad")
        svc.resume_job("bad")
        frozen.tick(60)
        results = svc.run_pending()
        svc.remove_job("ok")
    assert [r.status for r in results] == [RunStatus.SUCCESS, RunStatus.FAILED]
    kinds = [e.kind for e in first]
    assert kinds == [EventKind.JOB_ADDED, EventKind.JOB_ADDED, EventKind.JOB_PAUSED,
                     EventKind.JOB_RESUMED, EventKind.RUN_STARTED, EventKind.RUN_SUCCEEDED,
                     EventKind.RUN_STARTED, EventKind.RUN_FAILED, EventKind.JOB_REMOVED]
    assert second == kinds  # the broken listener between them changed nothing
    assert first[4].job_id == ok_id and first[4].job_name == "ok"
    assert first[4].scheduled_time == at(1)
    assert len(only_failures) == 1 and isinstance(only_failures[0].exception, ZeroDivisionError)
    assert sum("listener" in r.getMessage() for r in caplog_info.records
               if r.levelno == logging.ERROR) == len(kinds)


def test_dispatcher_events_reach_listeners_through_the_pool(make_scheduler: Factory) -> None:
    events: queue.Queue[SchedulerEvent] = queue.Queue()
    release = threading.Event()
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_listener(events.put, events=[EventKind.RUN_SKIPPED, EventKind.SCHEDULER_STARTED,
                                             EventKind.SCHEDULER_SHUTDOWN])
        started = events_of(svc, EventKind.RUN_STARTED)
        svc.add_cron_job("slow", "* * * * * *", lambda: release.wait(5))
        svc.start()
        assert events.get(timeout=2).kind is EventKind.SCHEDULER_STARTED
        frozen.tick(1)
        svc.wakeup()
        assert get(started).scheduled_time == at(0, 1)
        frozen.tick(1)
        svc.wakeup()
        skipped = events.get(timeout=2)
        assert skipped.kind is EventKind.RUN_SKIPPED
        assert skipped.scheduled_time == at(0, 2)
        assert threading.current_thread().name != "memory_scheduler-dispatcher"
        release.set()
        svc.shutdown()
        assert events.get(timeout=2).kind is EventKind.SCHEDULER_SHUTDOWN


def test_listener_management_errors(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    with pytest.raises(InvalidValue, match="not callable"):
        svc.add_listener(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue, match="unknown event kind"):
        svc.add_listener(print, events=["job_exploded"])
    with pytest.raises(InvalidValue, match="not registered"):
        svc.remove_listener(print)
    got: list[SchedulerEvent] = []
    svc.add_listener(got.append)
    svc.remove_listener(got.append)
    svc.add_cron_job("j", "* * * * *", lambda: None)
    assert got == []


# --- decorator --------------------------------------------------------------------------

def test_cron_decorator_registers_and_returns_the_function(make_scheduler: Factory) -> None:
    svc = make_scheduler()

    @svc.cron("*/5 * * * *", name="five", timezone="Europe/Oslo", overlap="concurrent")
    def five() -> None:
        pass

    @svc.cron("@daily")
    def nightly() -> None:
        pass

    assert callable(five) and five.__name__ == "five"
    assert svc.get_job("five").timezone == "Europe/Oslo"
    assert svc.get_job("five").overlap == "concurrent"
    assert svc.get_job(nightly.__qualname__).expression == "@daily"
