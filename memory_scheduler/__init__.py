"""memory_scheduler: cron jobs in the background of synchronous Python programs.

A dispatcher thread sleeps until the next run, hands due jobs to a thread pool and
shuts down within a timeout. Time zones and daylight-saving changes follow the rules
in the README; tests can drive it with frozen clocks (see ``memory_scheduler.testing``).
"""

import logging

from .config import SchedulerConfig
from .cron import CronSchedule, validate_cron_expression
from .errors import (
    AlreadyRunning,
    DuplicateJob,
    InvalidCron,
    InvalidTimezone,
    InvalidValue,
    JobNotFound,
    NotRunning,
    SchedulerError,
)
from .events import EventKind, SchedulerEvent
from .firing import MAX_CATCHUP_RUNS
from .job import Job, JobInfo, JobOptions, RunContext, RunResult, RunStatus, current_run
from .service import SchedulerService

__version__ = "0.1.0"

__all__ = [
    "AlreadyRunning",
    "CronSchedule",
    "DuplicateJob",
    "EventKind",
    "InvalidCron",
    "InvalidTimezone",
    "InvalidValue",
    "Job",
    "JobInfo",
    "JobNotFound",
    "JobOptions",
    "MAX_CATCHUP_RUNS",
    "NotRunning",
    "RunContext",
    "RunResult",
    "RunStatus",
    "SchedulerConfig",
    "SchedulerError",
    "SchedulerEvent",
    "SchedulerService",
    "__version__",
    "current_run",
    "validate_cron_expression",
]

# A library never configures logging; this only silences "no handler" warnings.
logging.getLogger("memory_scheduler").addHandler(logging.NullHandler())
