from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from memory_scheduler import SchedulerConfig, SchedulerService

pytest_plugins = ["memory_scheduler.testing", "pytester"]

# "ci" keeps the whole suite inside its time budget; "long" is for local bug hunts:
#   HYPOTHESIS_PROFILE=long pytest
# "ci" is derandomized, so every run checks the same examples: deterministic tests.
settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True)
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def make_service() -> Iterator[type[SchedulerService]]:
    """Build services that are shut down after the test, with no thread left behind."""
    made: list[SchedulerService] = []

    def factory(**config: object) -> SchedulerService:
        config.setdefault("shutdown_timeout_secs", 2.0)
        svc = SchedulerService(SchedulerConfig.from_mapping(config))
        made.append(svc)
        return svc

    yield factory  # type: ignore[misc]
    for svc in made:
        if svc.is_running():
            svc.shutdown(timeout=2.0)
    # Imported here, after pytest_plugins has registered (and assert-rewritten) it.
    from memory_scheduler.testing import library_threads

    leftover = library_threads()
    for t in leftover:
        t.join(1.0)
    assert not [t for t in leftover if t.is_alive()], "library threads left running"


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="memory_scheduler")
    return caplog
