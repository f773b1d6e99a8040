"""The job registry: entries by id and name, and a heap of timed work.

Plain data: no threads, no clock, no locking. The service holds its lock around
every call and every read or write of an ``Entry`` field.
"""

from __future__ import annotations

import heapq
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

from .cron import CronSchedule
from .job import Policy, RunStatus

__all__ = ["Entry", "Registry", "TICK", "DELAYED_START", "TIMEOUT"]

# Heap item kinds.
TICK = 0  # the entry's next scheduled occurrence is due
DELAYED_START = 1  # a jittered run's delay has passed
TIMEOUT = 2  # a run has been going for timeout_secs


class Stats:
    """What a job's runs have done so far, made on its first hand-over: most of a big
    registry never runs, and these fields would double the size of every entry."""

    __slots__ = (
        "last_fired", "backlog", "skip_warned", "missed_warned", "run_count",
        "failure_count", "skip_count", "missed_count", "timeout_count",
        "last_scheduled_time", "last_started", "last_finished", "last_duration",
        "last_status", "last_error",
    )

    def __init__(self) -> None:
        self.last_fired: Optional[datetime] = None  # UTC of the latest occurrence handed over
        # coalesce=False catch-up occurrences (UTC), made only when needed
        self.backlog: Optional[Deque[datetime]] = None
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


NO_STATS = Stats()  # what a job that never ran reports; never written to


class Entry:
    """A registered job and its live state. Every field is guarded by the service lock.

    A plain class with ``__slots__``: one of these exists per job, and a service may
    hold a hundred thousand.
    """

    __slots__ = ("id", "name", "func", "schedule", "policy", "next_run", "tick", "paused",
                 "running", "_stats")

    def __init__(self, id: uuid.UUID, name: str, func: Callable[[], object],
                 schedule: CronSchedule, policy: Policy) -> None:
        self.id = id
        self.name = name
        self.func = func
        self.schedule = schedule  # its expression is the job's
        self.policy = policy
        self.next_run: Optional[datetime] = None  # UTC; None while paused
        # The TICK bucket this entry is live in; a reference from any other bucket is
        # stale. None while not scheduled (paused, removed, or being fired).
        self.tick: Optional[List[Entry]] = None
        self.paused = False
        self.running = 0  # instances reserved or running
        self._stats: Optional[Stats] = None

    @property
    def stats(self) -> Stats:
        """The entry's counters, made on first use (for writing)."""
        stats = self._stats
        if stats is None:
            stats = self._stats = Stats()
        return stats

    def drop_backlog(self) -> None:
        if self._stats is not None:
            self._stats.backlog = None

    @property
    def seen(self) -> Stats:
        """The counters for reading: a shared empty record if the job never ran."""
        return NO_STATS if self._stats is None else self._stats


HeapItem = Tuple[float, int, int, Optional[Entry], Any]
Bucket = List[Entry]


class Registry:
    """Entries by id and by name, and what is due when.

    Scheduled occurrences are grouped by instant: one bucket (a list of entries) per
    distinct time, and one heap item per bucket, so a hundred thousand jobs on a few
    schedules cost a list slot each, not a heap item each. An entry is live in the
    bucket its ``tick`` points at; rescheduling appends it to another bucket and
    leaves a stale reference behind, dropped when its bucket is drained or when
    stale references outnumber live ones (then every bucket is rebuilt).

    Per-run timers (jittered starts, timeouts) are few and live in a second heap of
    ``(when, seq, kind, entry, payload)``; ``pop_due`` returns TICKs in that shape too.
    Sequence numbers are unique, so heap comparisons never reach a list or an entry.
    """

    def __init__(self) -> None:
        self._by_id: Dict[uuid.UUID, Entry] = {}
        self._by_name: Dict[str, Entry] = {}
        self._buckets: Dict[float, Bucket] = {}  # open buckets by timestamp
        self._ticks: List[Tuple[float, int, Bucket]] = []  # heap of the open buckets
        self._timers: List[HeapItem] = []
        self._draining: Bucket = []  # a due bucket taken off the heap, being fired
        self._drain_at = 0.0
        self._drain_pos = 0
        self._seq = 0
        self._live = 0  # entries whose tick is set
        self._refs = 0  # references in open and draining buckets, live or stale

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._by_id.values()))

    def get(self, job_id: uuid.UUID) -> Optional[Entry]:
        return self._by_id.get(job_id)

    def by_name(self, name: str) -> Optional[Entry]:
        return self._by_name.get(name)

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
            heapq.heappush(self._ticks, (ts, self._seq, bucket))
        bucket.append(entry)
        entry.tick = bucket
        self._live += 1
        self._refs += 1

    def unschedule(self, entry: Entry) -> None:
        if entry.tick is not None:
            entry.tick = None
            self._live -= 1
            if self._refs - self._live > max(64, self._live):
                self._compact()
        entry.next_run = None

    def push(self, when: float, kind: int, entry: Optional[Entry], payload: Any) -> None:
        """Add a per-run timer (DELAYED_START or TIMEOUT)."""
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, kind, entry, payload))

    def _compact(self) -> None:
        """Drop stale references (and duplicates: an entry rescheduled to the instant
        it already had is in that bucket twice), and buckets left empty."""
        refs = 0
        for ts, bucket in list(self._buckets.items()):
            # The same list object stays: live entries' ticks point at it.
            bucket[:] = [e for e in dict.fromkeys(bucket) if e.tick is bucket]
            refs += len(bucket)
            if not bucket:
                del self._buckets[ts]
        self._ticks = [item for item in self._ticks if item[2]]
        heapq.heapify(self._ticks)
        self._refs = refs + len(self._draining) - self._drain_pos

    def _first_bucket(self) -> Optional[Bucket]:
        """The earliest bucket with a live entry, dropping dead ones (and a bucket's
        stale prefix, so the next look is immediate)."""
        ticks = self._ticks
        while ticks:
            bucket = ticks[0][2]
            for i, entry in enumerate(bucket):
                if entry.tick is bucket:
                    if i:
                        del bucket[:i]
                        self._refs -= i
                    return bucket
            ts, _, dead = heapq.heappop(ticks)
            del self._buckets[ts]
            self._refs -= len(dead)
        return None

    def _draining_live(self) -> bool:
        """Skip stale references at the front of the draining bucket; True if a live
        entry is next."""
        draining = self._draining
        while self._drain_pos < len(draining):
            if draining[self._drain_pos].tick is draining:
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
        tick_at = self._ticks[0][0] if bucket is not None else None
        timer_at = self._timers[0][0] if self._timers else None
        if tick_at is None or (timer_at is not None and timer_at < tick_at):
            return timer_at
        return tick_at

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
            if entry.tick is bucket and entry.next_run is not None:
                seen.setdefault(entry.schedule, entry.next_run)
                if len(seen) == limit:
                    break
        return list(seen.items())

    def pop_due(self, now: float) -> Optional[HeapItem]:
        """Pop the earliest live item if it is due at ``now``.

        A TICK comes back as ``(when, 0, TICK, entry, None)`` with the entry's tick
        cleared; the service reads ``entry.next_run`` and schedules the next one.
        """
        while True:
            if self._draining_live():
                entry = self._draining[self._drain_pos]
                self._drain_pos += 1
                self._refs -= 1
                entry.tick = None
                self._live -= 1
                return (self._drain_at, 0, TICK, entry, None)
            bucket = self._first_bucket()
            tick_at = self._ticks[0][0] if bucket is not None else None
            timers = self._timers
            if timers and timers[0][0] <= now and (tick_at is None or timers[0][0] < tick_at):
                return heapq.heappop(timers)
            if bucket is None or tick_at is None or tick_at > now:
                return None
            heapq.heappop(self._ticks)
            del self._buckets[tick_at]
            self._draining, self._drain_at, self._drain_pos = bucket, tick_at, 0

    def drop(self, kind: int) -> List[HeapItem]:
        """Remove and return every timer of ``kind`` (jittered starts at shutdown)."""
        dropped = [item for item in self._timers if item[2] == kind]
        if dropped:
            self._timers = [item for item in self._timers if item[2] != kind]
            heapq.heapify(self._timers)
        return dropped

    def live_ticks(self) -> int:
        """Entries scheduled in a bucket, counted from the buckets themselves (a
        consistency check for tests; also checks the running counts)."""
        buckets = [*self._buckets.values(), self._draining]
        live = {id(e) for b in buckets for e in b if e.tick is b}
        refs = sum(len(b) for b in self._buckets.values())
        assert len(self._ticks) == len(self._buckets)
        assert (self._live, self._refs) == (
            len(live), refs + len(self._draining) - self._drain_pos)
        return len(live)
