"""Cluster: a run store wired into the service, so that the processes of a deployment
run each occurrence once and a restart catches up.

The dispatcher keeps deciding from its own heap what is due (firing.py). Runs of
``cluster="once"`` jobs are then claimed in the store here, in :meth:`Cluster.admit`
(the admission seam, no lock held): by the claimer thread for the dispatcher's runs
(threads.py), inline for ``run_pending()``. Only won runs reach a worker; the others
are counted (claimed elsewhere, skipped cluster-wide, missed) under the service lock.
A run carries its claims (``Run.claims``, one per occurrence of its catch-up chain);
its end is recorded with :meth:`record_finish` from the worker's completion path.

Catch-up: ``start()`` reads each job's watermark (latest recorded occurrence) and
schedules the job from there (:meth:`catch_up`). With coalesce=True the one run stands
for the *latest* occurrence at or before the start instant: replicas starting a moment
apart either compute the same key or meet it as an ordinary occurrence, whereas "the
oldest after the watermark" would move with the watermark a first replica's run writes
(COORDINATION.md 5.1); the occurrences it stands for are recorded missed (up to
MAX_CATCHUP_RUNS of them). With coalesce=False each occurrence is its own key.

No method here holds the service lock while it calls the store.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import zoneinfo
from datetime import datetime, timedelta
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from .admission import Admission
from .clock import utc_now
from .config import SchedulerConfig
from .cron import CronSchedule
from .errors import InvalidValue
from .events import EventKind, Listeners, Outbox
from .firing import MAX_CATCHUP_RUNS, Firing, next_or_none
from .job import RunStatus
from .registry import Entry, Registry, TimerKind
from .runs import Run, RunBook, log_extra
from .stores import (
    Claim,
    ClaimRequest,
    ClaimResult,
    FingerprintMismatch,
    Outcome,
    RunStore,
    StoreError,
    StoreUnavailable,
    open_store,
)

__all__ = ["Cluster", "fingerprint", "open_run_store", "tzdata_version"]

_US = timedelta(microseconds=1)


def open_run_store(config: SchedulerConfig) -> RunStore:
    """The config's store, opened (a RunStore instance is used as it is).

    Raises:
        InvalidStoreURL, StoreError: as :func:`~memory_scheduler.stores.open_store`.
        InvalidValue: a RunStore of another namespace than the config's, or with a
            retention_secs in the config (a RunStore instance keeps its own settings).
    """
    store = config.store
    if isinstance(store, RunStore):
        if config.namespace not in ("default", store.namespace):
            raise InvalidValue(f"config namespace={config.namespace!r} differs from the "
                               f"store's namespace {store.namespace!r}; set it on the store")
        if config.retention_secs is not None:
            raise InvalidValue(f"config retention_secs={config.retention_secs!r} applies to "
                               "store URLs; pass retention_secs to the RunStore itself")
        return store
    assert isinstance(store, str)
    options: Dict[str, object] = {"namespace": config.namespace}
    if config.retention_secs is not None:
        options["retention_secs"] = config.retention_secs
    if store.lower().startswith("sqlite"):
        options["timeout_secs"] = config.claim_timeout_secs
    return open_store(store, **options)


@functools.lru_cache(maxsize=1)
def tzdata_version() -> str:
    """The version of the zone rules zoneinfo reads: the system's (``tzdata.zi``), or
    the tzdata package's. Two releases may map one local time to two UTC instants."""
    for path in zoneinfo.TZPATH:
        try:
            with open(os.path.join(path, "tzdata.zi"), encoding="ascii") as f:
                first = f.readline().strip()
        except OSError:
            continue
        if first.startswith("# version"):
            return first.split()[-1]
    try:
        from importlib.metadata import version

        return f"tzdata-{version('tzdata')}"
    except Exception:  # noqa: BLE001 - no package metadata: say so in the fingerprint
        return "unknown"


def fingerprint(entry: Entry) -> str:
    """What decides a job's keys and its cluster behaviour: the expression (and the
    name, which seeds H fields), the zone, the policy and the zone rules' version."""
    p = entry.policy
    parts = (entry.name, entry.schedule.expression, entry.schedule.zone_name, p.overlap,
             repr(p.max_instances), repr(p.misfire_grace_secs), repr(p.coalesce),
             p.cluster or "once", p.on_lost, p.on_unavailable, tzdata_version())
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def latest_until(schedule: CronSchedule, first: datetime, now: datetime) -> datetime:
    """The latest occurrence in [first, now] (``first`` is an occurrence <= now). Looks
    back from ``now`` over growing spans, so a long outage costs a few steps."""
    span = timedelta(seconds=1)
    while True:
        start = max(first, now - span)
        found = first if start == first else next_or_none(schedule, start - _US)
        if found is not None and found <= now:
            while True:
                following = next_or_none(schedule, found)
                if following is None or following > now:
                    return found
                found = following
        span *= 4


class Cluster(Admission):
    """The run store side of one service. Fields are guarded by the service lock
    unless said otherwise; the store is called with no lock held."""

    def __init__(self, config: SchedulerConfig, store: RunStore, cond: threading.Condition,
                 registry: Registry, book: RunBook, firing: Firing,
                 listeners: Listeners) -> None:
        self.store = store
        self.lease = config.lease_secs
        self._cond = cond
        self._registry = registry
        self._book = book
        self._firing = firing
        self._listeners = listeners
        self._down = False  # the store failed and has not answered since
        # While started: queues a run's end for the recorder thread; False if it has
        # stopped (then the worker records it itself). Set and cleared by the service.
        self.recorder: Optional[Callable[[Run, RunStatus], bool]] = None
        firing.marks = []
        book.recorder = self.record_finish

    @staticmethod
    def once(entry: Entry) -> bool:
        return entry.policy.cluster != "every"

    # -- store health ------------------------------------------------------------------

    def health(self, error: Optional[BaseException], outbox: Outbox) -> None:
        """Caller holds the lock: note whether the store answered (``error`` None) and
        report the transitions, once each."""
        if error is None and self._down:
            self._down = False
            outbox.log(logging.WARNING, "run store %r answers again", self.store)
            outbox.event(EventKind.STORE_AVAILABLE)
        elif error is not None and not self._down:
            self._down = True
            outbox.log(logging.ERROR, "run store %r is unavailable (%s); occurrences of "
                       "cluster jobs follow their on_unavailable option", self.store, error)
            outbox.event(EventKind.STORE_UNAVAILABLE, exc=error)

    # -- start: identity and catch-up (no lock held) ------------------------------------

    def publish_fingerprints(self, outbox: Outbox) -> None:
        """Record this process's job fingerprints; log another live definition under
        the same name as an error (a rolling deploy: two definitions, two keys)."""
        tzdata_version()  # reads a file the first time: not under the lock
        with self._cond:
            prints = {e.name: fingerprint(e) for e in self._registry if self.once(e)}
        if not prints:
            return
        mismatches: List[FingerprintMismatch] = []
        error: Optional[StoreError] = None
        try:
            mismatches = self.store.fingerprints(prints)
        except StoreUnavailable as exc:
            error = exc
        with self._cond:
            self.health(error, outbox)
        for m in mismatches:
            outbox.log(logging.ERROR, "job %r is defined differently in live process %s "
                       "(fingerprint %s, ours %s): the two definitions may run one intended "
                       "occurrence under two keys; deploy one definition", m.job,
                       m.other_owner, m.other_fingerprint, m.fingerprint,
                       extra={"job": m.job, "event": "fingerprint_mismatch",
                              "fields": {"other_owner": m.other_owner}})

    def watermarks(self, outbox: Outbox) -> Dict[str, datetime]:
        """The latest recorded occurrence of each cluster job (empty if the store is
        down: then every job starts from now). StoreError (not a run store, closed)
        propagates: start() fails."""
        with self._cond:
            names = [e.name for e in self._registry if self.once(e)]
        if not names:
            return {}
        try:
            found = self.store.watermarks(names)
        except StoreUnavailable as exc:
            with self._cond:
                self.health(exc, outbox)
            return {}
        return found

    def catch_up(self, entry: Entry, watermark: Optional[datetime], now: datetime) -> bool:
        """Caller holds the lock: schedule ``entry`` from its watermark if occurrences
        after it are due (they then pass the misfire/coalesce rules as usual); False if
        nothing is to catch up (the caller schedules it from now)."""
        if watermark is None or entry.paused or not self.once(entry):
            return False
        first = next_or_none(entry.schedule, watermark)
        if first is None or first > now:
            return False
        if entry.policy.coalesce:
            latest = latest_until(entry.schedule, first, now)
            # The run stands for the occurrences before it: record the first of them
            # missed (up to the catch-up bound), so that the store has a row for each.
            # Another process may record some first; first writer wins either way.
            marks = self._firing.marks
            when: Optional[datetime] = first
            for _ in range(MAX_CATCHUP_RUNS):
                if when is None or when >= latest or marks is None:
                    break
                marks.append((entry, when, RunStatus.MISSED))
                when = next_or_none(entry.schedule, when)
            first = latest
        self._registry.schedule(entry, first)
        return True

    # -- admission (no lock held) ---------------------------------------------------------

    def _claim(self, requests: Sequence[ClaimRequest]) -> Tuple[List[ClaimResult],
                                                                Optional[BaseException]]:
        try:
            results = self.store.claim_many(requests, self.lease)
        except StoreError as exc:  # closed or broken: nothing was recorded
            return [ClaimResult(Outcome.UNAVAILABLE, detail=str(exc))] * len(requests), exc
        if results and results[0].outcome is Outcome.UNAVAILABLE:
            return results, StoreUnavailable(results[0].detail or "unavailable")
        return results, None

    def admit(self, runs: List[Run], outbox: Optional[Outbox] = None, *,
              inline: bool = False) -> List[Run]:
        """Claim the occurrences of the cluster runs among ``runs`` (the whole catch-up
        chain of each); return the runs to start, in order. A run keeps only the
        occurrences it won. ``inline``: run_pending(), which cannot wait for a run the
        store calls too early (the dispatcher's runs are retried then)."""
        box = Outbox(self._listeners) if outbox is None else outbox
        self.flush_marks(box)
        claiming = [r for r in runs
                    if not r.forced and r.claims is None and self.once(r.entry)]
        if not claiming:
            return runs
        results, error = self._claim([
            ClaimRequest(r.entry.name, r.scheduled, r.entry.policy.overlap == "skip")
            for r in claiming])
        # Chains (coalesce=False catch-up) of won heads: their other occurrences in a
        # second round, so that the head's exclusive check does not meet its own chain.
        chains = [r for r, res in zip(claiming, results) if res.won and r.backlog]
        chain_results: List[ClaimResult] = []
        if chains:
            chain_results, chain_error = self._claim(
                [ClaimRequest(r.entry.name, when) for r in chains for when in r.backlog])
            error = error or chain_error
        rejected: Set[int] = set()
        with self._cond:
            self.health(error, box)
            pos = 0
            for run, res in zip(claiming, results):
                tail: List[ClaimResult] = []
                if res.won and run.backlog:
                    tail = chain_results[pos:pos + len(run.backlog)]
                    pos += len(run.backlog)
                if not self._apply(run, res, tail, box, inline=inline):
                    rejected.add(id(run))
        self.flush_marks(box)  # the skips recorded just now (a BUSY head's chain)
        return [r for r in runs if id(r) not in rejected]

    def _apply(self, run: Run, res: ClaimResult, tail: List[ClaimResult], outbox: Outbox,
               *, inline: bool) -> bool:
        """Caller holds the lock: what a claim's outcome makes of a run; True if it
        starts."""
        entry = run.entry
        outcome = res.outcome
        if outcome is Outcome.UNAVAILABLE and entry.policy.on_unavailable == "run":
            run.claims = (None,) * (1 + len(run.backlog))
            outbox.log(logging.WARNING, "job %r runs unclaimed: the run store is unavailable "
                       "and its on_unavailable is 'run'", entry.name,
                       extra=log_extra(entry, "run_unclaimed", scheduled=run.scheduled))
            return True
        if outcome is Outcome.WON:
            assert res.claim is not None
            claims: List[Optional[Claim]] = [res.claim]
            kept: List[datetime] = []
            for when, item in zip(run.backlog, tail):
                if item.won or (item.outcome is Outcome.UNAVAILABLE
                                and entry.policy.on_unavailable == "run"):
                    claims.append(item.claim)
                    kept.append(when)
                else:
                    self._not_claimed(entry, when, item, outbox)
            run.backlog, run.claims = tuple(kept), tuple(claims)
            run.valid_until = min(c.valid_until_mono for c in claims if c is not None)
            return True
        if outcome is Outcome.EARLY and not inline and res.server_now is not None:
            # The store's clock is behind ours: try again when it reaches the instant.
            ahead = (run.scheduled - res.server_now).total_seconds()
            self._registry.push(utc_now().timestamp() + max(ahead, 0.001),
                                TimerKind.DELAYED_START, entry, run)
            self._cond.notify_all()
            return False
        self._book.release(run)
        self._not_claimed(entry, run.scheduled, res, outbox)
        for when in run.backlog:  # a BUSY head's chain is recorded skipped by a mark
            self._not_claimed(entry, when, res, outbox, record=True)
        return False

    def _not_claimed(self, entry: Entry, when: datetime, res: ClaimResult,
                     outbox: Outbox, record: bool = False) -> None:
        """Caller holds the lock: count an occurrence this process does not run.
        ``record``: the claim did not record it, so a BUSY one is marked skipped."""
        outcome = res.outcome
        stats = entry.stats_for_update()
        if outcome is Outcome.TAKEN:
            stats.claimed_elsewhere_count += 1
            stats.last_scheduled_time = when
            outbox.log(logging.DEBUG, "job %r: claimed by %s", entry.name, res.holder,
                       extra=log_extra(entry, "run_claimed_elsewhere", scheduled=when))
            outbox.event(EventKind.RUN_CLAIMED_ELSEWHERE, entry, when)
        elif outcome is Outcome.BUSY:
            # The store recorded it skipped: a live run of the job exists elsewhere.
            self._firing.skip(entry, when, outbox, None, occurrence=record)
        else:  # TOO_OLD, UNAVAILABLE (on_unavailable="skip"), EARLY in run_pending()
            stats.missed_count += 1
            stats.last_status = RunStatus.MISSED
            stats.last_scheduled_time = when
            outbox.log(logging.WARNING, "job %r not run: the run store answered %s%s",
                       entry.name, outcome, f" ({res.detail})" if res.detail else "",
                       extra=log_extra(entry, "run_missed", scheduled=when))
            outbox.event(EventKind.RUN_MISSED, entry, when)

    def flush_marks(self, outbox: Outbox) -> None:
        """Record the skipped and missed occurrences firing decided on (no lock held).
        Local skips are recorded for overlap="skip" jobs only: a concurrent job at its
        local limit may still run in another process."""
        with self._cond:
            marks = self._firing.marks or []
            self._firing.marks = []
        error: Optional[BaseException] = None
        for entry, when, status in marks:
            if not self.once(entry) or (
                    status is RunStatus.SKIPPED and entry.policy.overlap != "skip"):
                continue
            try:
                self.store.mark(entry.name, when, status.value)
            except StoreError as exc:  # not recorded: the occurrence keeps no row
                error = exc
                break
        if marks:
            with self._cond:
                self.health(error, outbox)

    # -- the end of a run (worker, no lock held) ------------------------------------------

    def record_finish(self, run: Run, status: RunStatus) -> None:
        """A worker's run ended (no lock held): hand its end to the recorder thread, so
        that the next run does not wait for the store, or record it now."""
        if run.claims is None or run.claims[0] is None:
            return
        recorder = self.recorder
        if recorder is None or not recorder(run, status):
            outbox = Outbox(self._listeners)
            self.finish_now([(run, status)], outbox)
            outbox.deliver(self._listeners)

    def finish_now(self, ended: List[Tuple[Run, RunStatus]], outbox: Outbox) -> None:
        """Record runs' ends in one round trip; a refusal (the lease was lost meanwhile)
        is logged and counted, never written over."""
        claims: List[Tuple[Claim, str]] = []
        for run, status in ended:
            assert run.claims is not None and run.claims[0] is not None  # record_finish
            claims.append((run.claims[0], status.value))
        items = claims
        error: Optional[BaseException] = None
        recorded = [True] * len(items)
        try:
            recorded = self.store.finish_many(items)
        except StoreError as exc:  # their leases lapse: a sweep records them lost
            error = exc
        with self._cond:
            self.health(error, outbox)
            for (run, status), ok in zip(ended, recorded):
                if ok:
                    continue
                outbox.log(logging.WARNING, "job %r (scheduled %s) ended %s after its lease "
                           "was lost; the store keeps what it recorded", run.entry.name,
                           run.scheduled.isoformat(), status,
                           extra=log_extra(run.entry, "run_lease_lost",
                                           scheduled=run.scheduled))
                if not run.lease_lost:
                    self.lease_lost(run, outbox)

    def lease_lost(self, run: Run, outbox: Outbox) -> None:
        """Caller holds the lock: the run's lease is gone; stop it (cooperatively)."""
        run.lease_lost = run.cancelled = True
        if run.cancel is not None:
            run.cancel.set()
        run.entry.stats_for_update().lease_lost_count += 1
        outbox.log(logging.WARNING, "job %r (scheduled %s) lost its run store lease; its "
                   "cancel token is set", run.entry.name, run.scheduled.isoformat(),
                   extra=log_extra(run.entry, "run_lease_lost", scheduled=run.scheduled))
        outbox.event(EventKind.RUN_LEASE_LOST, run.entry, run.scheduled)
