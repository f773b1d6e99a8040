"""The values the run stores hand out and take: outcomes, states, claims, records.

Plain immutable values with no behaviour of their own; :mod:`.base` says what a store
promises about them. :func:`self_fence_deadline` computes :attr:`Claim.valid_until_mono`
for every store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Optional, Tuple

__all__ = [
    "FINISH_STATES",
    "MARK_STATES",
    "Claim",
    "ClaimRequest",
    "ClaimResult",
    "FingerprintMismatch",
    "Outcome",
    "RunRecord",
    "RunState",
    "SweepResult",
    "self_fence_deadline",
]


class Outcome(str, enum.Enum):
    """What a claim came to."""

    WON = "won"  # this owner runs it (also: the same owner retrying a running claim)
    TAKEN = "taken"  # the key is already recorded: claimed elsewhere, finished, marked
    EARLY = "early"  # scheduled later than the store's now + early tolerance
    BUSY = "busy"  # exclusive claim while a live run of the job exists; recorded skipped
    TOO_OLD = "too_old"  # scheduled before the retention horizon; it may have been pruned
    UNAVAILABLE = "unavailable"  # the store failed or timed out; nothing was recorded

    def __str__(self) -> str:
        return self.value


class RunState(str, enum.Enum):
    """The state of a recorded occurrence. Terminal values match ``RunStatus``'s."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    LOST = "lost"  # the owner died or froze past its lease (swept)
    MISSED = "missed"  # beyond misfire grace (mark)
    SKIPPED = "skipped"  # overlap: a live run of the job existed (mark, or BUSY claim)

    def __str__(self) -> str:
        return self.value


#: States :meth:`RunStore.finish` accepts.
FINISH_STATES = frozenset({RunState.SUCCESS, RunState.FAILED, RunState.TIMED_OUT})
#: States :meth:`RunStore.mark` accepts.
MARK_STATES = frozenset({RunState.MISSED, RunState.SKIPPED})


class ClaimRequest(NamedTuple):
    """One occurrence to claim. ``exclusive`` applies overlap="skip" across processes."""

    job: str
    scheduled_utc: datetime
    exclusive: bool = False


class Claim(NamedTuple):
    """A won occurrence: the right to run it while the lease holds.

    ``lease_until`` is in the store's clock. ``valid_until_mono`` is the holder's own
    deadline in ``time.monotonic()``: the time the request was sent plus the lease minus
    a margin. Past it, without a successful renew, the holder must assume the lease lost
    (self-fencing; nobody can sweep the row before ``lease_until``).

    A NamedTuple rather than a frozen dataclass: a burst builds ten thousand of them,
    and a tuple is built three times faster.
    """

    job: str
    scheduled_utc: datetime
    owner: str
    token: int
    attempt: int
    lease_until: datetime
    valid_until_mono: float


class ClaimResult(NamedTuple):
    """The answer to one :class:`ClaimRequest` (a NamedTuple, like :class:`Claim`).

    ``claim`` is set for WON only; ``holder`` is the owner of the existing row for TAKEN
    and of a live run for BUSY; ``server_now`` is the store's clock when it decided
    (None for UNAVAILABLE), so a caller can re-queue an EARLY claim; ``detail`` says why
    the store was UNAVAILABLE.
    """

    outcome: Outcome
    claim: Optional[Claim] = None
    server_now: Optional[datetime] = None
    holder: Optional[str] = None
    detail: Optional[str] = None

    @property
    def won(self) -> bool:
        return self.outcome is Outcome.WON


@dataclass(frozen=True)
class RunRecord:
    """One recorded occurrence, as :meth:`RunStore.history` and sweeps report it."""

    job: str
    scheduled_utc: datetime
    owner: str
    state: RunState
    attempt: int
    token: Optional[int]  # None for marked (missed/skipped) rows: nobody ran them
    claimed_at: datetime
    lease_until: Optional[datetime]  # set while running
    finished_at: Optional[datetime]


@dataclass(frozen=True)
class SweepResult:
    """What one sweep did: rows declared lost, and rows this owner took over to re-run."""

    lost: Tuple[RunRecord, ...] = ()
    rerun: Tuple[Claim, ...] = ()


@dataclass(frozen=True)
class FingerprintMismatch:
    """A live process records another definition under the same job name."""

    job: str
    fingerprint: str  # ours
    other_owner: str
    other_fingerprint: str
    other_seen_at: datetime


def self_fence_deadline(sent_mono: float, answered_mono: float, lease_secs: float) -> float:
    """The holder's monotonic deadline for a lease granted by a request sent at
    ``sent_mono``: the lease counted from the send (the store counted it from a later
    instant) minus a margin of max(0.1 s, 2 round trips), at most half the lease."""
    margin = min(max(0.1, 2.0 * (answered_mono - sent_mono)), lease_secs / 2.0)
    return sent_mono + lease_secs - margin
