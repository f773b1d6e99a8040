from __future__ import annotations

import contextlib
import logging
import logging.handlers
import queue
import threading
from datetime import datetime, timedelta
from typing import Iterator, Optional, TypeVar

from hypothesis import HealthCheck, settings

from memory_scheduler import EventKind, SchedulerEvent, SchedulerService
from memory_scheduler.testing import library_threads

__all__ = ["GUARD", "VALID", "Sentinel", "events_of", "get", "library_threads", "log_records"]

# Hypothesis: a hang guard rather than a timing claim: any single example past this fails.
GUARD = settings(deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow])

# Valid expressions of the dialect, for property tests to start from.
VALID = ["* * * * *", "*/15 * * * *", "0 9-17 * * mon-fri", "30 2 * * *", "0 0 L * *",
         "0 9 * * 1#2", "0 9 * * 5L", "@daily", "@hourly", "0 30 9 * * *", "5,10 1 1 jan *",
         "*/7 * */2 * 1", "0 0 29 2 *"]


T = TypeVar("T")


def get(q: queue.Queue[T], timeout: float = 2.0) -> T:
    """``q.get(timeout=...)`` that also times out when time.monotonic is frozen.

    queue.Queue.get measures its timeout with time.monotonic, which time-machine 2.x
    (the last series for Python 3.9) freezes; this polls with Event.wait instead.
    """
    pause = threading.Event()
    for _ in range(int(timeout / 0.005) + 1):
        try:
            return q.get_nowait()
        except queue.Empty:
            pause.wait(0.005)
    raise queue.Empty


def events_of(svc: SchedulerService, *kinds: EventKind, job: Optional[str] = None
              ) -> queue.Queue[SchedulerEvent]:
    """A queue that receives the service's events of ``kinds`` (every kind if none is
    given), of the job named ``job`` only if given. Wait on it with :func:`get`.

    Run events come from the worker after the run is recorded (``get_job`` already
    shows it); skipped, missed, timed-out and ended events from the notifier thread
    after the change they report."""
    q: queue.Queue[SchedulerEvent] = queue.Queue()

    def record(event: SchedulerEvent) -> None:
        if job is None or event.job_name == job:
            q.put(event)

    svc.add_listener(record, events=list(kinds) or None)
    return q


@contextlib.contextmanager
def log_records(level: int = logging.INFO, name: str = "memory_scheduler"
                ) -> Iterator[queue.Queue[logging.LogRecord]]:
    """A queue that receives the records of logger ``name`` at ``level`` and above, as
    they are emitted (``record.threadName`` says by which thread), for what has no
    event, such as a clock jump. The dispatcher's records are emitted by the notifier
    thread after the pass that made them."""
    logger = logging.getLogger(name)
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    handler = logging.handlers.QueueHandler(records)
    handler.setLevel(level)
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


class Sentinel:
    """A job added after the job under test, on the same schedule, in a service with
    one worker: the dispatcher hands an instant's runs over in registration order and
    the single worker runs them in that order, so once the sentinel's run at an instant
    has finished, any run of the job under test at that instant has finished too.
    Waiting for it proves that something did *not* run, without sleeping.

    With any number of workers, the sentinel's run at an instant also proves that the
    dispatcher has handled every job due at that instant (it hands runs over once the
    whole instant is collected): a jittered job, for one, is reserved by then."""

    def __init__(self, svc: SchedulerService, expression: str = "* * * * *",
                 name: str = "sentinel") -> None:
        self._done: queue.Queue[datetime] = queue.Queue()

        def finished(event: SchedulerEvent) -> None:
            if event.job_name == name and event.scheduled_time is not None:
                self._done.put(event.scheduled_time)

        svc.add_listener(finished, events=[EventKind.RUN_SUCCEEDED])
        svc.add_cron_job(name, expression, lambda: None)

    def wait_past(self, instant: datetime, timeout: float = 2.0) -> None:
        """Wait until the sentinel has finished a run scheduled at or after ``instant``."""
        while get(self._done, timeout) < instant:
            pass

