"""The job registry: entries by id and name, and a heap of timed work.

Plain data: no threads, no clock, no locking. The service holds its lock around
every call and every read or write of an ``Entry`` field.
"""

from __future__ import annotations

import heapq
import uuid
from datetime import datetime, timedelta
from typing import Any, Deque, Dict, Iterator, List, Optional, Tuple

from .cron import CronSchedule
from .job import Job, RunStatus

__all__ = ["Entry", "Registry", "TICK", "DELAYED_START", "TIMEOUT"]

# Heap item kinds.
TICK = 0  # the entry's next scheduled occurrence is due
DELAYED_START = 1  # a jittered run's delay has passed
TIMEOUT = 2  # a run has been going for timeout_secs


class Entry:
    """A registered job and its live state. Every field is guarded by the service lock.

    A plain class with ``__slots__``: one of these exists per job, and a service may
    hold a hundred thousand.
    """

    __slots__ = (
        "id", "job", "schedule", "next_run", "tick_seq", "paused", "running", "backlog",
        "last_fired", "skip_warned", "missed_warned", "run_count", "failure_count",
        "skip_count", "missed_count", "timeout_count", "last_scheduled_time",
        "last_started", "last_finished", "last_duration", "last_status", "last_error",
    )

    def __init__(self, id: uuid.UUID, job: Job, schedule: CronSchedule) -> None:
        self.id = id
        self.job = job
        self.schedule = schedule
        self.next_run: Optional[datetime] = None  # UTC; None while paused
        self.tick_seq = -1  # sequence of the live TICK heap item; others are stale
        self.paused = False
        self.running = 0  # instances reserved or running
        # coalesce=False catch-up occurrences (UTC), made only when needed
        self.backlog: Optional[Deque[datetime]] = None
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

    @property
    def name(self) -> str:
        return self.job.name


HeapItem = Tuple[float, int, int, Optional[Entry], Any]


class Registry:
    """Entries by id and by name, plus one heap of ``(when, seq, kind, entry, payload)``.

    Sequence numbers are unique, so heap comparisons never reach the entry. A TICK
    item is live only while its seq equals the entry's ``tick_seq``; rescheduling
    pushes a new item and leaves the old one to be discarded when it surfaces, and
    the heap is rebuilt when stale items outnumber live ones.
    """

    def __init__(self) -> None:
        self._by_id: Dict[uuid.UUID, Entry] = {}
        self._by_name: Dict[str, Entry] = {}
        self._heap: List[HeapItem] = []
        self._seq = 0
        self._stale = 0

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
        entry.tick_seq = self.push(when.timestamp(), TICK, entry, None)

    def unschedule(self, entry: Entry) -> None:
        if entry.tick_seq >= 0:
            entry.tick_seq = -1
            self._stale += 1
            if self._stale > 64 and self._stale > len(self._heap) // 2:
                self._compact()
        entry.next_run = None

    def push(self, when: float, kind: int, entry: Optional[Entry], payload: Any) -> int:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, entry, payload))
        return self._seq

    def _is_stale(self, item: HeapItem) -> bool:
        return item[2] == TICK and (item[3] is None or item[3].tick_seq != item[1])

    def _compact(self) -> None:
        self._heap = [item for item in self._heap if not self._is_stale(item)]
        heapq.heapify(self._heap)
        self._stale = 0

    def peek_time(self) -> Optional[float]:
        """Timestamp of the earliest live item, discarding stale ones on the way."""
        heap = self._heap
        while heap and self._is_stale(heap[0]):
            heapq.heappop(heap)
            self._stale = max(0, self._stale - 1)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> Optional[HeapItem]:
        """Pop the earliest live item if it is due at ``now``; stale TICKs are dropped."""
        when = self.peek_time()
        if when is None or when > now:
            return None
        item = heapq.heappop(self._heap)
        if item[2] == TICK:
            assert item[3] is not None
            item[3].tick_seq = -1
        return item

    def drop(self, kind: int) -> List[HeapItem]:
        """Remove and return every item of ``kind`` (used for jittered starts at shutdown)."""
        dropped = [item for item in self._heap if item[2] == kind]
        if dropped:
            self._heap = [item for item in self._heap if item[2] != kind]
            heapq.heapify(self._heap)
        return dropped

    def live_ticks(self) -> int:
        """Live TICK items in the heap (a consistency check for tests)."""
        return sum(1 for item in self._heap if item[2] == TICK and not self._is_stale(item))
