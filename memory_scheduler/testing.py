"""Helpers for testing code that schedules jobs (opt-in; nothing imports this module).

* :func:`simulate` steps a frozen clock (freezegun or time-machine) from one due time
  to the next and runs the due jobs synchronously, so a week of schedules takes
  milliseconds.
* The ``scheduler`` and ``make_scheduler`` pytest fixtures (enable them with
  ``pytest_plugins = ["memory_scheduler.testing"]``) give services that are shut down
  after the test and fail it if a thread of theirs is left alive.

freezegun and time-machine are never imported here: :func:`simulate` only calls
``move_to`` on the handle it is given.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, List, Optional, Protocol, Union

from . import AlreadyRunning, InvalidValue, RunResult, SchedulerConfig, SchedulerService

__all__ = ["Clock", "check_invariants", "library_threads", "make_scheduler", "scheduler",
           "simulate"]


class Clock(Protocol):
    """What :func:`simulate` needs of a frozen clock: freezegun's factory (from
    ``with freeze_time(...) as clock``) and time-machine's traveller both fit."""

    def move_to(self, destination: Any) -> Any: ...


def simulate(service: SchedulerService, clock: Clock, until: Union[datetime, str],
             *, max_steps: int = 1_000_000) -> List[RunResult]:
    """Run every occurrence up to ``until``, each at exactly its scheduled instant.

    Moves ``clock`` to each next due time in order, calls ``service.run_pending()``
    there, and finally leaves the clock at ``until``. Jobs run synchronously in the
    calling thread; every policy applies except jitter.

    Args:
        service: a service that is not started (the dispatcher would race the steps).
        clock: the frozen clock's handle.
        until: aware datetime or ISO string (naive means UTC, as in freezegun).
        max_steps: a guard against schedules that never end.

    Returns:
        What happened to each occurrence, in order.

    Raises:
        AlreadyRunning: the service is running.
        InvalidValue: ``until`` is not a datetime or ISO string, or max_steps ran out.
    """
    if service.is_running():
        raise AlreadyRunning("simulate() drives a service that is not started")
    end = _aware(until)
    results: List[RunResult] = []
    for _ in range(max_steps):
        due = service.next_run_time()
        if due is None or due > end:
            clock.move_to(end)
            results.extend(service.run_pending())
            return results
        clock.move_to(due)
        results.extend(service.run_pending())
    raise InvalidValue(f"simulate() took more than max_steps={max_steps} steps")


def _aware(value: Union[datetime, str]) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidValue(f"until={value!r}: not an ISO 8601 date/time") from None
    if not isinstance(value, datetime):
        raise InvalidValue(f"until={value!r}: expected a datetime or an ISO string")
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def library_threads(prefix: str = "memory_scheduler") -> List[threading.Thread]:
    """Live threads whose name starts with ``prefix`` (the library names all of its
    threads after ``SchedulerConfig.thread_name_prefix``)."""
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def check_invariants(service: SchedulerService) -> int:
    """Assert the service's internal invariants (the registry's heap, the run book's
    overlap slots, the pool's counters; see registry.py, runs.py and pool.py); for
    tests, after stress runs. Returns the number of jobs with a scheduled next run."""
    with service._cond:
        service._book.check_invariants()
        pool = service._pool
        if pool is not None:
            assert 0 <= pool.starting <= pool.drainers <= service.config.max_workers
        return service._registry.check_invariants()[0]


def _scheduler_factory() -> Iterator[Callable[..., SchedulerService]]:
    made: List[SchedulerService] = []

    def factory(config: Optional[SchedulerConfig] = None, **fields: Any) -> SchedulerService:
        if config is None:
            fields.setdefault("shutdown_timeout_secs", 1.0)
            # A prefix of its own, so that only this service's threads are checked.
            fields.setdefault("thread_name_prefix", f"memory_scheduler-test-{uuid.uuid4().hex}")
            config = SchedulerConfig.from_mapping(fields)
        svc = SchedulerService(config)
        made.append(svc)
        return svc

    yield factory
    alive: List[threading.Thread] = []
    for svc in made:
        if svc.is_running():
            svc.shutdown(timeout=min(1.0, svc.config.shutdown_timeout_secs))
        for thread in library_threads(svc.config.thread_name_prefix):
            thread.join(1.0)
            if thread.is_alive():
                alive.append(thread)
    if alive:
        import pytest

        pytest.fail("memory_scheduler threads left alive after the test: "
                    + ", ".join(t.name for t in alive))


try:
    import pytest as _pytest
except ImportError:  # pragma: no cover - the fixtures need pytest, simulate() does not
    pass
else:

    @_pytest.fixture
    def make_scheduler() -> Iterator[Callable[..., SchedulerService]]:
        """A factory of services: ``make_scheduler(default_timezone="Europe/Paris")``
        (SchedulerConfig fields) or ``make_scheduler(config)``. Each is shut down after
        the test with a timeout of at most 1 s; the test fails if a thread is left."""
        yield from _scheduler_factory()

    @_pytest.fixture
    def scheduler(make_scheduler: Callable[..., SchedulerService]) -> SchedulerService:
        """A service (not started) with a 1 s shutdown timeout, shut down after the
        test; the test fails if a thread of it is left alive."""
        return make_scheduler()
