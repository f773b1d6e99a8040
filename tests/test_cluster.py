"""The service with a run store, deterministic: frozen clocks, two services standing for
two processes on one store (MemoryStore siblings, or two SQLiteStores on one file).

Claimed elsewhere, cluster-wide overlap, missed and skipped occurrences recorded, lease
lost (report, and rerun with attempt 2), the store unavailable (skip / run), catch-up
after downtime with coalesce on and off converging whatever the start order, both
fall-back occurrences as two keys, fingerprint mismatches, bad input.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Collection, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from freezegun import freeze_time
from helpers import events_of, get, log_records

from memory_scheduler import (
    MAX_CATCHUP_RUNS,
    EventKind,
    InvalidValue,
    RunStatus,
    SchedulerConfig,
    SchedulerError,
    SchedulerService,
    current_run,
)
from memory_scheduler.events import Outbox, SchedulerEvent
from memory_scheduler.stores import (
    ClaimRequest,
    ClaimResult,
    InvalidStoreURL,
    MemoryStore,
    Outcome,
    RunState,
    RunStore,
    SQLiteStore,
    StoreError,
    StoreUnavailable,
)

UTC = timezone.utc
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
Factory = Callable[..., SchedulerService]


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path
           ) -> Iterator[Callable[[str], RunStore]]:
    """Stores on one shared table, one per named "process"."""
    made: List[RunStore] = []
    shared = MemoryStore(owner="p0")

    def make(owner: str) -> RunStore:
        store: RunStore
        if request.param == "memory":
            store = shared.sibling(owner)
        else:
            store = SQLiteStore(tmp_path / "runs.db", owner=owner)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def service(make: Factory, store: RunStore, **fields: Any) -> SchedulerService:
    fields.setdefault("heartbeat_secs", 30.0)  # the tests drive renew and sweep
    fields.setdefault("sweep_secs", 30.0)
    return make(store=store, **fields)


def events(svc: SchedulerService, kinds: Sequence[EventKind]) -> List[Tuple[str, Any]]:
    seen: List[Tuple[str, Any]] = []
    svc.add_listener(lambda e: seen.append((e.kind.value, e.scheduled_time)), kinds)
    return seen


def states(store: RunStore, job: str) -> List[Tuple[datetime, str, int]]:
    return sorted((r.scheduled_utc, r.state.value, r.attempt) for r in store.history(job))


def test_each_occurrence_runs_in_one_service_the_other_counts_it_claimed_elsewhere(
        stores: Callable[[str], RunStore], make_scheduler: Factory) -> None:
    a_store, b_store = stores("A"), stores("B")
    a, b = service(make_scheduler, a_store), service(make_scheduler, b_store)
    ran: List[Tuple[str, int, Optional[int]]] = []
    for name, svc in (("a", a), ("b", b)):
        svc.add_cron_job("report", "* * * * *",
                         lambda n=name: ran.append((n, current_run().attempt,
                                                    current_run().token)))
    seen = events(b, [EventKind.RUN_CLAIMED_ELSEWHERE])
    with freeze_time(NOON - timedelta(seconds=1)) as clock:
        a.add_cron_job("every", "* * * * *", lambda: ran.append(("a-every", 1, None)),
                       cluster="every")
        b.add_cron_job("every", "* * * * *", lambda: ran.append(("b-every", 1, None)),
                       cluster="every")
        for minute in range(3):
            clock.move_to(NOON + timedelta(minutes=minute))
            a.run_pending()
            b.run_pending()
    mine = [r for r in ran if r[0] in ("a", "b")]
    assert [r[0] for r in mine] == ["a", "a", "a"]
    assert all(attempt == 1 and isinstance(token, int) for _, attempt, token in mine)
    assert len({token for _, _, token in mine}) == 3
    assert sorted(r[0] for r in ran if r[0].endswith("every")) == ["a-every"] * 3 + ["b-every"] * 3
    info_a, info_b = a.get_job("report"), b.get_job("report")
    assert (info_a.run_count, info_a.claimed_elsewhere_count) == (3, 0)
    assert (info_b.run_count, info_b.claimed_elsewhere_count) == (0, 3)
    assert info_a.cluster == "once" and a.get_job("every").cluster == "every"
    assert [s for _, s in seen] == [NOON + timedelta(minutes=m) for m in range(3)]
    records = a.history("report")
    assert [r.scheduled_utc for r in records] == [NOON + timedelta(minutes=m)
                                                  for m in (2, 1, 0)]
    assert {(r.owner, r.state, r.attempt) for r in records} == {("A", RunState.SUCCESS, 1)}
    assert a.history("every") == []  # cluster="every" never touches the store


def test_without_a_store_the_token_is_none_and_history_is_refused(
        make_scheduler: Factory) -> None:
    svc = make_scheduler()
    seen: List[Any] = []
    svc.add_cron_job("j", "* * * * *", lambda: seen.append(
        (current_run().attempt, current_run().token)))
    with freeze_time(NOON):
        svc.run_pending()
    with freeze_time(NOON + timedelta(minutes=1)):
        svc.run_pending()
    assert seen == [(1, None)]
    assert svc.get_job("j").cluster == "every"
    with pytest.raises(InvalidValue, match="history"):
        svc.history("j")


def test_overlap_skip_is_cluster_wide_and_missed_occurrences_are_recorded(
        stores: Callable[[str], RunStore], make_scheduler: Factory) -> None:
    a_store, b_store = stores("A"), stores("B")
    # A long lease: the frozen clock moves a minute with no renew (heartbeats are off).
    a = service(make_scheduler, a_store, lease_secs=600, heartbeat_secs=300, sweep_secs=300)
    b = service(make_scheduler, b_store, lease_secs=600, heartbeat_secs=300, sweep_secs=300)
    release, started = threading.Event(), threading.Event()
    a_done = events_of(a, EventKind.RUN_SUCCEEDED, job="long")

    def long_job() -> None:
        started.set()
        release.wait(5)

    with freeze_time(NOON - timedelta(seconds=1)) as clock:
        a.add_cron_job("long", "* * * * *", long_job)
        b.add_cron_job("long", "* * * * *", lambda: None)
        b.add_cron_job("late", "* * * * *", lambda: None, misfire_grace_secs=1)
        a.start()
        clock.move_to(NOON)
        a.wakeup()
        assert started.wait(5)
        clock.move_to(NOON + timedelta(seconds=2))
        b.run_pending()  # 12:00 of "long" is A's; "late" is 2 s late
        clock.move_to(NOON + timedelta(minutes=1, seconds=5))
        b.run_pending()  # 12:01 of "long": a live run exists in A; "late" is 5 s late
        release.set()
        assert get(a_done, 5).scheduled_time == NOON
        a.shutdown()  # its recorder writes the run's end to the store, then stops
    assert states(b_store, "long") == [(NOON, "success", 1),
                                       (NOON + timedelta(minutes=1), "skipped", 1)]
    assert (b.get_job("long").skip_count, b.get_job("long").claimed_elsewhere_count) == (1, 1)
    assert states(b_store, "late") == [(NOON, "missed", 1),
                                       (NOON + timedelta(minutes=1), "missed", 1)]


def lease_setup(make_scheduler: Factory, a_store: RunStore, b_store: RunStore,
                on_lost: str) -> Tuple[SchedulerService, SchedulerService,
                                       List[Tuple[str, int, bool]], threading.Event]:
    a = service(make_scheduler, a_store, lease_secs=30.0)
    b = service(make_scheduler, b_store, lease_secs=30.0)
    ran: List[Tuple[str, int, bool]] = []
    started = threading.Event()

    def job(who: str) -> None:
        ctx = current_run()
        started.set()
        if who == "a":
            ctx.cancel_token.wait(5)  # until the lease loss cancels it
        ran.append((who, ctx.attempt, ctx.cancelled))

    a.add_cron_job("sync", "0 12 * * *", lambda: job("a"), on_lost=on_lost)
    b.add_cron_job("sync", "0 12 * * *", lambda: job("b"), on_lost=on_lost)
    return a, b, ran, started


@pytest.mark.parametrize("on_lost", ["report", "rerun"])
def test_a_lost_lease_is_reported_or_rerun_and_the_owner_is_cancelled(
        stores: Callable[[str], RunStore], make_scheduler: Factory, on_lost: str) -> None:
    a_store, b_store = stores("A"), stores("B")
    a, b, ran, started = lease_setup(make_scheduler, a_store, b_store, on_lost)
    a_seen = events(a, [EventKind.RUN_LEASE_LOST])
    b_seen = events(b, [EventKind.RUN_LOST, EventKind.RUN_RERUN])
    a_done = events_of(a, EventKind.RUN_SUCCEEDED, job="sync")
    b_done = events_of(b, EventKind.RUN_SUCCEEDED, job="sync")
    with freeze_time(NOON - timedelta(seconds=1)) as clock, \
            log_records(logging.WARNING) as warnings:
        a.start()
        clock.move_to(NOON)
        a.wakeup()
        assert started.wait(5)
        clock.move_to(NOON + timedelta(seconds=29))
        b.start()
        heartbeat_b = b._heartbeat
        assert heartbeat_b is not None
        heartbeat_b.sweep(Outbox(b._listeners))  # the lease still holds
        assert states(b_store, "sync") == [(NOON, "running", 1)]
        clock.move_to(NOON + timedelta(seconds=30))  # A froze: no renew for a lease
        out = Outbox(b._listeners)
        heartbeat_b.sweep(out)
        out.deliver(b._listeners)
        if on_lost == "rerun":
            assert get(b_done, 5).scheduled_time == NOON
            assert ("b", 2, False) in ran
        heartbeat_a = a._heartbeat
        assert heartbeat_a is not None
        out = Outbox(a._listeners)
        heartbeat_a.renew(out)  # A wakes up: its renew is refused
        out.deliver(a._listeners)
        assert get(a_done, 5).scheduled_time == NOON  # cancelled, it returned
        assert ("a", 1, True) in ran and a.get_job("sync").running == 0
        # The recorder thread reports the refused finish, through the notifier.
        while "ended success after its lease was lost" not in get(warnings, 5).getMessage():
            pass
        a.shutdown()
        b.shutdown()  # its recorder writes the rerun's end to the store, then stops
    assert a_seen == [("run_lease_lost", NOON)]
    assert a.get_job("sync").lease_lost_count == 1
    expected = "success" if on_lost == "rerun" else "lost"
    assert states(b_store, "sync") == [(NOON, expected, 2 if on_lost == "rerun" else 1)]
    info = b.get_job("sync")
    if on_lost == "rerun":
        assert b_seen == [("run_rerun", NOON)] and info.rerun_count == 1
    else:
        assert b_seen == [("run_lost", NOON)] and info.lost_count == 1
        assert [r for r in ran if r[0] == "b"] == []


class Flaky(MemoryStore):
    """A MemoryStore that answers UNAVAILABLE while ``down`` is set."""

    down = False

    def claim_many(self, items: Sequence[ClaimRequest], lease_secs: float
                   ) -> List[ClaimResult]:
        if self.down:
            return [ClaimResult(Outcome.UNAVAILABLE, detail="test outage")] * len(items)
        return super().claim_many(items, lease_secs)


def test_store_unavailable_skips_or_runs_by_option_and_reports_down_and_up(
        make_scheduler: Factory) -> None:
    store = Flaky()
    svc = service(make_scheduler, store)
    ran: List[Tuple[str, Optional[int]]] = []
    seen = events(svc, [EventKind.STORE_UNAVAILABLE, EventKind.STORE_AVAILABLE,
                        EventKind.RUN_MISSED])
    with freeze_time(NOON - timedelta(seconds=1)) as clock:
        svc.add_cron_job("safe", "* * * * *",
                         lambda: ran.append(("safe", current_run().token)))
        svc.add_cron_job("idem", "* * * * *",
                         lambda: ran.append(("idem", current_run().token)),
                         on_unavailable="run")
        clock.move_to(NOON)
        store.down = True
        svc.run_pending()
        assert ran == [("idem", None)]  # safe: not run (fail closed); idem: unclaimed
        clock.move_to(NOON + timedelta(minutes=1))
        store.down = False
        svc.run_pending()
    assert sorted(name for name, _ in ran[1:]) == ["idem", "safe"]
    assert all(isinstance(token, int) for _, token in ran[1:])
    assert [k for k, _ in seen] == ["store_unavailable", "run_missed", "store_available"]
    assert (svc.get_job("safe").missed_count, svc.get_job("safe").run_count) == (1, 1)
    assert svc.get_job("idem").run_count == 2
    # Nothing was recorded while the store was down; the later minute was.
    assert [when for when, _, _ in states(store, "idem")] == [NOON + timedelta(minutes=1)]


# What ends an occurrence's handling in a service: each due occurrence gets one of these.
DECIDED = (EventKind.RUN_SUCCEEDED, EventKind.RUN_FAILED, EventKind.RUN_CLAIMED_ELSEWHERE,
           EventKind.RUN_SKIPPED, EventKind.RUN_MISSED)


def watermarks_read(store: RunStore) -> List[Dict[str, datetime]]:
    """What ``store.watermarks()`` answers, each time it is asked (start() asks once)."""
    answers: List[Dict[str, datetime]] = []
    real = store.watermarks

    def recording(jobs: Collection[str]) -> Dict[str, datetime]:
        found = real(jobs)
        answers.append(found)
        return found

    store.watermarks = recording  # type: ignore[method-assign]
    return answers


def await_decisions(decided: queue.Queue[SchedulerEvent], watermark: datetime,
                    coalesce: bool) -> List[Tuple[str, datetime]]:
    """Wait for a service's decision on every minutely occurrence after the watermark
    its start() read, up to 12:05 (the frozen clock is past it, before 12:06): one
    each, or one in all when coalescing."""
    due = [NOON + timedelta(minutes=m) for m in range(1, 6)
           if NOON + timedelta(minutes=m) > watermark]
    count = min(len(due), 1) if coalesce else len(due)
    return [(e.kind.value, e.scheduled_time) for e in (get(decided, 5) for _ in range(count))]


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("order", ["one_after_the_other", "together"])
def test_catch_up_after_downtime_runs_each_occurrence_once_across_services(
        stores: Callable[[str], RunStore], make_scheduler: Factory, coalesce: bool,
        order: str) -> None:
    first, a_store, b_store = stores("old"), stores("A"), stores("B")
    ran: List[Tuple[str, datetime]] = []
    lock = threading.Lock()

    def job(who: str) -> None:
        with lock:
            ran.append((who, current_run().scheduled_time.astimezone(UTC)))

    old = service(make_scheduler, first)
    with freeze_time(NOON - timedelta(seconds=1)) as clock:
        old.add_cron_job("tick", "* * * * *", lambda: job("old"), coalesce=coalesce)
        clock.move_to(NOON)
        old.run_pending()  # watermark 12:00; then every process is down until 12:05:30
        clock.move_to(NOON + timedelta(minutes=5, seconds=30))
        a, b = service(make_scheduler, a_store), service(make_scheduler, b_store)
        a.add_cron_job("tick", "* * * * *", lambda: job("a"), coalesce=coalesce)
        b.add_cron_job("tick", "* * * * *", lambda: job("b"), coalesce=coalesce)
        a_read, b_read = watermarks_read(a_store), watermarks_read(b_store)
        a_decided = events_of(a, *DECIDED, job="tick")
        b_decided = events_of(b, *DECIDED, job="tick")
        expected = 1 + (1 if coalesce else 5)
        a.start()
        if order == "one_after_the_other":
            assert len(await_decisions(a_decided, a_read[0]["tick"], coalesce)) \
                == expected - 1
            assert len(ran) == expected
            clock.move_to(NOON + timedelta(minutes=5, seconds=40))
        b.start()
        b_decisions = await_decisions(b_decided, b_read[0]["tick"], coalesce)
        if order == "together":
            await_decisions(a_decided, a_read[0]["tick"], coalesce)
        else:  # B's start found every occurrence recorded
            assert b_decisions == []
        # Every occurrence due at the frozen instant is decided once in each service. A
        # second run would be a second decision: delivered by shutdown at the latest, or
        # (left due by a dispatcher) made by run_pending() now, in this thread.
        a.shutdown()
        b.shutdown()
        assert a.run_pending() == [] and b.run_pending() == []
        assert a_decided.empty() and b_decided.empty()
    caught = sorted(when for who, when in ran if who != "old")
    recorded = [s for _, s, _ in states(a_store, "tick")]
    if coalesce:  # the latest occurrence at or before the start stands for them all
        assert caught == [NOON + timedelta(minutes=5)]
        assert recorded == ["success"] + ["missed"] * 4 + ["success"]
    else:
        assert caught == [NOON + timedelta(minutes=m) for m in range(1, 6)]
        assert recorded == ["success"] * expected


def test_a_job_new_to_the_store_starts_from_now(make_scheduler: Factory) -> None:
    store = MemoryStore()
    svc = service(make_scheduler, store)
    ran: List[datetime] = []
    svc.add_cron_job("fresh", "* * * * *", lambda: ran.append(current_run().scheduled_time))
    missed = events_of(svc, EventKind.RUN_MISSED)
    with freeze_time(NOON + timedelta(seconds=30)):
        svc.start()
        svc.shutdown()
        # Had start() made it due, the dispatcher ran it, or shutdown dropped it as
        # missed, or it is still due and run_pending() runs it now.
        assert svc.run_pending() == []
    assert ran == [] and store.history("fresh") == []
    assert missed.empty() and svc.get_job("fresh").missed_count == 0


def test_both_fall_back_occurrences_are_distinct_keys(
        stores: Callable[[str], RunStore], make_scheduler: Factory) -> None:
    a_store, b_store = stores("A"), stores("B")
    a, b = service(make_scheduler, a_store), service(make_scheduler, b_store)
    first = datetime(2026, 11, 1, 5, 0, tzinfo=UTC)  # 01:00 EDT, then 01:00 EST
    with freeze_time(first - timedelta(minutes=1)) as clock:
        for svc in (a, b):
            svc.add_cron_job("hourly", "0 * * * *", lambda: None,
                             timezone="America/New_York")
        for when in (first, first + timedelta(hours=1)):
            clock.move_to(when)
            b.run_pending()
            a.run_pending()
    assert states(a_store, "hourly") == [(first, "success", 1),
                                         (first + timedelta(hours=1), "success", 1)]
    assert b.get_job("hourly").run_count == 2 and a.get_job("hourly").claimed_elsewhere_count == 2


def test_a_different_definition_in_a_live_process_is_logged(
        stores: Callable[[str], RunStore], make_scheduler: Factory,
        caplog: pytest.LogCaptureFixture) -> None:
    a_store, b_store = stores("A"), stores("B")
    a, b = service(make_scheduler, a_store), service(make_scheduler, b_store)
    a.add_cron_job("nightly", "0 3 * * *", lambda: None)
    b.add_cron_job("nightly", "0 4 * * *", lambda: None)
    a.add_cron_job("same", "0 5 * * *", lambda: None)
    b.add_cron_job("same", "0 5 * * *", lambda: None)
    with caplog.at_level(logging.ERROR, logger="memory_scheduler"):
        a.start()
        b.start()
        a.shutdown()
        b.shutdown()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "'nightly' is defined differently" in errors[0]


def test_store_urls_and_bad_input(tmp_path: Path, make_scheduler: Factory) -> None:
    svc = make_scheduler(store="memory://")
    assert isinstance(svc._cluster.store, MemoryStore)  # type: ignore[union-attr]
    path = tmp_path / "runs.db"
    config = SchedulerConfig.from_mapping({"store": f"sqlite:///{path}", "namespace": "app",
                                           "lease_secs": 10})
    assert config.store == f"sqlite:///{path}"
    svc = make_scheduler(config)
    store = svc._cluster.store  # type: ignore[union-attr]
    assert isinstance(store, SQLiteStore) and store.namespace == "app"
    assert store.path == str(path)
    with pytest.raises(InvalidStoreURL, match="redis"):
        SchedulerService(SchedulerConfig(store="redis://localhost"))
    with pytest.raises(StoreError):
        SchedulerService(SchedulerConfig(store=f"sqlite:///{tmp_path}/missing/dir/x.db"))
    not_a_store = tmp_path / "notes.db"
    not_a_store.write_bytes(b"hello, this is not sqlite" * 100)
    with pytest.raises(StoreError):
        SchedulerService(SchedulerConfig(store=f"sqlite:///{not_a_store}"))
    assert not_a_store.read_bytes() == b"hello, this is not sqlite" * 100
    for bad in ({"store": 3}, {"lease_secs": 0}, {"heartbeat_secs": 60},
                {"namespace": ""}, {"claim_timeout_secs": -1}):
        with pytest.raises(InvalidValue, match=next(iter(bad))):
            SchedulerConfig.from_mapping(bad)
    with pytest.raises(InvalidValue, match="namespace"):
        SchedulerService(SchedulerConfig(store=MemoryStore(namespace="x"), namespace="y"))
    with pytest.raises(InvalidValue, match="retention_secs"):
        SchedulerService(SchedulerConfig(store=MemoryStore(), retention_secs=60))
    svc = make_scheduler(store="memory://")
    for option, value in (("cluster", "twice"), ("on_lost", "retry"),
                          ("on_unavailable", "panic")):
        with pytest.raises(InvalidValue, match=f"{option}='{value}'"):
            svc.add_cron_job("j", "* * * * *", lambda: None, **{option: value})
    assert issubclass(StoreError, SchedulerError)
    assert RunStatus.SUCCESS.value == RunState.SUCCESS.value


class GoesDown(MemoryStore):
    """A MemoryStore that fails as a whole once it has granted its first claim."""

    down = False

    def claim_many(self, items: Sequence[ClaimRequest], lease_secs: float
                   ) -> List[ClaimResult]:
        if self.down:
            return [ClaimResult(Outcome.UNAVAILABLE, detail="test outage")] * len(items)
        self.down = True
        return super().claim_many(items, lease_secs)

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise StoreUnavailable("test outage")
        return None

    def renew(self, claims: Sequence[Any], lease_secs: float) -> List[bool]:
        self._fail()
        return super().renew(claims, lease_secs)

    def sweep(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()
        return super().sweep(*args, **kwargs)

    def mark(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()
        return super().mark(*args, **kwargs)

    def finish_many(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()
        return super().finish_many(*args, **kwargs)


def test_a_run_whose_renews_fail_past_its_lease_is_cancelled(make_scheduler: Factory) -> None:
    """Real clock: the holder self-fences at its monotonic deadline (lease minus a
    margin), before any other process could sweep the row."""
    store = GoesDown()
    svc = make_scheduler(store=store, lease_secs=0.6, heartbeat_secs=0.05, sweep_secs=0.05)
    seen = events(svc, [EventKind.RUN_LEASE_LOST, EventKind.STORE_UNAVAILABLE])
    cancelled: List[float] = []

    def job() -> None:
        t0 = time.monotonic()
        if current_run().cancel_token.wait(5):
            cancelled.append(time.monotonic() - t0)

    reported = events_of(svc, EventKind.RUN_LEASE_LOST, EventKind.STORE_UNAVAILABLE)
    ended = events_of(svc, EventKind.RUN_SUCCEEDED, job="hold")
    svc.add_cron_job("hold", "* * * * * *", job)
    svc.start()
    get(ended, 4)  # the first run (the only one claimed), cancelled
    # The deadline: 0.6 s from the claim less a margin (0.1 s), then a heartbeat tick.
    assert len(cancelled) == 1 and 0.3 <= cancelled[0] <= 1.5
    assert [get(reported, 2).kind.value for _ in range(2)] == ["store_unavailable",
                                                               "run_lease_lost"]
    assert [k for k, _ in seen] == ["store_unavailable", "run_lease_lost"]
    assert svc.get_job("hold").lease_lost_count == 1


def test_a_long_outage_catches_up_at_most_the_bound_and_records_the_rest_missed(
        make_scheduler: Factory) -> None:
    store = MemoryStore()
    old = service(make_scheduler, store.sibling("old"))
    ran: List[datetime] = []
    with freeze_time(NOON - timedelta(seconds=1)) as clock:
        old.add_cron_job("tick", "* * * * *", lambda: None, coalesce=False)
        clock.move_to(NOON)
        old.run_pending()
        clock.move_to(NOON + timedelta(minutes=150, seconds=30))
        new = service(make_scheduler, store.sibling("new"))
        new.add_cron_job("tick", "* * * * *",
                         lambda: ran.append(current_run().scheduled_time), coalesce=False)
        ended = events_of(new, EventKind.RUN_SUCCEEDED, job="tick")
        new.start()
        for _ in range(MAX_CATCHUP_RUNS):
            get(ended, 10)
        # The claimer recorded the misses before claiming the runs; shutdown stops the
        # recorder once it has written the runs' ends.
        new.shutdown()
    assert len(ran) == MAX_CATCHUP_RUNS and ended.empty()
    assert len(store.history("tick", 1000)) == 151
    records = sorted(store.history("tick", 1000), key=lambda r: r.scheduled_utc)
    assert [r.state.value for r in records] == (
        ["success"] * (1 + MAX_CATCHUP_RUNS) + ["missed"] * (150 - MAX_CATCHUP_RUNS))
    assert ran[0] == NOON + timedelta(minutes=1)


def test_a_catch_up_chain_meeting_a_live_run_elsewhere_is_recorded_skipped(
        stores: Callable[[str], RunStore], make_scheduler: Factory) -> None:
    a_store, b_store = stores("A"), stores("B")
    a = service(make_scheduler, a_store, lease_secs=600, heartbeat_secs=300, sweep_secs=300)
    b = service(make_scheduler, b_store, lease_secs=600, heartbeat_secs=300, sweep_secs=300)
    release, started = threading.Event(), threading.Event()
    a_done = events_of(a, EventKind.RUN_SUCCEEDED, job="sync")

    def long_job() -> None:
        started.set()
        release.wait(5)

    with freeze_time(NOON - timedelta(seconds=1)) as clock:
        a.add_cron_job("sync", "* * * * *", long_job, coalesce=False)
        b.add_cron_job("sync", "* * * * *", lambda: None, coalesce=False)
        clock.move_to(NOON + timedelta(minutes=2, seconds=30))
        a.start()  # new to the store: starts from now, so it runs 12:03 ...
        clock.move_to(NOON + timedelta(minutes=3))
        a.wakeup()
        assert started.wait(5)
        clock.move_to(NOON + timedelta(minutes=3, seconds=10))
        # ... while B, stalled since before noon, catches up 12:00-12:03 as one chain.
        assert b.run_pending() == []
        release.set()
        assert get(a_done, 5).scheduled_time == NOON + timedelta(minutes=3)
        a.shutdown()  # its recorder writes the run's end to the store, then stops
    assert states(b_store, "sync") == [
        (NOON + timedelta(minutes=m), "skipped", 1) for m in range(3)] + [
        (NOON + timedelta(minutes=3), "success", 1)]
    assert b.get_job("sync").skip_count == 4  # 12:03 too; its mark lost to A's claim


def test_heartbeats_keep_a_run_longer_than_its_lease(make_scheduler: Factory,
                                                     tmp_path: Path) -> None:
    """Real clock, two services on one SQLite file: A's run lasts over two leases; its
    renews (ten per lease) keep it, so B's frequent sweeps never take it and nothing is
    cancelled."""
    path = tmp_path / "runs.db"
    fast = {"lease_secs": 1.0, "heartbeat_secs": 0.1, "sweep_secs": 0.05}
    a = make_scheduler(store=SQLiteStore(path, owner="A"), **fast)
    b = make_scheduler(store=SQLiteStore(path, owner="B"), **fast)
    done: List[bool] = []
    begun = threading.Event()
    a_done = events_of(a, EventKind.RUN_SUCCEEDED, job="long")

    def job() -> None:
        begun.set()
        done.append(current_run().cancel_token.wait(2.2))

    a.add_cron_job("long", "* * * * * *", job)
    b.add_cron_job("long", "* * * * * *", job, on_lost="rerun")  # would take it over
    b.pause_job("long")
    seen = events(b, [EventKind.RUN_LOST, EventKind.RUN_RERUN])
    a.start()
    assert begun.wait(3)
    a.pause_job("long")  # one run is enough
    b.start()
    get(a_done, 5)
    assert done == [False]  # ran its 2.2 s to the end, never cancelled
    assert seen == [] and a.get_job("long").lease_lost_count == 0
    a.shutdown()
    b.shutdown()
    with SQLiteStore(path) as store:
        # (An occurrence due before the pause is skipped: A's run was going.)
        assert [(r.state, r.attempt, r.owner) for r in store.history("long")
                if r.state is not RunState.SKIPPED] == [(RunState.SUCCESS, 1, "A")]


def test_a_fresh_file_opens_while_another_connection_writes_it(tmp_path: Path) -> None:
    """Replicas starting together on a new file (seen failing in test_replicas):
    switching it to WAL needs an exclusive lock, and while another connection holds the
    write lock SQLite answers "locked" without waiting; the store retries up to its
    timeout instead of failing the service's construction."""
    import sqlite3

    path = tmp_path / "fresh.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process about to write the new file
    releaser = threading.Timer(0.2, lambda: other.execute("COMMIT"))
    releaser.start()
    try:
        svc = SchedulerService(SchedulerConfig(store=f"sqlite:///{path}",
                                               claim_timeout_secs=5.0))
    finally:
        releaser.join()
        other.close()
    assert svc.history  # opened
    with SQLiteStore(path) as store:
        assert store.history("none") == []
