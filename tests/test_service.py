"""SchedulerService: lifecycle, dispatching, shutdown, clock jumps, thread safety.

Threaded tests synchronise on queues with timeouts, never on sleeps; the clock is
frozen and moved explicitly.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest
from freezegun import freeze_time
from helpers import Sentinel, events_of, get, library_threads, log_records

from memory_scheduler import (
    AlreadyRunning,
    EventKind,
    InvalidCron,
    InvalidTimezone,
    InvalidValue,
    Job,
    JobNotFound,
    NotRunning,
    RunStatus,
    SchedulerConfig,
    SchedulerService,
    current_run,
)
from memory_scheduler.testing import check_invariants

UTC = timezone.utc
T0 = "2026-03-01 00:00:00"
Factory = Callable[..., SchedulerService]


def recorder() -> tuple[queue.Queue[datetime], Callable[[], None]]:
    q: queue.Queue[datetime] = queue.Queue()

    def job() -> None:
        q.put(current_run().scheduled_time)

    return q, job


def assert_empty(q: queue.Queue[Any]) -> None:
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)


# --- lifecycle ------------------------------------------------------------------------

def test_start_and_shutdown(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    assert not svc.is_running()
    svc.start()
    assert svc.is_running()
    assert not svc.shutdown_token.is_set()
    token = svc.shutdown_token
    svc.shutdown()
    assert token.is_set()
    assert not svc.is_running()
    assert library_threads() == []


def test_already_running_and_not_running(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    with pytest.raises(NotRunning):
        svc.shutdown()
    svc.start()
    with pytest.raises(AlreadyRunning):
        svc.start()
    svc.shutdown()
    with pytest.raises(NotRunning):
        svc.shutdown()


def test_context_manager() -> None:
    with SchedulerService(SchedulerConfig(shutdown_timeout_secs=1)) as svc:
        assert svc.is_running()
    assert not svc.is_running()
    assert library_threads() == []


def test_restart_after_shutdown_keeps_jobs(make_scheduler: Factory) -> None:
    q, job = recorder()
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("tick", "* * * * *", job)
        svc.start()
        first_token = svc.shutdown_token
        svc.shutdown()
        svc.start()  # documented: a stopped service can be started again
        assert svc.shutdown_token is not first_token and first_token.is_set()
        frozen.tick(60)
        svc.wakeup()
        assert q.get(timeout=2) == datetime(2026, 3, 1, 0, 1, tzinfo=svc.get_job("tick")
                                            .next_run_time.tzinfo)  # type: ignore[union-attr]
        svc.shutdown()


def test_shutdown_timeout_must_be_a_non_negative_number(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    svc.start()
    for bad in (-1, "1", float("nan")):
        with pytest.raises(InvalidValue):
            svc.shutdown(bad)  # type: ignore[arg-type]
    svc.shutdown(0.5)


# --- jobs -----------------------------------------------------------------------------

def test_add_cron_job_returns_uuid_and_snapshot(make_scheduler: Factory) -> None:
    with freeze_time("2026-03-07 12:00:00"):
        svc = make_scheduler(default_timezone="America/New_York")
        job_id = svc.add_cron_job("nightly", "30 2 * * *", lambda: None)
        assert isinstance(job_id, uuid.UUID)
        info = svc.get_job(job_id)
        assert (info.id, info.name, info.expression, info.timezone) == (
            job_id, "nightly", "30 2 * * *", "America/New_York")
        # DST: the next run is the gap-adjusted 03:00 EDT on March 8.
        assert info.next_run_time is not None
        assert info.next_run_time.isoformat() == "2026-03-08T03:00:00-04:00"
        assert svc.jobs() == [info]


def test_add_cron_job_validates(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    with pytest.raises(InvalidCron, match="'61 \\* \\* \\* \\*'"):
        svc.add_cron_job("bad", "61 * * * *", lambda: None)
    with pytest.raises(InvalidTimezone, match="Nowhere"):
        svc.add_cron_job("bad", "* * * * *", lambda: None, timezone="Nowhere")
    with pytest.raises(InvalidValue, match="unknown job option 'retries'"):
        svc.add_cron_job("bad", "* * * * *", lambda: None, retries=3)
    with pytest.raises(TypeError, match="not callable"):
        svc.add_cron_job("bad", "* * * * *", "print")  # type: ignore[arg-type]
    assert svc.jobs() == []


def test_add_job_with_a_job_object(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    job_id = svc.add_job(Job("j", "0 0 * * *", lambda: None, timezone="Asia/Tokyo"))
    assert svc.get_job(job_id).timezone == "Asia/Tokyo"
    with pytest.raises(InvalidValue):
        svc.add_job("not a job")  # type: ignore[arg-type]


def test_remove_and_unknown_ids(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    job_id = svc.add_cron_job("j", "* * * * *", lambda: None)
    svc.remove_job(job_id)
    with pytest.raises(JobNotFound) as info:
        svc.remove_job(job_id)
    assert str(job_id) in str(info.value)
    with pytest.raises(KeyError):
        svc.get_job(uuid.uuid4())


def test_due_job_runs_after_tick_and_wakeup(make_scheduler: Factory) -> None:
    q, job = recorder()
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("every-minute", "* * * * *", job)
        svc.start()
        assert_empty(q)
        frozen.tick(61)
        svc.wakeup()
        assert q.get(timeout=2) == datetime(2026, 3, 1, 0, 1, tzinfo=UTC)
        info = svc.get_job("every-minute")
        assert info.next_run_time == datetime(2026, 3, 1, 0, 2, tzinfo=UTC)


def test_without_wakeup_the_max_sleep_notices_the_clock(make_scheduler: Factory) -> None:
    q, job = recorder()
    with freeze_time(T0) as frozen:
        svc = make_scheduler(max_sleep_secs=0.05)
        svc.add_cron_job("every-minute", "* * * * *", job)
        svc.start()
        frozen.tick(60)
        assert q.get(timeout=2) == datetime(2026, 3, 1, 0, 1, tzinfo=UTC)


def test_job_added_while_running_with_an_earlier_run_fires(make_scheduler: Factory) -> None:
    q, job = recorder()
    with freeze_time(T0) as frozen:
        svc = make_scheduler(max_sleep_secs=3600)  # only notifications can wake it
        svc.add_cron_job("hourly", "0 * * * *", lambda: None)
        svc.start()
        svc.add_cron_job("seconds", "*/5 * * * * *", job)
        frozen.tick(5)
        svc.wakeup()
        assert q.get(timeout=2) == datetime(2026, 3, 1, 0, 0, 5, tzinfo=UTC)


def test_job_exception_is_logged_and_later_runs_continue(
        make_scheduler: Factory, caplog_info: pytest.LogCaptureFixture) -> None:
    calls: queue.Queue[int] = queue.Queue()

    def flaky() -> None:
        calls.put(1)
        raise ValueError("boom")

    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("flaky", "* * * * *", flaky)
        svc.start()
        for _ in range(2):
            frozen.tick(60)
            svc.wakeup()
            calls.get(timeout=2)
        svc.shutdown()
    info = svc.get_job("flaky")
    assert info.run_count == 2 and info.failure_count == 2
    assert info.last_status is RunStatus.FAILED
    assert info.last_error == "ValueError: boom"
    failures = [r for r in caplog_info.records if r.levelno == logging.ERROR]
    assert failures and failures[0].exc_info is not None
    assert "flaky" in failures[0].getMessage()


def test_runs_are_logged_with_name_and_duration(
        make_scheduler: Factory, caplog_info: pytest.LogCaptureFixture) -> None:
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("logged", "* * * * *", lambda: None)
        frozen.tick(60)
        svc.run_pending()
    messages = [r.getMessage() for r in caplog_info.records]
    assert any("'logged' started" in m for m in messages)
    assert any("'logged' finished in 0:00:00" in m for m in messages)


def test_overlapping_run_is_skipped_by_default(make_scheduler: Factory) -> None:
    started: queue.Queue[datetime] = queue.Queue()
    release = threading.Event()

    def slow() -> None:
        started.put(current_run().scheduled_time)
        release.wait(5)

    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        skipped = events_of(svc, EventKind.RUN_SKIPPED)
        svc.add_cron_job("slow", "* * * * *", slow)
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        started.get(timeout=2)
        frozen.tick(60)
        svc.wakeup()
        assert get(skipped).scheduled_time == datetime(2026, 3, 1, 0, 2, tzinfo=UTC)
        assert svc.get_job("slow").skip_count == 1
        assert_empty(started)
        release.set()


def test_forward_jump_runs_once_and_continues_from_now(make_scheduler: Factory) -> None:
    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("m", "* * * * *", lambda: None)
        frozen.tick(timedelta(hours=3, seconds=30))
        results = svc.run_pending()
        assert [(r.status, r.scheduled_time) for r in results] == [
            (RunStatus.SUCCESS, datetime(2026, 3, 1, 0, 1, tzinfo=UTC))]
        assert svc.get_job("m").next_run_time == datetime(2026, 3, 1, 3, 1, tzinfo=UTC)


def test_backward_jump_recomputes_and_never_reruns_a_fixed_time(make_scheduler: Factory) -> None:
    with freeze_time("2026-03-01 01:59:00") as frozen:
        svc = make_scheduler()
        svc.add_cron_job("fixed", "0 2 * * *", lambda: None)
        svc.add_cron_job("wild", "*/10 * * * *", lambda: None)
        frozen.move_to("2026-03-01 02:00:00")
        assert sorted(r.job_name for r in svc.run_pending()) == ["fixed", "wild"]
        frozen.move_to("2026-03-01 01:30:00")  # the clock goes back half an hour
        assert svc.run_pending() == []
        # The wildcard job continues from the new time instead of stalling 30 min.
        assert svc.get_job("wild").next_run_time == datetime(2026, 3, 1, 1, 40, tzinfo=UTC)
        # The fixed job's 02:00 already ran: next is tomorrow.
        assert svc.get_job("fixed").next_run_time == datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
        frozen.move_to("2026-03-01 02:00:00")
        assert [r.job_name for r in svc.run_pending()] == ["wild"]


def test_backward_jump_is_noticed_by_the_dispatcher(make_scheduler: Factory) -> None:
    q, job = recorder()
    with freeze_time("2026-03-01 12:00:00") as frozen, log_records() as records:
        svc = make_scheduler(max_sleep_secs=3600)
        svc.add_cron_job("wild", "*/10 * * * *", job)
        svc.start()
        frozen.move_to("2026-03-01 10:00:00")
        svc.wakeup()
        # No event marks a clock jump; its log record, made by the dispatcher's pass,
        # is emitted by the notifier thread once that pass has recomputed the schedules.
        jump = get(records)
        while not jump.getMessage().startswith("clock moved back"):
            jump = get(records)
        assert jump.threadName == f"{svc.config.thread_name_prefix}-events"
        assert svc.get_job("wild").next_run_time == datetime(2026, 3, 1, 10, 10, tzinfo=UTC)
        frozen.tick(timedelta(minutes=10))
        svc.wakeup()
        assert q.get(timeout=2) == datetime(2026, 3, 1, 10, 10, tzinfo=UTC)


# --- shutdown -------------------------------------------------------------------------

def test_shutdown_returns_within_its_timeout_when_a_job_ignores_the_token(
        make_scheduler: Factory, caplog_info: pytest.LogCaptureFixture) -> None:
    started = threading.Event()
    release = threading.Event()

    def stubborn() -> None:
        started.set()
        release.wait(10)  # ignores its token

    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("stubborn", "* * * * *", stubborn)
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        assert started.wait(2)
        svc.shutdown(timeout=0.2)
        # It returned although the job is still inside its function.
        assert not release.is_set()
        assert not svc.is_running()
        assert svc.get_job("stubborn").running == 1
        warnings = [r.getMessage() for r in caplog_info.records if r.levelno == logging.WARNING]
        assert any("still running: stubborn" in w for w in warnings)
        release.set()
    for t in library_threads():
        t.join(2)
    assert library_threads() == []


def test_shutdown_sets_the_run_token_and_waits_for_cooperative_jobs(
        make_scheduler: Factory) -> None:
    started = threading.Event()
    finished = threading.Event()

    def cooperative() -> None:
        started.set()
        if current_run().cancel_token.wait(5):
            finished.set()

    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        svc.add_cron_job("coop", "* * * * *", cooperative)
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        assert started.wait(2)
        svc.shutdown(timeout=5)
        assert finished.is_set()  # shutdown waited for it
        assert library_threads() == []


def test_shutdown_from_inside_a_job(make_scheduler: Factory) -> None:
    done = threading.Event()
    with freeze_time(T0) as frozen:
        svc = make_scheduler()

        def stopper() -> None:
            svc.shutdown(timeout=1)
            done.set()

        svc.add_cron_job("stopper", "* * * * *", stopper)
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        assert done.wait(2)
        assert not svc.is_running()


# --- removal and thread safety ----------------------------------------------------------

def test_remove_while_running_lets_the_run_finish_and_stops_later_ones(
        make_scheduler: Factory) -> None:
    started = threading.Event()
    release = threading.Event()
    runs: queue.Queue[int] = queue.Queue()

    def job() -> None:
        runs.put(1)
        started.set()
        release.wait(5)

    with freeze_time(T0) as frozen:
        svc = make_scheduler(max_workers=1)
        svc.add_cron_job("j", "* * * * *", job)
        sentinel = Sentinel(svc)
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        assert started.wait(2)
        svc.remove_job("j")
        release.set()
        sentinel.wait_past(datetime(2026, 3, 1, 0, 1, tzinfo=UTC))  # it waited for the one worker
        frozen.tick(120)
        svc.wakeup()
        sentinel.wait_past(datetime(2026, 3, 1, 0, 2, tzinfo=UTC))  # "j" would run first
        assert runs.get(timeout=1) == 1
        assert_empty(runs)


def test_calls_from_inside_a_running_job(make_scheduler: Factory) -> None:
    seen: queue.Queue[object] = queue.Queue()
    with freeze_time(T0) as frozen:
        svc = make_scheduler()

        def job() -> None:
            seen.put(svc.get_job("self").running)
            svc.add_cron_job("child", "0 0 * * *", lambda: None)
            svc.pause_job("self")
            seen.put(svc.is_running())
            svc.remove_job("self")

        ended = events_of(svc, EventKind.RUN_SUCCEEDED, EventKind.RUN_FAILED, job="self")
        svc.add_cron_job("self", "* * * * *", job)
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        assert seen.get(timeout=2) == 1
        assert seen.get(timeout=2) is True
        event = get(ended)
        assert (event.kind, event.exception) == (EventKind.RUN_SUCCEEDED, None)
        assert [j.name for j in svc.jobs()] == ["child"]


def test_blocking_runs_due_together_use_every_worker_and_no_more(
        make_scheduler: Factory) -> None:
    started: queue.Queue[str] = queue.Queue()
    release = threading.Event()

    def block(name: str) -> Callable[[], None]:
        def job() -> None:
            started.put(name)
            release.wait(5)
        return job

    with freeze_time(T0) as frozen:
        svc = make_scheduler(max_workers=3)
        for i in range(5):
            svc.add_cron_job(f"b{i}", "* * * * *", block(f"b{i}"))
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        first = {started.get(timeout=2) for _ in range(3)}
        assert_empty(started)  # the pool is full: two runs wait for a worker
        release.set()
        rest = {started.get(timeout=2) for _ in range(2)}
        assert first | rest == {f"b{i}" for i in range(5)}
        svc.shutdown()


def test_real_time_runs_never_start_before_their_scheduled_time(
        make_scheduler: Factory) -> None:
    # The dispatcher wakes ~2 ms early to finish with a short, precise wait.
    seen: queue.Queue[tuple[datetime, datetime]] = queue.Queue()
    svc = make_scheduler()
    svc.add_cron_job("tick", "* * * * * *",
                     lambda: seen.put((datetime.now(UTC), current_run().scheduled_time)))
    svc.start()
    started, scheduled = seen.get(timeout=2)
    svc.shutdown()
    assert scheduled <= started < scheduled + timedelta(seconds=1)


def test_concurrent_adds_and_removes_keep_the_registry_consistent(
        make_scheduler: Factory) -> None:
    svc = make_scheduler()
    svc.start()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            ids = [svc.add_cron_job(f"w{n}-{i}", "*/5 * * * * *", lambda: None)
                   for i in range(100)]
            for job_id in ids[::2]:
                svc.remove_job(job_id)
            svc.jobs()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    infos = svc.jobs()
    assert len(infos) == 300
    assert len({i.id for i in infos}) == 300
    assert check_invariants(svc) == 300
    svc.shutdown()


def test_restart_after_a_timed_out_shutdown_keeps_the_next_shutdown_bounded(
        make_scheduler: Factory) -> None:
    first_release = threading.Event()
    second_started = threading.Event()
    second_release = threading.Event()
    calls: list[int] = []

    def job() -> None:
        calls.append(1)
        if len(calls) == 1:
            first_release.wait(5)  # outlives the first shutdown
        else:
            second_started.set()
            second_release.wait(5)  # outlives the second shutdown too

    with freeze_time(T0) as frozen:
        svc = make_scheduler()
        started = events_of(svc, EventKind.RUN_STARTED)
        ended = events_of(svc, EventKind.RUN_SUCCEEDED, EventKind.RUN_FAILED)
        svc.add_cron_job("j", "* * * * *", job, overlap="concurrent")
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        get(started)
        svc.shutdown(timeout=0.05)  # times out: the first run is still going
        first_release.set()  # ... and returns only after that shutdown
        assert get(ended).kind is EventKind.RUN_SUCCEEDED
        assert calls == [1]
        assert svc.get_job("j").running == 0
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        assert second_started.wait(2)
        svc.shutdown(timeout=0.1)
        # Bounded by its own timeout: it returned while the second run still waits
        # (it used to find a stale "drained" flag and then join the busy worker).
        assert not second_release.is_set()
        assert svc.get_job("j").running == 1
        second_release.set()
