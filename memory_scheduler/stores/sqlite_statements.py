"""The statements of the SQLite run store, and the bulk claim decisions built on them.

Every change of a running row is guarded by its token and state, so a holder that lost
its lease changes nothing. The functions run inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Collection, Dict, List, Optional, Sequence, Tuple

from .checks import from_us
from .records import Outcome, RunRecord, RunState
from .sqlite_schema import JOBS_TABLE, META_TABLE, RUNS_TABLE

__all__ = [
    "EXPIRED",
    "FINISH",
    "GET_TOKEN",
    "HISTORY",
    "INSERT_DONE",
    "INSERT_RUNNING",
    "LOSE",
    "NEXT_JOB",
    "OTHER_JOBS",
    "PRUNE_BATCH",
    "PRUNE_BATCH_ROWS",
    "PRUNE_JOBS",
    "RENEW",
    "RUNNING_OWNERS",
    "SET_TOKEN",
    "TAKE_OVER",
    "UPSERT_JOB",
    "WATERMARK",
    "RunRow",
    "claim_exclusive",
    "classify_claim",
    "read_rows",
    "row_to_record",
]

_ROW = "owner, state, token, attempt, claimed_at, lease_until, finished_at"
_KEY = "namespace = ? AND job = ? AND scheduled_at = ?"

GET_TOKEN = f"SELECT v FROM {META_TABLE} WHERE k = 'token'"
SET_TOKEN = f"UPDATE {META_TABLE} SET v = ? WHERE k = 'token'"
# rowcount 1: this owner recorded the key (won); 0: someone had (classified by reading it).
INSERT_RUNNING = f"""INSERT INTO {RUNS_TABLE}
    (namespace, job, scheduled_at, owner, token, attempt, state, claimed_at, lease_until)
    VALUES (?, ?, ?, ?, ?, 1, 'running', ?, ?)
    ON CONFLICT (namespace, job, scheduled_at) DO NOTHING"""
INSERT_DONE = f"""INSERT INTO {RUNS_TABLE}
    (namespace, job, scheduled_at, owner, token, attempt, state, claimed_at, finished_at)
    VALUES (?, ?, ?, ?, NULL, 1, ?, ?, ?)
    ON CONFLICT (namespace, job, scheduled_at) DO NOTHING"""
# The token and the state guard every change of a running row: a holder that lost its
# lease changes nothing.
RENEW = (f"UPDATE {RUNS_TABLE} SET lease_until = ? "
         f"WHERE {_KEY} AND token = ? AND state = 'running'")
FINISH = f"""UPDATE {RUNS_TABLE} SET state = ?, finished_at = ?, lease_until = NULL
    WHERE {_KEY} AND token = ? AND state = 'running'"""
RUNNING_OWNERS = (f"SELECT DISTINCT owner FROM {RUNS_TABLE} "
                  "WHERE namespace = ? AND state = 'running'")
EXPIRED = f"""SELECT job, scheduled_at, {_ROW} FROM {RUNS_TABLE}
    WHERE namespace = ? AND state = 'running' AND (lease_until <= ? OR owner IN ({{owners}}))
    ORDER BY lease_until, job, scheduled_at LIMIT ?"""
TAKE_OVER = f"""UPDATE {RUNS_TABLE} SET owner = ?, token = ?, attempt = attempt + 1,
    claimed_at = ?, lease_until = ? WHERE {_KEY} AND token = ? AND state = 'running'"""
LOSE = f"""UPDATE {RUNS_TABLE} SET state = 'lost', finished_at = ?, lease_until = NULL
    WHERE {_KEY} AND token = ? AND state = 'running'"""
WATERMARK = f"SELECT MAX(scheduled_at) FROM {RUNS_TABLE} WHERE namespace = ? AND job = ?"
HISTORY = f"""SELECT job, scheduled_at, {_ROW} FROM {RUNS_TABLE}
    WHERE namespace = ? AND job = ? ORDER BY scheduled_at DESC LIMIT ?"""
UPSERT_JOB = f"""INSERT INTO {JOBS_TABLE} (namespace, job, owner, fingerprint, seen_at)
    VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, job, owner)
    DO UPDATE SET fingerprint = excluded.fingerprint, seen_at = excluded.seen_at"""
OTHER_JOBS = f"""SELECT owner, fingerprint, seen_at FROM {JOBS_TABLE}
    WHERE namespace = ? AND job = ? AND owner <> ? AND seen_at >= ? AND fingerprint <> ?
    ORDER BY owner"""
# Prune walks the jobs through the primary key (one seek each) and deletes in batches,
# so no transaction holds the write lock for long.
NEXT_JOB = f"SELECT MIN(job) FROM {RUNS_TABLE} WHERE namespace = ? AND job > ?"
PRUNE_BATCH = f"""DELETE FROM {RUNS_TABLE} WHERE (namespace, job, scheduled_at) IN (
    SELECT namespace, job, scheduled_at FROM {RUNS_TABLE}
    WHERE namespace = ? AND job = ? AND scheduled_at < ? AND state <> 'running'
    ORDER BY scheduled_at LIMIT ?)"""
PRUNE_JOBS = f"DELETE FROM {JOBS_TABLE} WHERE namespace = ? AND seen_at < ?"
PRUNE_BATCH_ROWS = 5000

#: A row of the runs table as the statements select it (``_ROW``).
RunRow = Tuple[str, str, Optional[int], int, int, Optional[int], Optional[int]]


def row_to_record(job: str, at: int, row: RunRow) -> RunRecord:
    """The :class:`RunRecord` of the row of ``(job, at)``."""
    owner, state, token, attempt, claimed_at, lease_until, finished_at = row
    return RunRecord(job=job, scheduled_utc=from_us(at), owner=owner, state=RunState(state),
                     attempt=attempt, token=token, claimed_at=from_us(claimed_at),
                     lease_until=None if lease_until is None else from_us(lease_until),
                     finished_at=None if finished_at is None else from_us(finished_at))


def read_rows(conn: sqlite3.Connection, namespace: str,
              keys: Sequence[Tuple[str, int]]) -> Dict[Tuple[str, int], RunRow]:
    """The rows of ``keys``, read with one statement per instant and 500 jobs (a batch
    of one instant is a handful of statements rather than one per key)."""
    by_instant: Dict[int, List[str]] = {}
    for job, at in keys:
        by_instant.setdefault(at, []).append(job)
    out: Dict[Tuple[str, int], RunRow] = {}
    for at, jobs in by_instant.items():
        for start in range(0, len(jobs), 500):
            chunk = jobs[start:start + 500]
            query = (f"SELECT job, {_ROW} FROM {RUNS_TABLE} WHERE namespace = ? AND "
                     f"scheduled_at = ? AND job IN ({', '.join('?' * len(chunk))})")
            out.update({(r[0], at): r[1:] for r in conn.execute(query, (namespace, at, *chunk))})
    return out


def claim_exclusive(conn: sqlite3.Connection, ns: str, me: str,
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
    known = read_rows(conn, ns, [(job, at) for job, at, _ in items])
    live = _live_holders(conn, ns, {job for job, _, _ in items}, now)
    running: List[Tuple[str, str, int, str, int, int, int]] = []
    skipped: List[Tuple[str, str, int, str, str, int, int]] = []
    for i, (job, at, _) in zip(positions, items):
        row = known.get((job, at))
        if row is not None:  # recorded before, or named twice in this batch
            slots[i] = classify_claim(row, None, me)
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
        conn.executemany(INSERT_RUNNING, running)
    if skipped:
        conn.executemany(INSERT_DONE, skipped)
    return token


def _live_holders(conn: sqlite3.Connection, namespace: str, jobs: Collection[str],
                  now: int) -> Dict[str, str]:
    """An owner of a live running row of each of ``jobs`` that has one (500 a query)."""
    names = sorted(jobs)
    out: Dict[str, str] = {}
    for start in range(0, len(names), 500):
        chunk = names[start:start + 500]
        query = (f"SELECT job, owner FROM {RUNS_TABLE} WHERE namespace = ? AND state = 'running' "
                 f"AND lease_until > ? AND job IN ({', '.join('?' * len(chunk))})")
        for job, owner in conn.execute(query, (namespace, now, *chunk)):
            out.setdefault(job, owner)
    return out


def classify_claim(row: Optional[RunRow], new_token: Optional[int], me: str
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

