"""A Hypothesis state machine: several owners interleave claim / renew / finish / mark /
sweep / prune on one store while the clock moves, checked step by step against a plain
model (a dict of rows), for MemoryStore and SQLiteStore.

Invariants after every step: each key has at most one row, and the store's rows (owner,
state, attempt, token) are the model's; watermarks agree; every token handed out is
larger than all before it.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Set, Tuple

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from memory_scheduler.stores import (
    Claim,
    ClaimRequest,
    MemoryStore,
    Outcome,
    RunStore,
    SQLiteStore,
)

UTC = timezone.utc
T0 = datetime(2026, 6, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
OWNERS = ("a", "b", "c")
JOBS = ("x", "y")
EARLY = timedelta(seconds=0.5)
RETENTION = timedelta(seconds=60)
LEASE = 10.0
MAX_ATTEMPTS = 3

owners = st.sampled_from(OWNERS)
jobs = st.sampled_from(JOBS)
# Offsets from the clock's start or from its current reading, some a microsecond either
# side of the early tolerance; the clock walks forward, so EARLY, TOO_OLD and expiry all
# happen.
offsets = st.sampled_from([0, 1, 2, 5, 30, 90]).map(lambda s: timedelta(seconds=s)) | \
    st.sampled_from([US, -US, timedelta(seconds=0.5), timedelta(seconds=0.5) + US])


@dataclass(frozen=True)
class Row:
    owner: str
    state: str
    attempt: int
    token: Optional[int]
    lease_until: Optional[datetime]


Key = Tuple[str, datetime]


class StoreMachine(RuleBasedStateMachine):
    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.dir: Optional[str] = None
        clock = lambda: self.now  # noqa: E731
        options = dict(clock=clock, early_tolerance_secs=EARLY.total_seconds(),
                       retention_secs=RETENTION.total_seconds())
        self.stores: Dict[str, RunStore] = {}
        if self.kind == "memory":
            base = MemoryStore(owner="a", **options)  # type: ignore[arg-type]
            self.stores = {"a": base, "b": base.sibling("b"), "c": base.sibling("c")}
        else:
            self.dir = tempfile.mkdtemp(prefix="store-model-")
            path = f"{self.dir}/runs.db"
            self.stores = {o: SQLiteStore(path, owner=o, **options)  # type: ignore[arg-type]
                           for o in OWNERS}
        self.rows: Dict[Key, Row] = {}
        self.held: Dict[str, List[Claim]] = {o: [] for o in OWNERS}
        self.max_token = 0

    def teardown(self) -> None:
        for store in self.stores.values():
            store.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- model -------------------------------------------------------------------------

    def guard(self, at: datetime) -> Optional[Outcome]:
        if at > self.now + EARLY:
            return Outcome.EARLY
        if at < self.now - RETENTION:
            return Outcome.TOO_OLD
        return None

    def live_holders(self, job: str) -> Set[str]:
        return {row.owner for (j, _), row in self.rows.items()
                if j == job and row.state == "running" and row.lease_until is not None
                and self.now < row.lease_until}

    def new_token(self, token: int) -> None:
        assert token > self.max_token, "fencing tokens must strictly increase"
        self.max_token = token

    def expect_claim(self, owner: str, job: str, at: datetime, exclusive: bool,
                     result: object) -> None:
        from memory_scheduler.stores import ClaimResult

        assert isinstance(result, ClaimResult)
        assert result.server_now == self.now
        key = (job, at)
        guard = self.guard(at)
        row = self.rows.get(key)
        if guard is not None:
            assert (result.outcome, result.claim) == (guard, None)
        elif row is not None:
            if row.owner == owner and row.state == "running":
                assert result.outcome is Outcome.WON and result.claim is not None
                assert (result.claim.token, result.claim.attempt) == (row.token, row.attempt)
            else:
                assert (result.outcome, result.holder) == (Outcome.TAKEN, row.owner)
        elif exclusive and self.live_holders(job):
            # Any owner of a live run of the job may be named.
            assert result.outcome is Outcome.BUSY and result.holder in self.live_holders(job)
            self.rows[key] = Row(owner, "skipped", 1, None, None)
        else:
            assert result.outcome is Outcome.WON and result.claim is not None
            claim = result.claim
            self.new_token(claim.token)
            assert (claim.owner, claim.attempt, claim.job, claim.scheduled_utc) == \
                (owner, 1, job, at)
            assert claim.lease_until == self.now + timedelta(seconds=LEASE)
            self.rows[key] = Row(owner, "running", 1, claim.token, claim.lease_until)
            self.held[owner].append(claim)

    # -- rules ---------------------------------------------------------------------------

    @rule(owner=owners, job=jobs, offset=offsets, exclusive=st.booleans(), rel=st.booleans())
    def claim(self, owner: str, job: str, offset: timedelta, exclusive: bool,
              rel: bool) -> None:
        at = (self.now if rel else T0) + offset
        result = self.stores[owner].claim(job, at, LEASE, exclusive=exclusive)
        self.expect_claim(owner, job, at, exclusive, result)

    @rule(owner=owners, job=jobs)
    def claim_exclusive_now(self, owner: str, job: str) -> None:
        """overlap="skip" at the current instant: BUSY exactly while a run is live."""
        result = self.stores[owner].claim(job, self.now, LEASE, exclusive=True)
        self.expect_claim(owner, job, self.now, True, result)

    @rule(owner=owners, keys=st.lists(st.tuples(jobs, offsets), min_size=1, max_size=4,
                                      unique=True))
    def claim_batch(self, owner: str, keys: List[Tuple[str, timedelta]]) -> None:
        requests = [ClaimRequest(job, T0 + offset) for job, offset in keys]
        results = self.stores[owner].claim_many(requests, LEASE)
        assert len(results) == len(requests)
        for request, result in zip(requests, results):
            self.expect_claim(owner, request.job, request.scheduled_utc, False, result)

    @rule(owner=owners)
    def renew(self, owner: str) -> None:
        claims = self.held[owner]
        got = self.stores[owner].renew(claims, LEASE)
        for claim, ok in zip(claims, got):
            key = (claim.job, claim.scheduled_utc)
            row = self.rows[key]
            expected = row.state == "running" and row.token == claim.token
            assert ok == expected
            if ok:
                self.rows[key] = replace(row, lease_until=self.now + timedelta(seconds=LEASE))

    @rule(owner=owners, pick=st.integers(0, 100),
          state=st.sampled_from(["success", "failed", "timed_out"]))
    def finish(self, owner: str, pick: int, state: str) -> None:
        if not self.held[owner]:
            return
        claim = self.held[owner][pick % len(self.held[owner])]
        key = (claim.job, claim.scheduled_utc)
        row = self.rows[key]
        expected = row.state == "running" and row.token == claim.token
        assert self.stores[owner].finish(claim, state) == expected
        if expected:
            self.rows[key] = replace(row, state=state, lease_until=None)

    @rule(owner=owners, job=jobs, offset=offsets, state=st.sampled_from(["missed", "skipped"]),
          rel=st.booleans())
    def mark(self, owner: str, job: str, offset: timedelta, state: str, rel: bool) -> None:
        at = (self.now if rel else T0) + offset
        expected = self.guard(at) is None and (job, at) not in self.rows
        assert self.stores[owner].mark(job, at, state) == expected
        if expected:
            self.rows[(job, at)] = Row(owner, state, 1, None, None)

    @rule(owner=owners, rerun=st.sampled_from([(), ("x",), ("x", "y")]),
          limit=st.sampled_from([1, 100]))
    def sweep(self, owner: str, rerun: Tuple[str, ...], limit: int) -> None:
        result = self.stores[owner].sweep(LEASE, rerun, max_attempts=MAX_ATTEMPTS, limit=limit)
        expired = sorted(
            ((row.lease_until, key) for key, row in self.rows.items()
             if row.state == "running" and row.lease_until is not None
             and row.lease_until <= self.now),
            key=lambda e: (e[0], e[1]))[:limit]
        expect_lost, expect_rerun = [], []
        for _, key in expired:
            row = self.rows[key]
            if key[0] in rerun and row.attempt < MAX_ATTEMPTS:
                expect_rerun.append(key)
            else:
                expect_lost.append(key)
                self.rows[key] = replace(row, state="lost", lease_until=None)
        assert sorted((r.job, r.scheduled_utc) for r in result.lost) == sorted(expect_lost)
        assert sorted((c.job, c.scheduled_utc) for c in result.rerun) == sorted(expect_rerun)
        for record in result.lost:
            old = self.rows[(record.job, record.scheduled_utc)]
            assert (record.owner, record.attempt, str(record.state)) == \
                (old.owner, old.attempt, "lost")
        for claim in sorted(result.rerun, key=lambda c: c.token):
            key = (claim.job, claim.scheduled_utc)
            old = self.rows[key]
            self.new_token(claim.token)
            assert (claim.owner, claim.attempt) == (owner, old.attempt + 1)
            self.rows[key] = Row(owner, "running", old.attempt + 1, claim.token,
                                 self.now + timedelta(seconds=LEASE))
            self.held[owner].append(claim)

    @rule(owner=owners)
    def prune(self, owner: str) -> None:
        horizon = self.now - RETENTION
        newest = {job: max(at for (j, at) in self.rows if j == job)
                  for job in {j for j, _ in self.rows}}
        gone = [key for key, row in self.rows.items()
                if key[1] < horizon and key[1] != newest[key[0]] and row.state != "running"]
        assert self.stores[owner].prune() == len(gone)
        for key in gone:
            del self.rows[key]
        for claims in self.held.values():
            claims[:] = [c for c in claims if (c.job, c.scheduled_utc) in self.rows]

    @rule(step=st.sampled_from([US, timedelta(seconds=1), timedelta(seconds=LEASE) - US,
                                timedelta(seconds=LEASE), timedelta(seconds=45)]))
    def advance(self, step: timedelta) -> None:
        self.now += step

    @rule(pick=st.integers(0, 100), before=st.booleans())
    def advance_to_a_lease_end(self, pick: int, before: bool) -> None:
        """Land on a lease boundary exactly (or 1 µs before it), where off-by-one
        errors in expiry live."""
        ends = sorted({row.lease_until for row in self.rows.values()
                       if row.lease_until is not None and row.lease_until - US > self.now})
        if ends:
            self.now = ends[pick % len(ends)] - (US if before else timedelta(0))

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        store = self.stores["a"]
        for job in JOBS:
            got = [(r.scheduled_utc, r.owner, str(r.state), r.attempt, r.token, r.lease_until)
                   for r in store.history(job, limit=1000)]
            want = [(at, row.owner, row.state, row.attempt, row.token, row.lease_until)
                    for (j, at), row in sorted(self.rows.items(), reverse=True) if j == job]
            assert got == want
        assert store.watermarks(JOBS) == {
            job: max(at for (j, at) in self.rows if j == job)
            for job in JOBS if any(j == job for j, _ in self.rows)}


class SQLiteStoreMachine(StoreMachine):
    kind = "sqlite"


# The suite's profile decides how many examples; a short program per example keeps
# both machines within a few seconds.
_STEPS = settings(stateful_step_count=30)
TestMemoryStore = StoreMachine.TestCase
TestMemoryStore.settings = _STEPS
TestSQLiteStore = SQLiteStoreMachine.TestCase
TestSQLiteStore.settings = _STEPS
