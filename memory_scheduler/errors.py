"""Every exception the library raises on purpose.

::

    SchedulerError                      root: ``except SchedulerError`` catches them all
    ├── InvalidCron       (ValueError)  a cron expression the dialect rejects
    ├── InvalidTimezone   (ValueError)  a zone name zoneinfo cannot resolve, or a path-like key
    ├── InvalidValue      (ValueError)  a config value, job option or argument out of its domain
    ├── DuplicateJob      (ValueError)  a job name already registered (without replace_existing)
    ├── JobNotFound       (KeyError)    no job with that id or name
    ├── AlreadyRunning    (RuntimeError) start() on a running service
    └── NotRunning        (RuntimeError) shutdown() on a service that is not running

Each leaf also derives from the builtin a caller would catch without knowing this
library, so ``except ValueError`` around a cron parse keeps working. Errors from
croniter or zoneinfo are translated at the boundary (``raise ... from exc``) and never
escape. Messages quote the offending input and say what is wrong with it.
"""

from __future__ import annotations

__all__ = [
    "AlreadyRunning",
    "DuplicateJob",
    "InvalidCron",
    "InvalidTimezone",
    "InvalidValue",
    "JobNotFound",
    "NotRunning",
    "SchedulerError",
]


class SchedulerError(Exception):
    """Root of every error memory_scheduler raises."""


class InvalidCron(SchedulerError, ValueError):
    """A cron expression is malformed or can never fire."""


class InvalidTimezone(SchedulerError, ValueError):
    """A time zone name is unknown, empty or path-like."""


class InvalidValue(SchedulerError, ValueError):
    """A configuration value, job option or argument is of the wrong type or range."""


class DuplicateJob(SchedulerError, ValueError):
    """A job with that name is already registered and ``replace_existing`` is false."""


class JobNotFound(SchedulerError, KeyError):
    """No job has the given id or name."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in extra quotes.
        return str(self.args[0]) if self.args else ""


class AlreadyRunning(SchedulerError, RuntimeError):
    """``start()`` was called on a service that is already running."""


class NotRunning(SchedulerError, RuntimeError):
    """``shutdown()`` was called on a service that is not running."""
