"""Store URLs, bad files and the SQLite file's life: clear errors, nothing rewritten.

Every refusal is a SchedulerError naming the culprit, and leaves the file byte for byte
as it was (no WAL or shared-memory file appears next to it either).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterator

import pytest

from memory_scheduler import InvalidValue, SchedulerError
from memory_scheduler.stores import (
    SCHEMA_VERSION,
    InvalidStoreURL,
    MemoryStore,
    Outcome,
    SQLiteStore,
    StoreError,
    StoreUnavailable,
    open_store,
)

UTC = timezone.utc
LEASE = 30.0


def snapshot(directory: Path) -> Dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir())}


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


# -- URLs ---------------------------------------------------------------------------------


def test_memory_url() -> None:
    store = open_store("memory://", namespace="app")
    assert isinstance(store, MemoryStore) and store.namespace == "app"


def test_sqlite_url_with_three_slashes_is_relative(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///sub.db") as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / "sub.db")
    assert (tmp_path / "sub.db").exists()


def test_sqlite_url_with_four_slashes_is_absolute(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/abs.db", timeout_secs=2.0) as store:
        assert store.path == str(tmp_path / "abs.db")  # type: ignore[attr-defined]


def test_a_store_instance_is_returned_unchanged() -> None:
    store = MemoryStore()
    assert open_store(store) is store
    with pytest.raises(InvalidValue, match="options apply to URLs only"):
        open_store(store, namespace="x")


@pytest.mark.parametrize("url, match", [
    ("postgresql://db/app",
     r"PostgreSQL store is not available yet.*memory_scheduler\[postgresql\]"),
    ("postgresql+psycopg://db/app", "PostgreSQL store is not available yet"),
    ("redis://localhost:6379/0", r"Redis store is not available yet.*memory_scheduler\[redis\]"),
    ("mysql://db", "unknown scheme 'mysql'"),
    ("scheduler.db", "expected scheme://"),
    ("memory://x", "takes nothing after it"),
    ("sqlite://host/x.db", "no host"),
    ("sqlite:///", "expected a file path"),
    ("sqlite:///:memory:", "use 'memory://'"),
    ("sqlite:///x.db?mode=ro", "query strings"),
])
def test_bad_urls_name_the_problem(url: str, match: str) -> None:
    with pytest.raises(InvalidStoreURL, match=match) as info:
        open_store(url)
    assert isinstance(info.value, SchedulerError) and isinstance(info.value, ValueError)


def test_not_a_url_nor_a_store() -> None:
    with pytest.raises(InvalidValue, match="expected a store URL"):
        open_store(42)  # type: ignore[arg-type]


# -- bad paths and files --------------------------------------------------------------------


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path}/missing/x.db")
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_the_directory_should_be(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="file' is not a directory"):
        open_store(f"sqlite:///{tmp_path}/file/x.db")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any file")
def test_an_unwritable_file_is_refused_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    SQLiteStore(path).close()
    path.chmod(0o444)
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match="cannot read and write it"):
        SQLiteStore(path)
    assert snapshot(tmp_path) == before


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        SQLiteStore(tmp_path)


def test_a_text_file_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("remember the milk\n" * 100)
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match=r"not a run store.*left unchanged"):
        SQLiteStore(path)
    assert snapshot(tmp_path) == before


def test_another_applications_database_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.close()
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match=r"not a run store \(it holds other tables: users\)"):
        open_store(f"sqlite:///{path}")
    assert snapshot(tmp_path) == before


def test_a_table_named_like_ours_but_not_ours_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE memory_scheduler_meta (x TEXT)")
    conn.close()
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match="not a run store"):
        SQLiteStore(path)
    assert snapshot(tmp_path) == before


@pytest.fixture
def recorded(tmp_path: Path, now: datetime) -> Iterator[Path]:
    """A closed store file with one finished and one running occurrence."""
    path = tmp_path / "runs.db"
    with SQLiteStore(path, owner="a") as store:
        done = store.claim("report", now, LEASE).claim
        assert done is not None and store.finish(done, "success")
        assert store.claim("report", now + timedelta(microseconds=1), LEASE).won
    yield path


def test_a_newer_schema_is_refused_and_left_unchanged(recorded: Path) -> None:
    conn = sqlite3.connect(recorded, isolation_level=None)
    conn.execute("UPDATE memory_scheduler_meta SET v = ? WHERE k = 'schema_version'",
                 (SCHEMA_VERSION + 1,))
    conn.close()
    before = snapshot(recorded.parent)
    with pytest.raises(StoreError, match=f"newer memory_scheduler .schema version "
                                         f"{SCHEMA_VERSION + 1}; this version reads up "
                                         f"to {SCHEMA_VERSION}"):
        open_store(f"sqlite:///{recorded}")
    assert snapshot(recorded.parent) == before


def test_reopening_keeps_rows_and_tokens_keep_increasing(recorded: Path, now: datetime) -> None:
    with SQLiteStore(recorded, owner="b") as store:
        assert [(str(r.state), r.owner) for r in store.history("report")] == \
            [("running", "a"), ("success", "a")]
        assert store.claim("report", now, LEASE).outcome is Outcome.TAKEN
        claim = store.claim("other", now, LEASE).claim
        assert claim is not None and claim.token == 3


def test_an_empty_file_becomes_a_store(tmp_path: Path, now: datetime) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with SQLiteStore(path) as store:
        assert store.claim("report", now, LEASE).won


# -- unavailability ----------------------------------------------------------------------


def test_a_store_locked_past_its_timeout_is_unavailable_and_records_nothing(
        tmp_path: Path, now: datetime) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path, timeout_secs=0.05)
    held = store.claim("held", now, LEASE).claim
    assert held is not None
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        results = store.claim_many([("a", now), ("b", now)], LEASE)  # type: ignore[list-item]
        assert [r.outcome for r in results] == [Outcome.UNAVAILABLE] * 2
        assert results[0].detail is not None and "locked" in results[0].detail
        with pytest.raises(StoreUnavailable, match="renew: database is locked"):
            store.renew([held], LEASE)
        with pytest.raises(StoreUnavailable):
            store.finish(held, "success")
        with pytest.raises(StoreUnavailable):
            store.sweep(LEASE)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # Back: nothing of the failed calls was recorded, and the claim still holds.
    assert store.history("a") == [] and store.history("b") == []
    assert store.renew([held], LEASE) == [True]
    assert store.finish(held, "success")
    store.close()


def test_storage_errors_never_escape_as_sqlite3_errors(tmp_path: Path, now: datetime) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE memory_scheduler_runs")
    conn.close()
    with pytest.raises(StoreError, match="no such table") as info:
        store.claim("report", now, LEASE)
    assert not isinstance(info.value, sqlite3.Error)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    store.close()


def test_bad_constructor_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidValue, match="synchronous"):
        SQLiteStore(tmp_path / "x.db", synchronous="off")
    with pytest.raises(InvalidValue, match="use MemoryStore"):
        SQLiteStore(":memory:")
    with pytest.raises(InvalidValue, match="timeout_secs"):
        SQLiteStore(tmp_path / "x.db", timeout_secs=0)
    with pytest.raises(InvalidValue, match="namespace"):
        MemoryStore(namespace="")
    assert list(tmp_path.iterdir()) == []


def test_a_child_process_gets_its_own_owner_and_connection(
        tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a fork does to a store made before it, without forking: the pid changes."""
    store = SQLiteStore(tmp_path / "runs.db")
    parent_owner = store.owner
    claim = store.claim("report", now, LEASE).claim
    assert claim is not None
    child_pid = os.getpid() + 1_000_000
    monkeypatch.setattr(os, "getpid", lambda: child_pid)
    assert store.owner != parent_owner and f":{child_pid}:" in store.owner
    # The parent's claim is not the child's: no same-owner retry across the fork.
    taken = store.claim("report", now, LEASE)
    assert (taken.outcome, taken.holder) == (Outcome.TAKEN, parent_owner)
    monkeypatch.undo()
    assert store.owner == parent_owner
    store.close()
