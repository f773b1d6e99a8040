"""JobViews: the service's read side (job snapshots, run store history) and its
listener registration, as a base class of :class:`SchedulerService`.

Apart from the facade so that service.py stays small; it only reads what the facade
owns, under the same service lock (``_cond``), and converts to local times outside it.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone
from typing import Iterable, List, Optional, Union

from .cluster import Cluster
from .errors import InvalidValue
from .events import EventKind, Listener, Listeners
from .job import JobInfo
from .registry import Registry, job_info, snapshot
from .stores import RunRecord

__all__ = ["JobKey", "JobViews"]

JobKey = Union[uuid.UUID, str]


class JobViews:
    """Read-only views of the jobs and the listener registry (see SchedulerService)."""

    _cond: threading.Condition
    _registry: Registry
    _listeners: Listeners
    _cluster: Optional[Cluster]

    def get_job(self, key: JobKey) -> JobInfo:
        """A frozen snapshot of one job. Raises JobNotFound."""
        with self._cond:
            snap = snapshot(self._registry.lookup(key))
        return job_info(snap, self._cluster is not None)  # zone conversion: no lock

    def jobs(self) -> List[JobInfo]:
        """Snapshots of every job, soonest next run first; paused jobs last."""
        with self._cond:
            snaps = [snapshot(entry) for entry in self._registry]
        far = datetime.max.replace(tzinfo=timezone.utc)
        infos = [job_info(snap, self._cluster is not None) for snap in snaps]
        return sorted(infos, key=lambda i: (i.next_run_time or far, i.name))

    def next_run_time(self) -> Optional[datetime]:
        """The earliest next run over all jobs (UTC), or None."""
        with self._cond:
            return self._registry.next_run()

    def history(self, key: JobKey, limit: int = 100) -> List[RunRecord]:
        """The occurrences of a job recorded in the run store (scheduled time, owner,
        state, attempt, start, end), newest first.

        Raises:
            InvalidValue: the service has no run store. JobNotFound: no such job.
            StoreUnavailable: the store did not answer.
        """
        if self._cluster is None:
            raise InvalidValue("history() needs a run store: SchedulerConfig(store=...)")
        with self._cond:
            name = self._registry.lookup(key).name
        return self._cluster.store.history(name, limit)

    # -- listeners ---------------------------------------------------------------------

    def add_listener(self, callback: Listener,
                     events: Optional[Iterable[Union[EventKind, str]]] = None) -> None:
        """Call ``callback(event)`` for each event of the given kinds (default: all).

        Listeners are called outside every lock, in registration order, from the
        thread that caused the event (a caller, a worker) or, for events the
        dispatcher decides (skipped, missed, timed out, ended), from the service's
        notifier thread, which a pool full of hung jobs cannot block. An exception in
        a listener is logged and ignored.
        """
        with self._cond:
            self._listeners.add(callback, events)

    def remove_listener(self, callback: Listener) -> None:
        """Stop calling ``callback``. Raises InvalidValue if it was never added."""
        with self._cond:
            self._listeners.remove(callback)
