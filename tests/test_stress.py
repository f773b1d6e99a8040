"""Concurrency stress and fault injection: the service keeps its promises while
threads hammer it and jobs misbehave."""

from __future__ import annotations

import logging
import random
import threading
from datetime import datetime, timezone
from typing import Callable

import pytest
from freezegun import freeze_time
from helpers import events_of, get, library_threads

from memory_scheduler import (
    EventKind,
    JobNotFound,
    RunStatus,
    SchedulerEvent,
    SchedulerService,
    current_run,
)
from memory_scheduler.testing import check_invariants

UTC = timezone.utc
Factory = Callable[..., SchedulerService]


def test_stress_add_remove_pause_resume_query_while_jobs_fire(
        make_scheduler: Factory, caplog_info: pytest.LogCaptureFixture) -> None:
    svc = make_scheduler(max_workers=8, max_sleep_secs=0.05)
    lock = threading.Lock()  # guards the bookkeeping dicts below
    # name -> list of (state, since) intervals set *after* the call returned
    removed_at: dict[str, datetime] = {}
    paused_at: dict[str, datetime] = {}
    violations: list[str] = []
    errors: list[BaseException] = []

    def make_job(name: str) -> Callable[[], None]:
        def job() -> None:
            scheduled = current_run().scheduled_time
            with lock:
                # An occurrence scheduled after remove/pause returned must never run.
                if name in removed_at and scheduled > removed_at[name]:
                    violations.append(f"{name} ran {scheduled} after removal")
                if name in paused_at and scheduled > paused_at[name]:
                    violations.append(f"{name} ran {scheduled} while paused")
        return job

    started = events_of(svc, EventKind.RUN_STARTED)
    svc.start()
    for i in range(20):
        svc.add_cron_job(f"base{i}", "* * * * * *", make_job(f"base{i}"))

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[str] = []
        try:
            for step in range(150):
                op = rng.random()
                if op < 0.4 or not mine:
                    name = f"t{seed}-{step}"
                    svc.add_cron_job(name, rng.choice(["* * * * * *", "*/2 * * * * *",
                                                       "0 * * * *"]), make_job(name))
                    mine.append(name)
                elif op < 0.55:
                    name = mine.pop(rng.randrange(len(mine)))
                    svc.remove_job(name)
                    with lock:
                        removed_at[name] = datetime.now(UTC)
                elif op < 0.7:
                    name = rng.choice(mine)
                    svc.pause_job(name)
                    with lock:
                        paused_at.setdefault(name, datetime.now(UTC))
                elif op < 0.8:
                    name = rng.choice(mine)
                    with lock:
                        paused_at.pop(name, None)
                    svc.resume_job(name)
                elif op < 0.9:
                    svc.jobs()
                else:
                    svc.get_job(rng.choice(mine))
                if step % 30 == 0:
                    threading.Event().wait(0.01)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Let a second or so of every-second runs happen around the churn.
    for _ in range(21):
        get(started, 3)
    svc.shutdown(timeout=2)
    assert errors == []
    assert violations == []
    infos = svc.jobs()
    assert check_invariants(svc) == sum(1 for i in infos if not i.paused)
    for info in infos:
        assert (info.next_run_time is None) == info.paused
        assert info.running == 0
    assert not removed_at.keys() & {i.name for i in infos}
    assert not [r for r in caplog_info.records
                if r.levelno >= logging.ERROR and "memory_scheduler" in r.name]


@pytest.mark.parametrize("raised", [ValueError("boom"), SystemExit(3), KeyboardInterrupt(),
                                    GeneratorExit()])
def test_jobs_raising_anything_never_kill_a_worker(make_scheduler: Factory,
                                                    raised: BaseException) -> None:
    ran = threading.Event()

    def bad() -> None:
        raise raised

    with freeze_time("2026-03-01") as frozen:
        svc = make_scheduler(max_workers=1)
        failed = events_of(svc, EventKind.RUN_FAILED, job="bad")
        good = events_of(svc, EventKind.RUN_SUCCEEDED, job="good")
        svc.add_cron_job("bad", "* * * * *", bad)
        svc.add_cron_job("good", "* * * * *", ran.set)
        svc.start()
        for _ in range(2):
            ran.clear()
            frozen.tick(60)
            svc.wakeup()
            assert ran.wait(2)  # the single worker survived the bad job
            get(good)  # and recorded the run (else the next minute finds it running)
        for _ in range(2):
            assert isinstance(get(failed).exception, type(raised))
        info = svc.get_job("bad")
        assert info.failure_count == 2
        assert info.last_status is RunStatus.FAILED
        assert info.last_error is not None
        assert info.last_error.startswith(type(raised).__name__)
        svc.shutdown(timeout=1)
    assert library_threads() == []


def test_hanging_jobs_do_not_hold_shutdown_beyond_its_timeout(make_scheduler: Factory) -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def hang() -> None:
        started.release()
        release.wait(10)

    with freeze_time("2026-03-01") as frozen:
        svc = make_scheduler(max_workers=4)
        for i in range(3):
            svc.add_cron_job(f"hang{i}", "* * * * *", hang)
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        for _ in range(3):
            assert started.acquire(timeout=2)
        svc.shutdown(timeout=0.1)
        assert not svc.is_running()
        release.set()
    for t in library_threads():
        t.join(2)
    assert library_threads() == []


def test_listeners_raising_base_exceptions_in_workers(make_scheduler: Factory,
                                                      caplog_info: pytest.LogCaptureFixture
                                                      ) -> None:
    def exits(event: SchedulerEvent) -> None:
        if event.kind is EventKind.RUN_STARTED:
            raise SystemExit(1)

    with freeze_time("2026-03-01") as frozen:
        svc = make_scheduler()
        svc.add_listener(exits)
        seen = events_of(svc)  # called after "exits", for every event
        svc.add_cron_job("j", "* * * * *", lambda: None)
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        assert [get(seen).kind for _ in range(4)] == [
            EventKind.JOB_ADDED, EventKind.SCHEDULER_STARTED, EventKind.RUN_STARTED,
            EventKind.RUN_SUCCEEDED]
        svc.shutdown(timeout=1)
    assert svc.get_job("j").last_status is RunStatus.SUCCESS


def test_shutdown_during_a_burst_leaves_every_occurrence_counted_once(
        make_scheduler: Factory) -> None:
    # Shutdown races the hand-over of a big instant (slices, the pool closing while
    # drainers start): afterwards no slot stays reserved and each occurrence is in
    # exactly one counter, run or missed.
    with freeze_time("2026-03-01") as frozen:
        svc = make_scheduler(max_workers=4)
        for i in range(3000):
            svc.add_cron_job(f"j{i}", "* * * * *", lambda: None)
        svc.start()
        frozen.tick(60)
        svc.wakeup()
        svc.shutdown(timeout=2)
        infos = svc.jobs()
        assert [i.name for i in infos if i.running] == []
        assert {i.run_count + i.missed_count for i in infos} <= {0, 1}
        check_invariants(svc)


def test_remove_job_of_a_removed_job_from_two_threads(make_scheduler: Factory) -> None:
    svc = make_scheduler()
    outcomes: list[str] = []
    for round_ in range(50):
        svc.add_cron_job("x", "* * * * *", lambda: None)
        barrier = threading.Barrier(2)

        def remover(barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                svc.remove_job("x")
                outcomes.append("removed")
            except JobNotFound:
                outcomes.append("missing")

        threads = [threading.Thread(target=remover) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes[-2:]) == ["missing", "removed"], round_


def test_no_thread_leak_across_start_stop_cycles(make_scheduler: Factory) -> None:
    svc = make_scheduler(max_workers=2)
    svc.add_cron_job("j", "* * * * * *", lambda: None)
    for _ in range(100):
        svc.start()
        svc.shutdown(timeout=1)
        assert library_threads() == []
    assert not svc.is_running()
