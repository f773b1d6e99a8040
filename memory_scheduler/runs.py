"""Runs: the bookkeeping of one occurrence from "it runs" to "recorded".

The path of an occurrence::

    firing.Firing.collect_due      (lock)  decides it runs: RunBook.reserve -> Run
    Admission.admit                (no lock) the seam every run passes before a job is called
    pool.RunPool.submit / run_inline        a worker (or run_pending's caller) takes it
    RunBook.start                  (lock)  counters, timeout timer, cancel token
    job.call_job                   (no lock) the user's function
    RunBook.finish                 (lock)  counters, status, the next catch-up run if any

Invariants (asserted by :meth:`RunBook.check_invariants`; caller holds the lock):

* a run is in ``active`` from ``reserve`` until ``release``, once; ``entry.running`` is
  the number of the entry's active runs (its overlap slots);
* a released run (``done``) never starts, and is never released twice;
* a catch-up run made by ``finish`` takes over the slot of the run it follows.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from .clock import utc_now
from .events import EventKind, Listeners, Outbox, logger
from .job import RunContext, RunResult, RunStatus, call_job, describe_error
from .registry import Entry, Registry, TimerKind
from .timezones import to_local

if TYPE_CHECKING:
    from .stores.records import Claim

__all__ = ["Run", "RunBook", "log_extra"]


class Run:
    """One occurrence on its way to a worker (fields guarded by the service lock)."""

    __slots__ = ("entry", "scheduled", "backlog", "forced", "cancelled", "cancel", "started",
                 "timed_out", "done", "claims", "lease_lost", "valid_until")

    def __init__(self, entry: Entry, scheduled: datetime,
                 backlog: Sequence[datetime] = ()) -> None:
        self.entry = entry
        self.scheduled = scheduled  # UTC
        # coalesce=False: the catch-up occurrences (UTC) to run after this one, in this
        # worker and in this run's overlap slot.
        self.backlog = backlog
        self.forced = False  # run_job_now: runs even while the job is paused
        self.cancelled = False  # shutdown or timeout asked this run to stop
        # Made when the run starts (by the worker, off the dispatcher's path); set
        # whenever ``cancelled`` is.
        self.cancel: Optional[threading.Event] = None
        self.started: Optional[datetime] = None
        self.timed_out = False
        self.done = False
        # With a run store: the claims of (scheduled, *backlog), one each (None: run
        # unclaimed, the store being down and on_unavailable="run"); None: not claimed.
        self.claims: Optional[Tuple[Optional[Claim], ...]] = None
        self.lease_lost = False  # its lease was lost: cancelled, its backlog not run
        self.valid_until = 0.0  # time.monotonic() deadline of its leases (self-fencing)

    def __repr__(self) -> str:
        return f"<Run {self.entry.name!r} {self.scheduled.isoformat()}>"


def log_extra(entry: Entry, event: str, scheduled: Optional[datetime] = None,
              **fields: object) -> Dict[str, object]:
    """Structured fields for log records (``record.job``, ``record.event``,
    ``record.fields``), for handlers that emit JSON."""
    if scheduled is not None:
        fields["scheduled"] = to_local(scheduled, entry.schedule.timezone).isoformat()
    return {"job": entry.name, "event": event, "fields": fields}


class RunBook:
    """Reserved and running runs. Every method but :meth:`run_inline` expects the
    caller to hold ``cond``'s lock."""

    def __init__(self, cond: threading.Condition, registry: Registry,
                 listeners: Listeners) -> None:
        self._cond = cond
        self._registry = registry
        self._listeners = listeners
        self.active: Dict[Run, None] = {}  # insertion order: oldest first
        # With a run store: records a run's end there (no lock held; set once, before
        # start()).
        self.recorder: Optional[Callable[[Run, RunStatus], None]] = None

    def reserve(self, entry: Entry, scheduled: datetime,
                backlog: Sequence[datetime] = ()) -> Run:
        """Caller holds the lock: take one of the entry's overlap slots."""
        run = Run(entry, scheduled, backlog)
        entry.running += 1
        self.active[run] = None
        return run

    def release(self, run: Run) -> None:
        """Caller holds the lock: give the slot back (idempotent)."""
        if run.done:
            return
        run.done = True
        run.entry.running -= 1
        del self.active[run]

    def drop(self, run: Run, outbox: Optional[Outbox], reason: str) -> int:
        """Caller holds the lock: release a run that will not start, counting it and
        its catch-up occurrences as missed (reported in ``outbox``, if given). Returns
        how many occurrences it held."""
        if run.done:
            return 0
        self.release(run)
        # A run that started is counted already; its catch-up occurrences are not.
        occurrences = [*([] if run.started is not None else [run.scheduled]), *run.backlog]
        if not occurrences:
            return 0
        stats = run.entry.stats_for_update()
        stats.missed_count += len(occurrences)
        stats.last_status = RunStatus.MISSED
        if outbox is None:
            return len(occurrences)
        for when in occurrences:
            outbox.event(EventKind.RUN_MISSED, run.entry, when)
        outbox.log(logging.INFO, "job %r: %d run(s) not started (%s)", run.entry.name,
                   len(occurrences), reason,
                   extra=log_extra(run.entry, "run_missed", scheduled=run.scheduled))
        return len(occurrences)

    def may_start(self, run: Run) -> bool:
        """Caller holds the lock."""
        entry = run.entry
        if run.done or run.cancelled or not self._registry.is_live(entry):
            return False
        return run.forced or not entry.paused

    def start(self, run: Run, cancel: threading.Event) -> None:
        """Caller holds the lock: the bookkeeping of a run about to call its job.
        ``cancel`` becomes its cancel token."""
        entry = run.entry
        started = run.started = utc_now()
        stats = entry.stats_for_update()
        stats.run_count += 1
        stats.skip_warned = stats.missed_warned = False
        stats.last_started = started
        stats.last_scheduled_time = run.scheduled
        timeout = entry.policy.timeout_secs
        if timeout is not None:
            self._registry.push(started.timestamp() + timeout, TimerKind.TIMEOUT, entry, run)
            self._cond.notify_all()  # the dispatcher may be sleeping past it
        run.cancel = cancel

    def finish(self, run: Run, error: Optional[str], *, go_on: bool
               ) -> Tuple[RunStatus, timedelta, Optional[Run]]:
        """Caller holds the lock: record a finished run (``error``: what it raised, as
        ``describe_error`` put it before the lock was taken, or None); return its
        status, its duration and, when ``go_on`` and the job may go on, its next
        catch-up run (which keeps this run's overlap slot)."""
        entry = run.entry
        finished = utc_now()
        assert run.started is not None
        duration = finished - run.started
        stats = entry.stats_for_update()
        stats.last_finished = finished
        stats.last_duration = duration
        if error is not None:
            stats.failure_count += 1
            stats.last_error = error
        if run.timed_out:
            status = RunStatus.TIMED_OUT
        else:
            status = RunStatus.SUCCESS if error is None else RunStatus.FAILED
            stats.last_status = status
        following: Optional[Run] = None
        if run.backlog and go_on and self._registry.is_live(entry) and not entry.paused \
                and not run.lease_lost:
            following = Run(entry, run.backlog[0], run.backlog[1:])
            if run.claims is not None:
                following.claims = run.claims[1:]
                following.valid_until = run.valid_until
            self.active[following] = None
            entry.running += 1
        elif run.backlog:  # paused, removed or shut down: not caught up
            stats.missed_count += len(run.backlog)
        self.release(run)
        return status, duration, following

    def cancel_all(self) -> None:
        """Caller holds the lock: set every active run's cancel token (shutdown)."""
        for run in self.active:
            run.cancelled = True
            if run.cancel is not None:
                run.cancel.set()

    def check_invariants(self) -> None:
        """Caller holds the lock: assert the invariants in the module docstring."""
        counts: Dict[int, int] = {}
        for run in self.active:
            assert not run.done, run
            counts[id(run.entry)] = counts.get(id(run.entry), 0) + 1
        for entry in self._registry:
            assert entry.running == counts.get(id(entry), 0), (entry.name, entry.running)

    # -- outside the lock --------------------------------------------------------------

    def context(self, run: Run, cancel: threading.Event) -> RunContext:
        entry = run.entry
        claim = None if run.claims is None else run.claims[0]
        local = to_local(run.scheduled, entry.schedule.timezone)
        if claim is None:
            return RunContext(entry.id, entry.name, local, cancel)
        return RunContext(entry.id, entry.name, local, cancel, claim.attempt, claim.token)

    def announce_start(self, run: Run, ctx: RunContext) -> None:
        """No lock held: log and deliver the start of a run."""
        entry = run.entry
        if logger.isEnabledFor(logging.INFO):
            logger.info("job %r started (scheduled %s)", entry.name, ctx.scheduled_time,
                        extra=log_extra(entry, "run_started", scheduled=run.scheduled))
        if self._listeners:
            outbox = Outbox(self._listeners)
            outbox.event(EventKind.RUN_STARTED, entry, run.scheduled)
            outbox.deliver(self._listeners)

    def announce_finish(self, run: Run, exc: Optional[BaseException], status: RunStatus,
                        duration: timedelta) -> None:
        """No lock held: record the end of a run in the store, log and deliver it."""
        entry = run.entry
        if self.recorder is not None:
            self.recorder(run, status)
        if exc is not None:
            logger.error("job %r failed after %s", entry.name, duration,
                         exc_info=(type(exc), exc, exc.__traceback__),
                         extra=log_extra(entry, "run_failed", scheduled=run.scheduled,
                                         duration_secs=duration.total_seconds(),
                                         error=describe_error(exc)))
        elif logger.isEnabledFor(logging.INFO):
            logger.info("job %r finished in %s%s", entry.name, duration,
                        " (after its timeout)" if run.timed_out else "",
                        extra=log_extra(entry, "run_succeeded", scheduled=run.scheduled,
                                        duration_secs=duration.total_seconds()))
        if self._listeners:
            outbox = Outbox(self._listeners)
            kind = EventKind.RUN_SUCCEEDED if exc is None else EventKind.RUN_FAILED
            outbox.event(kind, entry, run.scheduled, exc)
            outbox.deliver(self._listeners)

    def run_inline(self, run: Run, reserved: List[Run]) -> List[RunResult]:
        """No lock held: run ``run`` and its catch-up runs in this thread (run_pending).

        Catch-up runs made on the way are appended to ``reserved``, so that the caller
        can release whatever a KeyboardInterrupt or SystemExit (from the job or a
        listener) left reserved. Such an exception is recorded, then re-raised.
        """
        results: List[RunResult] = []
        current: Optional[Run] = run
        while current is not None:
            with self._cond:
                if not self.may_start(current):  # paused or removed meanwhile
                    self.drop(current, None, "its job was paused or removed")
                    return results
                cancel = threading.Event()
                self.start(current, cancel)
            ctx = self.context(current, cancel)
            self.announce_start(current, ctx)
            exc = call_job(current.entry.func, ctx)
            fatal = exc is not None and not isinstance(exc, Exception)
            error = None if exc is None else describe_error(exc)
            with self._cond:
                status, duration, following = self.finish(current, error, go_on=not fatal)
            if following is not None:
                reserved.append(following)
            self.announce_finish(current, exc, status, duration)
            results.append(RunResult(ctx.job_id, ctx.job_name, ctx.scheduled_time, status,
                                     error))
            if fatal:
                assert exc is not None
                raise exc  # KeyboardInterrupt / SystemExit in the caller's own thread
            current = following
        return results
