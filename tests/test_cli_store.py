"""`memory-scheduler run --store`: runners of one crontab sharing a SQLite run store, as
real processes (issue 13).

Each occurrence is told by the runners' JSON records: ``command_started`` carries the
job name and the occurrence's ``scheduled_time``; the commands' own side effect (the
shell's pid appended to a file) is checked against those records.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, List

import pytest
from real_processes import skip
from test_cli_run import Cli

from memory_scheduler import CronSchedule
from memory_scheduler.clock import utc_now
from memory_scheduler.stores import RunState, SQLiteStore

FINE = "* * * * * *"
COARSE = "*/2 * * * * *"
STARTUP = 60.0  # seconds a runner may take to start on a loaded machine


def crontab(tmp_path: Path) -> Path:
    path = tmp_path / "crontab"
    path.write_text(f"{FINE} echo \"$$\" >> '{tmp_path / 'pids'}'\n"
                    f"{COARSE} echo coarse\n")
    return path


def runner(path: Path, url: str) -> Cli:
    return Cli(path, "--json", "--store", url, env={"TZ": "UTC"})


def ts(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00"))


def started_at(cli: Cli) -> datetime:
    """When ``cli`` logged its start (just before its scheduler starts)."""
    record = json.loads(cli.expect("stderr", r'"event": "started"', timeout=STARTUP))
    assert record["fields"]["store"].startswith("sqlite:///")
    assert record["fields"]["namespace"] == "default"
    return ts(record)


def starts(clis: List[Cli], schedule: str) -> List[dict[str, Any]]:
    """The command_started records of the job with ``schedule``, from every runner."""
    found = []
    for cli in clis:
        for line in cli.seen["stderr"]:
            record = json.loads(line)
            if (record["event"] == "command_started"
                    and record["fields"]["schedule"] == schedule):
                found.append(record)
    return found


def scheduled(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["fields"]["scheduled_time"])


def occurrences(expression: str, first: datetime, last: datetime) -> List[datetime]:
    """The occurrences in [first, last]."""
    schedule = CronSchedule(expression, "UTC")
    found = []
    when = schedule.next_after(first - timedelta(microseconds=1))
    while when <= last:
        found.append(when)
        when = schedule.next_after(when)
    return found


def pause_until(instant: datetime, bound: float) -> None:
    """Let real time pass up to ``instant`` (at most ``bound`` seconds): the scenario
    needs occurrences to come due, not a state to be reached."""
    seconds = (instant - utc_now()).total_seconds()
    threading.Event().wait(min(max(0.0, seconds), bound))


def stop_all(clis: List[Cli]) -> None:
    for cli in clis:
        cli.proc.send_signal(signal.SIGTERM)
    assert [cli.wait(60) for cli in clis] == [0] * len(clis)


@pytest.fixture
def clis() -> Any:
    if not sys.platform.startswith("linux"):
        skip("process groups and same-host owner detection need Linux")
    started: List[Cli] = []
    yield started
    for cli in started:
        cli.kill()


def test_runners_sharing_a_store_start_each_occurrence_once_and_catch_up(
        tmp_path: Path, clis: List[Cli]) -> None:
    path = crontab(tmp_path)
    db = tmp_path / "runs.db"
    url = f"sqlite:///{db}"  # an absolute path: four slashes
    fine_job = f"{FINE} echo \"$$\" >> '{tmp_path / 'pids'}'"
    coarse_job = f"{COARSE} echo coarse"

    # Three runners for ~4-5 s.
    clis.extend(runner(path, url) for _ in range(3))
    begin = max(started_at(cli) for cli in clis).replace(microsecond=0) + timedelta(seconds=2)
    pause_until(begin + timedelta(seconds=4.5), bound=10)
    stop_sent = utc_now()
    stop_all(clis)

    fine = starts(clis, FINE)
    assert {r["job"] for r in fine} == {fine_job}
    counts = Counter(scheduled(r) for r in fine)
    assert [when for when, n in counts.items() if n > 1] == []  # never twice
    window = occurrences(FINE, begin, stop_sent - timedelta(seconds=1))
    assert len(window) >= 3
    assert [when for when in window if counts[when] != 1] == []  # each once
    # The commands ran as logged: one pid in the file per started record.
    pids = (tmp_path / "pids").read_text().split()
    assert sorted(pids) == sorted(str(r["fields"]["pid"]) for r in fine)

    # All stopped for more than two periods of the coarse line; one runner restarts.
    with SQLiteStore(db) as store:
        watermark = store.history(coarse_job, limit=1)[0].scheduled_utc
    ran_before = {scheduled(r) for r in starts(clis, COARSE)}
    assert ran_before and max(ran_before) <= watermark
    pause_until(watermark + timedelta(seconds=5.2), bound=10)
    restarted = runner(path, url)
    clis.append(restarted)
    restart = started_at(restarted)
    first = json.loads(restarted.expect("stderr", r'"event": "command_started".*"echo coarse"',
                                        timeout=STARTUP))
    stop_all([restarted])

    # Catch-up (README, "Several processes"; coalesce=True, the runner's default): one
    # run, for the latest occurrence at or before the start, not the oldest missed one;
    # the occurrences it stands for are recorded missed.
    caught = scheduled(first)
    missed = occurrences(COARSE, watermark + timedelta(microseconds=1), restart)
    assert len(missed) >= 2
    assert caught in (missed[-1], missed[-1] + timedelta(seconds=2)), (caught, missed)
    assert caught <= ts(first)
    after_watermark = [scheduled(r) for r in starts([restarted], COARSE)
                       if watermark < scheduled(r) <= caught]
    assert after_watermark == [caught]
    with SQLiteStore(db) as store:
        rows = {row.scheduled_utc: row.state
                for row in store.history(coarse_job, limit=1000)
                if watermark < row.scheduled_utc < caught}
    assert rows == {when: RunState.MISSED for when in missed if when < caught}


@pytest.mark.parametrize(("args", "message"), [
    (["--store", "bogus://x"], "store URL 'bogus://x': unknown scheme 'bogus'"),
    (["--store", "sqlite://host/x.db"], "store URL 'sqlite://host/x.db'"),
    (["--store", "sqlite:////no/such/dir/runs.db"], "'/no/such/dir' does not exist"),
    (["--store", "memory://", "--namespace", ""], "config namespace=''"),
])
def test_a_bad_store_or_namespace_exits_2(tmp_path: Path, args: List[str],
                                          message: str) -> None:
    path = tmp_path / "crontab"
    path.write_text("* * * * * * echo never\n")
    result = subprocess.run(
        [sys.executable, "-m", "memory_scheduler", "run", str(path), *args],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("memory-scheduler: ")
    assert message in result.stderr
    assert "running" not in result.stderr  # nothing was started
    assert result.stdout == ""
