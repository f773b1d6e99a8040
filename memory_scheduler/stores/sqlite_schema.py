"""The SQLite run store's file: its tables, its schema version, and opening one.

:func:`open_database` opens the file of a store, creating the schema in an empty one,
and switches it to write-ahead logging. Bad files are refused with a
:class:`StoreError` before anything is written: a file that is not an SQLite database,
a database with other tables and no run store, a run store of a newer schema. Nothing
already recorded is rewritten.
"""

from __future__ import annotations

import os
import sqlite3
import threading

from .errors import StoreError, StoreUnavailable

__all__ = [
    "JOBS_TABLE",
    "META_TABLE",
    "RUNS_TABLE",
    "SCHEMA_VERSION",
    "SYNCHRONOUS_MODES",
    "open_database",
    "translate_error",
]

#: The layout this code writes. A store with a higher version was made by a newer
#: memory_scheduler and is refused rather than misread.
SCHEMA_VERSION = 1

META_TABLE = "memory_scheduler_meta"
RUNS_TABLE = "memory_scheduler_runs"
JOBS_TABLE = "memory_scheduler_jobs"

# Instants are epoch microseconds (UTC), so keys compare and sort as integers and the
# DST fall-back hour gives two distinct keys. Running rows are few at any time; the
# partial index serves both the exclusive (BUSY) check and the sweep.
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {META_TABLE} "
    "(k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID",
    f"""CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (
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
    f"""CREATE INDEX IF NOT EXISTS {RUNS_TABLE}_running
        ON {RUNS_TABLE} (namespace, job, lease_until) WHERE state = 'running'""",
    f"""CREATE TABLE IF NOT EXISTS {JOBS_TABLE} (
        namespace   TEXT    NOT NULL,
        job         TEXT    NOT NULL,
        owner       TEXT    NOT NULL,
        fingerprint TEXT    NOT NULL,
        seen_at     INTEGER NOT NULL,
        PRIMARY KEY (namespace, job, owner)) WITHOUT ROWID""",
    f"INSERT OR IGNORE INTO {META_TABLE} (k, v) VALUES ('token', 0)",
    f"INSERT OR IGNORE INTO {META_TABLE} (k, v) VALUES ('schema_version', {SCHEMA_VERSION})",
)

# Engine messages that mean "try again later" rather than "this is not usable".
_TRANSIENT = ("locked", "busy", "disk i/o error", "disk is full", "unable to open")

#: The ``synchronous`` settings a store may use (SQLite's PRAGMA synchronous).
SYNCHRONOUS_MODES = ("normal", "full")
# ON CONFLICT ... DO NOTHING / DO UPDATE (3.24); RETURNING (3.35) is not used.
_MIN_SQLITE = (3, 24, 0)


def translate_error(exc: sqlite3.Error, where: str) -> StoreError:
    """An engine error as a store error: StoreUnavailable if it is transient (the next
    call may succeed), StoreError otherwise. ``where`` names the store and the call."""
    message = f"{where}: {exc}"
    if isinstance(exc, sqlite3.OperationalError) and \
            any(t in str(exc).lower() for t in _TRANSIENT):
        return StoreUnavailable(message)
    return StoreError(message)


def open_database(path: str, timeout: float, synchronous: str) -> sqlite3.Connection:
    """A connection to the run store in the file at ``path`` (absolute), ready to use:
    checked, its schema created if the file was empty, in WAL mode.

    ``timeout`` is SQLite's busy timeout in seconds; ``synchronous`` one of
    :data:`SYNCHRONOUS_MODES`.

    Raises:
        StoreError: the file cannot be used as a run store; it is left unchanged.
        StoreUnavailable: the file is locked past the timeout.
    """
    where = f"SQLite store {path!r}"
    if sqlite3.sqlite_version_info < _MIN_SQLITE:
        raise StoreError(f"{where}: needs SQLite >= 3.24 (upserts); this Python has "
                         f"{sqlite3.sqlite_version}")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        problem = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise StoreError(f"{where}: {parent!r} {problem}")
    if os.path.isdir(path):
        raise StoreError(f"{where}: is a directory, not a database file")
    # SQLite would open an unwritable file read-only and fail at the first claim.
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(f"{where}: this process cannot read and write it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"{where}: this process cannot create files in {parent!r} "
                         "(SQLite keeps its -wal and -shm files next to the database)")
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"{where}: cannot be opened: {exc}") from exc
    try:
        _prepare(conn, where, timeout, synchronous)
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, where: str, timeout: float, synchronous: str) -> None:
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
        mode = _enable_wal(conn, timeout)
        if str(mode).lower() != "wal":
            raise StoreError(f"{where}: cannot use write-ahead logging (journal mode "
                             f"{mode!r}); put the store on a local disk")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
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
        raise translate_error(exc, where) from exc


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Switch to write-ahead logging; returns the journal mode in force.

    The switch takes an exclusive lock for which SQLite does not call its busy
    handler: a process opening a fresh file while another switches it or already
    writes gets "database is locked" at once (seen with replicas starting
    together). Retried every 10 ms up to the store's timeout, counted in attempts.
    """
    pause = threading.Event()
    for _ in range(max(1, round(timeout / 0.01))):
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() and "busy" not in str(exc).lower():
                raise
        pause.wait(0.01)
    return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])


def _check_schema(conn: sqlite3.Connection, where: str) -> bool:
    """True if the database holds a run store this code can use, False if it is empty.

    Raises:
        StoreError: other tables and no run store, or a newer schema version.
        sqlite3.DatabaseError: not a database at all (the caller explains).
    """
    tables = {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if META_TABLE not in tables:
        if tables:
            shown = ", ".join(sorted(tables)[:5])
            raise StoreError(f"{where}: not a run store (it holds other tables: {shown}); "
                             "the file was left unchanged")
        return False
    version = conn.execute(
        f"SELECT v FROM {META_TABLE} WHERE k = 'schema_version'").fetchone()
    if version is None or not isinstance(version[0], int) \
            or not {RUNS_TABLE, JOBS_TABLE} <= tables:
        raise StoreError(f"{where}: not a run store (no schema version, or tables "
                         "missing); the file was left unchanged")
    if version[0] > SCHEMA_VERSION:
        raise StoreError(f"{where}: made by a newer memory_scheduler (schema version "
                         f"{version[0]}; this version reads up to {SCHEMA_VERSION}); "
                         "upgrade memory_scheduler or use another file")
    return True
