"""Run stores: record each cron occurrence once across the processes of a deployment.

::

    from memory_scheduler.stores import open_store
    store = open_store("sqlite:///scheduler.db")      # or "memory://", or a RunStore
    result = store.claim("report", scheduled_utc, lease_secs=30.0)
    if result.won:
        ...  # run it, renew the lease meanwhile, then
        store.finish(result.claim, "success")

``base`` holds the contract (read its docstring first), ``records`` the values it takes
and hands out, ``checks`` the argument checks and the stored form of instants, ``memory``
and ``sqlite`` the two stores (``sqlite_schema`` opens and checks the SQLite file,
``sqlite_statements`` holds its SQL), ``owner`` the owner ids and same-host dead-owner
detection, ``urls`` the URLs.

How a service is meant to drive a store (none of it holds the service lock):

* start(): ``fingerprints()`` of its jobs, ``watermarks()`` for catch-up, ``sweep()``.
* claimer thread: one ``claim_many()`` per wake-up with everything due at that instant
  (``exclusive=True`` for overlap="skip" jobs); ``mark()`` for missed occurrences.
* heartbeat thread: ``renew()`` of all running claims every ``lease / 3``, cancelling
  the runs it answers False for or whose ``valid_until_mono`` passed; ``sweep()`` every
  ``lease / 2`` (re-runs come back as claims to run); ``fingerprints()`` and ``prune()``
  now and then.
* workers: ``finish()`` when a run ends; False means the lease was lost meanwhile.
"""

from .base import (
    DEFAULT_EARLY_TOLERANCE_SECS,
    DEFAULT_FINGERPRINT_LIVE_SECS,
    DEFAULT_RETENTION_SECS,
    RunStore,
)
from .errors import InvalidStoreURL, StoreError, StoreUnavailable
from .memory import MemoryStore
from .records import (
    Claim,
    ClaimRequest,
    ClaimResult,
    FingerprintMismatch,
    Outcome,
    RunRecord,
    RunState,
    SweepResult,
)
from .sqlite import SQLiteStore
from .sqlite_schema import SCHEMA_VERSION
from .urls import open_store

__all__ = [
    "DEFAULT_EARLY_TOLERANCE_SECS",
    "DEFAULT_FINGERPRINT_LIVE_SECS",
    "DEFAULT_RETENTION_SECS",
    "SCHEMA_VERSION",
    "Claim",
    "ClaimRequest",
    "ClaimResult",
    "FingerprintMismatch",
    "InvalidStoreURL",
    "MemoryStore",
    "Outcome",
    "RunRecord",
    "RunState",
    "RunStore",
    "SQLiteStore",
    "StoreError",
    "StoreUnavailable",
    "SweepResult",
    "open_store",
]
