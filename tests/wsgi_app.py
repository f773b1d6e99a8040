"""A WSGI app for tests/test_gunicorn.py: each gunicorn worker starts a scheduler in
``post_fork`` (tests/gunicorn_conf.py) on one SQLite store, as the README says.

Its job appends a JSON line per start to the ledger named by ``LEDGER``; the store is
the SQLite file named by ``STORE_DB``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable, List, Optional

from memory_scheduler import SchedulerConfig, SchedulerService, current_run

scheduler: Optional[SchedulerService] = None


def beat() -> None:
    ctx = current_run()
    line = {"ev": "start", "sched": ctx.scheduled_time.timestamp(), "pid": os.getpid(),
            "attempt": ctx.attempt, "token": ctx.token, "t": time.time()}
    fd = os.open(os.environ["LEDGER"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def start_scheduler() -> None:
    """Called in each worker after the fork: threads never cross a fork."""
    global scheduler
    scheduler = SchedulerService(SchedulerConfig(
        store=f"sqlite:///{os.environ['STORE_DB']}", lease_secs=5.0,
        thread_name_prefix="wsgi-scheduler"))
    scheduler.add_cron_job("beat", "* * * * * *", beat)
    scheduler.start()


def stop_scheduler() -> None:
    if scheduler is not None and scheduler.is_running():
        scheduler.shutdown(timeout=5.0)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    running = scheduler is not None and scheduler.is_running()
    body: List[bytes] = [f"pid {os.getpid()} scheduler running {running}\n".encode()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return body
