"""The service with and without a run store, side by side.

    python bench/service_store_bench.py            # medians of 3 repetitions
    python bench/service_store_bench.py --quick    # one repetition

* per run: ``run_pending()`` of one due every-second job under a frozen clock, 2,000
  times; p50/p99 of the real time per run with no store, MemoryStore and SQLiteStore.
  The difference to "none" is the claim (one claim_many) plus the finish per run.
* burst: 10,000 jobs due at one instant on a started service (real clock); the time
  from the instant to the last job start, and for the stores the time spent in
  ``claim_many`` and the number of round trips.

Targets (issue 13): claim overhead p50 <= 0.05 ms; 10,000 at once claimed in <= 60 ms
and the last started <= 500 ms after the instant.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Sequence

from freezegun import freeze_time

from memory_scheduler import SchedulerConfig, SchedulerService
from memory_scheduler.stores import ClaimRequest, ClaimResult, MemoryStore, RunStore, SQLiteStore

UTC = timezone.utc


def perf() -> float:
    """Real elapsed time: freezegun patches time.perf_counter, not clock_gettime."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class Timed(SQLiteStore):
    """SQLiteStore that records how long each claim_many took."""

    spent: List[float]

    def claim_many(self, items: Sequence[ClaimRequest], lease_secs: float
                   ) -> List[ClaimResult]:
        t0 = perf()
        try:
            return super().claim_many(items, lease_secs)
        finally:
            self.spent.append(perf() - t0)


def make_store(kind: str, root: str) -> Optional[RunStore]:
    if kind == "none":
        return None
    if kind == "memory":
        return MemoryStore()
    store = Timed(os.path.join(root, f"runs-{time.time_ns()}.db"))
    store.spent = []
    return store


def per_run(kind: str, root: str, rounds: int = 2000) -> Dict[str, float]:
    svc = SchedulerService(SchedulerConfig(store=make_store(kind, root),
                                           heartbeat_secs=10, sweep_secs=10))
    took: List[float] = []
    with freeze_time("2026-03-02 12:00:00.5") as clock:
        svc.add_cron_job("job", "* * * * * *", lambda: None)
        for _ in range(rounds):
            clock.tick(1.0)
            t0 = perf()
            svc.run_pending()
            took.append(perf() - t0)
    took.sort()
    return {"p50_ms": took[len(took) // 2] * 1e3, "p99_ms": took[int(len(took) * 0.99)] * 1e3}


def burst(kind: str, root: str, jobs: int = 10_000) -> Dict[str, float]:
    store = make_store(kind, root)
    svc = SchedulerService(SchedulerConfig(store=store, shutdown_timeout_secs=10))
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    expr = f"{due.second} {due.minute} {due.hour} {due.day} {due.month} *"
    starts: List[float] = []
    for i in range(jobs):
        svc.add_cron_job(f"job-{i}", expr, lambda: starts.append(time.time()))
    svc.start()
    pause = threading.Event()
    for _ in range(600):
        if len(starts) >= jobs:
            break
        pause.wait(0.05)
    svc.shutdown()
    out: Dict[str, float] = {"last_start_ms": (max(starts) - due.timestamp()) * 1e3,
                             "started": len(starts)}
    if isinstance(store, Timed):
        out["claim_ms"] = sum(store.spent) * 1e3
        out["round_trips"] = len(store.spent)
    return out


def median(results: List[Dict[str, float]]) -> Dict[str, float]:
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    reps = 1 if args.quick else 3
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, medians of {reps}")
    with tempfile.TemporaryDirectory() as root:
        for kind in ("none", "memory", "sqlite"):
            runs: Any = median([per_run(kind, root) for _ in range(reps)])
            print(f"per run   {kind:7s} p50 {runs['p50_ms']:.3f} ms  p99 {runs['p99_ms']:.3f} ms")
        for kind in ("none", "sqlite"):
            b: Any = median([burst(kind, root) for _ in range(reps)])
            extra = (f"  claim_many {b['claim_ms']:.1f} ms in {b['round_trips']:.0f} round trips"
                     if "claim_ms" in b else "")
            print(f"burst     {kind:7s} 10,000 started, last {b['last_start_ms']:.0f} ms after "
                  f"the instant ({b['started']:.0f} started){extra}")


if __name__ == "__main__":
    main()
