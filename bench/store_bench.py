"""Run store benchmarks: the cost of a claim, a burst, and contention between processes.

    python bench/store_bench.py              # all three, medians of 3 repetitions
    python bench/store_bench.py --quick      # one repetition, smaller contention run

Measured against SQLiteStore (synchronous=normal unless said) on a fresh file in a
temporary directory, with MemoryStore as the floor:

* claim: one ``claim()`` per occurrence, each a new key (p50/p99 of 5,000); also a
  claim followed by its ``finish()``, the store's whole cost per run.
* burst: 10,000 occurrences of one instant in one ``claim_many()``.
* contention: 8 spawned processes each try the same 5,000 occurrences in their own
  random order with single claims; attempts/s counts every attempt of every process
  from the common start signal to the last process done (and, separately, including
  process start-up), and checks that each occurrence was won exactly once.

Targets (issue 13): claim p50 <= 0.05 ms; 10,000 at once <= 60 ms; >= 20,000 attempts/s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Dict, List, Sequence, Tuple

from memory_scheduler.stores import ClaimRequest, MemoryStore, Outcome, RunStore, SQLiteStore

UTC = timezone.utc
LEASE = 30.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _store(kind: str, directory: str) -> RunStore:
    if kind == "memory":
        return MemoryStore()
    sync = "full" if kind == "sqlite-full" else "normal"
    return SQLiteStore(os.path.join(directory, f"{kind}-{time.perf_counter_ns()}.db"),
                       synchronous=sync)


def bench_claim(kind: str, directory: str, n: int = 5000) -> Dict[str, float]:
    store = _store(kind, directory)
    base = datetime.now(UTC)
    us = timedelta(microseconds=1)
    claim_ms: List[float] = []
    run_ms: List[float] = []
    for i in range(n):
        at = base - i * us
        t0 = time.perf_counter()
        result = store.claim("job", at, LEASE)
        t1 = time.perf_counter()
        assert result.claim is not None
        store.finish(result.claim, "success")
        t2 = time.perf_counter()
        claim_ms.append((t1 - t0) * 1000)
        run_ms.append((t2 - t0) * 1000)
    store.close()
    q = statistics.quantiles
    return {"claim_p50_ms": statistics.median(claim_ms),
            "claim_p99_ms": q(claim_ms, n=100)[98],
            "claim_finish_p50_ms": statistics.median(run_ms)}


def bench_burst(kind: str, directory: str, n: int = 10_000) -> Dict[str, float]:
    store = _store(kind, directory)
    at = datetime.now(UTC)
    batch = [ClaimRequest(f"job-{i}", at) for i in range(n)]
    t0 = time.perf_counter()
    results = store.claim_many(batch, LEASE)
    took = (time.perf_counter() - t0) * 1000
    assert sum(r.won for r in results) == n
    # The same burst again from a second owner: every key already taken.
    other = store.sibling() if isinstance(store, MemoryStore) else \
        SQLiteStore(store.path)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    again = other.claim_many(batch, LEASE)
    took_taken = (time.perf_counter() - t0) * 1000
    assert not any(r.won for r in again)
    store.close()
    other.close()
    return {"burst_10k_ms": took, "burst_10k_all_taken_ms": took_taken}


def contend(path: str, keys: Sequence[Tuple[str, int]], seed: int, go: Event,
            conn: Connection) -> None:
    """One contending process (spawned): claim every key once ``go`` is set."""
    store = SQLiteStore(path, timeout_secs=5.0)
    order = list(keys)
    random.Random(seed).shuffle(order)
    whens = [(job, _EPOCH + timedelta(microseconds=at)) for job, at in order]
    conn.send("ready")
    go.wait(60)
    won = []
    unavailable = 0
    for (job, when), key in zip(whens, order):
        result = store.claim(job, when, LEASE)
        if result.won:
            won.append(key)
        elif result.outcome is Outcome.UNAVAILABLE:
            unavailable += 1
    conn.send((time.perf_counter(), won, unavailable))
    store.close()


def bench_contention(directory: str, processes: int = 8,
                     occurrences: int = 5000) -> Dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    path = os.path.join(directory, f"contention-{time.perf_counter_ns()}.db")
    SQLiteStore(path).close()
    base = (datetime.now(UTC) - _EPOCH) // timedelta(microseconds=1)
    keys = [(f"job-{i % 50}", base - i) for i in range(occurrences)]
    go = ctx.Event()
    spawned = time.perf_counter()
    procs, pipes = [], []
    for n in range(processes):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=contend, args=(path, keys, n, go, child))
        p.start()
        procs.append(p)
        pipes.append(parent)
    for conn in pipes:
        if not conn.poll(60) or conn.recv() != "ready":
            raise RuntimeError("a contending process did not start")
    start = time.perf_counter()
    go.set()
    reports = []
    for conn in pipes:
        if not conn.poll(300):
            raise RuntimeError("a contending process did not finish")
        reports.append(conn.recv())
    for p in procs:
        p.join(10)
    end = max(done for done, _, _ in reports)
    won = [tuple(k) for _, keys_won, _ in reports for k in keys_won]
    if sorted(won) != sorted(keys):
        raise AssertionError(f"{len(won)} wins for {len(keys)} occurrences")
    attempts = processes * occurrences
    return {"attempts_per_s": attempts / (end - start),
            "attempts_per_s_incl_start": attempts / (end - spawned),
            "unavailable": float(sum(u for _, _, u in reports)),
            "duplicates": float(len(won) - len(set(won)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps = 1 if args.quick else 3
    runs: Dict[str, List[Dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="store-bench-") as directory:
        for _ in range(reps):
            for kind in ("memory", "sqlite", "sqlite-full"):
                runs.setdefault(f"claim {kind}", []).append(bench_claim(kind, directory))
                runs.setdefault(f"burst {kind}", []).append(bench_burst(kind, directory))
            runs.setdefault("contention sqlite, 8 processes", []).append(
                bench_contention(directory, occurrences=2000 if args.quick else 5000))
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}, medians of {reps}; temp dir on "
          f"{tempfile.gettempdir()}")
    print("| scenario | metric | median | runs |")
    print("|---|---|---:|---|")
    for name, results in runs.items():
        for metric in results[0]:
            values = [r[metric] for r in results]
            shown = ", ".join(f"{v:,.3f}" for v in values)
            print(f"| {name} | {metric} | {statistics.median(values):,.3f} | {shown} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
