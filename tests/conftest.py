from __future__ import annotations

import logging
import os

import pytest
from hypothesis import settings

pytest_plugins = ["memory_scheduler.testing", "pytester"]

# "ci" keeps the whole suite inside its time budget; "long" is for local bug hunts:
#   HYPOTHESIS_PROFILE=long pytest
# "ci" is derandomized, so every run checks the same examples: deterministic tests.
settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True)
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="memory_scheduler")
    return caplog
