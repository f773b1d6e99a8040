"""What a due occurrence becomes: run, skipped or missed.

:func:`decide` is the policy as a pure function (misfire grace, coalescing, the
catch-up bound, overlap), tested by tables without threads. :class:`Firing` applies it
to the registry: every method expects the caller to hold the service lock, and writes
what users should hear about into an :class:`~memory_scheduler.events.Outbox` instead
of logging or calling listeners there.
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import datetime, timedelta
from typing import Callable, List, NamedTuple, Optional, Tuple

from .clock import ClockWatch, utc_now
from .cron import CronSchedule
from .errors import InvalidValue
from .events import EventKind, Outbox, logger
from .job import RunResult, RunStatus
from .registry import Entry, Registry, TimerKind
from .runs import Run, RunBook, log_extra
from .timezones import to_local

__all__ = ["MAX_CATCHUP_RUNS", "MAX_MISSED_LISTED", "SLICE", "SLICE_PAUSE", "Collected",
           "Decision", "Firing", "decide"]

#: Due items handled per lock hold. A big instant (200,000 jobs at once) is handed over
#: in slices, so that public calls and shutdown() get the lock within milliseconds.
SLICE = 1000
#: Seconds the collector steps aside between two slices, so that a waiting thread gets
#: the lock (Python's Lock is not fair). 10,000 jobs at once: 10 slices, ~5 ms.
SLICE_PAUSE = 0.0005
#: With ``coalesce=False``, the most missed occurrences one wake-up runs per job; the
#: rest are recorded as missed. A long suspend never queues thousands.
MAX_CATCHUP_RUNS = 100
#: The most missed occurrences one wake-up counts one by one per job (coalesce=False);
#: an outage longer than that is counted as this many and logged as "at least".
MAX_MISSED_LISTED = 1000

NextAfter = Callable[[datetime], Optional[datetime]]


class Decision(NamedTuple):
    """What happens to a job's occurrences from its first due one up to now (UTC)."""

    run: Tuple[datetime, ...]  # run these, oldest first, one after the other
    skipped: Tuple[datetime, ...]  # not run: the job is at its overlap limit
    missed: Tuple[datetime, ...]  # not run: later than the grace, or past the bound
    more_missed: bool  # more were missed than MAX_MISSED_LISTED
    last: datetime  # the latest occurrence decided on


def decide(next_after: NextAfter, first: datetime, now: datetime, *,
           grace: Optional[float], coalesce: bool, busy: bool,
           limit: int = MAX_CATCHUP_RUNS) -> Decision:
    """Decide the fate of the occurrences ``first``, ``next_after(first)``, ... <= ``now``.

    ``next_after(t)`` is the first occurrence strictly after ``t``, or None. With a
    ``grace``, occurrences older than ``now - grace`` are missed. With ``coalesce`` the
    oldest occurrence within the grace runs for all of them, and one late occurrence is
    reported for the late ones; without it each runs, up to ``limit``, and each of the
    others is missed. ``busy`` (the job is at its overlap limit) turns runs into skips.
    """
    cutoff = None if grace is None else now - timedelta(seconds=grace)
    if coalesce and (cutoff is None or first >= cutoff):
        # The common case, kept cheap (10,000 jobs may share an instant): whatever else
        # is due up to now, the first occurrence runs (or is skipped) for all of them.
        return Decision((), (first,), (), False, first) if busy else Decision(
            (first,), (), (), False, first)
    missed: List[datetime] = []
    more_missed = False
    occurrence: Optional[datetime] = first
    if cutoff is not None and first < cutoff:
        if coalesce:
            missed.append(first)
        else:
            while occurrence is not None and occurrence < cutoff and (
                    len(missed) < MAX_MISSED_LISTED):
                missed.append(occurrence)
                occurrence = next_after(occurrence)
            more_missed = occurrence is not None and occurrence < cutoff
        if occurrence is not None and occurrence < cutoff:
            occurrence = next_after(cutoff - timedelta(microseconds=1))
    due: List[datetime] = []
    bound = 1 if coalesce else limit
    full = False
    while occurrence is not None and occurrence <= now:
        due.append(occurrence)
        if len(due) == bound:
            # Stop before asking for the next one: that question would miss the
            # schedule's memo, which the jobs sharing it at this instant all hit.
            full = True
            break
        occurrence = next_after(occurrence)
    if full and not coalesce:
        occurrence = next_after(due[-1])
        while occurrence is not None and occurrence <= now and not more_missed:
            if len(missed) == MAX_MISSED_LISTED:
                more_missed = True
                break
            missed.append(occurrence)
            occurrence = next_after(occurrence)
    last = due[-1] if due else first
    if busy:
        return Decision((), tuple(due), tuple(missed), more_missed, last)
    return Decision(tuple(due), (), tuple(missed), more_missed, last)


def next_or_none(schedule: CronSchedule, after: datetime) -> Optional[datetime]:
    """The schedule's next occurrence (UTC) after ``after``, None past year 9999."""
    try:
        return schedule.next_utc(after)
    except InvalidValue:  # "has no run after": the only error for an aware UTC input
        return None


class Collected(NamedTuple):
    """What one pass over the due items decided."""

    runs: List[Run]  # reserved; to hand over
    not_run: List[Tuple[Entry, datetime, RunStatus]]  # skipped/missed, for run_pending
    more: bool  # the pass stopped at its budget: more items are due


class Firing:
    """The under-the-lock steps that apply :func:`decide` and the per-run timers."""

    def __init__(self, registry: Registry, book: RunBook, rng: random.Random) -> None:
        self._registry = registry
        self._book = book
        self._random = rng
        self._clock = ClockWatch()
        # With a run store: skipped and missed occurrences for it to record (the
        # claimer takes them, outside the lock). None: nobody records them.
        self.marks: Optional[List[Tuple[Entry, datetime, RunStatus]]] = None

    def observe(self, now: datetime, outbox: Outbox) -> None:
        """Caller holds the lock: after a backward clock jump, recompute every schedule
        and move the per-run timers to the new timeline."""
        jump = self._clock.observe(now)
        if jump is None:
            return
        outbox.log(logging.INFO, "clock moved back by %s; recomputing schedules", jump)
        self._registry.shift_timers(-jump.total_seconds())
        for entry in self._registry:
            try:
                if entry.ended:  # its schedule may have runs again; it was reported once
                    following = next_or_none(entry.schedule, now)
                    if following is not None:
                        self._registry.schedule(entry, following)
                elif not entry.paused:
                    self.reschedule(entry, now, outbox)
            except Exception as exc:  # noqa: BLE001 - one job's error ends that job only
                self.end(entry, outbox, exc)

    def reschedule(self, entry: Entry, now: datetime, outbox: Outbox) -> None:
        """Caller holds the lock: schedule the entry's first occurrence after ``now``."""
        base = now
        last_fired = entry.stats.last_fired
        if entry.schedule.fixed_time and last_fired is not None:
            # A fixed-time job never reruns an occurrence, even if the clock went back.
            base = max(now, last_fired)
        following = next_or_none(entry.schedule, base)
        if following is None:
            self.end(entry, outbox)
        else:
            self._registry.schedule(entry, following)

    def end(self, entry: Entry, outbox: Outbox, exc: Optional[Exception] = None) -> None:
        """Caller holds the lock: the job has no next run (its schedule ended, or
        handling it failed); it stays registered."""
        self._registry.unschedule(entry)  # which makes it ``ended``
        if exc is None:
            outbox.log(logging.WARNING, "job %r has no further occurrence; it will not run "
                       "again", entry.name, extra=log_extra(entry, "job_ended"))
        else:
            outbox.log(logging.ERROR, "scheduling job %r failed; it will not run again",
                       entry.name, exc_info=(type(exc), exc, exc.__traceback__),
                       extra=log_extra(entry, "job_ended"))
        outbox.event(EventKind.JOB_ENDED, entry, exc=exc)

    def collect_due(self, now: datetime, outbox: Outbox, *, sync: bool, budget: int,
                    runs: Optional[List[Run]] = None) -> Collected:
        """Caller holds the lock: handle up to ``budget`` due items, appending the runs to
        ``runs`` (a list of the caller's, so that an interrupt loses none of them). An
        error in one job's handling ends that job only."""
        runs = [] if runs is None else runs
        not_run: List[Tuple[Entry, datetime, RunStatus]] = []
        ts = now.timestamp()
        for _ in range(budget):
            item = self._registry.pop_due(ts)
            if item is None:
                return Collected(runs, not_run, False)
            try:
                if item.kind is TimerKind.OCCURRENCE:
                    assert item.entry is not None
                    run = self.fire(item.entry, now, outbox, not_run if sync else None)
                    if run is not None:
                        runs.append(run)
                elif item.kind is TimerKind.DELAYED_START:
                    runs.append(item.payload)  # its jitter delay has passed
                else:
                    self.time_out(item.payload, outbox)
            except Exception as exc:  # noqa: BLE001 - one job's error ends that job only
                if item.entry is not None:
                    self.end(item.entry, outbox, exc)
            except BaseException:  # KeyboardInterrupt in run_pending(): put it back
                entry = item.entry
                if item.kind is TimerKind.OCCURRENCE and entry is not None and (
                        entry.bucket is None and entry.next_run is not None):
                    self._registry.schedule(entry, entry.next_run)
                raise
        return Collected(runs, not_run, True)

    def collect_all(self, cond: threading.Condition, outbox: Outbox, runs: List[Run]
                    ) -> List[RunResult]:
        """For run_pending() (no lock held): collect everything due into ``runs``, a
        slice at a time so that other threads get the lock in between. Returns the
        results of the occurrences that do not run. The clock is read under the lock,
        once: an earlier reading could be older than one the dispatcher has seen, and
        look like the clock going back."""
        results: List[RunResult] = []
        now: Optional[datetime] = None
        more = True
        pause = threading.Event()
        while more:
            if now is not None:
                pause.wait(SLICE_PAUSE)  # see SLICE_PAUSE
            with cond:
                if now is None:
                    now = utc_now()
                    self.observe(now, outbox)
                collected = self.collect_due(now, outbox, sync=True, budget=SLICE, runs=runs)
            more = collected.more
            results.extend(RunResult(e.id, e.name, to_local(when, e.schedule.timezone), status)
                           for e, when, status in collected.not_run)
        return results

    def fire(self, entry: Entry, now: datetime, outbox: Outbox,
             not_run: Optional[List[Tuple[Entry, datetime, RunStatus]]]) -> Optional[Run]:
        """Caller holds the lock: apply :func:`decide` to a due entry and schedule its
        next occurrence. Returns the run to hand over now, if any."""
        policy = entry.policy
        first = entry.next_run
        assert first is not None
        schedule = entry.schedule
        decision = decide(lambda t: next_or_none(schedule, t), first, now,
                          grace=policy.misfire_grace_secs, coalesce=policy.coalesce,
                          busy=entry.running >= policy.instance_limit)
        entry.stats_for_update().last_fired = decision.last
        self.reschedule(entry, now, outbox)
        if decision.missed:
            self._missed(entry, decision, now, outbox, not_run)
        for scheduled in decision.skipped:
            self.skip(entry, scheduled, outbox, not_run)
        if not decision.run:
            return None
        run = self._book.reserve(entry, decision.run[0], decision.run[1:])
        if policy.jitter_secs and not_run is None:
            delay = self._random.uniform(0, policy.jitter_secs)
            self._registry.push(now.timestamp() + delay, TimerKind.DELAYED_START, entry, run)
            return None
        return run

    def time_out(self, run: Run, outbox: Outbox) -> None:
        """Caller holds the lock: a run has been going for its timeout."""
        if run.done or run.timed_out:
            return
        entry = run.entry
        run.timed_out = run.cancelled = True
        if run.cancel is not None:
            run.cancel.set()
        stats = entry.stats_for_update()
        stats.timeout_count += 1
        stats.last_status = RunStatus.TIMED_OUT
        outbox.log(logging.WARNING, "job %r (run scheduled %s) timed out after %ss; its token "
                   "is set, its overlap slot is freed when it returns", entry.name,
                   to_local(run.scheduled, entry.schedule.timezone), entry.policy.timeout_secs,
                   extra=log_extra(entry, "run_timed_out", scheduled=run.scheduled))
        outbox.event(EventKind.RUN_TIMED_OUT, entry, run.scheduled)

    def skip(self, entry: Entry, scheduled: datetime, outbox: Outbox,
             not_run: Optional[List[Tuple[Entry, datetime, RunStatus]]],
             occurrence: bool = True) -> None:
        """Caller holds the lock. ``occurrence``: ``scheduled`` is an occurrence of the
        schedule (not run_job_now's instant), which a run store may record."""
        stats = entry.stats_for_update()
        stats.skip_count += 1
        level = logging.DEBUG if stats.skip_warned else logging.WARNING
        stats.skip_warned = True
        outbox.log(level, "job %r skipped: its previous run is still going (further skips "
                   "in a row are logged at DEBUG)", entry.name,
                   extra=log_extra(entry, "run_skipped", scheduled=scheduled))
        self._not_run(entry, scheduled, RunStatus.SKIPPED, EventKind.RUN_SKIPPED, outbox,
                      not_run, occurrence)

    def _missed(self, entry: Entry, decision: Decision, now: datetime, outbox: Outbox,
                not_run: Optional[List[Tuple[Entry, datetime, RunStatus]]]) -> None:
        stats = entry.stats_for_update()
        missed = decision.missed
        stats.missed_count += len(missed)
        level = logging.DEBUG if stats.missed_warned else logging.WARNING
        stats.missed_warned = True
        if logger.isEnabledFor(level):
            first = missed[0]
            count = f"{'at least ' if decision.more_missed else ''}{len(missed)} runs from"
            outbox.log(level, "job %r missed its run at %s: %s late, more than its misfire "
                       "grace of %ss" if len(missed) == 1 and not decision.more_missed else
                       f"job %r missed {count} %s: %s late, past its misfire grace of %ss "
                       "or its catch-up bound", entry.name,
                       to_local(first, entry.schedule.timezone), now - first,
                       entry.policy.misfire_grace_secs,
                       extra=log_extra(entry, "run_missed", scheduled=first,
                                       late_secs=(now - first).total_seconds(),
                                       count=len(missed)))
        for scheduled in missed:
            self._not_run(entry, scheduled, RunStatus.MISSED, EventKind.RUN_MISSED, outbox,
                          not_run)

    def _not_run(self, entry: Entry, scheduled: datetime, status: RunStatus, kind: EventKind,
                 outbox: Outbox, not_run: Optional[List[Tuple[Entry, datetime, RunStatus]]],
                 occurrence: bool = True) -> None:
        """What a skipped or missed occurrence leaves: the job's last status, an event,
        and for run_pending() a result."""
        stats = entry.stats_for_update()
        stats.last_status = status
        stats.last_scheduled_time = scheduled
        outbox.event(kind, entry, scheduled)
        if not_run is not None:
            not_run.append((entry, scheduled, status))
        if self.marks is not None and occurrence:
            self.marks.append((entry, scheduled, status))
