"""The job registry: entries by id and name, and a heap of timed work.

Plain data: no threads, no clock, no locking. The caller holds the service lock around
every call and every read or write of an ``Entry`` field.

Invariants (checked by :meth:`Registry.check_invariants`):

* an entry is scheduled iff its ``bucket`` is set, and then it is in that bucket and
  ``next_run`` is the bucket's instant; a reference to it in any other bucket is stale;
* every open bucket has exactly one heap item, and ``_live`` / ``_refs`` count the
  live and all (live or stale) references in the open and draining buckets.
"""

from __future__ import annotations

import enum
import heapq
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

from .cron import CronSchedule
from .errors import InvalidValue, JobNotFound
from .job import JobInfo, Policy, RunStatus
from .timezones import to_local

__all__ = ["Entry", "Registry", "Timer", "TimerKind", "job_info", "snapshot"]


class TimerKind(enum.IntEnum):
    """What a heap item stands for."""

    OCCURRENCE = 0  # the entry's next scheduled occurrence is due
    DELAYED_START = 1  # a jittered run's delay has passed
    TIMEOUT = 2  # a run has been going for timeout_secs


class Timer(NamedTuple):
    """An item of the timer heap; occurrences come out of :meth:`Registry.pop_due` in
    this shape too. ``seq`` is unique, so comparisons never reach the entry."""

    when: float  # POSIX timestamp
    seq: int
    kind: TimerKind
    entry: Optional[Entry]
    payload: Any  # the run a DELAYED_START or TIMEOUT belongs to


class Stats:
    """What a job's runs have done so far, made on its first hand-over: most of a big
    registry never runs, and these fields would double the size of every entry.
    Every scheduled occurrence ends in exactly one of run_count, skip_count and
    missed_count (coalesce=True counts a coalesced catch-up once)."""

    __slots__ = (
        "last_fired", "skip_warned", "missed_warned", "run_count",
        "failure_count", "skip_count", "missed_count", "timeout_count",
        "last_scheduled_time", "last_started", "last_finished", "last_duration",
        "last_status", "last_error", "claimed_elsewhere_count", "lease_lost_count",
        "lost_count", "rerun_count",
    )

    def __init__(self) -> None:
        self.last_fired: Optional[datetime] = None  # UTC of the latest occurrence handed over
        self.skip_warned = False  # a skip streak has been logged at WARNING
        self.missed_warned = False
        self.run_count = 0
        self.failure_count = 0
        self.skip_count = 0
        self.missed_count = 0
        self.timeout_count = 0
        self.last_scheduled_time: Optional[datetime] = None
        self.last_started: Optional[datetime] = None
        self.last_finished: Optional[datetime] = None
        self.last_duration: Optional[timedelta] = None
        self.last_status: Optional[RunStatus] = None
        self.last_error: Optional[str] = None
        self.claimed_elsewhere_count = 0  # with a run store: see JobInfo
        self.lease_lost_count = 0
        self.lost_count = 0
        self.rerun_count = 0


NO_STATS = Stats()  # what a job that never ran reports; never written to


class Entry:
    """A registered job and its live state. Every field is guarded by the service lock.

    A plain class with ``__slots__``: one of these exists per job, and a service may
    hold a hundred thousand.
    """

    __slots__ = ("id", "name", "func", "schedule", "policy", "next_run", "bucket", "paused",
                 "running", "_stats")

    def __init__(self, id: uuid.UUID, name: str, func: Callable[[], object],
                 schedule: CronSchedule, policy: Policy) -> None:
        self.id = id
        self.name = name
        self.func = func
        self.schedule = schedule  # its expression is the job's
        self.policy = policy
        self.next_run: Optional[datetime] = None  # UTC; None while paused
        # The bucket this entry is live in; a reference from any other bucket is stale.
        # None while not scheduled (paused, ended, removed, or being fired).
        self.bucket: Optional[List[Entry]] = None
        self.paused = False
        self.running = 0  # instances reserved or running
        self._stats: Optional[Stats] = None

    @property
    def ended(self) -> bool:
        """Its schedule has no further occurrence (or computing it failed). Derived, not
        stored: a slot more would cost 8 bytes on each of a hundred thousand jobs."""
        return self.next_run is None and not self.paused

    @property
    def stats(self) -> Stats:
        """The counters for reading: a shared empty record if the job never ran."""
        return NO_STATS if self._stats is None else self._stats

    def stats_for_update(self) -> Stats:
        """The entry's own counters, made on first use."""
        stats = self._stats
        if stats is None:
            stats = self._stats = Stats()
        return stats


Snapshot = Tuple[Entry, Optional[datetime], bool, bool, int, Tuple[Any, ...]]


def snapshot(entry: Entry) -> Snapshot:
    """Caller holds the lock: what :func:`job_info` needs, copied (cheap: no zone
    conversion, which may be a user's tzinfo code, runs under the lock)."""
    st = entry.stats
    return (entry, None if entry.paused else entry.next_run, entry.paused, entry.ended,
            entry.running,
            (st.run_count, st.failure_count, st.skip_count, st.missed_count,
             st.timeout_count, st.last_scheduled_time, st.last_started, st.last_finished,
             st.last_duration, st.last_status, st.last_error,
             st.claimed_elsewhere_count, st.lease_lost_count, st.lost_count,
             st.rerun_count))


def job_info(snap: Snapshot, has_store: bool = False) -> JobInfo:
    """No lock needed: the frozen JobInfo of a snapshot, times in the job's zone.
    ``has_store``: the service has a run store (a job's cluster mode defaults to once)."""
    e, next_run, paused, ended, running, counters = snap
    (run_count, failure_count, skip_count, missed_count, timeout_count, last_scheduled,
     last_started, last_finished, last_duration, last_status, last_error,
     claimed_elsewhere, lease_lost, lost, rerun) = counters
    zone = e.schedule.timezone
    policy = e.policy
    return JobInfo(
        id=e.id, name=e.name, expression=e.schedule.expression,
        timezone=e.schedule.zone_name,
        next_run_time=None if next_run is None else to_local(next_run, zone),
        paused=paused, running=running, run_count=run_count,
        failure_count=failure_count, skip_count=skip_count,
        missed_count=missed_count, timeout_count=timeout_count,
        last_scheduled_time=None if last_scheduled is None else to_local(last_scheduled, zone),
        last_started=last_started, last_finished=last_finished,
        last_duration=last_duration, last_status=last_status,
        last_error=last_error, overlap=policy.overlap, max_instances=policy.max_instances,
        misfire_grace_secs=policy.misfire_grace_secs, coalesce=policy.coalesce,
        jitter_secs=policy.jitter_secs, timeout_secs=policy.timeout_secs, ended=ended,
        cluster=policy.cluster or ("once" if has_store else "every"), on_lost=policy.on_lost,
        on_unavailable=policy.on_unavailable, claimed_elsewhere_count=claimed_elsewhere,
        lease_lost_count=lease_lost, lost_count=lost, rerun_count=rerun,
    )


Bucket = List[Entry]


class Registry:
    """Entries by id and by name, and what is due when.

    Scheduled occurrences are grouped by instant: one bucket (a list of entries) per
    distinct time, and one heap item per bucket, so a hundred thousand jobs on a few
    schedules cost a list slot each, not a heap item each. An entry is live in the
    bucket its ``bucket`` field points at; rescheduling appends it to another bucket and
    leaves a stale reference behind, dropped when its bucket is drained or when
    stale references outnumber live ones (then every bucket is rebuilt).

    Per-run timers (jittered starts, timeouts) are few and live in a second heap of
    ``(when, seq, kind, entry, payload)``; ``pop_due`` returns occurrences in that shape too.
    Sequence numbers are unique, so heap comparisons never reach a list or an entry.
    """

    def __init__(self) -> None:
        self._by_id: Dict[uuid.UUID, Entry] = {}
        self._by_name: Dict[str, Entry] = {}
        self._buckets: Dict[float, Bucket] = {}  # open buckets by timestamp
        self._instants: List[Tuple[float, int, Bucket]] = []  # heap of the open buckets
        self._timers: List[Timer] = []
        self._draining: Bucket = []  # a due bucket taken off the heap, being fired
        self._drain_at = 0.0
        self._drain_pos = 0
        self._seq = 0
        self._live = 0  # entries whose bucket is set
        self._refs = 0  # references in open and draining buckets, live or stale

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._by_id.values()))

    def get(self, job_id: uuid.UUID) -> Optional[Entry]:
        return self._by_id.get(job_id)

    def by_name(self, name: str) -> Optional[Entry]:
        return self._by_name.get(name)

    def lookup(self, key: object) -> Entry:
        """The entry with this id (a UUID, or its text) or name.

        Raises:
            JobNotFound: no such job.
            InvalidValue: ``key`` is neither a UUID nor a string.
        """
        entry: Optional[Entry] = None
        if isinstance(key, uuid.UUID):
            entry = self._by_id.get(key)
        elif isinstance(key, str):
            entry = self._by_name.get(key)
            if entry is None:
                try:
                    entry = self._by_id.get(uuid.UUID(key))
                except ValueError:
                    entry = None
        else:
            raise InvalidValue(f"job key {key!r}: expected a UUID or a job name")
        if entry is None:
            raise JobNotFound(f"no job with id or name {str(key)!r}")
        return entry

    def is_live(self, entry: Entry) -> bool:
        return self._by_id.get(entry.id) is entry

    def add(self, entry: Entry) -> None:
        self._by_id[entry.id] = entry
        self._by_name[entry.name] = entry
        if entry.next_run is not None:
            self.schedule(entry, entry.next_run)

    def remove(self, entry: Entry) -> None:
        del self._by_id[entry.id]
        del self._by_name[entry.name]
        self.unschedule(entry)

    def schedule(self, entry: Entry, when: datetime) -> None:
        """Make ``when`` the entry's next occurrence (replacing any earlier one)."""
        self.unschedule(entry)
        entry.next_run = when
        ts = when.timestamp()
        bucket = self._buckets.get(ts)
        if bucket is None:
            bucket = self._buckets[ts] = []
            self._seq += 1
            heapq.heappush(self._instants, (ts, self._seq, bucket))
        bucket.append(entry)
        entry.bucket = bucket
        self._live += 1
        self._refs += 1

    def unschedule(self, entry: Entry) -> None:
        if entry.bucket is not None:
            entry.bucket = None
            self._live -= 1
            if self._refs - self._live > max(64, self._live):
                self._compact()
        entry.next_run = None

    def push(self, when: float, kind: TimerKind, entry: Optional[Entry], payload: Any) -> None:
        """Add a per-run timer (DELAYED_START or TIMEOUT)."""
        self._seq += 1
        heapq.heappush(self._timers, Timer(when, self._seq, kind, entry, payload))

    def shift_timers(self, seconds: float) -> None:
        """Move every per-run timer by ``seconds`` (after the clock jumped back, so that
        a jitter delay or a timeout keeps its length on the new timeline)."""
        self._timers = [t._replace(when=t.when + seconds) for t in self._timers]
        heapq.heapify(self._timers)

    def _compact(self) -> None:
        """Drop stale references (and duplicates: an entry rescheduled to the instant
        it already had is in that bucket twice), and buckets left empty."""
        refs = 0
        for ts, bucket in list(self._buckets.items()):
            # The same list object stays: live entries point at it.
            bucket[:] = [e for e in dict.fromkeys(bucket) if e.bucket is bucket]
            refs += len(bucket)
            if not bucket:
                del self._buckets[ts]
        self._instants = [item for item in self._instants if item[2]]
        heapq.heapify(self._instants)
        self._refs = refs + len(self._draining) - self._drain_pos

    def _first_bucket(self) -> Optional[Bucket]:
        """The earliest bucket with a live entry, dropping dead ones (and a bucket's
        stale prefix, so the next look is immediate)."""
        instants = self._instants
        while instants:
            bucket = instants[0][2]
            for i, entry in enumerate(bucket):
                if entry.bucket is bucket:
                    if i:
                        del bucket[:i]
                        self._refs -= i
                    return bucket
            ts, _, dead = heapq.heappop(instants)
            del self._buckets[ts]
            self._refs -= len(dead)
        return None

    def _draining_live(self) -> bool:
        """Skip stale references at the front of the draining bucket; True if a live
        entry is next."""
        draining = self._draining
        while self._drain_pos < len(draining):
            if draining[self._drain_pos].bucket is draining:
                return True
            self._drain_pos += 1
            self._refs -= 1
        if draining:
            self._draining, self._drain_pos = [], 0
        return False

    def peek_time(self) -> Optional[float]:
        """Timestamp of the earliest live item."""
        if self._draining_live():
            return self._drain_at
        bucket = self._first_bucket()
        instant_at = self._instants[0][0] if bucket is not None else None
        timer_at = self._timers[0].when if self._timers else None
        if instant_at is None or (timer_at is not None and timer_at < instant_at):
            return timer_at
        return instant_at

    def next_run(self) -> Optional[datetime]:
        """The earliest scheduled occurrence (UTC), or None."""
        if self._draining_live():
            return self._draining[self._drain_pos].next_run
        bucket = self._first_bucket()
        return None if bucket is None else bucket[0].next_run

    def coming_schedules(self, limit: int = 8) -> List[Tuple[CronSchedule, datetime]]:
        """The distinct schedules among the first entries of the earliest instant,
        with that instant (UTC); at most ``limit``, looking at 64 entries at most."""
        bucket = self._first_bucket()
        if bucket is None:
            return []
        seen: Dict[CronSchedule, datetime] = {}  # schedules hash by identity
        for entry in bucket[:64]:
            if entry.bucket is bucket and entry.next_run is not None:
                seen.setdefault(entry.schedule, entry.next_run)
                if len(seen) == limit:
                    break
        return list(seen.items())

    def pop_due(self, now: float) -> Optional[Timer]:
        """Pop the earliest live item if it is due at ``now``.

        An occurrence comes back as ``Timer(when, 0, OCCURRENCE, entry, None)`` with the
        entry's bucket cleared; the caller reads ``entry.next_run`` and schedules the
        next one.
        """
        while True:
            # A slice of a due instant is being handed over; a caller whose "now" is
            # earlier (its clock read raced the dispatcher's) does not take the rest.
            if self._draining_live() and self._drain_at <= now:
                entry = self._draining[self._drain_pos]
                self._drain_pos += 1
                self._refs -= 1
                entry.bucket = None
                self._live -= 1
                return Timer(self._drain_at, 0, TimerKind.OCCURRENCE, entry, None)
            bucket = self._first_bucket()
            instant_at = self._instants[0][0] if bucket is not None else None
            timers = self._timers
            if timers and timers[0].when <= now and (
                    instant_at is None or timers[0].when < instant_at):
                return heapq.heappop(timers)
            if bucket is None or instant_at is None or instant_at > now:
                return None
            heapq.heappop(self._instants)
            del self._buckets[instant_at]
            self._draining, self._drain_at, self._drain_pos = bucket, instant_at, 0

    def drop(self, kind: TimerKind) -> List[Timer]:
        """Remove and return every timer of ``kind`` (jittered starts at shutdown)."""
        dropped = [t for t in self._timers if t.kind == kind]
        if dropped:
            self._timers = [t for t in self._timers if t.kind != kind]
            heapq.heapify(self._timers)
        return dropped

    def check_invariants(self) -> Tuple[int, int]:
        """Assert the invariants in the module docstring; return the number of
        scheduled entries and of references kept in buckets, live or stale (for tests,
        after stress runs)."""
        buckets = [*self._buckets.values(), self._draining]
        live = {id(e) for b in buckets for e in b if e.bucket is b}
        refs = sum(len(b) for b in self._buckets.values())
        assert len(self._instants) == len(self._buckets)
        assert (self._live, self._refs) == (
            len(live), refs + len(self._draining) - self._drain_pos)
        for entry in self._by_id.values():
            if entry.bucket is not None:
                assert entry.next_run is not None and not entry.paused
        return len(live), refs
