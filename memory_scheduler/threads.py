"""The threads a run store adds to a started service (one of each per ``start()``).

* :class:`Claimer` takes the dispatcher's runs (a slice of an instant at a time) and
  claims them in the store through :meth:`Cluster.admit`: the dispatcher never waits
  for the store, and several slices queued meanwhile go in one round trip. Won runs go
  to the pool.
* :class:`Heartbeat` renews the leases of every claim this process holds, in one round
  trip whatever their number; a refused renew, or a monotonic deadline passed without
  a successful one, cancels the run (RUN_LEASE_LOST). It sweeps expired leases and
  dead owners (RUN_LOST; RUN_RERUN runs here with attempt + 1), and now and then
  refreshes the job fingerprints and prunes old rows.
* :class:`Recorder` records the ends of runs for the workers, those ending together
  in one round trip (a burst of 10,000 runs would otherwise pay 10,000 commits between
  its starts).

Neither holds the service lock while calling the store, and neither dies: an error is
logged and the loop goes on. Every wait is bounded and counts real time (freezegun does
not patch ``threading``): periods are counted in ticks, never against a clock read.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Callable, Deque, List, Optional, Tuple

from .cluster import Cluster
from .config import SchedulerConfig
from .events import EventKind, Listeners, Notifier, Outbox
from .job import RunStatus
from .registry import Registry
from .runs import Run, RunBook, log_extra
from .stores import Claim, StoreError, SweepResult
from .stores.base import DEFAULT_FINGERPRINT_LIVE_SECS
from .stores.records import self_fence_deadline

__all__ = ["Claimer", "Heartbeat", "Recorder", "start_threads"]

Queue = Callable[[List[Run], Outbox], None]
_IDLE_WAKE = 1.0  # seconds; the claimer records pending skips/misses at least this often
_PRUNE_SECS = 3600.0


class Claimer:
    """Claims the dispatcher's runs off its thread, then queues the winners."""

    def __init__(self, cluster: Cluster, book: RunBook, cond: threading.Condition,
                 queue: Queue, listeners: Listeners, notifier: Notifier,
                 token: threading.Event, name: str) -> None:
        self._cluster = cluster
        self._book = book
        self._service_cond = cond
        self._queue = queue
        self._listeners = listeners
        self._notifier = notifier
        self._token = token
        self._cond = threading.Condition(threading.Lock())  # guards _pending, _closed
        self._pending: Deque[Run] = deque()
        self._closed = False  # the loop has seen the token: put() drops
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def put(self, runs: List[Run]) -> None:
        """Queue runs to claim (no lock held); once the claimer has stopped they are
        dropped here, or their overlap slots would stay taken."""
        with self._cond:
            closed = self._closed
            if not closed:
                self._pending.extend(runs)
                self._cond.notify()
        if closed:
            outbox = Outbox(self._listeners)
            self._drop(runs, outbox, "the scheduler is shutting down")
            self._notifier.put(outbox)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _take(self) -> Tuple[List[Run], bool]:
        """The queued runs, and whether the claimer is closing (then for good)."""
        with self._cond:
            if not self._pending and not self._token.is_set():
                self._cond.wait(_IDLE_WAKE)
            runs = list(self._pending)
            self._pending.clear()
            self._closed = self._token.is_set()
            return runs, self._closed

    def _drop(self, runs: List[Run], outbox: Outbox, reason: str) -> None:
        with self._service_cond:
            for run in runs:
                self._book.drop(run, outbox, reason)

    def _loop(self) -> None:
        while True:
            runs, closing = self._take()
            outbox = Outbox(self._listeners)
            try:
                if closing:
                    self._drop(runs, outbox, "the scheduler is shutting down")
                    return
                self._queue(self._cluster.admit(runs, outbox), outbox)
            except Exception:  # noqa: BLE001 - reported; the loop must go on
                outbox.log(logging.CRITICAL, "scheduler claimer error; continuing",
                           exc_info=True)
                self._drop(runs, outbox, "claiming them failed")
            finally:
                self._notifier.put(outbox)

    def stop(self, timeout: float) -> None:
        """After the token is set: drop what waits, and end the thread."""
        self.wake()
        self.thread.join(timeout)


class Heartbeat:
    """Renews, sweeps, refreshes fingerprints and prunes, on ticks of real time."""

    def __init__(self, cluster: Cluster, book: RunBook, registry: Registry,
                 cond: threading.Condition, queue: Queue, listeners: Listeners,
                 notifier: Notifier, heartbeat_secs: float, sweep_secs: float,
                 name: str) -> None:
        self._cluster = cluster
        self._book = book
        self._registry = registry
        self._cond = cond
        self._queue = queue
        self._listeners = listeners
        self._notifier = notifier
        self.tick_secs = min(heartbeat_secs, sweep_secs)
        self._renew_every = max(1, round(heartbeat_secs / self.tick_secs))
        self._sweep_every = max(1, round(sweep_secs / self.tick_secs))
        self._print_every = max(1, math.floor(DEFAULT_FINGERPRINT_LIVE_SECS / 2
                                              / self.tick_secs))
        self._prune_every = max(1, round(_PRUNE_SECS / self.tick_secs))  # then prune()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        tick = 0
        while True:
            outbox = Outbox(self._listeners)
            try:
                # A sweep at once: a replica restarting after a crash takes its own dead
                # claims over before its catch-up meets them as live.
                if tick % self._sweep_every == 0:
                    self.sweep(outbox)
                if tick and tick % self._renew_every == 0:
                    self.renew(outbox)
                if tick and tick % self._print_every == 0:
                    self._cluster.publish_fingerprints(outbox)
                if tick and tick % self._prune_every == 0:
                    self._cluster.store.prune()
            except Exception:  # noqa: BLE001 - reported; the loop must go on
                outbox.log(logging.ERROR, "scheduler heartbeat error; continuing",
                           exc_info=True)
            finally:
                self._notifier.put(outbox)
            if self._stop.wait(self.tick_secs):
                return
            tick += 1

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self.thread.join(timeout)

    def renew(self, outbox: Outbox) -> None:
        """Renew every claim held here in one round trip; cancel the runs whose renew
        is refused or whose leases ran out without one."""
        with self._cond:
            held: List[Tuple[Run, List[Claim]]] = [
                (run, [c for c in run.claims if c is not None])
                for run in self._book.active
                if run.claims is not None and not run.lease_lost]
        held = [(run, claims) for run, claims in held if claims]
        if not held:
            return
        claims = [c for _, cs in held for c in cs]
        sent = time.monotonic()
        answers: Optional[List[bool]] = None
        error: Optional[BaseException] = None
        try:
            answers = self._cluster.store.renew(claims, self._cluster.lease)
        except StoreError as exc:  # each run keeps its own deadline
            error = exc
        answered = time.monotonic()
        deadline = self_fence_deadline(sent, answered, self._cluster.lease)
        with self._cond:
            self._cluster.health(error, outbox)
            pos = 0
            for run, cs in held:
                ok = answers is not None and all(answers[pos:pos + len(cs)])
                pos += len(cs)
                if run.done or run.lease_lost:
                    continue
                if ok:
                    run.valid_until = deadline
                elif answers is not None or answered >= run.valid_until:
                    self._cluster.lease_lost(run, outbox)

    def sweep(self, outbox: Outbox) -> None:
        """Take over expired leases: record them lost, or run them again here."""
        with self._cond:
            rerun_jobs = [e.name for e in self._registry
                          if self._cluster.once(e) and e.policy.on_lost == "rerun"]
        error: Optional[BaseException] = None
        result = SweepResult()
        try:
            result = self._cluster.store.sweep(self._cluster.lease, rerun_jobs)
        except StoreError as exc:
            error = exc
        runs: List[Run] = []
        with self._cond:
            self._cluster.health(error, outbox)
            for record in result.lost:
                entry = self._registry.by_name(record.job)
                if entry is None:
                    continue
                entry.stats_for_update().lost_count += 1
                outbox.log(logging.WARNING, "job %r (scheduled %s): owner %s died or froze "
                           "past its lease; recorded lost", entry.name,
                           record.scheduled_utc.isoformat(), record.owner,
                           extra=log_extra(entry, "run_lost", scheduled=record.scheduled_utc))
                outbox.event(EventKind.RUN_LOST, entry, record.scheduled_utc)
            for claim in result.rerun:
                entry = self._registry.by_name(claim.job)
                if entry is None:  # removed meanwhile: its new lease lapses, then lost
                    continue
                run = self._book.reserve(entry, claim.scheduled_utc)
                run.forced = True  # taken over: it runs even if paused here
                run.claims = (claim,)
                run.valid_until = claim.valid_until_mono
                entry.stats_for_update().rerun_count += 1
                outbox.log(logging.WARNING, "job %r (scheduled %s): running it again "
                           "(attempt %d) after its owner lost its lease", entry.name,
                           claim.scheduled_utc.isoformat(), claim.attempt,
                           extra=log_extra(entry, "run_rerun", scheduled=claim.scheduled_utc))
                outbox.event(EventKind.RUN_RERUN, entry, claim.scheduled_utc)
                runs.append(run)
        if runs:
            self._queue(runs, outbox)



def start_threads(cluster: Cluster, config: SchedulerConfig, book: RunBook,
                  registry: Registry, cond: threading.Condition, queue: Queue,
                  listeners: Listeners, notifier: Notifier, token: threading.Event
                  ) -> Tuple[Claimer, Heartbeat, Recorder]:
    """Make and start one start()'s claimer, heartbeat and recorder threads."""
    prefix = config.thread_name_prefix
    claimer = Claimer(cluster, book, cond, queue, listeners, notifier, token,
                      f"{prefix}-claimer")
    heartbeat = Heartbeat(cluster, book, registry, cond, queue, listeners, notifier,
                          config.heartbeat_interval, config.sweep_interval,
                          f"{prefix}-heartbeat")
    recorder = Recorder(cluster, listeners, notifier, f"{prefix}-recorder")
    cluster.recorder = recorder.put
    claimer.thread.start()
    heartbeat.thread.start()
    recorder.thread.start()
    return claimer, heartbeat, recorder


class Recorder:
    """Records the ends of runs in the store for the workers, batching those that end
    together into one round trip, so that a worker starts its next run at once."""

    def __init__(self, cluster: Cluster, listeners: Listeners, notifier: Notifier,
                 name: str) -> None:
        self._cluster = cluster
        self._listeners = listeners
        self._notifier = notifier
        self._cond = threading.Condition(threading.Lock())  # guards the two below
        self._pending: List[Tuple[Run, RunStatus]] = []
        self._closed = False
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def put(self, run: Run, status: RunStatus) -> bool:
        """Queue a run's end; False once stopped (the caller records it itself)."""
        with self._cond:
            if self._closed:
                return False
            self._pending.append((run, status))
            self._cond.notify()
            return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._pending and not self._closed:
                    self._cond.wait(_IDLE_WAKE)
                ended, self._pending = self._pending, []
                closing = self._closed
            if ended:
                outbox = Outbox(self._listeners)
                try:
                    self._cluster.finish_now(ended, outbox)
                except Exception:  # noqa: BLE001 - reported; the loop must go on
                    outbox.log(logging.ERROR, "recording run ends failed", exc_info=True)
                self._notifier.put(outbox)
            elif closing:
                return

    def stop(self, timeout: float) -> None:
        """Record what is queued, then end the thread; later ends are recorded by
        their workers."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self.thread.join(timeout)
