"""SchedulerService: the dispatcher thread, the worker pool and the shutdown token.

Threads:

* the caller's threads, which call the public methods;
* one dispatcher thread, which sleeps on ``_cond`` until the earliest heap item is due,
  decides what each due occurrence becomes (run, skip, miss) and hands runs to the
  pool. It never calls user code: listener callbacks for events it produces are
  handed to the pool too;
* the pool's worker threads, which call jobs and deliver events.

``_now()`` is the only place the clock is read. Every wait hands its timeout to a
threading primitive, which waits in real time, so a frozen clock (freezegun,
time-machine) can never turn a wait into an endless loop.
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

from .clock import utc_now
from .config import SchedulerConfig
from .cron import CronSchedule
from .errors import (
    AlreadyRunning,
    DuplicateJob,
    InvalidValue,
    JobNotFound,
    NotRunning,
    SchedulerError,
)
from .job import (
    DEFAULT_POLICY,
    EventKind,
    Job,
    JobInfo,
    Policy,
    RunContext,
    RunResult,
    RunStatus,
    SchedulerEvent,
    call_job,
    check_job,
    describe_error,
    make_policy,
    new_job_id,
    policy_of,
)
from .registry import DELAYED_START, TICK, TIMEOUT, Entry, Registry
from .timezones import resolve_zone, zone_name

__all__ = ["SchedulerService", "MAX_CATCHUP_RUNS"]

logger = logging.getLogger("memory_scheduler")

#: With ``coalesce=False``, the most missed occurrences one wake-up runs per job; the
#: rest are recorded as one missed batch. A long suspend never queues thousands.
MAX_CATCHUP_RUNS = 100

# A clock step backwards by more than this recomputes every schedule; smaller steps
# (NTP slewing) only delay runs by the step.
_BACKWARD_JUMP = timedelta(seconds=1)
_FINAL_WAIT = 0.002  # seconds; see _sleep_for

_UTC = timezone.utc
JobKey = Union[uuid.UUID, str]
Listener = Callable[[SchedulerEvent], object]
F = TypeVar("F", bound=Callable[[], object])


@dataclass(eq=False)
class _Run:
    """One occurrence on its way through the pool (fields guarded by the service lock)."""

    entry: Entry
    scheduled: datetime  # UTC
    forced: bool = False  # run_job_now: runs even while the job is paused
    cancelled: bool = False  # shutdown or timeout asked this run to stop
    # The job's cancel token, made when the run starts (in the worker, not on the
    # dispatcher's path); set whenever ``cancelled`` is.
    cancel: Optional[threading.Event] = None
    started: Optional[datetime] = None
    timed_out: bool = False
    done: bool = False


@dataclass
class _Work:
    """What one pass over the heap decided; carried out after the lock is released."""

    sync: bool = False  # run_pending(): report skipped and missed occurrences too
    runs: List[_Run] = field(default_factory=list)
    events: List[Optional[SchedulerEvent]] = field(default_factory=list)
    results: List[RunResult] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.runs or any(self.events))


class SchedulerService:
    """Runs cron jobs in a background thread pool.

    Every public method is thread-safe and may be called from inside a running job.

    Args:
        config: settings; ``SchedulerConfig()`` when omitted.

    Raises:
        InvalidTimezone: the config's default zone is invalid.
    """

    def __init__(self, config: Optional[SchedulerConfig] = None) -> None:
        if config is None:
            config = SchedulerConfig()
        if not isinstance(config, SchedulerConfig):
            raise InvalidValue(f"config must be a SchedulerConfig, got {type(config).__name__}")
        self._config = config
        self._default_zone = config.parse_timezone()
        self._random = random.Random(config.random_seed)
        # _cond's lock guards everything below it, every Entry field and every _Run
        # field. It is never held while user code (jobs, listeners) runs, while
        # waiting for a thread, or while submitting to the pool; the dispatcher waits
        # on _cond and every change that can move the earliest due time notifies it.
        self._cond = threading.Condition(threading.Lock())
        self._registry = Registry()
        self._running = False  # between start() and the beginning of shutdown()
        self._token = threading.Event()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._dispatcher: Optional[threading.Thread] = None
        self._active: Dict[_Run, None] = {}  # runs reserved or running (insertion order)
        self._tasks = 0  # pool tasks submitted and not yet finished (runs, deliveries)
        # Runs handed over and waiting for a worker. Up to max_workers pool tasks
        # ("drainers") take runs from it until it is empty, so a burst of ten thousand
        # runs costs a handful of futures, not ten thousand.
        self._ready: Deque[_Run] = deque()
        self._drainers = 0  # pool tasks draining _ready
        self._busy = 0  # drainers inside a run (the others are about to take one)
        self._starting = 0  # drainers submitted that have not taken the lock yet
        # Pool futures not known to be finished, with whether each is a drainer;
        # shutdown() settles the ones it cancelled before they started.
        self._futures: List[Tuple[Future[object], bool]] = []
        # Set by _task_done once _tasks <= _drain_target; shutdown() waits on it. An
        # Event rather than Condition.wait_for: wait_for measures its timeout with
        # time.monotonic, which time-machine 2.x freezes, so it would never time out.
        self._drained = threading.Event()
        self._drain_target = 0
        self._warming = threading.Event()  # see _warm_pool
        self._last_now: Optional[datetime] = None
        # Replaced, never mutated, so listeners can be read without the lock.
        self._listeners: Tuple[Tuple[Listener, Optional[frozenset[EventKind]]], ...] = ()
        # Per-thread: set inside a pool task of this service, so that shutdown() called
        # from a job does not wait for itself.
        self._thread_state = threading.local()

    # -- the clock ---------------------------------------------------------------------

    def _now(self) -> datetime:
        return utc_now()

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

        Raises:
            AlreadyRunning: the service is running (or still shutting down).
        """
        with self._cond:
            if self._running or self._dispatcher is not None:
                raise AlreadyRunning("the scheduler is already running")
            self._running = True
            if self._token.is_set():
                self._token = threading.Event()
            prefix = self._config.thread_name_prefix
            self._executor = ThreadPoolExecutor(
                max_workers=self._config.max_workers, thread_name_prefix=f"{prefix}-worker"
            )
            self._dispatcher = threading.Thread(
                target=self._dispatch_loop, args=(self._token,),
                name=f"{prefix}-dispatcher", daemon=True,
            )
            # Occurrences missed while stopped are not caught up: start from now. Only
            # overdue entries are recomputed, so a big registry starts in milliseconds.
            now = self._observe_now()
            for entry in self._registry:
                if entry.next_run is not None and entry.next_run <= now:
                    self._reschedule(entry, now)
            dispatcher = self._dispatcher
        dispatcher.start()
        logger.info("scheduler started")
        self._emit([self._event(EventKind.SCHEDULER_STARTED)])

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Stop starting runs at once, wait for running jobs, and return.

        Sets ``shutdown_token`` and every running job's cancel token, then waits up to
        ``timeout`` seconds (default ``config.shutdown_timeout_secs``) for running jobs
        to return. Python threads cannot be killed: a job that ignores its token keeps
        its worker thread until it returns; its name is logged at WARNING.

        Raises:
            NotRunning: the service is not running.
            InvalidValue: ``timeout`` is negative or not a number.
        """
        if timeout is None:
            timeout = self._config.shutdown_timeout_secs
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            0 <= timeout <= threading.TIMEOUT_MAX
        ):
            raise InvalidValue(f"shutdown timeout {timeout!r}: expected a number >= 0")
        with self._cond:
            if not self._running:
                raise NotRunning("the scheduler is not running")
            self._running = False
            self._token.set()
            self._warming.set()  # a pool warm-up cut short must not hold a thread
            for run in self._active:
                run.cancelled = True
                if run.cancel is not None:
                    run.cancel.set()
            # Runs waiting for a worker, or for their jitter delay, are not started.
            for run in self._ready:
                self._release(run)
            self._ready.clear()
            for item in self._registry.drop(DELAYED_START):
                self._release(item[4])
            dispatcher, executor = self._dispatcher, self._executor
            self._cond.notify_all()
        assert dispatcher is not None and executor is not None
        logger.info("scheduler shutting down (timeout %.3gs)", timeout)
        # The dispatcher never runs user code, so it leaves within milliseconds.
        dispatcher.join(timeout)
        executor.shutdown(wait=False, cancel_futures=True)
        own = 1 if getattr(self._thread_state, "inside_task", False) else 0
        with self._cond:
            for future, is_drainer in self._futures:
                if future.cancelled():  # never started: settle its accounting here
                    self._drainers -= is_drainer
                    self._starting -= is_drainer
                    self._task_done()
            self._futures = []
            # Cleared here, not only after the wait: jobs that outlived an earlier
            # shutdown may have set it since.
            self._drained.clear()
            self._drain_target = own
            if self._tasks <= own:
                self._drained.set()
        # One wait for the whole remaining shutdown; Event.wait hands the timeout to a
        # lock acquire, which counts real time even under a frozen clock.
        finished = self._drained.wait(timeout)
        with self._cond:
            self._drained.clear()
            self._drain_target = 0
            stuck = sorted({run.entry.name for run in self._active if run.started})
            self._executor = None
            self._dispatcher = None
        if finished:
            # Every other task has returned, so the workers are just exiting; a job
            # that shuts down its own service cannot join its own thread.
            executor.shutdown(wait=not own)
            logger.info("scheduler shutdown complete")
        else:
            logger.warning(
                "scheduler shutdown timed out after %.3gs; still running: %s "
                "(their worker threads end when the jobs return)",
                timeout, ", ".join(stuck) or "event listeners",
            )
        self._emit([self._event(EventKind.SCHEDULER_SHUTDOWN)])

    def __enter__(self) -> SchedulerService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.is_running():
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
                     timezone: Union[str, Any, None] = None, **options: Any) -> uuid.UUID:
        """Add a job, as ``add_job(Job(name, cron_expr, job_fn, timezone, **options))``.

        ``options`` are Job's keyword options plus ``replace_existing``; an unknown
        option raises :class:`InvalidValue` naming it.
        """
        replace_existing = options.pop("replace_existing", False)
        if not isinstance(replace_existing, bool):
            raise InvalidValue(f"replace_existing={replace_existing!r}: expected a bool")
        for key in options:
            if key not in _OPTIONS:
                raise InvalidValue(
                    f"unknown job option {key!r}; known options: "
                    f"{', '.join(_OPTIONS)}, replace_existing"
                )
        # The checks Job() makes, without building one: registering a hundred
        # thousand jobs is measured in microseconds per job.
        check_job(name, cron_expr, job_fn, timezone)
        policy = make_policy(**options) if options else DEFAULT_POLICY
        return self._add(name, cron_expr, job_fn, timezone, policy, replace_existing)

    def _add(self, name: str, expression: str, func: Callable[[], object],
             timezone: Union[str, Any, None], policy: Policy, replace_existing: bool
             ) -> uuid.UUID:
        zone = self._default_zone if timezone is None else resolve_zone(timezone)
        schedule = CronSchedule.shared(expression, zone, name)
        events: List[Optional[SchedulerEvent]] = []
        with self._cond:
            old = self._registry.by_name(name)
            if old is None:
                job_id = new_job_id()
            elif replace_existing:
                self._registry.remove(old)
                job_id = old.id
                events.append(self._event(EventKind.JOB_REMOVED, old))
            else:
                raise DuplicateJob(
                    f"a job named {name!r} already exists (id {old.id}); "
                    "pass replace_existing=True to replace it"
                )
            entry = Entry(job_id, name, func, schedule, policy)
            self._registry.add(entry)
            self._reschedule(entry, self._observe_now())
            events.append(self._event(EventKind.JOB_ADDED, entry))
            self._cond.notify_all()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("added job %r (%s, %s)", name, expression, zone_name(zone))
        self._emit(events)
        return job_id

    def cron(self, expression: str, *, name: Optional[str] = None,
             timezone: Union[str, Any, None] = None, **options: Any) -> Callable[[F], F]:
        """Decorator: register the function as a cron job and return it unchanged.

        ``name`` defaults to the function's qualified name.
        """
        def register(func: F) -> F:
            job_name = name if name is not None else getattr(func, "__qualname__", repr(func))
            self.add_cron_job(job_name, expression, func, timezone, **options)
            return func

        return register

    def remove_job(self, key: JobKey) -> None:
        """Remove a job by id or name. A run already going finishes; no later run starts.

        Raises:
            JobNotFound: no such job.
        """
        with self._cond:
            entry = self._lookup(key)
            self._registry.remove(entry)
            entry.drop_backlog()
            event = self._event(EventKind.JOB_REMOVED, entry)
            self._cond.notify_all()
        self._emit([event])

    def pause_job(self, key: JobKey) -> None:
        """Stop future runs of a job without removing it. Raises JobNotFound."""
        with self._cond:
            entry = self._lookup(key)
            if entry.paused:
                return
            entry.paused = True
            entry.drop_backlog()
            self._registry.unschedule(entry)
            event = self._event(EventKind.JOB_PAUSED, entry)
            self._cond.notify_all()
        self._emit([event])

    def resume_job(self, key: JobKey) -> None:
        """Resume a paused job from now: missed occurrences are not caught up.

        Raises JobNotFound.
        """
        with self._cond:
            entry = self._lookup(key)
            if not entry.paused:
                return
            entry.paused = False
            self._reschedule(entry, self._observe_now())
            event = self._event(EventKind.JOB_RESUMED, entry)
            self._cond.notify_all()
        self._emit([event])

    def get_job(self, key: JobKey) -> JobInfo:
        """A frozen snapshot of one job. Raises JobNotFound."""
        with self._cond:
            return self._info(self._lookup(key))

    def jobs(self) -> List[JobInfo]:
        """Snapshots of every job, soonest next run first; paused jobs last."""
        with self._cond:
            infos = [self._info(entry) for entry in self._registry]
        far = datetime.max.replace(tzinfo=_UTC)
        return sorted(infos, key=lambda i: (i.next_run_time or far, i.name))

    def next_run_time(self) -> Optional[datetime]:
        """The earliest next run over all jobs (UTC), or None."""
        with self._cond:
            return self._registry.next_run()

    def run_job_now(self, key: JobKey) -> bool:
        """Start one run of a job at once, honouring its overlap policy; the schedule
        does not move. A paused job runs too. Returns False if the run was skipped.

        Raises:
            JobNotFound: no such job.
            NotRunning: the service is not running (use run_pending() in tests).
        """
        with self._cond:
            entry = self._lookup(key)
            if not self._running:
                raise NotRunning("run_job_now needs a running scheduler")
            now = self._now()
            work = _Work()
            if entry.running >= entry.policy.instance_limit:
                self._skip(entry, now, work)
                started = False
            else:
                run = self._reserve(entry, now)
                run.forced = True
                work.runs.append(run)
                started = True
        self._emit(work.events)
        self._submit(work.runs)
        return started

    # -- listeners ---------------------------------------------------------------------

    def add_listener(self, callback: Listener,
                     events: Optional[Iterable[Union[EventKind, str]]] = None) -> None:
        """Call ``callback(event)`` for each event of the given kinds (default: all).

        Listeners are called outside every lock, in registration order, from the
        thread that caused the event (a caller, a worker) or, for events the
        dispatcher decides (skipped, missed, timed out), from a pool worker. An
        exception in a listener is logged and ignored.
        """
        if not callable(callback):
            raise InvalidValue(f"listener {callback!r} is not callable")
        kinds: Optional[frozenset[EventKind]] = None
        if events is not None:
            if isinstance(events, (str, EventKind)):
                events = [events]
            try:
                kinds = frozenset(EventKind(e) for e in events)
            except ValueError as exc:
                raise InvalidValue(
                    f"unknown event kind in {events!r}; known: "
                    f"{', '.join(k.value for k in EventKind)}"
                ) from exc
        with self._cond:
            self._listeners = (*self._listeners, (callback, kinds))

    def remove_listener(self, callback: Listener) -> None:
        """Stop calling ``callback``. Raises InvalidValue if it was never added."""
        with self._cond:
            kept = tuple(item for item in self._listeners if item[0] != callback)
            if len(kept) == len(self._listeners):
                raise InvalidValue(f"listener {callback!r} is not registered")
            self._listeners = kept

    # -- synchronous driving (tests, simulations) -------------------------------------

    def run_pending(self) -> List[RunResult]:
        """Run every occurrence due now, in this thread, in scheduled-time order.

        Applies the same policies as the dispatcher (pause, overlap, misfire,
        coalesce, DST rules) except jitter, which is not applied. Works whether or
        not the service is started; an occurrence is handled by exactly one of
        run_pending() and the dispatcher. Returns what happened to each occurrence.
        """
        with self._cond:
            work = self._collect_due(self._observe_now(), sync=True)
        results = list(work.results)
        self._emit(work.events)
        for run in work.runs:
            results.extend(self._execute(run, reraise=True))
        return results

    # -- internals: under the lock -----------------------------------------------------

    def _lookup(self, key: JobKey) -> Entry:
        entry: Optional[Entry] = None
        if isinstance(key, uuid.UUID):
            entry = self._registry.get(key)
        elif isinstance(key, str):
            entry = self._registry.by_name(key)
            if entry is None:
                try:
                    entry = self._registry.get(uuid.UUID(key))
                except ValueError:
                    entry = None
        else:
            raise InvalidValue(f"job key {key!r}: expected a UUID or a job name")
        if entry is None:
            raise JobNotFound(f"no job with id or name {str(key)!r}")
        return entry

    def _observe_now(self) -> datetime:
        """Read the clock; after a backward jump, recompute every schedule."""
        now = self._now()
        last = self._last_now
        self._last_now = now
        if last is not None and now < last - _BACKWARD_JUMP:
            logger.info("clock moved back by %s; recomputing schedules", last - now)
            for entry in self._registry:
                if not entry.paused:
                    self._reschedule(entry, now)
        return now

    def _reschedule(self, entry: Entry, now: datetime) -> None:
        base = now
        last_fired = entry.seen.last_fired
        if entry.schedule.fixed_time and last_fired is not None:
            # A fixed-time job never reruns an occurrence, even if the clock went back.
            base = max(now, last_fired)
        self._registry.schedule(entry, entry.schedule.next_utc(base))

    def _collect_due(self, now: datetime, sync: bool) -> _Work:
        work = _Work(sync=sync)
        ts = now.timestamp()
        while True:
            item = self._registry.pop_due(ts)
            if item is None:
                break
            kind, entry, payload = item[2], item[3], item[4]
            if kind == TICK:
                assert entry is not None
                self._fire(entry, now, work, sync)
            elif kind == DELAYED_START:
                work.runs.append(payload)  # its jitter delay has passed
            elif kind == TIMEOUT:
                self._time_out(payload, now, work)
        return work

    def _fire(self, entry: Entry, now: datetime, work: _Work, sync: bool) -> None:
        """Decide what a due occurrence becomes, then schedule the next one."""
        policy = entry.policy
        first = entry.next_run
        assert first is not None
        grace = policy.misfire_grace_secs
        # Occurrences up to now that are still within the grace, oldest first.
        due: List[datetime] = []
        earliest = first if grace is None else max(first, now - timedelta(seconds=grace))
        missed = earliest > first
        candidate = first if earliest == first else self._first_at_or_after(entry, earliest)
        limit = 1 if policy.coalesce else MAX_CATCHUP_RUNS
        while candidate <= now:
            due.append(candidate)
            if len(due) == limit:
                # With coalesce=False, more than the catch-up bound is one missed batch.
                missed = missed or (
                    not policy.coalesce
                    and entry.schedule.next_utc(candidate) <= now)
                break
            candidate = entry.schedule.next_utc(candidate)
        stats = entry.stats
        stats.last_fired = due[-1] if due else first
        self._reschedule(entry, now)
        if missed or not due:
            self._miss(entry, first, now, work)
        if not due:
            return
        if entry.running >= policy.instance_limit:
            self._skip(entry, due[0], work)
            return
        run = self._reserve(entry, due[0])
        if len(due) > 1:
            stats.backlog = deque(due[1:])
        if policy.jitter_secs and not sync:
            delay = self._random.uniform(0, policy.jitter_secs)
            self._registry.push(ts_plus(now, delay), DELAYED_START, entry, run)
        else:
            work.runs.append(run)

    def _first_at_or_after(self, entry: Entry, when: datetime) -> datetime:
        return entry.schedule.next_utc(when - timedelta(microseconds=1))

    def _reserve(self, entry: Entry, scheduled: datetime) -> _Run:
        run = _Run(entry=entry, scheduled=scheduled)
        entry.running += 1
        self._active[run] = None
        return run

    def _release(self, run: _Run) -> None:
        if run.done:
            return
        run.done = True
        run.entry.running -= 1
        self._active.pop(run, None)

    def _skip(self, entry: Entry, scheduled: datetime, work: _Work) -> None:
        stats = entry.stats
        stats.skip_count += 1
        level = logging.DEBUG if stats.skip_warned else logging.WARNING
        stats.skip_warned = True
        if logger.isEnabledFor(level):
            logger.log(level, "job %r skipped: its previous run is still going "
                       "(further skips in a row are logged at DEBUG)", entry.name,
                       extra=_extra(entry, "run_skipped", scheduled=scheduled))
        self._not_run(entry, scheduled, RunStatus.SKIPPED, EventKind.RUN_SKIPPED, work)

    def _miss(self, entry: Entry, scheduled: datetime, now: datetime, work: _Work) -> None:
        stats = entry.stats
        stats.missed_count += 1
        level = logging.DEBUG if stats.missed_warned else logging.WARNING
        stats.missed_warned = True
        if logger.isEnabledFor(level):
            logger.log(level, "job %r missed its run at %s: %s late, more than its "
                       "misfire grace of %ss", entry.name, self._local(entry, scheduled),
                       now - scheduled, entry.policy.misfire_grace_secs,
                       extra=_extra(entry, "run_missed", scheduled=scheduled,
                                    late_secs=(now - scheduled).total_seconds()))
        self._not_run(entry, scheduled, RunStatus.MISSED, EventKind.RUN_MISSED, work)

    def _not_run(self, entry: Entry, scheduled: datetime, status: RunStatus,
                 kind: EventKind, work: _Work) -> None:
        """What a skipped or missed occurrence leaves: the job's last status, an event,
        and for run_pending() a result (the caller counts and logs it)."""
        stats = entry.stats
        stats.last_status = status
        stats.last_scheduled_time = scheduled
        work.events.append(self._event(kind, entry, scheduled))
        if work.sync:
            work.results.append(self._result(entry, scheduled, status))

    def _time_out(self, run: _Run, now: datetime, work: _Work) -> None:
        if run.done or run.timed_out:
            return
        entry = run.entry
        run.timed_out = True
        run.cancelled = True
        if run.cancel is not None:
            run.cancel.set()
        stats = entry.stats
        stats.timeout_count += 1
        stats.last_status = RunStatus.TIMED_OUT
        logger.warning("job %r (run scheduled %s) timed out after %ss; its token is set, "
                       "its overlap slot is freed when it returns",
                       entry.name, self._local(entry, run.scheduled), entry.policy.timeout_secs,
                       extra=_extra(entry, "run_timed_out", scheduled=run.scheduled))
        work.events.append(self._event(EventKind.RUN_TIMED_OUT, entry, run.scheduled))

    def _sleep_for(self, now: datetime) -> Tuple[float, bool]:
        """How long to wait, and whether this is the final wait before a due instant."""
        wait = self._config.max_sleep_secs
        final = False
        when = self._registry.peek_time()
        if when is not None:
            remaining = max(0.0, when - now.timestamp())
            if remaining > _FINAL_WAIT:
                # Wake a little early and finish with a short wait: after a long
                # sleep the thread wakes up to ~0.7 ms late, after a short one ~0.1 ms.
                remaining -= _FINAL_WAIT
            else:
                final = True
            wait = min(wait, remaining)
        return min(wait, threading.TIMEOUT_MAX), final

    def _prepare_next(self) -> None:
        """Before the final wait: compute the next runs of the coming instant's
        schedules now, so that handing it over finds them memoised (the first
        computation after a sleep runs on cold caches, ~0.1 ms)."""
        for schedule, instant in self._registry.coming_schedules():
            try:
                schedule.next_utc(instant)
            except SchedulerError:  # no run after it: firing reports that
                pass

    def _local(self, entry: Entry, when: datetime) -> datetime:
        return when.astimezone(entry.schedule.timezone)

    def _event(self, kind: EventKind, entry: Optional[Entry] = None,
               scheduled: Optional[datetime] = None,
               exc: Optional[BaseException] = None) -> Optional[SchedulerEvent]:
        """The event to deliver, or None when nobody listens (the common, fast case)."""
        if not self._listeners:
            return None
        return SchedulerEvent(
            kind=kind, time=self._now(),
            job_id=entry.id if entry else None, job_name=entry.name if entry else None,
            scheduled_time=self._local(entry, scheduled) if entry and scheduled else None,
            exception=exc,
        )

    def _result(self, entry: Entry, scheduled: datetime, status: RunStatus,
                error: Optional[str] = None) -> RunResult:
        return RunResult(entry.id, entry.name, self._local(entry, scheduled), status, error)

    def _info(self, e: Entry) -> JobInfo:
        policy = e.policy
        st = e.seen
        local = self._local
        return JobInfo(
            id=e.id, name=e.name, expression=e.schedule.expression,
            timezone=e.schedule.zone_name,
            next_run_time=None if e.next_run is None or e.paused else local(e, e.next_run),
            paused=e.paused, running=e.running, run_count=st.run_count,
            failure_count=st.failure_count, skip_count=st.skip_count,
            missed_count=st.missed_count, timeout_count=st.timeout_count,
            last_scheduled_time=(None if st.last_scheduled_time is None
                                 else local(e, st.last_scheduled_time)),
            last_started=st.last_started, last_finished=st.last_finished,
            last_duration=st.last_duration, last_status=st.last_status,
            last_error=st.last_error, overlap=policy.overlap, max_instances=policy.max_instances,
            misfire_grace_secs=policy.misfire_grace_secs, coalesce=policy.coalesce,
            jitter_secs=policy.jitter_secs, timeout_secs=policy.timeout_secs,
        )

    # -- internals: the dispatcher thread --------------------------------------------

    def _dispatch_loop(self, token: threading.Event) -> None:
        warm = False  # the pool has made its first threads (see _warm_pool)
        try:
            while True:
                with self._cond:
                    if token.is_set():
                        return
                    now = self._observe_now()
                    work = self._collect_due(now, sync=False)
                    if not work:
                        wait, final = self._sleep_for(now)
                        if warm or not final:
                            if final:
                                self._prepare_next()
                            self._cond.wait(wait)
                            continue
                        executor = self._executor
                # Outside the lock; the clock is re-read before the next wait.
                if work:
                    self._hand_over(work)
                else:
                    warm = True
                    if executor is not None:
                        self._warm_pool(executor)
        except BaseException:  # pragma: no cover - a bug in the dispatcher itself
            logger.critical("scheduler dispatcher crashed", exc_info=True)
            raise

    def _warm_pool(self, executor: ThreadPoolExecutor) -> None:
        """Have the pool make its first two threads just before the first due instant
        rather than on it: ThreadPoolExecutor makes a thread when work finds none
        idle, and the submitter waits ~0.2 ms for it to come up, which would make those
        runs late. (Not at start(): a service that never runs a job has no thread to
        join at shutdown.)"""
        wanted = min(2, self._config.max_workers)
        arrived: List[None] = []  # list.append is atomic
        with self._cond:
            if not self._running:
                return
            together = self._warming = threading.Event()  # shutdown() sets it too

        def arrive(_: None) -> None:
            arrived.append(None)
            if len(arrived) == wanted:
                together.set()
            # Hold this thread until the other task has one too, so that the pool
            # makes two (bounded, in case the pool refused the other one).
            together.wait(0.1)

        for _ in range(wanted):
            self._try_submit(executor, arrive, None)

    def _hand_over(self, work: _Work) -> None:
        """Hand runs to the pool, and the listener calls for the events the
        dispatcher made, since it never runs user code itself (no lock held)."""
        self._submit(work.runs, work.events if any(work.events) else None)

    def _submit(self, runs: Sequence[_Run],
                events: Optional[List[Optional[SchedulerEvent]]] = None) -> None:
        deliver = events is not None and bool(self._listeners)
        if not runs and not deliver:
            return
        with self._cond:
            executor = self._executor
            if executor is None or not self._running:
                for run in runs:
                    self._release(run)
                return
            self._ready.extend(runs)
            # One drainer from here; each drainer that takes a run while more wait
            # starts the next (_want_drainer). Submitting all of them here would keep
            # this thread busy, holding the GIL, while the first worker waits for it.
            spawn = self._want_drainer() is not None
            self._tasks += deliver
        if spawn or deliver:
            self._spawn(executor, spawn, events if deliver else None)

    def _want_drainer(self) -> Optional[ThreadPoolExecutor]:
        """Under the lock: count one more drainer if ready runs outnumber the drainers
        about to take one and the pool has room; the caller submits it."""
        if (self._executor is None or not self._running or self._starting
                or len(self._ready) <= self._drainers - self._busy
                or self._drainers >= self._config.max_workers):
            return None
        # One start at a time: a worker woken for a drainer needs the GIL, and each
        # further wake-up queued behind it only adds contention. Once it has started,
        # it starts the next if runs are still waiting.
        self._drainers += 1
        self._starting += 1
        self._tasks += 1
        return self._executor

    def _spawn(self, executor: ThreadPoolExecutor, drainer: bool,
               events: Optional[List[Optional[SchedulerEvent]]] = None) -> None:
        """Submit a drainer and/or a delivery counted under the lock (no lock held)."""
        submitted = []
        if drainer:
            submitted.append((self._try_submit(executor, self._drain, None), True))
        if events is not None:
            submitted.append((self._try_submit(executor, self._deliver, events), False))
        with self._cond:
            for future, is_drainer in submitted:
                if future is None or (not self._running and future.cancelled()):
                    # The pool refused it, or shutdown() cancelled it after settling
                    # the cancelled ones: it never runs.
                    self._drainers -= is_drainer
                    self._starting -= is_drainer
                    self._task_done()
                    continue
                if len(self._futures) >= 64:
                    self._futures = [f for f in self._futures if not f[0].done()]
                self._futures.append((future, is_drainer))
            if self._drainers == 0:  # every drainer refused: nobody will take these
                for run in self._ready:
                    self._release(run)
                self._ready.clear()

    @staticmethod
    def _try_submit(executor: ThreadPoolExecutor, fn: Callable[[Any], object],
                    arg: Any) -> Optional[Future[object]]:
        try:
            return executor.submit(fn, arg)
        except RuntimeError:  # shutdown() won the race: the pool refuses new work
            return None

    def _task_done(self) -> None:
        self._tasks -= 1
        if self._tasks <= self._drain_target and not self._running:
            self._drained.set()

    # -- internals: worker threads ----------------------------------------------------

    def _deliver(self, events: List[Optional[SchedulerEvent]]) -> None:
        """A pool task delivering events to listeners."""
        self._thread_state.inside_task = True
        try:
            self._emit(events)
        finally:
            self._thread_state.inside_task = False
            with self._cond:
                self._task_done()

    def _drain(self, _: None) -> None:
        """A pool task: run ready runs until there are none (settled in _execute)."""
        self._thread_state.inside_task = True
        try:
            self._execute(None, drain=True)
        finally:
            self._thread_state.inside_task = False

    def _execute(self, first: Optional[_Run], reraise: bool = False,
                 drain: bool = False) -> List[RunResult]:
        """Run ``first``, then the job's catch-up backlog, in this thread; with
        ``drain``, then take further runs from ``_ready`` until it is empty.

        One lock round per run: recording a finished run and starting the next one
        share it (ten workers in a burst otherwise queue on the lock twice a run).
        """
        results: List[RunResult] = []
        with self._cond:
            run, ctx, helper = self._next_run(first, drain, was_busy=False)
        while run is not None and ctx is not None:
            if helper is not None:
                self._spawn(helper, True)
            entry = run.entry
            if logger.isEnabledFor(logging.INFO):
                logger.info("job %r started (scheduled %s)", entry.name, ctx.scheduled_time,
                            extra=_extra(entry, "run_started", scheduled=run.scheduled))
            if self._listeners:
                self._emit([self._event(EventKind.RUN_STARTED, entry, run.scheduled)])
            exc = call_job(entry.func, ctx)
            with self._cond:
                status, duration, backlog_run = self._record_finish(run, exc)
                following, following_ctx, helper = self._next_run(backlog_run, drain,
                                                                  was_busy=True)
            self._log_finish(run, exc, duration)
            results.append(RunResult(ctx.job_id, ctx.job_name, ctx.scheduled_time, status,
                                     describe_error(exc) if exc else None))
            if self._listeners:
                kind = EventKind.RUN_SUCCEEDED if exc is None else EventKind.RUN_FAILED
                self._emit([self._event(kind, entry, run.scheduled, exc)])
            if exc is not None and reraise and not isinstance(exc, Exception):
                raise exc  # KeyboardInterrupt / SystemExit in the caller's own thread
            run, ctx = following, following_ctx
        return results

    def _next_run(self, run: Optional[_Run], drain: bool, was_busy: bool
                  ) -> Tuple[Optional[_Run], Optional[RunContext],
                             Optional[ThreadPoolExecutor]]:
        """Under the lock: start ``run`` or, when draining, the next ready run that may
        start. A drainer counts in ``_busy`` while it holds a run; one that finds
        nothing left ends its pool task here. The third value, when set, is the pool
        to submit one more drainer to (more runs wait than drainers can take)."""
        if drain:
            if was_busy:
                self._busy -= 1
            else:
                self._starting -= 1
        while True:
            if run is None and drain and self._ready:
                run = self._ready.popleft()
            if run is None:
                if drain:
                    self._drainers -= 1
                    self._task_done()
                return None, None, None
            if self._may_start(run):
                helper = None
                if drain:
                    self._busy += 1
                    helper = self._want_drainer()
                return run, self._start(run), helper
            self._release(run)
            run = None

    def _start(self, run: _Run) -> RunContext:
        """Under the lock: the bookkeeping of a run about to call its job."""
        entry = run.entry
        started = self._now()
        run.started = started
        stats = entry.stats
        stats.run_count += 1
        stats.skip_warned = stats.missed_warned = False
        stats.last_started = started
        stats.last_scheduled_time = run.scheduled
        if entry.policy.timeout_secs is not None:
            self._registry.push(ts_plus(started, entry.policy.timeout_secs), TIMEOUT, entry, run)
            self._cond.notify_all()
        run.cancel = threading.Event()
        return RunContext(entry.id, entry.name, self._local(entry, run.scheduled), run.cancel)

    def _may_start(self, run: _Run) -> bool:
        entry = run.entry
        if run.cancelled or not self._registry.is_live(entry):
            return False
        return run.forced or not entry.paused

    def _record_finish(self, run: _Run, exc: Optional[BaseException]
                       ) -> Tuple[RunStatus, timedelta, Optional[_Run]]:
        """Under the lock: record a finished run; return its status, its duration and
        the job's next catch-up run, which keeps this run's overlap slot."""
        entry = run.entry
        finished = self._now()
        assert run.started is not None
        duration = finished - run.started
        stats = entry.stats
        stats.last_finished = finished
        stats.last_duration = duration
        if exc is not None:
            stats.failure_count += 1
            stats.last_error = describe_error(exc)
        if run.timed_out:
            status = RunStatus.TIMED_OUT
        elif exc is not None:
            status = RunStatus.FAILED
            stats.last_status = status
        else:
            status = RunStatus.SUCCESS
            stats.last_status = status
        if stats.backlog and self._running_or_sync() and self._registry.is_live(entry):
            self._active.pop(run, None)
            run.done = True
            next_run = _Run(entry=entry, scheduled=stats.backlog.popleft())
            self._active[next_run] = None
            return status, duration, next_run
        self._release(run)
        return status, duration, None

    def _log_finish(self, run: _Run, exc: Optional[BaseException],
                    duration: timedelta) -> None:
        entry = run.entry
        if exc is not None:
            logger.error("job %r failed after %s", entry.name, duration,
                         exc_info=(type(exc), exc, exc.__traceback__),
                         extra=_extra(entry, "run_failed", scheduled=run.scheduled,
                                      duration_secs=duration.total_seconds(),
                                      error=describe_error(exc)))
        elif logger.isEnabledFor(logging.INFO):
            logger.info("job %r finished in %s%s", entry.name, duration,
                        " (after its timeout)" if run.timed_out else "",
                        extra=_extra(entry, "run_succeeded", scheduled=run.scheduled,
                                     duration_secs=duration.total_seconds()))

    def _running_or_sync(self) -> bool:
        # A stopped service still works through a backlog started by run_pending().
        return self._running or self._dispatcher is None

    # -- internals: listeners ---------------------------------------------------------

    def _emit(self, events: Sequence[Optional[SchedulerEvent]]) -> None:
        listeners = self._listeners
        if not listeners:
            return
        for event in events:
            if event is None:
                continue
            for callback, kinds in listeners:
                if kinds is not None and event.kind not in kinds:
                    continue
                try:
                    callback(event)
                except BaseException as exc:
                    logger.error("listener %r raised on %s", callback, event.kind,
                                 exc_info=(type(exc), exc, exc.__traceback__))
                    if not isinstance(exc, Exception) and (
                        threading.current_thread() is threading.main_thread()
                    ):
                        raise  # Ctrl-C in the caller's own thread still stops it


def _extra(entry: Entry, event: str, scheduled: Optional[datetime] = None,
           **fields: object) -> Dict[str, object]:
    """Structured fields for log records (``record.job``, ``record.event``,
    ``record.fields``), for handlers that emit JSON."""
    if scheduled is not None:
        fields["scheduled"] = scheduled.astimezone(entry.schedule.timezone).isoformat()
    return {"job": entry.name, "event": event, "fields": fields}


def ts_plus(when: datetime, seconds: float) -> float:
    return when.timestamp() + seconds


_POSITIONAL = ("name", "expression", "func", "timezone")
_OPTIONS = tuple(f for f in Job.__dataclass_fields__ if f not in _POSITIONAL)


