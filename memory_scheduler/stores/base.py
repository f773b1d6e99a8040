"""The run store contract: what every store promises (its values are in :mod:`.records`).

A run store records each occurrence of a job once, under the key ``(namespace, job,
scheduled UTC instant)`` with microsecond precision (stored as epoch microseconds). The
key is clock-free: every process computes it from the expression, the zone and the DST
rules, so a process with a skewed clock still names the same occurrence. Everything that
expires (leases) or guards (too early, too old) uses the store's clock: the ``clock``
callable given to the store, :func:`memory_scheduler.clock.utc_now` by default, so
freezegun and time-machine control leases in tests.

Lifecycle of a row::

    claim ──> running ──finish──> success | failed | timed_out
                 │
                 └──sweep (lease expired, or owner dead)──> lost
                                                        └─> running, attempt+1, new token
    mark ──> missed | skipped            (first writer of the key wins, as with claims)
    claim(exclusive) while a live run of the job exists ──> skipped   (Outcome.BUSY)

Rules every store follows:

* **Live lease**: a running row is live while ``store_now < lease_until``; at
  ``lease_until`` exactly it has expired (sweepable, no longer makes an exclusive claim
  BUSY).
* **Too early**: a claim or mark of an instant later than ``store_now +
  early_tolerance_secs`` is refused (``Outcome.EARLY``), so a process with a fast clock
  cannot start a run early.
* **Too old**: a claim or mark of an instant earlier than ``store_now - retention_secs``
  is refused (``Outcome.TOO_OLD``). :meth:`RunStore.prune` deletes rows only below that
  same horizon, so an occurrence whose row may have been pruned can never be claimed a
  second time. All processes on one store must use the same retention.
* **Tokens**: every claim and every re-run takeover gets a fencing token strictly greater
  than any the store handed out before (gaps allowed).
* **Never rewrite**: a finished row is never changed again, except by prune deleting it;
  a finish or renew whose token no longer matches a running row changes nothing.
* Bad arguments raise :class:`~memory_scheduler.errors.InvalidValue` before anything is
  written.

Every method is thread-safe and may block for at most the store's timeout.
"""

from __future__ import annotations

import abc
import os
from datetime import datetime
from types import TracebackType
from typing import (
    Callable,
    Collection,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
)

from ..clock import utc_now
from ..errors import InvalidValue
from .checks import check_name, check_state, from_us, seconds_us, to_us
from .owner import new_owner_id, new_salt
from .records import (
    FINISH_STATES,
    Claim,
    ClaimRequest,
    ClaimResult,
    FingerprintMismatch,
    Outcome,
    RunRecord,
    SweepResult,
)

__all__ = [
    "DEFAULT_EARLY_TOLERANCE_SECS",
    "DEFAULT_FINGERPRINT_LIVE_SECS",
    "DEFAULT_RETENTION_SECS",
    "Clock",
    "RunStore",
]

Clock = Callable[[], datetime]

#: A claim this much ahead of the store's clock is still accepted (clock jitter).
DEFAULT_EARLY_TOLERANCE_SECS = 0.5
#: Rows older than this are pruned (the newest of each job is kept); claims older than
#: this are TOO_OLD. A week covers a weekend outage with room to spare.
DEFAULT_RETENTION_SECS = 7 * 24 * 3600.0
#: A fingerprint row not refreshed for this long belongs to a process that is gone.
DEFAULT_FINGERPRINT_LIVE_SECS = 600.0


class RunStore(abc.ABC):
    """A store of occurrence claims shared by the processes of one deployment.

    Args:
        namespace: keys of different namespaces never meet (one store, several apps).
        owner: the owner id of this process; by default one per process incarnation
            (``host:pid:pidns:start:random``), recomputed in a forked child.
        clock: the store's clock for leases and guards; ``utc_now`` by default.
        early_tolerance_secs: how far ahead of the store clock a claim may be.
        retention_secs: rows older than this are pruned and claims older than it are
            TOO_OLD (see the module docstring).

    Methods may be called from any thread; none is called with the service lock held.
    """

    def __init__(self, *, namespace: str = "default", owner: Optional[str] = None,
                 clock: Optional[Clock] = None,
                 early_tolerance_secs: float = DEFAULT_EARLY_TOLERANCE_SECS,
                 retention_secs: float = DEFAULT_RETENTION_SECS) -> None:
        self._namespace = check_name("namespace", namespace)
        self._fixed_owner = None if owner is None else check_name("owner", owner)
        self._clock: Clock = utc_now if clock is None else clock
        if not callable(self._clock):
            raise InvalidValue(f"clock={clock!r}: expected a callable returning a datetime")
        self._early_us = seconds_us("early_tolerance_secs", early_tolerance_secs,
                                    allow_zero=True)
        self._retention_us = seconds_us("retention_secs", retention_secs)
        # (pid, owner id) of the process that computed it: a forked child makes its own.
        # Threads racing to recompute it compute the same string (new_owner_id).
        self._salt = new_salt()
        self._owner_for: Tuple[int, str] = (os.getpid(), new_owner_id(self._salt))

    # -- identity and clock ----------------------------------------------------------

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def owner(self) -> str:
        """This process's owner id (see the class docstring)."""
        if self._fixed_owner is not None:
            return self._fixed_owner
        pid = os.getpid()
        if self._owner_for[0] != pid:
            self._owner_for = (pid, new_owner_id(self._salt))
        return self._owner_for[1]

    @property
    def retention_secs(self) -> float:
        return self._retention_us / 1_000_000

    def server_time(self) -> datetime:
        """The store's clock now (aware UTC)."""
        return from_us(self._now_us())

    def _now_us(self) -> int:
        return to_us(self._clock(), "clock()")

    def _guard(self, at_us: int, now_us: int) -> Optional[Outcome]:
        """EARLY or TOO_OLD for an instant the store must not record now, else None."""
        if at_us > now_us + self._early_us:
            return Outcome.EARLY
        if at_us < now_us - self._retention_us:
            return Outcome.TOO_OLD
        return None

    # -- the contract ------------------------------------------------------------------

    def claim(self, job: str, scheduled_utc: datetime, lease_secs: float, *,
              exclusive: bool = False) -> ClaimResult:
        """Claim one occurrence; :meth:`claim_many` with one request."""
        return self.claim_many([ClaimRequest(job, scheduled_utc, exclusive)], lease_secs)[0]

    @abc.abstractmethod
    def claim_many(self, items: Sequence[ClaimRequest], lease_secs: float) -> List[ClaimResult]:
        """Claim every occurrence of ``items`` in one round trip (one transaction).

        Returns one result per item, in order. The first owner to record a key wins
        (WON, with a lease of ``lease_secs`` in store time and a new token); a same-owner
        retry of a key it still runs gets WON with the same token and attempt; any other
        recorded key is TAKEN. Exclusive items are decided after the others of the
        batch: BUSY (and recorded as skipped) if a live running row of the job exists.
        A store failure gives UNAVAILABLE for every item and records nothing; this
        method never raises StoreUnavailable.

        Raises:
            InvalidValue: a malformed item or lease (nothing is recorded).
            StoreError: the store is closed or no longer a usable run store.
        """

    @abc.abstractmethod
    def renew(self, claims: Sequence[Claim], lease_secs: float) -> List[bool]:
        """Extend the leases of running claims to store now + ``lease_secs``, all in
        one round trip (one heartbeat per process, whatever the number of runs).

        Returns one bool per claim: False if the row is no longer running under that
        token (swept as lost, or taken over for a re-run): the run must stop. A lease
        that expired but was not swept yet is renewed: nobody else has started it.

        Raises:
            StoreUnavailable: nothing was renewed; the holder keeps its monotonic
                deadline (:attr:`Claim.valid_until_mono`).
        """

    @abc.abstractmethod
    def finish(self, claim: Claim, state: str) -> bool:
        """Record the end of a run: ``state`` is success, failed or timed_out.

        Returns False, changing nothing, if the row is no longer running under the
        claim's token: the lease was lost meanwhile (the row says lost, or another
        attempt owns it). Never overwrites.
        """

    def finish_many(self, items: Sequence[Tuple[Claim, str]]) -> List[bool]:
        """:meth:`finish` of each ``(claim, state)``, in one round trip where the store
        can (one transaction for SQLite): a burst of runs ending together costs one
        commit. Validates every item before recording any."""
        for claim, state in items:
            check_state(state, FINISH_STATES, "finish")
            to_us(claim.scheduled_utc)
        return [self.finish(claim, state) for claim, state in items]

    @abc.abstractmethod
    def mark(self, job: str, scheduled_utc: datetime, state: str) -> bool:
        """Record an occurrence nobody runs: ``state`` is missed or skipped.

        First writer wins, as with claims: True if this call recorded the key; False if
        it was already recorded, or is too early or too old to record.
        """

    @abc.abstractmethod
    def sweep(self, lease_secs: float, rerun_jobs: Collection[str] = (), *,
              max_attempts: int = 2, limit: int = 100) -> SweepResult:
        """Take over running rows whose lease has expired (or, where the store can tell,
        whose owner process is dead), oldest lease first, at most ``limit``.

        A row of a job in ``rerun_jobs`` whose attempt is below ``max_attempts`` is taken
        over by this owner: attempt + 1, a new token, a lease of ``lease_secs``; it is
        returned in ``rerun`` and the caller must run it. Every other such row becomes
        ``lost`` and is returned in ``lost``.
        """

    @abc.abstractmethod
    def watermarks(self, jobs: Collection[str]) -> Dict[str, datetime]:
        """The latest recorded scheduled instant of each job that has one (any state).

        Jobs the store has never seen are absent: a job new to the store starts from now.
        """

    @abc.abstractmethod
    def history(self, job: str, limit: int = 100) -> List[RunRecord]:
        """The recorded occurrences of ``job``, newest scheduled instant first."""

    @abc.abstractmethod
    def fingerprints(self, fingerprints: Mapping[str, str], *,
                     live_secs: float = DEFAULT_FINGERPRINT_LIVE_SECS
                     ) -> List[FingerprintMismatch]:
        """Record this owner's fingerprint of each job (``{job: fingerprint}``) and
        report the jobs another live owner records with a different fingerprint.

        An owner counts as live if it recorded within ``live_secs`` (and, where the
        store can tell, its process is alive): call this at start and again at least
        every ``live_secs / 2`` to stay live.
        """

    @abc.abstractmethod
    def prune(self, retention_secs: Optional[float] = None) -> int:
        """Delete finished rows scheduled before store now - retention, keeping the
        newest row of every job (the catch-up watermark) and every running row.

        ``retention_secs`` defaults to the store's and may not be smaller (pruned keys
        must stay TOO_OLD to claim). Returns the number of rows deleted; works in short
        transactions so claims of other processes interleave.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's resources; idempotent. Later calls raise StoreError."""

    def _prune_horizon_us(self, retention_secs: Optional[float], now_us: int) -> int:
        if retention_secs is None:
            return now_us - self._retention_us
        retention_us = seconds_us("retention_secs", retention_secs)
        if retention_us < self._retention_us:
            raise InvalidValue(
                f"prune(retention_secs={retention_secs!r}): smaller than the store's "
                f"retention_secs={self.retention_secs:g}, below which claims are TOO_OLD; "
                "pruning more would let a pruned occurrence be claimed again")
        return now_us - retention_us

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()
