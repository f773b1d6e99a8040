"""The errors of the run stores, under the library's root error.

::

    SchedulerError                            memory_scheduler.errors
    └── StoreError                            the store cannot be used as configured
        ├── InvalidStoreURL   (ValueError)    an unknown scheme or a malformed store URL
        └── StoreUnavailable                  a transient failure: locked past its timeout,
                                              an I/O error; the next call may succeed

Every error of the underlying engine (``sqlite3.Error``) is translated into one of these
at the boundary (``raise ... from exc``) and never escapes. Messages name the store (its
URL or path) and say what to do.
"""

from __future__ import annotations

from ..errors import SchedulerError

__all__ = ["InvalidStoreURL", "StoreError", "StoreUnavailable"]


class StoreError(SchedulerError):
    """The run store cannot be used: not a run store, a newer schema, an unreadable
    path, a closed store."""


class InvalidStoreURL(StoreError, ValueError):
    """A store URL with an unknown scheme or a shape the scheme does not accept."""


class StoreUnavailable(StoreError):
    """The store did not answer in time or failed transiently; nothing was recorded.

    :meth:`RunStore.claim_many` reports this as ``Outcome.UNAVAILABLE`` results rather
    than raising it; every other method raises it.
    """
