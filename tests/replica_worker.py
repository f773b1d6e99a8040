"""One replica for tests/test_replicas.py: a real process running a SchedulerService on
a shared SQLite store, with the same jobs as every other replica.

Usage: ``python replica_worker.py DB LEDGER NAME``. Every start, end and lease loss is
appended to LEDGER as one JSON line (O_APPEND, one write per line, so a SIGKILL leaves
whole lines). SIGTERM shuts the service down and exits 0.

Jobs (all cluster="once"):
  tick  every second, coalesce=False, short body
  slow  every second, overlap="skip", a 2.5 s body (longer than its period)
  redo  every 2 seconds, on_lost="rerun", a 1.5 s body
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from memory_scheduler import EventKind, SchedulerConfig, SchedulerService, current_run

LEASE = 2.0


def main() -> None:
    db, ledger, name = sys.argv[1:4]
    fd = os.open(ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(**fields: Any) -> None:
        fields.update(replica=name, pid=os.getpid(), t=time.time())
        os.write(fd, (json.dumps(fields) + "\n").encode())

    def body(seconds: float) -> None:
        ctx = current_run()
        sched = ctx.scheduled_time.timestamp()
        write(ev="start", job=ctx.job_name, sched=sched, attempt=ctx.attempt, token=ctx.token)
        # Small steps, so that a cancel is seen soon after a SIGCONT.
        for _ in range(int(seconds / 0.05)):
            if ctx.cancel_token.wait(0.05):
                break
        write(ev="end", job=ctx.job_name, sched=sched, attempt=ctx.attempt,
              cancelled=ctx.cancelled)

    svc = SchedulerService(SchedulerConfig(
        store=f"sqlite:///{db}", lease_secs=LEASE, heartbeat_secs=0.3, sweep_secs=0.25,
        claim_timeout_secs=5.0, shutdown_timeout_secs=5.0,
        thread_name_prefix=f"replica-{name}"))
    svc.add_cron_job("tick", "* * * * * *", lambda: body(0.05), coalesce=False)
    svc.add_cron_job("slow", "* * * * * *", lambda: body(2.5))
    svc.add_cron_job("redo", "*/2 * * * * *", lambda: body(1.5), on_lost="rerun",
                     overlap="concurrent")
    svc.add_listener(lambda e: write(ev="lease_lost", job=e.job_name,
                                     sched=e.scheduled_time.timestamp()
                                     if e.scheduled_time else None),
                     [EventKind.RUN_LEASE_LOST])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    svc.start()
    write(ev="up")
    while not stop.wait(0.1):
        pass
    svc.shutdown(5.0)
    write(ev="down")
    os.close(fd)


if __name__ == "__main__":
    main()
