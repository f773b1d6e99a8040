"""Run stores: record each cron occurrence once across the processes of a deployment.

::

    from memory_scheduler.stores import open_store
    store = open_store("sqlite:///scheduler.db")      # or "memory://", or a RunStore
    result = store.claim("report", scheduled_utc, lease_secs=30.0)
    if result.won:
        ...  # run it, renew the lease meanwhile, then
        store.finish(result.claim, "success")

``base`` holds the contract (read its docstring first), ``memory`` and ``sqlite`` the two
stores, ``owner`` the owner ids and same-host dead-owner detection, ``urls`` the URLs.
"""

from .base import (
    DEFAULT_EARLY_TOLERANCE_SECS,
    DEFAULT_FINGERPRINT_LIVE_SECS,
    DEFAULT_RETENTION_SECS,
    Claim,
    ClaimRequest,
    ClaimResult,
    FingerprintMismatch,
    Outcome,
    RunRecord,
    RunState,
    RunStore,
    SweepResult,
)
from .errors import InvalidStoreURL, StoreError, StoreUnavailable
from .memory import MemoryStore
from .sqlite import SCHEMA_VERSION, SQLiteStore
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
