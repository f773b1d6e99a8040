"""Events and log records: what happened, collected under the lock, delivered after it.

Code that holds the service lock never calls a listener or a logging handler (either
may call back into the service, or be slow). It appends to an :class:`Outbox`; whoever
released the lock then calls :meth:`Outbox.deliver`. The dispatcher, which never runs
foreign code at all, hands its outboxes to a :class:`Notifier` thread instead.
"""

from __future__ import annotations

import enum
import logging
import sys
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Optional,
    Tuple,
    Union,
)
from uuid import UUID

from .clock import utc_now
from .errors import InvalidValue
from .timezones import to_local

if TYPE_CHECKING:
    from .registry import Entry

__all__ = ["EventKind", "Listeners", "Notifier", "Outbox", "SchedulerEvent", "logger"]

logger = logging.getLogger("memory_scheduler")


class EventKind(str, enum.Enum):
    JOB_ADDED = "job_added"
    JOB_REMOVED = "job_removed"
    JOB_PAUSED = "job_paused"
    JOB_RESUMED = "job_resumed"
    #: The job's schedule has no further occurrence, or computing it failed
    #: (``exception`` says why); the job stays registered with no next run.
    JOB_ENDED = "job_ended"
    RUN_STARTED = "run_started"
    RUN_SUCCEEDED = "run_succeeded"
    RUN_FAILED = "run_failed"
    RUN_SKIPPED = "run_skipped"
    RUN_MISSED = "run_missed"
    RUN_TIMED_OUT = "run_timed_out"
    #: With a run store: another process claimed this occurrence first and runs it.
    RUN_CLAIMED_ELSEWHERE = "run_claimed_elsewhere"
    #: A run here lost its lease (renew refused, or no renew within the lease): its
    #: cancel token is set and its end will not be recorded over what the store says.
    RUN_LEASE_LOST = "run_lease_lost"
    #: This process swept another owner's run, dead or frozen past its lease, as lost.
    RUN_LOST = "run_lost"
    #: This process took over a lost run of an ``on_lost="rerun"`` job to run it again.
    RUN_RERUN = "run_rerun"
    #: The run store failed (``exception`` says how); occurrences follow on_unavailable.
    STORE_UNAVAILABLE = "store_unavailable"
    #: The run store answers again after STORE_UNAVAILABLE.
    STORE_AVAILABLE = "store_available"
    SCHEDULER_STARTED = "scheduler_started"
    SCHEDULER_SHUTDOWN = "scheduler_shutdown"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SchedulerEvent:
    """What a listener receives. Job fields are None for scheduler events."""

    kind: EventKind
    time: datetime
    job_id: Optional[UUID] = None
    job_name: Optional[str] = None
    scheduled_time: Optional[datetime] = None
    exception: Optional[BaseException] = None


Listener = Callable[[SchedulerEvent], object]
_Item = Tuple[Listener, Optional["frozenset[EventKind]"]]


class Listeners:
    """The registered listeners. The tuple is replaced, never mutated, so it is read
    without a lock; :meth:`add` and :meth:`remove` are called with the service lock held."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: Tuple[_Item, ...] = ()

    def __bool__(self) -> bool:
        return bool(self._items)

    def add(self, callback: Listener,
            events: Optional[Iterable[Union[EventKind, str]]] = None) -> None:
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
        self._items = (*self._items, (callback, kinds))

    def remove(self, callback: Listener) -> None:
        kept = tuple(item for item in self._items if item[0] != callback)
        if len(kept) == len(self._items):
            raise InvalidValue(f"listener {callback!r} is not registered")
        self._items = kept

    def deliver(self, events: Iterable[SchedulerEvent]) -> None:
        """Call the listeners (no lock held). A listener's exception is logged; a
        KeyboardInterrupt or SystemExit in the main thread still stops the caller."""
        items = self._items
        for event in events:
            for callback, kinds in items:
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
                        raise


_Log = Tuple[int, str, Tuple[Any, ...], Optional[Dict[str, object]], Any]
# kind, time, job id, job name, scheduled (UTC), the job's zone, exception
_Event = Tuple[EventKind, datetime, Optional[UUID], Optional[str], Optional[datetime],
               Optional[tzinfo], Optional[BaseException]]


class Outbox:
    """Events and log records made under the lock, delivered once it is released.

    Building an event costs a clock read and an allocation; nothing is built when no
    listener is registered (the common case), nor a record for a disabled level.
    Scheduled times are turned into the job's local time on delivery, outside the lock.
    """

    __slots__ = ("events", "logs", "_listening")

    def __init__(self, listeners: Listeners) -> None:
        self.events: List[_Event] = []
        self.logs: List[_Log] = []
        self._listening = bool(listeners)

    def __bool__(self) -> bool:
        return bool(self.events or self.logs)

    def event(self, kind: EventKind, entry: Optional[Entry] = None,
              scheduled: Optional[datetime] = None,
              exc: Optional[BaseException] = None) -> None:
        if not self._listening:
            return
        if entry is None:
            self.events.append((kind, utc_now(), None, None, None, None, exc))
        else:
            self.events.append((kind, utc_now(), entry.id, entry.name, scheduled,
                                entry.schedule.timezone, exc))

    def log(self, level: int, msg: str, *args: Any,
            extra: Optional[Dict[str, object]] = None, exc_info: Any = None) -> None:
        if logger.isEnabledFor(level):
            if exc_info is True:  # delivered later, where no exception is being handled
                exc_info = sys.exc_info()
            self.logs.append((level, msg, args, extra, exc_info))

    def deliver(self, listeners: Listeners) -> None:
        """Emit the log records, then call the listeners (no lock held)."""
        logs, self.logs = self.logs, []
        for level, msg, args, extra, exc_info in logs:
            logger.log(level, msg, *args, extra=extra, exc_info=exc_info)
        events, self.events = self.events, []
        if events:
            listeners.deliver(
                SchedulerEvent(kind, time, job_id, name,
                               None if when is None or zone is None else to_local(when, zone),
                               exc)
                for kind, time, job_id, name, when, zone, exc in events)


class Notifier:
    """A thread that delivers the dispatcher's outboxes, made on demand.

    Not the worker pool: events about hung jobs (timed out, skipped) must arrive while
    every worker is stuck in one. A listener that blocks delays only later deliveries.
    Once closed (shutdown), the thread ends as soon as the queue is empty; an outbox put
    after that (a dispatcher outliving shutdown's wait) gets a thread that delivers it
    and ends, so nothing is lost and no thread is left behind.
    """

    def __init__(self, listeners: Listeners, name: str) -> None:
        self._listeners = listeners
        self._name = name
        self._cond = threading.Condition(threading.Lock())  # guards the three below
        self._queue: Deque[Outbox] = deque()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def open(self) -> None:
        with self._cond:
            self._closed = False

    def put(self, outbox: Outbox) -> None:
        if not outbox:
            return
        with self._cond:
            self._queue.append(outbox)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self, timeout: float) -> bool:
        """Deliver what is queued, then end the thread; False if it did not end in
        time (a listener is slow). Called from a listener, it does not wait for itself."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify()
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    if self._closed:
                        self._thread = None
                        return
                    self._cond.wait()
                outbox = self._queue.popleft()
            try:
                outbox.deliver(self._listeners)
            except BaseException:  # a handler's error must not end delivery
                logger.exception("delivering scheduler events failed")
