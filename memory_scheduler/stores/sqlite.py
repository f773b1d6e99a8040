"""SQLiteStore: the run store in one SQLite file, shared by the processes of one host.

Each write is one ``BEGIN IMMEDIATE`` transaction: the write lock is taken before
anything is read (SQLite has no ``SELECT ... FOR UPDATE``), so "is the key recorded?"
and "record it" cannot interleave with another process. WAL lets readers go on while
one process writes. The connection is opened with ``isolation_level=None`` so the
transactions are ours, not the sqlite3 module's.

Limits (say them to users): local disk only, since WAL needs shared memory that NFS
and SMB do not give; one host, since the store's clock is the host clock of each writer
and dead owners are told by pid. A process killed on this host is detected at the next
sweep (its pid is gone, or belongs to a later process): its claims are swept at once
instead of at the end of their lease.

Bad files are refused with a :class:`StoreError` before anything is written (see
:mod:`.sqlite_schema`, which opens the file); the SQL itself is in
:mod:`.sqlite_statements`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from datetime import datetime
from typing import Collection, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union

from ..errors import InvalidValue
from . import sqlite_statements as sql
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
from .errors import StoreError, StoreUnavailable
from .owner import owner_is_dead
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
from .sqlite_schema import SYNCHRONOUS_MODES, open_database, translate_error

__all__ = ["SQLiteStore"]


# Stores to reset in a forked child: a connection must not cross a fork (SQLite's rule)
# and a lock held by another thread at fork time would never be released in the child.
_LIVE_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_LIVE_STORES):
        store._forget_connection()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class SQLiteStore(RunStore):
    """A run store in the SQLite file at ``path``, created if absent.

    Args:
        path: the database file; its directory must exist.
        timeout_secs: how long a call waits for another process's write lock (SQLite's
            busy timeout) before the call fails as unavailable.
        synchronous: ``"normal"`` (durable across process crashes) or ``"full"``
            (also across power loss, at a few times the cost per claim).
        namespace, owner, clock, early_tolerance_secs, retention_secs: see
            :class:`RunStore`.

    Raises:
        StoreError: the file cannot be opened, is not a run store, or was made by a
            newer schema; the file is left unchanged.

    One connection per process, opened here and again in a forked child, shared by the
    process's threads under ``self._lock``.
    """

    def __init__(self, path: Union[str, os.PathLike[str]], *, namespace: str = "default",
                 owner: Optional[str] = None, clock: Optional[Clock] = None,
                 early_tolerance_secs: float = DEFAULT_EARLY_TOLERANCE_SECS,
                 retention_secs: float = DEFAULT_RETENTION_SECS,
                 timeout_secs: float = 1.0, synchronous: str = "normal") -> None:
        super().__init__(namespace=namespace, owner=owner, clock=clock,
                         early_tolerance_secs=early_tolerance_secs,
                         retention_secs=retention_secs)
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path) \
                or os.fspath(path) == ":memory:":
            raise InvalidValue(f"SQLiteStore(path={path!r}): expected the path of a file "
                               "(use MemoryStore for a store in memory)")
        self._path = os.path.abspath(os.fspath(path))
        self._timeout = seconds_us("timeout_secs", timeout_secs) / 1_000_000
        if synchronous not in SYNCHRONOUS_MODES:
            raise InvalidValue(f"synchronous={synchronous!r}: expected 'normal' or 'full'")
        self._synchronous = synchronous
        # _lock guards _conn, _pid and _closed, and serialises this process's use of the
        # one connection: threads queue here instead of in SQLite's busy handler.
        self._lock = threading.Lock()
        self._conn: Optional[sqlite3.Connection] = None
        self._pid = -1
        self._closed = False
        # Owners found dead stay dead: their ids name a process incarnation.
        self._dead: Set[str] = set()
        with self._locked():
            self._connection()  # refuse a bad file now, not at the first claim
        _LIVE_STORES.add(self)

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r}, namespace={self.namespace!r})"

    @property
    def path(self) -> str:
        return self._path

    # -- connection ---------------------------------------------------------------------

    def _forget_connection(self) -> None:
        """In a forked child: abandon (never close) the parent's connection and lock."""
        self._lock = threading.Lock()
        self._conn = None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Bounded: the holder waits at most timeout_secs for SQLite, plus its own work.
        if not self._lock.acquire(timeout=2.0 * self._timeout + 1.0):
            raise StoreUnavailable(f"{self!r}: another thread of this process holds the "
                                   "store for too long")
        try:
            yield
        finally:
            self._lock.release()

    def _connection(self) -> sqlite3.Connection:
        """The process's connection, opened on first use. Caller holds ``_lock``."""
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if self._conn is None or self._pid != os.getpid():
            self._conn = None
            self._conn = open_database(self._path, self._timeout, self._synchronous)
            self._pid = os.getpid()
        return self._conn

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the process lock and SQLite's write lock."""
        with self._locked():
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise translate_error(exc, f"{self!r}: {what}") from exc

    @contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        """Reads: no write lock; WAL shows them the last committed state."""
        with self._locked():
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise translate_error(exc, f"{self!r}: {what}") from exc

    def _is_dead(self, owner: str) -> bool:
        if owner == self.owner:
            return False
        if owner in self._dead:
            return True
        if owner_is_dead(owner):
            self._dead.add(owner)
            return True
        return False

    # -- contract -----------------------------------------------------------------------

    def claim_many(self, items: Sequence[ClaimRequest], lease_secs: float) -> List[ClaimResult]:
        lease_us = seconds_us("lease_secs", lease_secs)
        reqs = check_requests(items)
        if not reqs:
            return []
        ns, me = self.namespace, self.owner
        # Per item: (outcome, (token, attempt, lease_until) if won, holder)
        decided: List[Tuple[Outcome, Optional[Tuple[int, int, int]], Optional[str]]] = []
        sent = time.monotonic()
        try:
            with self._transaction("claim") as conn:
                now = self._now_us()
                first_token = token = conn.execute(sql.GET_TOKEN).fetchone()[0]
                slots: List[Optional[Tuple[Outcome, Optional[Tuple[int, int, int]],
                                           Optional[str]]]] = [None] * len(reqs)
                plain: List[Tuple[int, str, int, int]] = []
                exclusive: List[int] = []
                for i, (job, at, excl) in enumerate(reqs):
                    guard = self._guard(at, now)
                    if guard is not None:
                        slots[i] = (guard, None, None)
                    elif excl:
                        exclusive.append(i)
                    else:
                        token += 1
                        plain.append((i, job, at, token))
                if plain:
                    cur = conn.executemany(sql.INSERT_RUNNING, [
                        (ns, job, at, me, tok, now, now + lease_us) for _, job, at, tok in plain])
                    # The common burst: every key new, no need to read any back.
                    all_won = cur.rowcount == len(plain)
                    if all_won:
                        for i, _, _, tok in plain:
                            slots[i] = (Outcome.WON, (tok, 1, now + lease_us), None)
                    else:
                        token = first_token  # hand out only the tokens that won
                        found = sql.read_rows(conn, ns, [(job, at) for _, job, at, _ in plain])
                        for i, job, at, tok in plain:
                            row = found[(job, at)]
                            slots[i] = sql.classify_claim(row, tok, me)
                            if row[2] == tok:
                                token = tok
                if exclusive:
                    token = sql.claim_exclusive(conn, ns, me, [reqs[i] for i in exclusive],
                                             exclusive, slots, token, now, lease_us)
                if token != first_token:
                    conn.execute(sql.SET_TOKEN, (token,))
                decided = [s for s in slots if s is not None]
        except StoreUnavailable as exc:
            return [ClaimResult(Outcome.UNAVAILABLE, detail=str(exc)) for _ in reqs]
        deadline = self_fence_deadline(sent, time.monotonic(), lease_us / 1_000_000)
        instants = InstantCache()
        server_now = instants[now]
        out = []
        for (job, at, _), (outcome, won, holder) in zip(reqs, decided):
            claim = None
            if won is not None:
                claim = Claim(job, instants[at], me, won[0], won[1], instants[won[2]],
                              deadline)
            out.append(ClaimResult(outcome, claim, server_now, holder))
        return out

    def renew(self, claims: Sequence[Claim], lease_secs: float) -> List[bool]:
        lease_us = seconds_us("lease_secs", lease_secs)
        keys = [(check_name("job", c.job), to_us(c.scheduled_utc), c.token) for c in claims]
        if not keys:
            return []
        ns = self.namespace
        with self._transaction("renew") as conn:
            until = self._now_us() + lease_us
            return [conn.execute(sql.RENEW, (until, ns, job, at, token)).rowcount == 1
                    for job, at, token in keys]

    def finish(self, claim: Claim, state: str) -> bool:
        final = check_state(state, FINISH_STATES, "finish")
        job, at = check_name("job", claim.job), to_us(claim.scheduled_utc)
        with self._transaction("finish") as conn:
            cur = conn.execute(sql.FINISH, (final.value, self._now_us(), self.namespace, job,
                                            at, claim.token))
            return cur.rowcount == 1

    def finish_many(self, items: Sequence[Tuple[Claim, str]]) -> List[bool]:
        rows = [(check_state(state, FINISH_STATES, "finish").value, check_name("job", c.job),
                 to_us(c.scheduled_utc), c.token) for c, state in items]
        if not rows:
            return []
        ns = self.namespace
        with self._transaction("finish") as conn:
            now = self._now_us()
            return [conn.execute(sql.FINISH, (final, now, ns, job, at, token)).rowcount == 1
                    for final, job, at, token in rows]

    def mark(self, job: str, scheduled_utc: datetime, state: str) -> bool:
        final = check_state(state, MARK_STATES, "mark")
        job, at = check_name("job", job), to_us(scheduled_utc)
        with self._transaction("mark") as conn:
            now = self._now_us()
            if self._guard(at, now) is not None:
                return False
            cur = conn.execute(sql.INSERT_DONE, (self.namespace, job, at, self.owner,
                                                 final.value, now, now))
            return cur.rowcount == 1

    def sweep(self, lease_secs: float, rerun_jobs: Collection[str] = (), *,
              max_attempts: int = 2, limit: int = 100) -> SweepResult:
        lease_us = seconds_us("lease_secs", lease_secs)
        rerun_set = frozenset(rerun_jobs)
        ns, me = self.namespace, self.owner
        with self._reading("sweep") as conn:
            owners = [r[0] for r in conn.execute(sql.RUNNING_OWNERS, (ns,))]
        # procfs is read outside the write transaction; a dead owner stays dead.
        dead = [o for o in owners if self._is_dead(o)][:500]
        lost: List[RunRecord] = []
        taken: List[Tuple[str, int, int, int, int]] = []
        sent = time.monotonic()
        with self._transaction("sweep") as conn:
            now = self._now_us()
            token = first_token = conn.execute(sql.GET_TOKEN).fetchone()[0]
            query = sql.EXPIRED.format(owners=", ".join("?" * len(dead)))
            for job, at, *rest in conn.execute(query, (ns, now, *dead, max(0, limit))).fetchall():
                row: sql.RunRow = tuple(rest)
                old_token, attempt = row[2], row[3]
                if job in rerun_set and attempt < max_attempts:
                    token += 1
                    conn.execute(sql.TAKE_OVER, (me, token, now, now + lease_us, ns, job, at,
                                                 old_token))
                    taken.append((job, at, token, attempt + 1, now + lease_us))
                else:
                    conn.execute(sql.LOSE, (now, ns, job, at, old_token))
                    lost.append(sql.row_to_record(job, at, (
                        row[0], RunState.LOST.value, old_token, attempt, row[4], None, now)))
            if token != first_token:
                conn.execute(sql.SET_TOKEN, (token,))
        answered = time.monotonic()
        lease = lease_us / 1_000_000
        return SweepResult(lost=tuple(lost), rerun=tuple(
            Claim(job=job, scheduled_utc=from_us(at), owner=me, token=tok, attempt=attempt,
                  lease_until=from_us(until),
                  valid_until_mono=self_fence_deadline(sent, answered, lease))
            for job, at, tok, attempt, until in taken))

    def watermarks(self, jobs: Collection[str]) -> Dict[str, datetime]:
        names = [check_name("job", j) for j in jobs]
        out = {}
        with self._reading("watermarks") as conn:
            for job in names:
                (at,) = conn.execute(sql.WATERMARK, (self.namespace, job)).fetchone()
                if at is not None:
                    out[job] = from_us(at)
        return out

    def history(self, job: str, limit: int = 100) -> List[RunRecord]:
        job = check_name("job", job)
        with self._reading("history") as conn:
            rows = conn.execute(sql.HISTORY, (self.namespace, job, max(0, limit))).fetchall()
        return [sql.row_to_record(r[0], r[1], tuple(r[2:])) for r in rows]

    def fingerprints(self, fingerprints: Mapping[str, str], *,
                     live_secs: float = DEFAULT_FINGERPRINT_LIVE_SECS
                     ) -> List[FingerprintMismatch]:
        live_us = seconds_us("live_secs", live_secs)
        ours = {check_name("job", j): check_name("fingerprint", f)
                for j, f in fingerprints.items()}
        ns, me = self.namespace, self.owner
        found: List[FingerprintMismatch] = []
        with self._transaction("fingerprints") as conn:
            now = self._now_us()
            conn.executemany(sql.UPSERT_JOB, [(ns, j, me, f, now) for j, f in ours.items()])
            for job, fp in ours.items():
                for owner, other, seen in conn.execute(
                        sql.OTHER_JOBS, (ns, job, me, now - live_us, fp)):
                    found.append(FingerprintMismatch(job, fp, owner, other, from_us(seen)))
        return [m for m in found if not self._is_dead(m.other_owner)]

    def prune(self, retention_secs: Optional[float] = None) -> int:
        horizon = self._prune_horizon_us(retention_secs, self._now_us())
        ns = self.namespace
        deleted, job = 0, ""
        while True:
            with self._transaction("prune") as conn:
                (following,) = conn.execute(sql.NEXT_JOB, (ns, job)).fetchone()
                if following is None:
                    conn.execute(sql.PRUNE_JOBS, (ns, horizon))
                    return deleted
                (newest,) = conn.execute(sql.WATERMARK, (ns, following)).fetchone()
                # The newest row of a job is the catch-up watermark: never delete it.
                bound = min(horizon, newest)
                n = conn.execute(sql.PRUNE_BATCH, (ns, following, bound,
                                                sql.PRUNE_BATCH_ROWS)).rowcount
            deleted += n
            if n < sql.PRUNE_BATCH_ROWS:
                job = following

    def close(self) -> None:
        with self._locked():
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                try:
                    conn.close()
                except sqlite3.Error as exc:
                    raise translate_error(exc, f"{self!r}: close") from exc
        _LIVE_STORES.discard(self)

