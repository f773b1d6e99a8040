"""Shared by the tests that run real processes and servers (replicas, gunicorn).

Such a test may have to skip (no Linux procfs, no gunicorn). In CI a skip would hide a
regression: with ``MEMORY_SCHEDULER_STRICT=1`` in the environment, :func:`skip` fails
the test instead.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["STRICT", "skip"]

STRICT = os.environ.get("MEMORY_SCHEDULER_STRICT", "") not in ("", "0")


def skip(reason: str) -> NoReturn:
    """Skip the test, or fail it under MEMORY_SCHEDULER_STRICT=1."""
    if STRICT:
        pytest.fail(f"MEMORY_SCHEDULER_STRICT=1 and this real-process test cannot run: "
                    f"{reason}")
    pytest.skip(reason)
