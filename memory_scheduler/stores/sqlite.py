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

Bad files are refused with a :class:`StoreError` before anything is written: a file
that is not an SQLite database, a database with other tables and no run store, a run
store of a newer schema. Nothing already recorded is rewritten.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from datetime import datetime
from typing import (
    Collection,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from ..errors import InvalidValue
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

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

#: The layout this code writes. A store with a higher version was made by a newer
#: memory_scheduler and is refused rather than misread.
SCHEMA_VERSION = 1

_META = "memory_scheduler_meta"
_RUNS = "memory_scheduler_runs"
_JOBS = "memory_scheduler_jobs"

# Instants are epoch microseconds (UTC), so keys compare and sort as integers and the
# DST fall-back hour gives two distinct keys. Running rows are few at any time; the
# partial index serves both the exclusive (BUSY) check and the sweep.
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_META} (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID",
    f"""CREATE TABLE IF NOT EXISTS {_RUNS} (
        namespace    TEXT    NOT NULL,
        job          TEXT    NOT NULL,
        scheduled_at INTEGER NOT NULL,
        owner        TEXT    NOT NULL,
        token        INTEGER,
        attempt      INTEGER NOT NULL DEFAULT 1,
        state        TEXT    NOT NULL,
        claimed_at   INTEGER NOT NULL,
        lease_until  INTEGER,
        finished_at  INTEGER,
        PRIMARY KEY (namespace, job, scheduled_at)) WITHOUT ROWID""",
    f"""CREATE INDEX IF NOT EXISTS {_RUNS}_running
        ON {_RUNS} (namespace, job, lease_until) WHERE state = 'running'""",
    f"""CREATE TABLE IF NOT EXISTS {_JOBS} (
        namespace   TEXT    NOT NULL,
        job         TEXT    NOT NULL,
        owner       TEXT    NOT NULL,
        fingerprint TEXT    NOT NULL,
        seen_at     INTEGER NOT NULL,
        PRIMARY KEY (namespace, job, owner)) WITHOUT ROWID""",
    f"INSERT OR IGNORE INTO {_META} (k, v) VALUES ('token', 0)",
    f"INSERT OR IGNORE INTO {_META} (k, v) VALUES ('schema_version', {SCHEMA_VERSION})",
)

_ROW = "owner, state, token, attempt, claimed_at, lease_until, finished_at"
_KEY = "namespace = ? AND job = ? AND scheduled_at = ?"

_GET_TOKEN = f"SELECT v FROM {_META} WHERE k = 'token'"
_SET_TOKEN = f"UPDATE {_META} SET v = ? WHERE k = 'token'"
_SELECT_ROW = f"SELECT {_ROW} FROM {_RUNS} WHERE {_KEY}"
# rowcount 1: this owner recorded the key (won); 0: someone had (classified by reading it).
_INSERT_RUNNING = f"""INSERT INTO {_RUNS}
    (namespace, job, scheduled_at, owner, token, attempt, state, claimed_at, lease_until)
    VALUES (?, ?, ?, ?, ?, 1, 'running', ?, ?)
    ON CONFLICT (namespace, job, scheduled_at) DO NOTHING"""
_INSERT_DONE = f"""INSERT INTO {_RUNS}
    (namespace, job, scheduled_at, owner, token, attempt, state, claimed_at, finished_at)
    VALUES (?, ?, ?, ?, NULL, 1, ?, ?, ?)
    ON CONFLICT (namespace, job, scheduled_at) DO NOTHING"""
_LIVE_HOLDER = f"""SELECT owner FROM {_RUNS}
    WHERE namespace = ? AND job = ? AND state = 'running' AND lease_until > ? LIMIT 1"""
# The token and the state guard every change of a running row: a holder that lost its
# lease changes nothing.
_RENEW = f"UPDATE {_RUNS} SET lease_until = ? WHERE {_KEY} AND token = ? AND state = 'running'"
_FINISH = f"""UPDATE {_RUNS} SET state = ?, finished_at = ?, lease_until = NULL
    WHERE {_KEY} AND token = ? AND state = 'running'"""
_RUNNING_OWNERS = f"SELECT DISTINCT owner FROM {_RUNS} WHERE namespace = ? AND state = 'running'"
_EXPIRED = f"""SELECT job, scheduled_at, {_ROW} FROM {_RUNS}
    WHERE namespace = ? AND state = 'running' AND (lease_until <= ? OR owner IN ({{owners}}))
    ORDER BY lease_until, job, scheduled_at LIMIT ?"""
_TAKE_OVER = f"""UPDATE {_RUNS} SET owner = ?, token = ?, attempt = attempt + 1,
    claimed_at = ?, lease_until = ? WHERE {_KEY} AND token = ? AND state = 'running'"""
_LOSE = f"""UPDATE {_RUNS} SET state = 'lost', finished_at = ?, lease_until = NULL
    WHERE {_KEY} AND token = ? AND state = 'running'"""
_WATERMARK = f"SELECT MAX(scheduled_at) FROM {_RUNS} WHERE namespace = ? AND job = ?"
_HISTORY = f"""SELECT job, scheduled_at, {_ROW} FROM {_RUNS}
    WHERE namespace = ? AND job = ? ORDER BY scheduled_at DESC LIMIT ?"""
_UPSERT_JOB = f"""INSERT INTO {_JOBS} (namespace, job, owner, fingerprint, seen_at)
    VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, job, owner)
    DO UPDATE SET fingerprint = excluded.fingerprint, seen_at = excluded.seen_at"""
_OTHER_JOBS = f"""SELECT owner, fingerprint, seen_at FROM {_JOBS}
    WHERE namespace = ? AND job = ? AND owner <> ? AND seen_at >= ? AND fingerprint <> ?
    ORDER BY owner"""
# Prune walks the jobs through the primary key (one seek each) and deletes in batches,
# so no transaction holds the write lock for long.
_NEXT_JOB = f"SELECT MIN(job) FROM {_RUNS} WHERE namespace = ? AND job > ?"
_PRUNE_BATCH = f"""DELETE FROM {_RUNS} WHERE (namespace, job, scheduled_at) IN (
    SELECT namespace, job, scheduled_at FROM {_RUNS}
    WHERE namespace = ? AND job = ? AND scheduled_at < ? AND state <> 'running'
    ORDER BY scheduled_at LIMIT ?)"""
_PRUNE_JOBS = f"DELETE FROM {_JOBS} WHERE namespace = ? AND seen_at < ?"
_PRUNE_BATCH_ROWS = 5000

# Engine messages that mean "try again later" rather than "this is not usable".
_TRANSIENT = ("locked", "busy", "disk i/o error", "disk is full", "unable to open")

_SYNCHRONOUS = ("normal", "full")
# ON CONFLICT ... DO NOTHING / DO UPDATE (3.24); RETURNING (3.35) is not used.
_MIN_SQLITE = (3, 24, 0)

_Row = Tuple[str, str, Optional[int], int, int, Optional[int], Optional[int]]


def _translate(exc: sqlite3.Error, where: str) -> StoreError:
    message = f"{where}: {exc}"
    if isinstance(exc, sqlite3.OperationalError) and \
            any(t in str(exc).lower() for t in _TRANSIENT):
        return StoreUnavailable(message)
    return StoreError(message)


def _record(job: str, at: int, row: _Row) -> RunRecord:
    owner, state, token, attempt, claimed_at, lease_until, finished_at = row
    return RunRecord(job=job, scheduled_utc=from_us(at), owner=owner, state=RunState(state),
                     attempt=attempt, token=token, claimed_at=from_us(claimed_at),
                     lease_until=None if lease_until is None else from_us(lease_until),
                     finished_at=None if finished_at is None else from_us(finished_at))


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
        if synchronous not in _SYNCHRONOUS:
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
            self._conn = self._open()
            self._pid = os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        where = f"SQLite store {self._path!r}"
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise StoreError(f"{where}: needs SQLite >= 3.24 (upserts); this Python has "
                             f"{sqlite3.sqlite_version}")
        parent = os.path.dirname(self._path)
        if not os.path.isdir(parent):
            problem = "is not a directory" if os.path.exists(parent) else "does not exist"
            raise StoreError(f"{where}: {parent!r} {problem}")
        if os.path.isdir(self._path):
            raise StoreError(f"{where}: is a directory, not a database file")
        # SQLite would open an unwritable file read-only and fail at the first claim.
        if os.path.exists(self._path) and not os.access(self._path, os.R_OK | os.W_OK):
            raise StoreError(f"{where}: this process cannot read and write it")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise StoreError(f"{where}: this process cannot create files in {parent!r} "
                             "(SQLite keeps its -wal and -shm files next to the database)")
        try:
            conn = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"{where}: cannot be opened: {exc}") from exc
        try:
            self._prepare(conn, where)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection, where: str) -> None:
        """Check what the file holds, then (for a new store) create the schema.

        Nothing is written before the file is known to be empty or a run store of a
        version this code reads: not even the WAL switch, which rewrites the header.
        """
        try:
            try:
                ready = _check_schema(conn, where)
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and \
                        any(t in str(exc).lower() for t in _TRANSIENT):
                    raise
                raise StoreError(f"{where}: not a run store ({exc}); "
                                 "the file was left unchanged") from exc
            mode = self._enable_wal(conn)
            if str(mode).lower() != "wal":
                raise StoreError(f"{where}: cannot use write-ahead logging (journal mode "
                                 f"{mode!r}); put the store on a local disk")
            conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
            if not ready:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # Another process may have created it meanwhile: check again under
                    # the write lock.
                    if not _check_schema(conn, where):
                        for statement in _SCHEMA:
                            conn.execute(statement)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise _translate(exc, where) from exc

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switch to write-ahead logging; returns the journal mode in force.

        The switch takes an exclusive lock for which SQLite does not call its busy
        handler: a process opening a fresh file while another switches it or already
        writes gets "database is locked" at once (seen with replicas starting
        together). Retried every 10 ms up to the store's timeout, counted in attempts.
        """
        pause = threading.Event()
        for _ in range(max(1, round(self._timeout / 0.01))):
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() and "busy" not in str(exc).lower():
                    raise
            pause.wait(0.01)
        return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])

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
                raise _translate(exc, f"{self!r}: {what}") from exc

    @contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        """Reads: no write lock; WAL shows them the last committed state."""
        with self._locked():
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise _translate(exc, f"{self!r}: {what}") from exc

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
                first_token = token = conn.execute(_GET_TOKEN).fetchone()[0]
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
                    cur = conn.executemany(_INSERT_RUNNING, [
                        (ns, job, at, me, tok, now, now + lease_us) for _, job, at, tok in plain])
                    # The common burst: every key new, no need to read any back.
                    all_won = cur.rowcount == len(plain)
                    if all_won:
                        for i, _, _, tok in plain:
                            slots[i] = (Outcome.WON, (tok, 1, now + lease_us), None)
                    else:
                        token = first_token  # hand out only the tokens that won
                        found = _read_rows(conn, ns, [(job, at) for _, job, at, _ in plain])
                        for i, job, at, tok in plain:
                            row = found[(job, at)]
                            slots[i] = _classify(row, tok, me)
                            if row[2] == tok:
                                token = tok
                if exclusive:
                    token = _claim_exclusive(conn, ns, me, [reqs[i] for i in exclusive],
                                             exclusive, slots, token, now, lease_us)
                if token != first_token:
                    conn.execute(_SET_TOKEN, (token,))
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
            return [conn.execute(_RENEW, (until, ns, job, at, token)).rowcount == 1
                    for job, at, token in keys]

    def finish(self, claim: Claim, state: str) -> bool:
        final = check_state(state, FINISH_STATES, "finish")
        job, at = check_name("job", claim.job), to_us(claim.scheduled_utc)
        with self._transaction("finish") as conn:
            cur = conn.execute(_FINISH, (final.value, self._now_us(), self.namespace, job, at,
                                         claim.token))
            return cur.rowcount == 1

    def finish_many(self, items: Sequence[Tuple[Claim, str]]) -> List[bool]:
        rows = [(check_state(state, FINISH_STATES, "finish").value, check_name("job", c.job),
                 to_us(c.scheduled_utc), c.token) for c, state in items]
        if not rows:
            return []
        ns = self.namespace
        with self._transaction("finish") as conn:
            now = self._now_us()
            return [conn.execute(_FINISH, (final, now, ns, job, at, token)).rowcount == 1
                    for final, job, at, token in rows]

    def mark(self, job: str, scheduled_utc: datetime, state: str) -> bool:
        final = check_state(state, MARK_STATES, "mark")
        job, at = check_name("job", job), to_us(scheduled_utc)
        with self._transaction("mark") as conn:
            now = self._now_us()
            if self._guard(at, now) is not None:
                return False
            cur = conn.execute(_INSERT_DONE, (self.namespace, job, at, self.owner, final.value,
                                              now, now))
            return cur.rowcount == 1

    def sweep(self, lease_secs: float, rerun_jobs: Collection[str] = (), *,
              max_attempts: int = 2, limit: int = 100) -> SweepResult:
        lease_us = seconds_us("lease_secs", lease_secs)
        rerun_set = frozenset(rerun_jobs)
        ns, me = self.namespace, self.owner
        with self._reading("sweep") as conn:
            owners = [r[0] for r in conn.execute(_RUNNING_OWNERS, (ns,))]
        # procfs is read outside the write transaction; a dead owner stays dead.
        dead = [o for o in owners if self._is_dead(o)][:500]
        lost: List[RunRecord] = []
        taken: List[Tuple[str, int, int, int, int]] = []
        sent = time.monotonic()
        with self._transaction("sweep") as conn:
            now = self._now_us()
            token = first_token = conn.execute(_GET_TOKEN).fetchone()[0]
            query = _EXPIRED.format(owners=", ".join("?" * len(dead)))
            for job, at, *rest in conn.execute(query, (ns, now, *dead, max(0, limit))).fetchall():
                row: _Row = tuple(rest)
                old_token, attempt = row[2], row[3]
                if job in rerun_set and attempt < max_attempts:
                    token += 1
                    conn.execute(_TAKE_OVER, (me, token, now, now + lease_us, ns, job, at,
                                              old_token))
                    taken.append((job, at, token, attempt + 1, now + lease_us))
                else:
                    conn.execute(_LOSE, (now, ns, job, at, old_token))
                    lost.append(_record(job, at, (row[0], RunState.LOST.value, old_token,
                                                  attempt, row[4], None, now)))
            if token != first_token:
                conn.execute(_SET_TOKEN, (token,))
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
                (at,) = conn.execute(_WATERMARK, (self.namespace, job)).fetchone()
                if at is not None:
                    out[job] = from_us(at)
        return out

    def history(self, job: str, limit: int = 100) -> List[RunRecord]:
        job = check_name("job", job)
        with self._reading("history") as conn:
            rows = conn.execute(_HISTORY, (self.namespace, job, max(0, limit))).fetchall()
        return [_record(r[0], r[1], tuple(r[2:])) for r in rows]

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
            conn.executemany(_UPSERT_JOB, [(ns, j, me, f, now) for j, f in ours.items()])
            for job, fp in ours.items():
                for owner, other, seen in conn.execute(
                        _OTHER_JOBS, (ns, job, me, now - live_us, fp)):
                    found.append(FingerprintMismatch(job, fp, owner, other, from_us(seen)))
        return [m for m in found if not self._is_dead(m.other_owner)]

    def prune(self, retention_secs: Optional[float] = None) -> int:
        horizon = self._prune_horizon_us(retention_secs, self._now_us())
        ns = self.namespace
        deleted, job = 0, ""
        while True:
            with self._transaction("prune") as conn:
                (following,) = conn.execute(_NEXT_JOB, (ns, job)).fetchone()
                if following is None:
                    conn.execute(_PRUNE_JOBS, (ns, horizon))
                    return deleted
                (newest,) = conn.execute(_WATERMARK, (ns, following)).fetchone()
                # The newest row of a job is the catch-up watermark: never delete it.
                bound = min(horizon, newest)
                n = conn.execute(_PRUNE_BATCH, (ns, following, bound,
                                                _PRUNE_BATCH_ROWS)).rowcount
            deleted += n
            if n < _PRUNE_BATCH_ROWS:
                job = following

    def close(self) -> None:
        with self._locked():
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                try:
                    conn.close()
                except sqlite3.Error as exc:
                    raise _translate(exc, f"{self!r}: close") from exc
        _LIVE_STORES.discard(self)


def _check_schema(conn: sqlite3.Connection, where: str) -> bool:
    """True if the database holds a run store this code can use, False if it is empty.

    Raises:
        StoreError: other tables and no run store, or a newer schema version.
        sqlite3.DatabaseError: not a database at all (the caller explains).
    """
    tables = {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if _META not in tables:
        if tables:
            shown = ", ".join(sorted(tables)[:5])
            raise StoreError(f"{where}: not a run store (it holds other tables: {shown}); "
                             "the file was left unchanged")
        return False
    version = conn.execute(f"SELECT v FROM {_META} WHERE k = 'schema_version'").fetchone()
    if version is None or not isinstance(version[0], int) or not {_RUNS, _JOBS} <= tables:
        raise StoreError(f"{where}: not a run store (no schema version, or tables "
                         "missing); the file was left unchanged")
    if version[0] > SCHEMA_VERSION:
        raise StoreError(f"{where}: made by a newer memory_scheduler (schema version "
                         f"{version[0]}; this version reads up to {SCHEMA_VERSION}); "
                         "upgrade memory_scheduler or use another file")
    return True


def _read_rows(conn: sqlite3.Connection, namespace: str,
               keys: Sequence[Tuple[str, int]]) -> Dict[Tuple[str, int], _Row]:
    """The rows of ``keys``, read with one statement per instant and 500 jobs (a batch
    of one instant is a handful of statements rather than one per key)."""
    by_instant: Dict[int, List[str]] = {}
    for job, at in keys:
        by_instant.setdefault(at, []).append(job)
    out: Dict[Tuple[str, int], _Row] = {}
    for at, jobs in by_instant.items():
        for start in range(0, len(jobs), 500):
            chunk = jobs[start:start + 500]
            query = (f"SELECT job, {_ROW} FROM {_RUNS} WHERE namespace = ? AND "
                     f"scheduled_at = ? AND job IN ({', '.join('?' * len(chunk))})")
            out.update({(r[0], at): r[1:] for r in conn.execute(query, (namespace, at, *chunk))})
    return out


def _claim_exclusive(conn: sqlite3.Connection, ns: str, me: str,
                     items: Sequence[Tuple[str, int, bool]], positions: Sequence[int],
                     slots: List[Optional[Tuple[Outcome, Optional[Tuple[int, int, int]],
                                                Optional[str]]]],
                     token: int, now: int, lease_us: int) -> int:
    """Decide exclusive claims in bulk, in order, as one by one would: a key already
    recorded is classified; a job with a live running row (including one this batch
    just claimed) makes the claim BUSY, recorded skipped; otherwise the claim wins.
    Fills ``slots`` at ``positions``; returns the last token handed out.

    One read of the keys, one of the live holders and two inserts for the whole batch,
    instead of three statements per claim (a burst of 10,000 overlap="skip" jobs)."""
    known = _read_rows(conn, ns, [(job, at) for job, at, _ in items])
    live = _live_holders(conn, ns, {job for job, _, _ in items}, now)
    running: List[Tuple[str, str, int, str, int, int, int]] = []
    skipped: List[Tuple[str, str, int, str, str, int, int]] = []
    for i, (job, at, _) in zip(positions, items):
        row = known.get((job, at))
        if row is not None:  # recorded before, or named twice in this batch
            slots[i] = _classify(row, None, me)
            continue
        holder = live.get(job)
        if holder is not None:
            skipped.append((ns, job, at, me, RunState.SKIPPED.value, now, now))
            known[(job, at)] = (me, RunState.SKIPPED.value, None, 1, now, None, now)
            slots[i] = (Outcome.BUSY, None, holder)
        else:
            token += 1
            running.append((ns, job, at, me, token, now, now + lease_us))
            known[(job, at)] = (me, RunState.RUNNING.value, token, 1, now, now + lease_us,
                                None)
            live[job] = me
            slots[i] = (Outcome.WON, (token, 1, now + lease_us), None)
    if running:
        conn.executemany(_INSERT_RUNNING, running)
    if skipped:
        conn.executemany(_INSERT_DONE, skipped)
    return token


def _live_holders(conn: sqlite3.Connection, namespace: str, jobs: Collection[str],
                  now: int) -> Dict[str, str]:
    """An owner of a live running row of each of ``jobs`` that has one (500 a query)."""
    names = sorted(jobs)
    out: Dict[str, str] = {}
    for start in range(0, len(names), 500):
        chunk = names[start:start + 500]
        query = (f"SELECT job, owner FROM {_RUNS} WHERE namespace = ? AND state = 'running' "
                 f"AND lease_until > ? AND job IN ({', '.join('?' * len(chunk))})")
        for job, owner in conn.execute(query, (namespace, now, *chunk)):
            out.setdefault(job, owner)
    return out


def _classify(row: Optional[_Row], new_token: Optional[int], me: str
              ) -> Tuple[Outcome, Optional[Tuple[int, int, int]], Optional[str]]:
    """Outcome of a claim whose key has ``row`` (read after our insert attempt).

    ``new_token`` is the token our insert carried: finding it means our insert won.
    """
    assert row is not None
    owner, state, token, attempt, _, lease_until, _ = row
    if token is not None and token == new_token:
        assert lease_until is not None
        return Outcome.WON, (token, attempt, lease_until), None
    if owner == me and state == RunState.RUNNING.value:
        # The same owner retrying (its answer was lost, or the batch named the key
        # twice): the same claim, same token.
        assert token is not None and lease_until is not None
        return Outcome.WON, (token, attempt, lease_until), None
    return Outcome.TAKEN, None, owner
