"""One benchmark scenario for one library, in this process; prints one JSON object.

    python bench/scenarios.py SCENARIO LIBRARY [key=value ...]

Run by bench/run.py, each in a fresh subprocess so that memory figures are clean.
LIBRARY is ``memory_scheduler`` or ``apscheduler`` (APScheduler 3: BackgroundScheduler,
ThreadPoolExecutor of the same size, MemoryJobStore, CronTrigger, no misfire grace,
coalesce on).
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List

UTC = timezone.utc
POOL = 10


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Library:
    """A scheduler behind one small interface."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "memory_scheduler":
            from memory_scheduler import SchedulerConfig, SchedulerService

            self.svc = SchedulerService(SchedulerConfig(max_workers=POOL))
        else:
            from apscheduler.executors.pool import ThreadPoolExecutor
            from apscheduler.jobstores.memory import MemoryJobStore
            from apscheduler.schedulers.background import BackgroundScheduler

            self.aps = BackgroundScheduler(
                jobstores={"default": MemoryJobStore()},
                executors={"default": ThreadPoolExecutor(POOL)},
                job_defaults={"coalesce": True, "misfire_grace_time": None,
                              "max_instances": 1},
                timezone="UTC",
            )
        self._n = 0

    def add(self, expr: str, fn: Callable[[], object]) -> None:
        self._n += 1
        name = f"job{self._n}"
        if self.name == "memory_scheduler":
            self.svc.add_cron_job(name, expr, fn)
        else:
            from apscheduler.triggers.cron import CronTrigger

            fields = expr.split()
            if len(fields) == 6:
                second, minute, hour, day, month, dow = fields
            else:
                second = "0"
                minute, hour, day, month, dow = fields
            trigger = CronTrigger(second=second, minute=minute, hour=hour, day=day,
                                  month=month, day_of_week=_aps_dow(dow), timezone="UTC")
            self.aps.add_job(fn, trigger, id=name, name=name)

    def start(self) -> None:
        if self.name == "memory_scheduler":
            self.svc.start()
        else:
            self.aps.start()

    def shutdown(self) -> None:
        if self.name == "memory_scheduler":
            self.svc.shutdown()
        else:
            self.aps.shutdown(wait=True)


def _aps_dow(dow: str) -> str:
    # APScheduler counts weekdays from Monday = 0; use names to mean the same days.
    if dow == "*":
        return "*"
    names = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    return ",".join(names[int(d)] for d in dow.split(","))


def not_due_expr(i: int) -> str:
    # Fires once a year, at a distinct minute; never during a benchmark.
    return f"{i % 60} {(i // 60) % 24} 1 1 *"


def distinct_expr(i: int) -> str:
    return f"{i % 60} {(i // 60) % 24} {(i // 1440) % 28 + 1} {(i // 40320) % 12 + 1} *"


def shared_expr(i: int) -> str:
    return f"{i % 20} {(i // 20) % 24} * * *"


# -- scenarios ---------------------------------------------------------------------------

def latency(lib: Library, extra: int = 0, seconds: float = 10.0, jobs: int = 20) -> Dict[str, Any]:
    for i in range(extra):
        lib.add(not_due_expr(i), _noop)
    late: List[float] = []
    lock = threading.Lock()

    def record() -> None:
        now = time.time()
        with lock:
            late.append((now - math.floor(now)) * 1000.0)

    for _ in range(jobs):
        lib.add("* * * * * *", record)
    lib.start()
    threading.Event().wait(seconds)
    lib.shutdown()
    return {"p50_ms": percentile(late, 0.5), "p99_ms": percentile(late, 0.99),
            "max_ms": max(late) if late else math.nan, "callbacks": len(late)}


def burst(lib: Library, jobs: int = 10_000) -> Dict[str, Any]:
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    expr = f"{due.second} {due.minute} {due.hour} {due.day} {due.month} *"
    starts: List[float] = []

    def record() -> None:
        starts.append(time.time())  # list.append is atomic under the GIL

    for _ in range(jobs):
        lib.add(expr, record)
    lib.start()
    wait = due.timestamp() + 30 - time.time()
    done = threading.Event()
    while len(starts) < jobs and wait > 0:
        done.wait(0.05)
        wait -= 0.05
    lib.shutdown()
    last = max(starts) - due.timestamp() if starts else math.nan
    return {"last_start_ms": last * 1000.0, "firings_per_s": len(starts) / last if last else 0,
            "started": len(starts)}


def register(lib: Library, jobs: int = 10_000, distinct: bool = False) -> Dict[str, Any]:
    exprs = [distinct_expr(i) if distinct else shared_expr(i) for i in range(jobs)]
    before_rss = rss_bytes()
    t0 = time.perf_counter()
    for expr in exprs:
        lib.add(expr, _noop)
    elapsed = time.perf_counter() - t0
    grown = rss_bytes() - before_rss
    return {"us_per_job": elapsed / jobs * 1e6, "bytes_per_job": grown / jobs}


def idle(lib: Library, jobs: int = 1000, seconds: float = 20.0) -> Dict[str, Any]:
    for i in range(jobs):
        lib.add(not_due_expr(i), _noop)
    lib.start()
    before = resource.getrusage(resource.RUSAGE_SELF)
    threading.Event().wait(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    lib.shutdown()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_ms": cpu * 1000.0}


def shutdown(lib: Library) -> Dict[str, Any]:
    lib.add("0 0 1 1 *", _noop)
    lib.start()
    threading.Event().wait(0.2)
    t0 = time.perf_counter()
    lib.shutdown()
    return {"shutdown_ms": (time.perf_counter() - t0) * 1000.0}


def busy_shutdown(lib: Library, jobs: int = 200_000, timeout: float = 0.1) -> Dict[str, Any]:
    """shutdown(timeout) called just after an instant at which every job is due: how
    long it takes while that instant is being handed over (memory_scheduler only)."""
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
    expr = f"{due.second} {due.minute} {due.hour} {due.day} {due.month} *"
    for _ in range(jobs):
        lib.add(expr, _noop)
    lib.start()
    threading.Event().wait(max(0.0, due.timestamp() + 0.02 - time.time()))
    t0 = time.perf_counter()
    lib.svc.shutdown(timeout)
    return {"shutdown_ms": (time.perf_counter() - t0) * 1000.0}


MICRO_EXPRS = ["*/5 * * * *", "0 9-17 * * mon-fri", "30 2 1,15 * *", "0 0 L * *",
               "15 */2 * jan-jun 1#2"]


def micro(lib: Library, rounds: int = 2000) -> Dict[str, Any]:
    """Construction on distinct expressions (no cache can help), then next-time
    steps on a few typical ones."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    fresh = [f"{distinct_expr(i)}" for i in range(rounds)]
    if lib.name == "memory_scheduler":
        from memory_scheduler import CronSchedule

        t0 = time.perf_counter()
        for expr in fresh:
            CronSchedule(expr)
        construct = (time.perf_counter() - t0) / rounds
        schedules = [CronSchedule(e) for e in MICRO_EXPRS]
        t0 = time.perf_counter()
        for schedule in schedules:
            dt = start
            for _ in range(rounds // len(MICRO_EXPRS)):
                dt = schedule.next_after(dt)
        step = (time.perf_counter() - t0) / rounds
    else:  # croniter itself, on the same expressions
        from croniter import croniter

        t0 = time.perf_counter()
        for expr in fresh:
            croniter(expr, start)
        construct = (time.perf_counter() - t0) / rounds
        iters = [croniter(e, start) for e in MICRO_EXPRS]
        t0 = time.perf_counter()
        for it in iters:
            for _ in range(rounds // len(MICRO_EXPRS)):
                it.get_next(datetime)
        step = (time.perf_counter() - t0) / rounds
    return {"construct_us": construct * 1e6, "next_us": step * 1e6}


def _noop() -> None:
    pass


SCENARIOS = {"latency": latency, "burst": burst, "register": register, "idle": idle,
             "shutdown": shutdown, "micro": micro, "busy_shutdown": busy_shutdown}


def main() -> None:
    scenario, library = sys.argv[1], sys.argv[2]
    kwargs: Dict[str, Any] = {}
    for arg in sys.argv[3:]:
        key, value = arg.split("=", 1)
        kwargs[key] = json.loads(value)
    lib = Library(library) if scenario != "micro" else Library.__new__(Library)
    lib.name = library
    print(json.dumps(SCENARIOS[scenario](lib, **kwargs)))


if __name__ == "__main__":
    main()
