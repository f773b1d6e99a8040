"""The run store contract, against MemoryStore and SQLiteStore alike, under a frozen clock.

Each test gets ``stores``: a factory of handles on one store, one handle per simulated
process (MemoryStore siblings, or SQLiteStore instances on one file). The clock is
freezegun's, read through the stores' default clock (``utc_now``), so leases expire
exactly when the test moves the clock.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from memory_scheduler import CronSchedule, InvalidValue
from memory_scheduler.stores import (
    ClaimRequest,
    MemoryStore,
    Outcome,
    RunState,
    RunStore,
    SQLiteStore,
    StoreError,
)

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
LEASE = 10.0


class Stores:
    """Handles on one store; the first call's options configure it."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path
        self.base: Optional[MemoryStore] = None
        self.made: List[RunStore] = []

    def __call__(self, owner: Optional[str] = None, **options: Any) -> RunStore:
        store: RunStore
        if self.kind == "sqlite":
            store = SQLiteStore(self.path, owner=owner, **options)
        elif self.base is None:
            store = self.base = MemoryStore(owner=owner, **options)
        else:
            store = self.base.sibling(owner)
        self.made.append(store)
        return store


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0) as frozen:
        yield frozen


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path,
           clock: FrozenDateTimeFactory) -> Iterator[Stores]:
    made = Stores(request.param, tmp_path / "runs.db")
    yield made
    for store in made.made:
        store.close()


def states(store: RunStore, job: str) -> List[str]:
    return [str(r.state) for r in store.history(job)]


# -- claims ---------------------------------------------------------------------------


def test_first_claim_wins_and_the_others_see_it_taken(stores: Stores) -> None:
    a, b = stores("a"), stores("b")
    won = a.claim("report", T0, LEASE)
    assert won.outcome is Outcome.WON and won.claim is not None
    assert (won.claim.owner, won.claim.attempt) == ("a", 1)
    assert won.claim.lease_until == T0 + timedelta(seconds=LEASE)
    assert won.server_now == T0
    lost = b.claim("report", T0, LEASE)
    assert (lost.outcome, lost.holder, lost.claim) == (Outcome.TAKEN, "a", None)
    # Another instant or another job is another key.
    assert b.claim("report", T0 - US, LEASE).won
    assert b.claim("other", T0, LEASE).won


def test_same_owner_retry_gets_the_same_claim_until_it_finishes(stores: Stores) -> None:
    a = stores("a")
    first = a.claim("report", T0, LEASE).claim
    again = a.claim("report", T0, LEASE)
    assert again.won and again.claim is not None and first is not None
    assert (again.claim.token, again.claim.attempt) == (first.token, first.attempt)
    assert a.finish(first, "success")
    assert a.claim("report", T0, LEASE).outcome is Outcome.TAKEN
    assert states(a, "report") == ["success"]


def test_tokens_strictly_increase_across_claims_reruns_and_owners(
        stores: Stores, clock: FrozenDateTimeFactory) -> None:
    a, b = stores("a"), stores("b")
    tokens = []
    for i in range(3):
        for s in (a, b):
            r = s.claim(f"j{i}", T0 - i * US, LEASE)
            if r.claim is not None:
                tokens.append(r.claim.token)
    clock.tick(timedelta(seconds=LEASE))
    tokens += [c.token for c in b.sweep(LEASE, ["j0", "j1", "j2"]).rerun]
    tokens.append(a.claim("late", T0 + timedelta(seconds=LEASE), LEASE).claim.token)  # type: ignore[union-attr]
    assert len(tokens) == 7
    assert tokens == sorted(set(tokens))


def test_claim_many_claims_a_whole_instant_in_one_call(stores: Stores) -> None:
    a, b = stores("a"), stores("b")
    assert b.claim("job-3", T0, LEASE).won
    batch = [ClaimRequest(f"job-{i}", T0) for i in range(50)]
    results = a.claim_many(batch, LEASE)
    assert [r.outcome for r in results] == [
        Outcome.TAKEN if i == 3 else Outcome.WON for i in range(50)]
    tokens = [r.claim.token for r in results if r.claim is not None]
    assert len(set(tokens)) == 49
    assert a.claim_many([], LEASE) == []
    # Retrying the whole batch: the same claims, except the one b holds.
    again = a.claim_many(batch, LEASE)
    assert [r.claim.token if r.claim else None for r in again] == \
        [r.claim.token if r.claim else None for r in results]


def test_too_early_by_the_store_clock(stores: Stores) -> None:
    a = stores("a", early_tolerance_secs=0.5)
    edge = T0 + timedelta(seconds=0.5)
    early = a.claim("report", edge + US, LEASE)
    assert (early.outcome, early.server_now, early.claim) == (Outcome.EARLY, T0, None)
    assert a.claim("report", edge, LEASE).won
    assert not a.mark("other", edge + US, "skipped")
    assert a.history("report")[0].scheduled_utc == edge and a.history("other") == []


def test_too_old_below_the_retention_horizon(stores: Stores) -> None:
    a = stores("a", retention_secs=60.0)
    horizon = T0 - timedelta(seconds=60)
    assert a.claim("report", horizon - US, LEASE).outcome is Outcome.TOO_OLD
    assert not a.mark("report", horizon - US, "missed")
    assert a.claim("report", horizon, LEASE).won
    assert [r.scheduled_utc for r in a.history("report")] == [horizon]


def _fall_back_hours() -> List[datetime]:
    """The two 01:00 occurrences of an hourly New York job on 2026-11-01, in UTC.

    Computed at import, outside freezegun: its FakeDatetime arithmetic drops ``fold``,
    so under a frozen clock the second 01:00 (EST) converts to the first's UTC instant.
    """
    schedule = CronSchedule("0 * * * *", "America/New_York")
    start = datetime(2026, 11, 1, 0, 30, tzinfo=schedule.timezone)
    first, second = [w for w, _ in zip(schedule.iter_after(start), range(2))]
    assert (first.hour, first.fold, second.hour, second.fold) == (1, 0, 1, 1)
    return [first.astimezone(UTC), second.astimezone(UTC)]


FALL_BACK = _fall_back_hours()


def test_both_dst_fall_back_occurrences_are_distinct_keys(
        stores: Stores, clock: FrozenDateTimeFactory) -> None:
    keys = FALL_BACK
    assert keys[1] - keys[0] == timedelta(hours=1)
    clock.move_to(keys[1])
    a, b = stores("a"), stores("b")
    assert [r.outcome for r in a.claim_many([ClaimRequest("h", k) for k in keys], LEASE)] == \
        [Outcome.WON, Outcome.WON]
    assert [r.outcome for r in b.claim_many([ClaimRequest("h", k) for k in keys], LEASE)] == \
        [Outcome.TAKEN, Outcome.TAKEN]
    assert [r.scheduled_utc for r in a.history("h")] == keys[::-1]


# -- leases, renew, finish, sweep --------------------------------------------------------


def test_lease_expires_exactly_at_lease_until(stores: Stores,
                                              clock: FrozenDateTimeFactory) -> None:
    a, b = stores("a"), stores("b")
    claim = a.claim("report", T0, LEASE).claim
    assert claim is not None
    clock.move_to(claim.lease_until - US)
    assert b.sweep(LEASE).lost == () and b.sweep(LEASE).rerun == ()
    # Still live: an exclusive claim of the next occurrence is BUSY.
    busy = b.claim("report", T0 + timedelta(seconds=5), LEASE, exclusive=True)
    assert (busy.outcome, busy.holder) == (Outcome.BUSY, "a")
    clock.move_to(claim.lease_until)
    swept = b.sweep(LEASE)
    assert [(r.job, r.scheduled_utc, r.owner, r.state) for r in swept.lost] == \
        [("report", T0, "a", RunState.LOST)]
    assert swept.lost[0].finished_at == claim.lease_until
    # The late holder learns it lost, and changes nothing.
    assert a.renew([claim], LEASE) == [False]
    assert not a.finish(claim, "success")
    assert states(a, "report") == ["skipped", "lost"]
    # No live run any more: the next exclusive claim runs.
    assert b.claim("report", T0 + timedelta(seconds=10), LEASE, exclusive=True).won


def test_an_expired_lease_no_longer_makes_an_exclusive_claim_busy(
        stores: Stores, clock: FrozenDateTimeFactory) -> None:
    a, b = stores("a"), stores("b")
    claim = a.claim("sync", T0, LEASE).claim
    assert claim is not None
    clock.move_to(claim.lease_until)  # expired, not swept yet
    assert b.claim("sync", claim.lease_until, LEASE, exclusive=True).won
    assert states(a, "sync") == ["running", "running"]


def test_renew_extends_every_lease_of_the_owner(stores: Stores,
                                               clock: FrozenDateTimeFactory) -> None:
    a, b = stores("a"), stores("b")
    claims = [r.claim for r in a.claim_many([ClaimRequest(f"j{i}", T0) for i in range(3)],
                                            LEASE)]
    assert all(c is not None for c in claims)
    clock.tick(timedelta(seconds=LEASE - 1))
    assert a.renew(claims, LEASE) == [True, True, True]  # type: ignore[arg-type]
    assert a.renew([], LEASE) == []
    clock.tick(timedelta(seconds=LEASE - 1))
    assert b.sweep(LEASE).lost == () and b.sweep(LEASE).rerun == ()
    assert [r.lease_until for r in a.history("j0")] == \
        [T0 + timedelta(seconds=2 * LEASE - 1)]


def test_an_expired_lease_nobody_swept_can_still_be_renewed_and_finished(
        stores: Stores, clock: FrozenDateTimeFactory) -> None:
    a = stores("a")
    claim = a.claim("report", T0, LEASE).claim
    assert claim is not None
    clock.tick(timedelta(seconds=3 * LEASE))
    assert a.renew([claim], LEASE) == [True]
    assert a.finish(claim, "failed")
    assert states(a, "report") == ["failed"]


def test_sweep_reruns_opted_in_jobs_with_a_new_token_up_to_max_attempts(
        stores: Stores, clock: FrozenDateTimeFactory) -> None:
    a, b, c = stores("a"), stores("b"), stores("c")
    first = a.claim("etl", T0, LEASE).claim
    other = a.claim("report", T0, LEASE).claim
    assert first is not None and other is not None
    clock.tick(timedelta(seconds=LEASE))
    swept = b.sweep(LEASE, rerun_jobs={"etl"}, max_attempts=2)
    assert [r.job for r in swept.lost] == ["report"]
    (second,) = swept.rerun
    assert (second.job, second.scheduled_utc, second.owner, second.attempt) == \
        ("etl", T0, "b", 2)
    assert second.token > max(first.token, other.token)
    assert second.lease_until == T0 + timedelta(seconds=2 * LEASE)
    assert a.renew([first], LEASE) == [False] and not a.finish(first, "success")
    assert c.claim("etl", T0, LEASE).outcome is Outcome.TAKEN
    # The second attempt dies too: max_attempts reached, so it is lost.
    clock.tick(timedelta(seconds=LEASE))
    again = c.sweep(LEASE, rerun_jobs={"etl"}, max_attempts=2)
    assert (again.rerun, [(r.owner, r.attempt) for r in again.lost]) == ((), [("b", 2)])
    assert not b.finish(second, "success")
    assert states(a, "etl") == ["lost"]


def test_a_rerun_that_finishes_records_its_attempt(stores: Stores,
                                                   clock: FrozenDateTimeFactory) -> None:
    a, b = stores("a"), stores("b")
    assert a.claim("etl", T0, LEASE).won
    clock.tick(timedelta(seconds=LEASE))
    (claim,) = b.sweep(LEASE, rerun_jobs=["etl"]).rerun
    assert b.renew([claim], LEASE) == [True]
    assert b.finish(claim, "success")
    (record,) = b.history("etl")
    assert (record.state, record.owner, record.attempt, record.token) == \
        (RunState.SUCCESS, "b", 2, claim.token)


def test_sweep_takes_the_oldest_leases_first_up_to_limit(
        stores: Stores, clock: FrozenDateTimeFactory) -> None:
    a, b = stores("a"), stores("b")
    for i in range(5):
        assert a.claim(f"j{i}", T0, LEASE + i).won
    clock.tick(timedelta(seconds=LEASE + 10))
    assert [r.job for r in b.sweep(LEASE, limit=2).lost] == ["j0", "j1"]
    assert [r.job for r in b.sweep(LEASE, limit=10).lost] == ["j2", "j3", "j4"]


def test_exclusive_claim_is_busy_while_a_live_run_exists_and_recorded_once(
        stores: Stores, clock: FrozenDateTimeFactory) -> None:
    a, b = stores("a"), stores("b")
    running = a.claim("sync", T0, LEASE, exclusive=True).claim
    assert running is not None
    clock.tick(timedelta(seconds=1))
    at = T0 + timedelta(seconds=1)
    busy = b.claim("sync", at, LEASE, exclusive=True)
    assert (busy.outcome, busy.holder) == (Outcome.BUSY, "a")
    # Recorded once: the same occurrence is TAKEN by everyone afterwards.
    assert a.claim("sync", at, LEASE, exclusive=True).outcome is Outcome.TAKEN
    assert b.claim("sync", at, LEASE, exclusive=True).outcome is Outcome.TAKEN
    assert states(a, "sync") == ["skipped", "running"]
    assert a.finish(running, "success")
    assert b.claim("sync", T0 + timedelta(seconds=1.5), LEASE, exclusive=True).won


def test_exclusive_items_of_a_batch_after_the_others(stores: Stores) -> None:
    a = stores("a")
    results = a.claim_many([ClaimRequest("sync", T0 - US, True),
                            ClaimRequest("sync", T0, True),
                            ClaimRequest("other", T0)], LEASE)
    assert [r.outcome for r in results] == [Outcome.WON, Outcome.BUSY, Outcome.WON]


# -- marks, watermarks, history, fingerprints, prune --------------------------------------


def test_mark_first_writer_wins(stores: Stores) -> None:
    a, b = stores("a"), stores("b")
    assert a.mark("report", T0, "missed")
    assert not b.mark("report", T0, "skipped")
    taken = b.claim("report", T0, LEASE)
    assert (taken.outcome, taken.holder) == (Outcome.TAKEN, "a")
    assert b.claim("report", T0 - US, LEASE).won
    assert not a.mark("report", T0 - US, "missed")
    (record,) = a.history("report", limit=1)
    assert (record.state, record.token, record.finished_at) == (RunState.MISSED, None, T0)


def test_watermarks_are_the_latest_recorded_instant_in_any_state(stores: Stores) -> None:
    a = stores("a")
    assert a.watermarks(["report", "never"]) == {}
    a.claim("report", T0 - timedelta(minutes=2), LEASE)
    a.mark("report", T0 - timedelta(minutes=1), "missed")
    a.claim("report", T0 - timedelta(minutes=3), LEASE)
    a.claim("other", T0, LEASE)
    assert a.watermarks(["report", "other", "never"]) == {
        "report": T0 - timedelta(minutes=1), "other": T0}


def test_history_is_newest_first_and_limited(stores: Stores) -> None:
    a = stores("a")
    for i in range(5):
        a.claim("report", T0 - timedelta(seconds=i), LEASE)
    assert [r.scheduled_utc for r in a.history("report", limit=3)] == \
        [T0, T0 - timedelta(seconds=1), T0 - timedelta(seconds=2)]
    assert len(a.history("report")) == 5 and a.history("report", limit=0) == []


def test_fingerprint_mismatch_is_reported_while_the_other_owner_is_live(
        stores: Stores, clock: FrozenDateTimeFactory) -> None:
    a, b = stores("a"), stores("b")
    assert a.fingerprints({"report": "f1", "cleanup": "g"}) == []
    (mismatch,) = b.fingerprints({"report": "f2", "cleanup": "g"})
    assert (mismatch.job, mismatch.fingerprint, mismatch.other_owner,
            mismatch.other_fingerprint, mismatch.other_seen_at) == \
        ("report", "f2", "a", "f1", T0)
    assert [m.other_owner for m in a.fingerprints({"report": "f1"})] == ["b"]
    # b stops refreshing: once its row is older than live_secs, it no longer counts.
    clock.tick(timedelta(seconds=61))
    assert a.fingerprints({"report": "f1"}, live_secs=60) == []


def test_prune_keeps_the_newest_row_of_each_job_and_running_rows(
        stores: Stores, clock: FrozenDateTimeFactory) -> None:
    a = stores("a", retention_secs=3600.0)
    for i in range(5):
        at = T0 + timedelta(minutes=i)
        clock.move_to(at)
        claim = a.claim("report", at, LEASE).claim
        assert claim is not None
        if i != 1:
            a.finish(claim, "success")
    clock.move_to(T0 + timedelta(minutes=4))
    a.claim("hourly", T0, LEASE)
    a.finish(a.claim("hourly", T0, LEASE).claim, "success")  # type: ignore[arg-type]
    clock.move_to(T0 + timedelta(hours=5))
    assert a.prune() == 3
    assert [(r.scheduled_utc, str(r.state)) for r in a.history("report")] == [
        (T0 + timedelta(minutes=4), "success"), (T0 + timedelta(minutes=1), "running")]
    assert [r.scheduled_utc for r in a.history("hourly")] == [T0]
    assert a.watermarks(["report", "hourly"]) == {
        "report": T0 + timedelta(minutes=4), "hourly": T0}
    assert a.prune() == 0
    with pytest.raises(InvalidValue, match="smaller than the store's retention"):
        a.prune(retention_secs=60)


def test_namespaces_never_meet(stores: Stores, tmp_path: Path) -> None:
    a = stores("a")
    other: RunStore = (SQLiteStore(stores.path, namespace="app2", owner="b")
                       if stores.kind == "sqlite" else MemoryStore(namespace="app2"))
    try:
        assert a.claim("report", T0, LEASE).won
        assert other.claim("report", T0, LEASE).won
        assert other.history("report")[0].owner == other.owner
    finally:
        other.close()


# -- bad input, closing, threads -------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda s: s.claim("report", T0.replace(tzinfo=None), LEASE), "naive"),
    (lambda s: s.claim("", T0, LEASE), "non-empty string"),
    (lambda s: s.claim("report", T0, 0), "lease_secs"),
    (lambda s: s.claim("report", T0, float("nan")), "lease_secs"),
    (lambda s: s.claim_many([ClaimRequest("ok", T0), ("report", "noon")], LEASE), "aware"),
    (lambda s: s.mark("report", T0, "success"), "missed, skipped"),
    (lambda s: s.sweep(-1), "lease_secs"),
])
def test_bad_arguments_are_refused_before_anything_is_recorded(
        stores: Stores, call: Any, match: str) -> None:
    a = stores("a")
    with pytest.raises(InvalidValue, match=match):
        call(a)
    assert a.history("report") == [] and a.history("ok") == []


def test_finish_refuses_a_non_terminal_state(stores: Stores) -> None:
    a = stores("a")
    claim = a.claim("report", T0, LEASE).claim
    assert claim is not None
    for bad in ("lost", "running", "skipped", "nonsense"):
        with pytest.raises(InvalidValue, match="failed, success, timed_out"):
            a.finish(claim, bad)
    assert states(a, "report") == ["running"]


def test_a_closed_store_raises_store_error(stores: Stores) -> None:
    a = stores("a")
    a.close()
    a.close()
    with pytest.raises(StoreError, match="closed"):
        a.claim("report", T0, LEASE)
    with pytest.raises(StoreError, match="closed"):
        a.history("report")


def test_threads_of_several_owners_win_each_key_once(stores: Stores) -> None:
    handles = [stores(f"o{i}") for i in range(4)]
    keys = [ClaimRequest(f"j{i % 7}", T0 - i * US) for i in range(200)]
    wins: Dict[int, List[Any]] = {i: [] for i in range(4)}
    start = threading.Barrier(8)

    def work(n: int, store: RunStore, reverse: bool) -> None:
        start.wait(5)
        for key in (keys[::-1] if reverse else keys):
            r = store.claim(key.job, key.scheduled_utc, LEASE)
            if r.won:
                wins[n].append(key)

    threads = [threading.Thread(target=work, args=(i % 4, handles[i % 4], i % 2 == 1))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    # Two threads of one owner may both be told WON (same owner, same claim): count
    # keys per owner, then owners per key.
    owners_of: Dict[ClaimRequest, Set[int]] = {}
    for n, won in wins.items():
        for key in won:
            owners_of.setdefault(key, set()).add(n)
    assert sorted(owners_of, key=keys.index) == keys
    assert all(len(o) == 1 for o in owners_of.values())


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_time_machine_controls_leases_too(kind: str, tmp_path: Path) -> None:
    import time_machine

    with time_machine.travel(T0, tick=False) as traveller:
        a: RunStore = SQLiteStore(tmp_path / "runs.db", owner="a") if kind == "sqlite" \
            else MemoryStore(owner="a")
        try:
            claim = a.claim("report", T0, LEASE).claim
            assert claim is not None and claim.lease_until == T0 + timedelta(seconds=LEASE)
            traveller.move_to(claim.lease_until - US)
            assert a.sweep(LEASE).lost == ()
            traveller.move_to(claim.lease_until)
            assert [r.job for r in a.sweep(LEASE).lost] == ["report"]
        finally:
            a.close()
