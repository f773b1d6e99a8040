"""Real processes on one SQLite file: spawned (never forked), contending and failing.

* Contention: several processes claim the same occurrences in different orders at
  once; every key is won exactly once, and the file agrees.
* SIGKILL: a process holding claims is killed; another process's next sweep takes its
  claims at once (same-host dead-owner detection), long before the lease ends, and its
  job fingerprints stop counting as mismatches.
* SIGSTOP past the lease, then SIGCONT: the frozen holder is swept by another process;
  when it resumes, its renew and finish return False and change nothing.

Every wait is bounded: pipes are polled with timeouts, child states are read from
procfs, and the one pure wait is for a lease to run out, which is a span of time.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from real_processes import skip
from store_workers import contend, hold

from memory_scheduler.stores import MemoryStore, Outcome, RunState, SQLiteStore
from memory_scheduler.stores.checks import to_us
from memory_scheduler.stores.owner import owner_is_dead


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    # A fixture, not skipif: under MEMORY_SCHEDULER_STRICT=1 the skip fails the test.
    if not sys.platform.startswith("linux"):
        skip("dead-owner detection and signals need Linux procfs")

UTC = timezone.utc
CTX = multiprocessing.get_context("spawn")


@pytest.fixture
def procs() -> Iterator[List[Any]]:
    """Spawned processes, killed (by their own pid) and reaped if a test leaves any."""
    started: List[Any] = []
    yield started
    for p in started:
        if p.is_alive():
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
        p.join(5)


def receive(conn: Connection, timeout: float = 20.0) -> Any:
    assert conn.poll(timeout), "child did not answer in time"
    return conn.recv()


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def wait_for_state(pid: int, states: str, timeout: float = 5.0) -> str:
    pause = threading.Event()
    for _ in range(int(timeout / 0.005)):
        state = proc_state(pid)
        if state in states:
            return state
        pause.wait(0.005)
    raise AssertionError(f"process {pid} never reached state {states!r}")


def test_owner_ids_name_a_process_incarnation() -> None:
    store = MemoryStore()
    host, pid, pidns, start, salt = store.owner.rsplit(":", 4)
    assert int(pid) == os.getpid() and pidns.isdigit() and start.isdigit() and salt
    # Two stores of one process are two owners of one incarnation.
    other = MemoryStore().owner
    assert other != store.owner and other.rsplit(":", 1)[0] == f"{host}:{pid}:{pidns}:{start}"
    assert not owner_is_dead(store.owner)
    # The same pid started at another time: the pid was reused, the owner is dead.
    assert owner_is_dead(f"{host}:{pid}:{pidns}:{int(start) + 1}:{salt}")
    # Another host, another pid namespace, or an id of another shape: unknown, alive.
    assert not owner_is_dead(f"elsewhere:{pid}:{pidns}:{int(start) + 1}:{salt}")
    assert not owner_is_dead(f"{host}:{pid}:{int(pidns) + 1}:{int(start) + 1}:{salt}")
    assert not owner_is_dead("worker-1")


def test_contending_processes_win_each_occurrence_exactly_once(
        tmp_path: Path, procs: List[Any]) -> None:
    path = str(tmp_path / "runs.db")
    SQLiteStore(path).close()  # create the schema once, before the race
    base = to_us(datetime.now(UTC))
    keys = [(f"job-{i % 20}", base - i) for i in range(1200)]
    go = CTX.Event()
    pipes = []
    for n in range(6):
        parent, child = CTX.Pipe()
        p = CTX.Process(target=contend, args=(path, keys, n, 30.0, go, child))
        p.start()
        procs.append(p)
        pipes.append(parent)
    for conn in pipes:
        assert receive(conn) == "ready"
    go.set()
    reports = [receive(conn, 60) for conn in pipes]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert all(unavailable == 0 for _, _, _, unavailable, _ in reports)
    won = [tuple(key) for _, keys_won, _, _, _ in reports for key in keys_won]
    assert len(won) == len(set(won)) == len(keys)
    assert set(won) == set(keys)
    assert sum(1 for _, keys_won, _, _, _ in reports if keys_won) >= 2, \
        "no contention happened: one process won everything"
    # The file agrees: one running row per key, owned by the process that was told WON.
    owner_of = {tuple(k): owner for owner, keys_won, _, _, _ in reports for k in keys_won}
    with SQLiteStore(path) as store:
        rows = [r for i in range(20) for r in store.history(f"job-{i}", limit=10_000)]
        assert len(rows) == len(keys)
        assert all(owner_of[(r.job, to_us(r.scheduled_utc))] == r.owner for r in rows)
        tokens = [r.token for r in rows]
        assert len(set(tokens)) == len(tokens)


def test_a_killed_owner_is_swept_at_once_by_another_process(
        tmp_path: Path, procs: List[Any]) -> None:
    path = str(tmp_path / "runs.db")
    at = to_us(datetime.now(UTC))
    lease = 60.0  # far longer than the test: only dead-owner detection can free them
    parent, child = CTX.Pipe()
    p = CTX.Process(target=hold, args=(path, ["etl", "a", "b"], at, lease, child))
    p.start()
    procs.append(p)
    owner, claims = receive(parent)
    assert all(c is not None for c in claims)
    with SQLiteStore(path) as store:
        assert store.sweep(lease, rerun_jobs={"etl"}).lost == ()  # alive: nothing to take
        assert [(m.job, m.other_owner) for m in store.fingerprints({"etl": "v2"})] == \
            [("etl", owner)]
        killed = time.monotonic()
        os.kill(p.pid, signal.SIGKILL)
        # Not reaped: a zombie still has a /proc entry, and must count as dead.
        assert wait_for_state(p.pid, "Z") == "Z"
        swept = store.sweep(lease, rerun_jobs={"etl"})
        took = time.monotonic() - killed
        assert took < 1.0
        assert sorted((r.job, r.owner, str(r.state)) for r in swept.lost) == \
            [("a", owner, "lost"), ("b", owner, "lost")]
        (rerun,) = swept.rerun
        assert (rerun.job, rerun.attempt, rerun.owner) == ("etl", 2, store.owner)
        assert rerun.token > max(c.token for c in claims)
        assert store.finish(rerun, "success")
        # A dead process's definition no longer counts as a mismatch.
        assert store.fingerprints({"etl": "v2"}) == []
        p.join(5)
        # Dead stays dead: a later sweep finds nothing more to do.
        assert store.sweep(lease) == type(swept)()


def test_a_stopped_owner_past_its_lease_is_taken_over_and_learns_it_on_resume(
        tmp_path: Path, procs: List[Any]) -> None:
    path = str(tmp_path / "runs.db")
    at = to_us(datetime.now(UTC))
    lease = 0.5
    parent, child = CTX.Pipe()
    p = CTX.Process(target=hold, args=(path, ["etl", "report"], at, lease, child))
    p.start()
    procs.append(p)
    owner, claims = receive(parent)
    assert all(c is not None for c in claims)
    os.kill(p.pid, signal.SIGSTOP)
    try:
        assert wait_for_state(p.pid, "T") == "T"
        assert not owner_is_dead(owner), "a stopped process is alive, not dead"
        with SQLiteStore(path) as store:
            # The lease is a span of store time: wait it out, then sweep.
            remaining = (max(c.lease_until for c in claims) - store.server_time())
            threading.Event().wait(max(0.0, remaining.total_seconds()) + 0.01)
            swept = store.sweep(lease, rerun_jobs={"etl"})
            assert [(r.job, r.owner) for r in swept.lost] == [("report", owner)]
            (rerun,) = swept.rerun
            assert (rerun.job, rerun.attempt) == ("etl", 2)
    finally:
        os.kill(p.pid, signal.SIGCONT)
    parent.send("renew_finish")
    renewed, finished = receive(parent)
    assert renewed == [False, False] and finished == [False, False]
    parent.send("exit")
    p.join(10)
    assert p.exitcode == 0
    with SQLiteStore(path) as store:
        (etl,) = store.history("etl")
        (report,) = store.history("report")
        assert (etl.state, etl.attempt, etl.owner) == (RunState.RUNNING, 2, rerun.owner)
        assert (report.state, report.owner) == (RunState.LOST, owner)
        assert store.finish(rerun, "success")
        assert store.claim("etl", rerun.scheduled_utc, lease).outcome is Outcome.TAKEN
