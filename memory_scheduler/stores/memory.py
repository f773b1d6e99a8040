"""MemoryStore: the run store semantics in one process, for tests and single processes.

Plain dicts under one lock. Nothing survives the process, so there is no catch-up after
a restart; several owners exist only as :meth:`MemoryStore.sibling` handles, which is
how tests play several processes against the same rules as the SQLite store.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Collection, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from .base import (
    DEFAULT_EARLY_TOLERANCE_SECS,
    DEFAULT_FINGERPRINT_LIVE_SECS,
    DEFAULT_RETENTION_SECS,
    Clock,
    RunStore,
)
from .checks import (
    InstantCache,
    check_name,
    check_requests,
    check_state,
    from_us,
    seconds_us,
    to_us,
)
from .errors import StoreError
from .records import (
    FINISH_STATES,
    MARK_STATES,
    Claim,
    ClaimRequest,
    ClaimResult,
    FingerprintMismatch,
    Outcome,
    RunRecord,
    RunState,
    SweepResult,
    self_fence_deadline,
)

__all__ = ["MemoryStore"]


@dataclass
class _Row:
    owner: str
    token: Optional[int]
    attempt: int
    state: RunState
    claimed_at: int
    lease_until: Optional[int]
    finished_at: Optional[int]


class _Tables:
    """The data every sibling handle shares.

    ``lock`` guards every field. It is held for dict work and one clock read (so the
    clock must not call back into the store), never while calling other foreign code.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # (namespace, job) -> {scheduled µs -> row}
        self.runs: Dict[Tuple[str, str], Dict[int, _Row]] = {}
        # (namespace, job) -> scheduled µs of its running rows: the BUSY and sweep index
        self.running: Dict[Tuple[str, str], Set[int]] = {}
        # (namespace, job, owner) -> (fingerprint, seen_at µs)
        self.jobs: Dict[Tuple[str, str, str], Tuple[str, int]] = {}
        self.token = 0


class MemoryStore(RunStore):
    """A run store in this process's memory. See :class:`RunStore` for the arguments
    and the contract; it never reports UNAVAILABLE."""

    def __init__(self, *, namespace: str = "default", owner: Optional[str] = None,
                 clock: Optional[Clock] = None,
                 early_tolerance_secs: float = DEFAULT_EARLY_TOLERANCE_SECS,
                 retention_secs: float = DEFAULT_RETENTION_SECS,
                 _tables: Optional[_Tables] = None) -> None:
        super().__init__(namespace=namespace, owner=owner, clock=clock,
                         early_tolerance_secs=early_tolerance_secs,
                         retention_secs=retention_secs)
        self._t = _Tables() if _tables is None else _tables
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryStore(namespace={self.namespace!r})"

    def sibling(self, owner: Optional[str] = None) -> MemoryStore:
        """Another handle on the same data with its own owner id: a second "process"."""
        return MemoryStore(namespace=self.namespace, owner=owner, clock=self._clock,
                           early_tolerance_secs=self._early_us / 1_000_000,
                           retention_secs=self.retention_secs, _tables=self._t)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed")

    def _job_rows(self, job: str) -> Dict[int, _Row]:
        return self._t.runs.setdefault((self.namespace, job), {})

    def _running(self, job: str) -> Set[int]:
        return self._t.running.setdefault((self.namespace, job), set())

    def _live_holder(self, job: str, now: int) -> Optional[str]:
        rows = self._t.runs.get((self.namespace, job), {})
        for at in self._running(job):
            row = rows[at]
            if row.lease_until is not None and now < row.lease_until:
                return row.owner
        return None

    def _claim(self, row: _Row, job: str, at: int, mono: Tuple[float, float],
               lease_us: int) -> Claim:
        assert row.token is not None and row.lease_until is not None
        return Claim(job=job, scheduled_utc=from_us(at), owner=row.owner, token=row.token,
                     attempt=row.attempt, lease_until=from_us(row.lease_until),
                     valid_until_mono=self_fence_deadline(mono[0], mono[1],
                                                          lease_us / 1_000_000))

    # -- contract ----------------------------------------------------------------------

    def claim_many(self, items: Sequence[ClaimRequest], lease_secs: float) -> List[ClaimResult]:
        lease_us = seconds_us("lease_secs", lease_secs)
        reqs = check_requests(items)
        sent = time.monotonic()
        me = self.owner
        # Per item: (outcome, (token, attempt, lease_until) if won, holder), decided under
        # the lock; the Claims are built after it.
        slots: List[Tuple[Outcome, Optional[Tuple[int, int, int]], Optional[str]]] = []
        with self._t.lock:
            self._check_open()
            now = self._now_us()
            # Exclusive items are decided after the others, as in SQLiteStore.
            order = [i for i, r in enumerate(reqs) if not r[2]] + \
                    [i for i, r in enumerate(reqs) if r[2]]
            decided: Dict[int, Tuple[Outcome, Optional[Tuple[int, int, int]],
                                     Optional[str]]] = {}
            for i in order:
                job, at, exclusive = reqs[i]
                guard = self._guard(at, now)
                rows = self._job_rows(job)
                row = rows.get(at)
                if guard is not None:
                    decided[i] = (guard, None, None)
                elif row is not None:
                    if row.owner == me and row.state is RunState.RUNNING:
                        assert row.token is not None and row.lease_until is not None
                        decided[i] = (Outcome.WON, (row.token, row.attempt, row.lease_until),
                                      None)
                    else:
                        decided[i] = (Outcome.TAKEN, None, row.owner)
                elif exclusive and (holder := self._live_holder(job, now)) is not None:
                    rows[at] = _Row(me, None, 1, RunState.SKIPPED, now, None, now)
                    decided[i] = (Outcome.BUSY, None, holder)
                else:
                    self._t.token += 1
                    rows[at] = _Row(me, self._t.token, 1, RunState.RUNNING, now,
                                    now + lease_us, None)
                    self._running(job).add(at)
                    decided[i] = (Outcome.WON, (self._t.token, 1, now + lease_us), None)
            slots = [decided[i] for i in range(len(reqs))]
        deadline = self_fence_deadline(sent, time.monotonic(), lease_us / 1_000_000)
        instants = InstantCache()
        server_now = instants[now]
        out = []
        for (job, at, _), (outcome, won, holder) in zip(reqs, slots):
            claim = None
            if won is not None:
                claim = Claim(job, instants[at], me, won[0], won[1], instants[won[2]],
                              deadline)
            out.append(ClaimResult(outcome, claim, server_now, holder))
        return out

    def renew(self, claims: Sequence[Claim], lease_secs: float) -> List[bool]:
        lease_us = seconds_us("lease_secs", lease_secs)
        keys = [(check_name("job", c.job), to_us(c.scheduled_utc), c.token) for c in claims]
        out = []
        with self._t.lock:
            self._check_open()
            now = self._now_us()
            for job, at, token in keys:
                row = self._t.runs.get((self.namespace, job), {}).get(at)
                ok = row is not None and row.state is RunState.RUNNING and row.token == token
                if ok:
                    assert row is not None
                    row.lease_until = now + lease_us
                out.append(ok)
        return out

    def finish(self, claim: Claim, state: str) -> bool:
        final = check_state(state, FINISH_STATES, "finish")
        job, at = check_name("job", claim.job), to_us(claim.scheduled_utc)
        with self._t.lock:
            self._check_open()
            now = self._now_us()
            row = self._t.runs.get((self.namespace, job), {}).get(at)
            if row is None or row.state is not RunState.RUNNING or row.token != claim.token:
                return False
            row.state, row.finished_at, row.lease_until = final, now, None
            self._running(job).discard(at)
            return True

    def mark(self, job: str, scheduled_utc: datetime, state: str) -> bool:
        final = check_state(state, MARK_STATES, "mark")
        job, at = check_name("job", job), to_us(scheduled_utc)
        with self._t.lock:
            self._check_open()
            now = self._now_us()
            rows = self._job_rows(job)
            if self._guard(at, now) is not None or at in rows:
                return False
            rows[at] = _Row(self.owner, None, 1, final, now, None, now)
            return True

    def sweep(self, lease_secs: float, rerun_jobs: Collection[str] = (), *,
              max_attempts: int = 2, limit: int = 100) -> SweepResult:
        lease_us = seconds_us("lease_secs", lease_secs)
        rerun_set = frozenset(rerun_jobs)
        sent = time.monotonic()
        me = self.owner
        lost: List[RunRecord] = []
        taken: List[Tuple[str, int, _Row]] = []
        with self._t.lock:
            self._check_open()
            now = self._now_us()
            expired = []
            for (ns, job), running in self._t.running.items():
                if ns != self.namespace:
                    continue
                rows = self._t.runs[(ns, job)]
                for at in running:
                    row = rows[at]
                    assert row.lease_until is not None
                    if row.lease_until <= now:
                        expired.append((row.lease_until, job, at, row))
            expired.sort(key=lambda e: e[:3])
            for _, job, at, row in expired[:max(0, limit)]:
                if job in rerun_set and row.attempt < max_attempts:
                    self._t.token += 1
                    row.owner, row.token, row.attempt = me, self._t.token, row.attempt + 1
                    row.claimed_at, row.lease_until = now, now + lease_us
                    taken.append((job, at, _Row(**vars(row))))
                else:
                    row.state, row.finished_at, row.lease_until = RunState.LOST, now, None
                    self._running(job).discard(at)
                    lost.append(_record(job, at, row))
        answered = time.monotonic()
        return SweepResult(
            lost=tuple(lost),
            rerun=tuple(self._claim(r, j, a, (sent, answered), lease_us) for j, a, r in taken))

    def watermarks(self, jobs: Collection[str]) -> Dict[str, datetime]:
        names = [check_name("job", j) for j in jobs]
        out = {}
        with self._t.lock:
            self._check_open()
            for job in names:
                rows = self._t.runs.get((self.namespace, job))
                if rows:
                    out[job] = from_us(max(rows))
        return out

    def history(self, job: str, limit: int = 100) -> List[RunRecord]:
        job = check_name("job", job)
        with self._t.lock:
            self._check_open()
            rows = self._t.runs.get((self.namespace, job), {})
            newest = sorted(rows, reverse=True)[:max(0, limit)]
            return [_record(job, at, rows[at]) for at in newest]

    def fingerprints(self, fingerprints: Mapping[str, str], *,
                     live_secs: float = DEFAULT_FINGERPRINT_LIVE_SECS
                     ) -> List[FingerprintMismatch]:
        live_us = seconds_us("live_secs", live_secs)
        ours = {check_name("job", j): check_name("fingerprint", f)
                for j, f in fingerprints.items()}
        me = self.owner
        out = []
        with self._t.lock:
            self._check_open()
            now = self._now_us()
            for job, fp in ours.items():
                self._t.jobs[(self.namespace, job, me)] = (fp, now)
            for (ns, job, owner), (fp, seen) in sorted(self._t.jobs.items()):
                if ns == self.namespace and job in ours and owner != me \
                        and fp != ours[job] and seen >= now - live_us:
                    out.append(FingerprintMismatch(job, ours[job], owner, fp, from_us(seen)))
        return out

    def prune(self, retention_secs: Optional[float] = None) -> int:
        deleted = 0
        with self._t.lock:
            self._check_open()
            now = self._now_us()
            horizon = self._prune_horizon_us(retention_secs, now)
            for (ns, _), rows in self._t.runs.items():
                if ns != self.namespace or not rows:
                    continue
                newest = max(rows)
                old = [at for at, row in rows.items() if at < horizon and at != newest
                       and row.state is not RunState.RUNNING]
                for at in old:
                    del rows[at]
                deleted += len(old)
            for key in [k for k, (_, seen) in self._t.jobs.items()
                        if k[0] == self.namespace and seen < horizon]:
                del self._t.jobs[key]
        return deleted

    def close(self) -> None:
        with self._t.lock:
            self._closed = True


def _record(job: str, at: int, row: _Row) -> RunRecord:
    return RunRecord(job=job, scheduled_utc=from_us(at), owner=row.owner, state=row.state,
                     attempt=row.attempt, token=row.token, claimed_at=from_us(row.claimed_at),
                     lease_until=None if row.lease_until is None else from_us(row.lease_until),
                     finished_at=None if row.finished_at is None else from_us(row.finished_at))
