"""SchedulerService: the public facade (lifecycle, the job API, listeners).

One lock, ``_cond``'s, guards the registry, every ``Entry`` and ``Run`` field, the run
book, the pool's queue and ``_running``; nothing foreign runs under it. The threads,
the lock and the path of an occurrence are described in the README's "Design" section
and in the docstrings of dispatcher.py, runs.py and pool.py; with a run store, in
cluster.py (the admission that claims runs) and threads.py (claimer, heartbeat,
recorder).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import uuid
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, TypeVar, Union

from .admission import Admission
from .clock import Budget, utc_now
from .cluster import Cluster, open_run_store
from .config import SchedulerConfig
from .cron import CronSchedule
from .dispatcher import Dispatcher
from .errors import AlreadyRunning, DuplicateJob, InvalidValue, NotRunning
from .events import EventKind, Listeners, Notifier, Outbox, logger
from .firing import MAX_CATCHUP_RUNS, Firing, next_or_none
from .job import Job, JobOptions, Policy, RunResult, cron_policy, new_job_id, policy_of
from .pool import RunPool
from .registry import Entry, Registry, TimerKind
from .runs import Run, RunBook
from .threads import Claimer, Heartbeat, Recorder, start_threads
from .timezones import resolve_zone, zone_name
from .views import JobKey, JobViews

if TYPE_CHECKING:  # no runtime dependency: typing.Unpack is new in Python 3.11
    from typing_extensions import Unpack

__all__ = ["MAX_CATCHUP_RUNS", "SchedulerService"]

F = TypeVar("F", bound=Callable[[], object])


class SchedulerService(JobViews):
    """Runs cron jobs in a background thread pool.

    Every public method is thread-safe and may be called from inside a running job.

    Args:
        config: settings; ``SchedulerConfig()`` when omitted.

    Raises:
        InvalidTimezone: the config's default zone is invalid.
    """

    def __init__(self, config: Optional[SchedulerConfig] = None) -> None:
        config = SchedulerConfig() if config is None else config
        if not isinstance(config, SchedulerConfig):
            raise InvalidValue(f"config must be a SchedulerConfig, got {type(config).__name__}")
        self._config = config
        self._default_zone = config.parse_timezone()
        self._cond = threading.Condition(threading.Lock())
        # Guarded by _cond's lock (each part says which of its methods expect it held):
        self._registry = Registry()
        self._listeners = Listeners()
        self._book = RunBook(self._cond, self._registry, self._listeners)
        self._firing = Firing(self._registry, self._book, random.Random(config.random_seed))
        self._running = False  # between start() and the beginning of shutdown()
        self._pool: Optional[RunPool] = None  # this start's workers
        self._dispatcher: Optional[Dispatcher] = None
        self._token = threading.Event()
        # The seam every run passes: a Cluster claims runs in the run store, if any.
        self._cluster = None if config.store is None else Cluster(
            config, open_run_store(config), self._cond, self._registry, self._book,
            self._firing, self._listeners)
        self._admission = Admission() if self._cluster is None else self._cluster
        self._claimer: Optional[Claimer] = None  # with a run store, per start()
        self._heartbeat: Optional[Heartbeat] = None
        self._recorder: Optional[Recorder] = None
        self._notifier = Notifier(self._listeners, f"{config.thread_name_prefix}-events")

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def config(self) -> SchedulerConfig:
        return self._config

    @property
    def shutdown_token(self) -> threading.Event:
        """Set the moment ``shutdown()`` begins. A new token is made by each ``start()``."""
        return self._token

    def is_running(self) -> bool:
        with self._cond:
            return self._running

    def start(self) -> None:
        """Start the dispatcher and the pool. A stopped service may be started again.

        With a run store, each cluster job is first scheduled from its latest recorded
        occurrence, so that the occurrences missed meanwhile are caught up.

        Raises:
            AlreadyRunning: the service is running (or still shutting down).
            StoreError: the run store cannot be used (not a run store, closed).
        """
        outbox = Outbox(self._listeners)
        cluster = self._cluster
        marks: Dict[str, datetime] = {}
        if cluster is not None:  # store I/O, before the lock
            cluster.publish_fingerprints(outbox)
            marks = cluster.watermarks(outbox)
        with self._cond:
            if self._running or self._dispatcher is not None:
                raise AlreadyRunning("the scheduler is already running")
            self._running = True
            self._token = threading.Event() if self._token.is_set() else self._token
            self._notifier.open()
            prefix = self._config.thread_name_prefix
            self._pool = RunPool(self._cond, self._book, self._config.max_workers,
                                 f"{prefix}-worker")
            self._dispatcher = dispatcher = Dispatcher(
                self._cond, self._registry, self._firing, self._listeners, self._notifier,
                self._hand_over, self._config.max_sleep_secs, self._token,
                f"{prefix}-dispatcher")
            # Without a store, occurrences missed while stopped are not caught up: start
            # from now. Only overdue entries are recomputed (a big registry starts in ms).
            now = utc_now()
            self._firing.observe(now, outbox)
            for entry in self._registry:
                try:
                    if cluster is not None and cluster.catch_up(entry, marks.get(entry.name),
                                                                now):
                        continue
                    if entry.next_run is not None and entry.next_run <= now:
                        self._firing.reschedule(entry, now, outbox)
                except Exception as exc:  # noqa: BLE001 - as the dispatcher: that job ends
                    self._firing.end(entry, outbox, exc)
            if cluster is not None:
                self._claimer, self._heartbeat, self._recorder = start_threads(
                    cluster, self._config, self._book, self._registry, self._cond,
                    self._queue, self._listeners, self._notifier, self._token)
            # Under the lock: a shutdown() that follows must find it started.
            dispatcher.thread.start()
        logger.info("scheduler started")
        outbox.event(EventKind.SCHEDULER_STARTED)
        outbox.deliver(self._listeners)

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Stop starting runs at once, wait for running jobs, and return.

        Sets ``shutdown_token`` and every running job's cancel token, then waits up to
        ``timeout`` seconds (default ``config.shutdown_timeout_secs``) for running jobs
        to return. Runs not started (waiting for a worker or their jitter delay, catch-up
        runs) are dropped, counted as missed. Threads cannot be killed: a job ignoring
        its token keeps its worker until it returns; its name is logged at WARNING.

        Raises:
            NotRunning: the service is not running.
            InvalidValue: ``timeout`` is negative or not a number.
        """
        timeout = self._config.shutdown_timeout(timeout)
        outbox = Outbox(self._listeners)
        with self._cond:
            if not self._running:
                raise NotRunning("the scheduler is not running")
            self._running = False
            self._token.set()
            self._book.cancel_all()
            pool, dispatcher = self._pool, self._dispatcher
            assert pool is not None and dispatcher is not None
            pool.close(outbox)
            for timer in self._registry.drop(TimerKind.DELAYED_START):
                self._book.drop(timer.payload, outbox, "the scheduler is shutting down")
            self._cond.notify_all()
        outbox.log(logging.INFO, "scheduler shutting down (timeout %.3gs)", timeout)
        outbox.deliver(self._listeners)
        # The dispatcher never runs foreign code, so it leaves within milliseconds.
        budget = Budget(timeout)  # one timeout for all the waits below
        dispatcher.thread.join(budget.left())
        claimer, heartbeat, recorder = self._claimer, self._heartbeat, self._recorder
        if claimer is not None:
            claimer.stop(budget.left())
        finished = pool.wait(budget.left())
        if heartbeat is not None and recorder is not None:  # kept the leases until now
            recorder.stop(budget.left())
            heartbeat.stop(budget.left())
        with self._cond:
            stuck = sorted({run.entry.name for run in self._book.active if run.started})
            self._pool = self._dispatcher = self._claimer = None
            self._heartbeat = self._recorder = None
        self._notifier.close(budget.left())
        if finished:
            logger.info("scheduler shutdown complete")
        else:
            logger.warning("scheduler shutdown timed out after %.3gs; still running: %s "
                           "(their worker threads end when the jobs return)",
                           timeout, ", ".join(stuck))
        outbox.event(EventKind.SCHEDULER_SHUTDOWN)
        outbox.deliver(self._listeners)

    def __enter__(self) -> SchedulerService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(NotRunning):  # another thread shut it down first
            self.shutdown()

    def wakeup(self) -> None:
        """Make the dispatcher re-read the clock now (after moving a frozen clock)."""
        with self._cond:
            self._cond.notify_all()

    # -- jobs --------------------------------------------------------------------------

    def add_job(self, job: Job, *, replace_existing: bool = False) -> uuid.UUID:
        """Register ``job``; returns its id. Jobs may be added before or after start().

        Raises:
            DuplicateJob: a job with that name exists and ``replace_existing`` is
                false. With ``replace_existing=True`` the old job is removed (its
                running instances finish) and the new one takes over its id.
        """
        if not isinstance(job, Job):
            raise InvalidValue(f"add_job expects a Job, got {type(job).__name__}")
        return self._add(job.name, job.expression, job.func, job.timezone, policy_of(job),
                         replace_existing)

    def add_cron_job(self, name: str, cron_expr: str, job_fn: Callable[[], object],
                     timezone: Union[str, tzinfo, None] = None,
                     **options: Unpack[JobOptions]) -> uuid.UUID:
        """Add a job, as ``add_job(Job(name, cron_expr, job_fn, timezone, **options))``.

        ``options`` are Job's keyword options plus ``replace_existing``; an unknown
        option raises :class:`InvalidValue` naming it.
        """
        policy, replace_existing = cron_policy(name, cron_expr, job_fn, timezone, options)
        return self._add(name, cron_expr, job_fn, timezone, policy, replace_existing)

    def _add(self, name: str, expression: str, func: Callable[[], object],
             timezone: Union[str, tzinfo, None], policy: Policy, replace_existing: bool
             ) -> uuid.UUID:
        zone = self._default_zone if timezone is None else resolve_zone(timezone)
        schedule = CronSchedule.shared(expression, zone, name)
        outbox = Outbox(self._listeners)
        with self._cond:
            now = utc_now()
            self._firing.observe(now, outbox)
            first = next_or_none(schedule, now)  # may raise (a user's tzinfo): nothing changed
            old = self._registry.by_name(name)
            if old is None:
                job_id = new_job_id()
            elif replace_existing:
                self._registry.remove(old)
                job_id = old.id
                outbox.event(EventKind.JOB_REMOVED, old)
            else:
                raise DuplicateJob(f"a job named {name!r} already exists (id {old.id}); "
                                   "pass replace_existing=True to replace it")
            entry = Entry(job_id, name, func, schedule, policy)
            self._registry.add(entry)
            outbox.event(EventKind.JOB_ADDED, entry)
            if first is None:
                self._firing.end(entry, outbox)
            else:
                self._registry.schedule(entry, first)
            self._cond.notify_all()
        outbox.log(logging.DEBUG, "added job %r (%s, %s)", name, expression, zone_name(zone))
        outbox.deliver(self._listeners)
        return job_id

    def cron(self, expression: str, *, name: Optional[str] = None,
             timezone: Union[str, tzinfo, None] = None,
             **options: Unpack[JobOptions]) -> Callable[[F], F]:
        """Decorator: register the function as a cron job and return it unchanged.

        ``name`` defaults to the function's qualified name.
        """
        def register(func: F) -> F:
            job_name = name if name is not None else getattr(func, "__qualname__", repr(func))
            self.add_cron_job(job_name, expression, func, timezone, **options)
            return func

        return register

    def remove_job(self, key: JobKey) -> None:
        """Remove a job by id or name. A run already going finishes; no later run
        starts. Raises JobNotFound."""
        self._change(key, "remove")

    def pause_job(self, key: JobKey) -> None:
        """Stop future runs of a job without removing it. Raises JobNotFound."""
        self._change(key, "pause")

    def resume_job(self, key: JobKey) -> None:
        """Resume a paused job from now, without catch-up runs. Raises JobNotFound."""
        self._change(key, "resume")

    def _change(self, key: JobKey, change: str) -> None:
        outbox = Outbox(self._listeners)
        with self._cond:
            entry = self._registry.lookup(key)
            if change == "remove":
                self._registry.remove(entry)
                outbox.event(EventKind.JOB_REMOVED, entry)
            elif change == "pause" and not entry.paused:
                entry.paused = True
                self._registry.unschedule(entry)
                outbox.event(EventKind.JOB_PAUSED, entry)
            elif change == "resume" and entry.paused:
                entry.paused = False
                now = utc_now()
                self._firing.observe(now, outbox)
                self._firing.reschedule(entry, now, outbox)
                outbox.event(EventKind.JOB_RESUMED, entry)
            self._cond.notify_all()
        outbox.deliver(self._listeners)

    def run_job_now(self, key: JobKey) -> bool:
        """Start one run of a job at once, honouring its overlap policy; the schedule
        does not move. A paused job runs too. Returns False if the run was skipped.

        Raises:
            JobNotFound: no such job.
            NotRunning: the service is not running (use run_pending() in tests).
        """
        outbox = Outbox(self._listeners)
        run: Optional[Run] = None
        with self._cond:
            entry = self._registry.lookup(key)
            if not self._running:
                raise NotRunning("run_job_now needs a running scheduler")
            now = utc_now()
            if entry.running >= entry.policy.instance_limit:
                self._firing.skip(entry, now, outbox, None, occurrence=False)
            else:
                run = self._book.reserve(entry, now)
                run.forced = True
        outbox.deliver(self._listeners)
        if run is not None:
            self._hand_over([run], outbox)
            outbox.deliver(self._listeners)
        return run is not None

    # -- synchronous driving (tests, simulations) -------------------------------------

    def run_pending(self) -> List[RunResult]:
        """Run every occurrence due now, in this thread, in scheduled-time order.

        Applies the dispatcher's policies (pause, overlap, misfire, coalesce, DST rules)
        but jitter. Works whether or not the service is started; an occurrence is
        handled by exactly one of run_pending() and the dispatcher. Returns what
        happened to each occurrence.
        """
        outbox = Outbox(self._listeners)
        runs: List[Run] = []
        reserved = runs  # the same list: a KeyboardInterrupt may come while collecting
        try:
            results = self._firing.collect_all(self._cond, outbox, runs)
            reserved = list(runs)
            outbox.deliver(self._listeners)
            for run in self._admission.admit(runs, outbox, inline=True):
                results.extend(self._book.run_inline(run, reserved))
        finally:
            # A KeyboardInterrupt or SystemExit (from a job or a listener) must not
            # leave runs reserved: their jobs would be skipped forever.
            with self._cond:
                for run in reserved:
                    self._book.drop(run, outbox, "run_pending() was interrupted")
            outbox.deliver(self._listeners)
        return results

    # -- internals ---------------------------------------------------------------------

    def _hand_over(self, runs: List[Run], outbox: Outbox) -> None:
        """No lock held: admit runs and queue them for the pool (the dispatcher calls it
        with the runs of one slice); with a run store the claimer does both."""
        claimer = self._claimer
        if claimer is not None:
            claimer.put(runs)
        else:
            self._queue(self._admission.admit(runs, outbox), outbox)

    def _queue(self, admitted: List[Run], outbox: Outbox) -> None:
        """No lock held: queue admitted runs for this start's pool."""
        with self._cond:
            pool = self._pool
            for run in admitted if pool is None else ():  # shut down meanwhile
                self._book.drop(run, outbox, "the scheduler is shutting down")
        if pool is not None:
            pool.submit(admitted, outbox)
