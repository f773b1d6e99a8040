"""A WSGI app under gunicorn with 4 workers, each starting a scheduler on one SQLite
store in post_fork (tests/wsgi_app.py, tests/gunicorn_conf.py): every occurrence of the
every-second job runs once across the workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from real_processes import skip

from memory_scheduler import CronSchedule
from memory_scheduler.stores import RunState, SQLiteStore

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        skip("gunicorn is not installed (pip install -e '.[test]')")
    if not sys.platform.startswith(("linux", "darwin")):
        skip("gunicorn runs on Unix only")
    port = free_port()
    env = dict(os.environ, LEDGER=str(tmp_path / "ledger.jsonl"),
               STORE_DB=str(tmp_path / "runs.db"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn_conf.py",
         "-b", f"127.0.0.1:{port}", "wsgi_app:app"],
        cwd=HERE, env=env, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "gunicorn.err", "wb"))
    try:
        yield proc, tmp_path, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_four_workers_run_each_occurrence_once(
        gunicorn: tuple[subprocess.Popen[bytes], Path, int]) -> None:
    proc, root, port = gunicorn
    db = root / "runs.db"

    def owners() -> int:
        if not db.exists():
            return 0
        try:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                return int(conn.execute(
                    "SELECT COUNT(DISTINCT owner) FROM memory_scheduler_jobs").fetchone()[0])
        except sqlite3.Error:
            return 0

    for _ in range(300):  # each worker records its job fingerprints when it starts
        if owners() >= 4:
            break
        threading.Event().wait(0.1)
    assert owners() == 4, (root / "gunicorn.err").read_text()
    start = time.time() + 0.5
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        assert b"scheduler running True" in response.read()
    threading.Event().wait(3.5)
    end = time.time() - 1.0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    starts = [json.loads(line) for line in (root / "ledger.jsonl").read_text().splitlines()]
    counts = Counter(e["sched"] for e in starts)
    assert [s for s, n in counts.items() if n > 1] == []
    schedule = CronSchedule("* * * * * *", "UTC")
    due = []
    when = schedule.next_utc(datetime.fromtimestamp(start, timezone.utc))
    while when.timestamp() <= end:
        due.append(when.timestamp())
        when = schedule.next_utc(when)
    assert len(due) >= 2 and all(counts[s] == 1 for s in due)
    with SQLiteStore(db) as store:
        records = {r.scheduled_utc.timestamp(): r for r in store.history("beat", 1000)}
    assert all(records[s].state is RunState.SUCCESS for s in due)
