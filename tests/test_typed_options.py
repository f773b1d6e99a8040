"""`mypy --strict` catches job option mistakes: a misspelt name, a value outside an
enumeration, a zone of the wrong type. Needs mypy (the dev extra); skipped without it."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api", reason="mypy is in the dev extra")

HEADER = '''\
from datetime import tzinfo
from typing import Callable, Union

from typing_extensions import Unpack

from memory_scheduler import JobOptions, SchedulerService


def job() -> None: ...

'''

# The signature service.py is to adopt, checked here against JobOptions itself.
PROPOSED = HEADER + '''\
def add_cron_job(name: str, cron_expr: str, job_fn: Callable[[], object],
                 timezone: Union[str, tzinfo, None] = None,
                 **options: Unpack[JobOptions]) -> None: ...


add_cron_job("a", "* * * * *", job, misfire_grace=60)  # E
add_cron_job("a", "* * * * *", job, overlap="skp")  # E
add_cron_job("a", "* * * * *", job, timezone=42)  # E
add_cron_job("a", "* * * * *", job, max_instances="2")  # E
add_cron_job("a", "* * * * *", job, timezone="UTC", overlap="concurrent", max_instances=2,
             misfire_grace_secs=30, coalesce=False, jitter_secs=1.5, timeout_secs=None,
             replace_existing=True)
options: JobOptions = {"overlap": "skip", "misfire_grace_secs": 5.0}
add_cron_job("a", "* * * * *", job, **options)
'''

SERVICE = HEADER + '''\
svc = SchedulerService()
svc.add_cron_job("a", "* * * * *", job, misfire_grace=60)  # E
svc.add_cron_job("a", "* * * * *", job, overlap="skp")  # E
svc.add_cron_job("a", "* * * * *", job, timezone=42)  # E
svc.add_cron_job("a", "* * * * *", job, timezone="UTC", overlap="concurrent",
                 max_instances=2, misfire_grace_secs=30, coalesce=False, jitter_secs=1.5,
                 timeout_secs=None, replace_existing=True)
svc.cron("* * * * *", overlap="skp")(job)  # E
svc.cron("* * * * *", timezone=42)(job)  # E
svc.cron("* * * * *", name="b", overlap="skip", coalesce=True)(job)
'''


def error_lines(tmp_path: Path, name: str, code: str) -> tuple[set[int], set[int], str]:
    """(lines mypy --strict reports, lines marked ``# E``, mypy's output)."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(code))
    out, err, _ = mypy_api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path),
                                "--no-error-summary", str(path)])
    found = {int(m.group(1)) for m in re.finditer(rf"{name}\.py:(\d+): error", out)}
    marked = {i for i, line in enumerate(code.splitlines(), 1) if line.endswith("# E")}
    return found, marked, out + err


def test_job_options_reject_the_usual_mistakes(tmp_path: Path) -> None:
    found, marked, out = error_lines(tmp_path, "proposed", PROPOSED)
    assert found == marked, out


def test_add_cron_job_and_cron_are_typed(tmp_path: Path) -> None:
    found, marked, out = error_lines(tmp_path, "service", SERVICE)
    assert found == marked, out
