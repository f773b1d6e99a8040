"""Soak: 1,000 jobs (every-second and every-minute) for a while, watching for missed and
late runs, memory growth and leaked threads.

    python bench/soak.py                 # 10 minutes
    python bench/soak.py --minutes 2

Prints one line a minute (runs, lateness, RSS) and a summary.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memory_scheduler import SchedulerConfig, SchedulerService, current_run

UTC = timezone.utc


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def pct(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


class Histogram:
    """Lateness in 0.1 ms buckets: a fixed size, so the soak's own bookkeeping does
    not grow the RSS it reports."""

    def __init__(self, buckets: int = 100_000) -> None:
        self.counts = [0] * buckets
        self.top = 0.0

    def add(self, values: List[float]) -> None:
        for v in values:
            self.counts[min(len(self.counts) - 1, max(0, int(v * 10)))] += 1
            self.top = max(self.top, v)

    def pct(self, q: float) -> float:
        target = q * sum(self.counts)
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if n and seen >= target:
                return i / 10
        return math.nan


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--per-second", type=int, default=100,
                        help="how many of the jobs run every second (the rest every minute)")
    args = parser.parse_args()

    lock = threading.Lock()  # guards lateness and counts
    lateness: List[float] = []
    counts: Dict[str, int] = {}

    def job() -> None:
        ctx = current_run()
        late = (datetime.now(UTC) - ctx.scheduled_time).total_seconds() * 1000
        with lock:
            lateness.append(late)
            counts[ctx.job_name] = counts.get(ctx.job_name, 0) + 1

    svc = SchedulerService(SchedulerConfig(max_workers=16))
    for i in range(args.jobs):
        expr = "* * * * * *" if i < args.per_second else f"{i % 60} * * * * *"
        svc.add_cron_job(f"soak{i}", expr, job)
    threads_before = threading.active_count()
    start = datetime.now(UTC)
    svc.start()
    end = start + timedelta(minutes=args.minutes)
    print(f"soak: {args.jobs} jobs ({args.per_second} every second, the rest every "
          f"minute) for {args.minutes:g} min; RSS {rss_mb():.1f} MB", flush=True)
    print("minute  runs     p50_ms  p99_ms  max_ms  rss_mb  threads", flush=True)
    minute = 0
    overall = Histogram()
    pause = threading.Event()
    while datetime.now(UTC) < end:
        pause.wait(min(60.0, (end - datetime.now(UTC)).total_seconds()))
        minute += 1
        with lock:
            window, lateness[:] = list(lateness), []
        overall.add(window)
        print(f"{minute:>6}  {len(window):>7}  {pct(window, .5):>6.2f}  {pct(window, .99):>6.2f}"
              f"  {max(window, default=math.nan):>6.1f}  {rss_mb():>6.1f}"
              f"  {threading.active_count():>7}", flush=True)
    svc.shutdown(timeout=5)
    elapsed = (datetime.now(UTC) - start).total_seconds()
    infos = svc.jobs()
    expected = sum(
        int(elapsed) if i < args.per_second else int(elapsed // 60)
        for i in range(args.jobs))
    ran = sum(i.run_count for i in infos)
    print(f"\nran {ran} runs (about {expected} expected for {elapsed:.0f} s); "
          f"missed {sum(i.missed_count for i in infos)}, skipped "
          f"{sum(i.skip_count for i in infos)}, failed {sum(i.failure_count for i in infos)}")
    print(f"lateness ms: p50 {overall.pct(.5):.1f}  p99 {overall.pct(.99):.1f}  "
          f"max {overall.top:.1f}  (0.1 ms buckets)")
    threading.Event().wait(0.2)
    print(f"threads: {threads_before} before start, {threading.active_count()} after "
          f"shutdown; final RSS {rss_mb():.1f} MB")


if __name__ == "__main__":
    main()
