"""The timeline of one burst: 10,000 jobs due at one instant, when the first, the median
and the last of them started, and how many worker threads ran them.

    python bench/burst_timeline.py [--workers N] [--jobs N]

`bench/scenarios.py burst` reports only the last start; this splits it into the
collection (first start) and the run rate, which is how the regression in
RESULTS.md ("Burst after the review fixes") was found.
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import List, Set

from memory_scheduler import SchedulerConfig, SchedulerService


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    svc = SchedulerService(SchedulerConfig(max_workers=args.workers))
    due = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=3)
    expr = f"{due.second} {due.minute} {due.hour} {due.day} {due.month} *"
    starts: List[float] = []
    workers: Set[int] = set()

    def record() -> None:
        starts.append(time.time())  # list.append and set.add are atomic under the GIL
        workers.add(threading.get_ident())

    for i in range(args.jobs):
        svc.add_cron_job(f"job{i}", expr, record)
    svc.start()
    pause = threading.Event()
    for _ in range(600):  # at most 30 s
        if len(starts) >= args.jobs:
            break
        pause.wait(0.05)
    svc.shutdown()
    ordered = sorted(starts)
    at = due.timestamp()
    print(f"first {(ordered[0] - at) * 1000:.0f} ms, median "
          f"{(ordered[len(ordered) // 2] - at) * 1000:.0f} ms, last "
          f"{(ordered[-1] - at) * 1000:.0f} ms, {len(ordered) / (ordered[-1] - ordered[0]):,.0f} "
          f"runs/s after the first, {len(workers)} worker thread(s)")


if __name__ == "__main__":
    main()
