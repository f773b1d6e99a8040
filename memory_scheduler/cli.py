"""Command line (``memory-scheduler`` and ``python -m memory_scheduler``).

* ``next EXPR``: the next run times of an expression.
* ``run CRONTAB``: run a crontab file in the foreground, like supercronic.

Exit status: 0 on success or a clean shutdown, 1 when commands had to be killed at
shutdown, 2 for bad input (the messages on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import IO, Dict, List, Optional, Sequence

from . import __version__
from .clock import utc_now
from .config import SchedulerConfig
from .cron import CronSchedule
from .crontab import CrontabEntry, parse_crontab
from .errors import SchedulerError
from .job import Job, current_run
from .service import SchedulerService
from .timezones import resolve_zone, zone_name

__all__ = ["main"]

logger = logging.getLogger("memory_scheduler.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memory-scheduler",
        description="Cron scheduling with time zones and DST rules.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    nxt = sub.add_parser("next", help="print the next run times of a cron expression")
    nxt.add_argument("expression", help="cron expression, e.g. '30 2 * * *'")
    nxt.add_argument("--tz", default="UTC", help="IANA time zone (default UTC)")
    nxt.add_argument("-n", type=int, default=5, help="how many run times (default 5)")
    nxt.add_argument("--from", dest="start", metavar="ISO",
                     help="start after this ISO time (naive: in --tz); default now")
    run = sub.add_parser("run", help="run a crontab file in the foreground")
    run.add_argument("crontab", help="crontab file")
    run.add_argument("--tz", help="default zone of the jobs (default: $TZ, else UTC)")
    run.add_argument("--check", action="store_true",
                     help="validate the file, print each job's next run, and exit")
    run.add_argument("--overlap", choices=["skip", "concurrent"], default="skip",
                     help="whether a job may start while its previous command runs "
                          "(default skip)")
    run.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECS",
                     help="on SIGTERM/SIGINT, wait this long before SIGKILL (default 30)")
    run.add_argument("--json", action="store_true", help="log one JSON object per line")
    return parser


# -- next ------------------------------------------------------------------------------

def _next_runs(expression: str, tz: str, count: int, start: Optional[str]) -> List[str]:
    schedule = CronSchedule(expression, tz)
    if count < 1 or count > 10_000:
        raise SchedulerError(f"-n {count}: expected 1 to 10000")
    if start is None:
        after = utc_now()
    else:
        try:
            after = datetime.fromisoformat(start)
        except ValueError:
            raise SchedulerError(f"--from {start!r}: not an ISO 8601 date/time") from None
        if after.tzinfo is None:
            after = after.replace(tzinfo=schedule.timezone)
    lines = []
    for when in schedule.iter_after(after):
        lines.append(f"{when.isoformat()}  {when.tzname()}  {when:%a}")
        if len(lines) == count:
            break
    return lines


# -- run: output ------------------------------------------------------------------------

class _Output:
    """Writes whole lines to a stream; one lock so lines never interleave."""

    def __init__(self, stream: IO[str], as_json: bool) -> None:
        self._stream = stream
        self._json = as_json
        self._lock = threading.Lock()  # guards writes to _stream

    def line(self, job: str, stream: str, text: str) -> None:
        if self._json:
            out = json.dumps({"ts": _timestamp(), "level": "INFO", "job": job,
                              "event": "output", "fields": {"stream": stream, "line": text}})
        else:
            out = f"[{job}] {stream}: {text}"
        self.write(out)

    def write(self, text: str) -> None:
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()


def _timestamp() -> str:
    return utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", None) or {})
        fields["message"] = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return json.dumps({
            "ts": _timestamp(), "level": record.levelname,
            "job": getattr(record, "job", None),
            "event": getattr(record, "event", record.name), "fields": fields,
        }, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{_timestamp()} {record.levelname:<7} {record.getMessage()}"
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and not isinstance(exc, CommandFailed):
            text += "\n" + self.formatException(record.exc_info)  # type: ignore[arg-type]
        return text


def _not_routine(record: logging.LogRecord) -> bool:
    # The "command exited" line already says that a run started and how it ended.
    return getattr(record, "event", None) not in ("run_started", "run_succeeded")


def _configure_logging(as_json: bool, stream: IO[str]) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JsonFormatter() if as_json else _TextFormatter())
    handler.addFilter(_not_routine)
    root = logging.getLogger("memory_scheduler")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


# -- run: commands ----------------------------------------------------------------------

class CommandFailed(Exception):
    """A command exited with a non-zero status (recorded as a failed run)."""


class _Commands:
    """Starts commands in their own process groups and can signal all of them."""

    def __init__(self, output: _Output) -> None:
        self._output = output
        # Guards _running and _stopping. Re-entrant: the signal handler calls
        # signal_all() in the main thread, which may already be inside it.
        self._lock = threading.RLock()
        self._running: Dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = False

    def run(self, entry: CrontabEntry) -> None:
        env = {**os.environ, **entry.env}
        shell = env.get("SHELL", "/bin/sh")
        with self._lock:
            if self._stopping:
                return
            proc = subprocess.Popen(
                [shell, "-c", entry.command], env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            )
            self._running[proc.pid] = proc
        relays = [threading.Thread(target=self._relay, args=(entry.name, name, pipe),
                                   name=f"memory_scheduler-relay-{proc.pid}-{name}",
                                   daemon=True)
                  for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))]
        for relay in relays:
            relay.start()
        started = utc_now()
        logger.debug("job %r: command started (pid %d)", entry.name, proc.pid,
                    extra={"job": entry.name, "event": "command_started",
                           "fields": {"pid": proc.pid, "command": entry.command,
                                      "scheduled": current_run().scheduled_time.isoformat()}})
        code = proc.wait()
        for relay in relays:
            relay.join(1.0)  # a background grandchild may hold the pipe open
        with self._lock:
            self._running.pop(proc.pid, None)
        duration = (utc_now() - started).total_seconds()
        level = logging.INFO if code == 0 else logging.WARNING
        logger.log(level, "job %r: command exited with status %d after %.3fs",
                   entry.name, code, duration,
                   extra={"job": entry.name, "event": "command_exited",
                          "fields": {"pid": proc.pid, "exit_code": code,
                                     "duration_secs": round(duration, 6)}})
        if code != 0:
            raise CommandFailed(f"command exited with status {code}")

    def _relay(self, job: str, stream: str, pipe: Optional[IO[bytes]]) -> None:
        assert pipe is not None
        with pipe:
            for raw in pipe:
                self._output.line(job, stream, raw.decode("utf-8", "replace").rstrip("\r\n"))

    def signal_all(self, signum: int, stop: bool = True) -> int:
        """Send ``signum`` to every running command's process group; count them."""
        with self._lock:
            self._stopping = self._stopping or stop
            procs = list(self._running.values())
        for proc in procs:
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                pass
        return len(procs)

    def running(self) -> int:
        with self._lock:
            return len(self._running)


# -- run: main ---------------------------------------------------------------------------

def _load(args: argparse.Namespace) -> List[CrontabEntry]:
    zone_text = args.tz or os.environ.get("TZ") or "UTC"
    try:
        default_zone = resolve_zone(zone_text.lstrip(":") if zone_text.startswith(":")
                                    else zone_text)
    except SchedulerError as exc:
        source = "--tz" if args.tz else "TZ"
        raise SchedulerError(f"{source}: {exc}") from None
    path = Path(args.crontab)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SchedulerError(f"cannot read crontab {str(path)!r}: {exc}") from None
    entries, errors = parse_crontab(text, str(path), default_zone)
    if errors:
        raise SchedulerError("\n".join(str(e) for e in errors))
    return entries


def _check(entries: List[CrontabEntry]) -> None:
    now = utc_now()
    for entry in entries:
        schedule = CronSchedule(entry.expression, entry.zone, hash_id=entry.name)
        print(f"line {entry.lineno}: {entry.expression!r} ({zone_name(entry.zone)}) "
              f"next {schedule.next_after(now).isoformat()}: {entry.command}")
    print(f"{len(entries)} job(s) OK")


def _run(entries: List[CrontabEntry], args: argparse.Namespace) -> int:
    output = _Output(sys.stdout, args.json)
    _configure_logging(args.json, sys.stderr)
    commands = _Commands(output)
    workers = max(4, len(entries) * (4 if args.overlap == "concurrent" else 1))
    svc = SchedulerService(SchedulerConfig(
        default_timezone="UTC", shutdown_timeout_secs=args.shutdown_timeout,
        max_workers=min(workers, 10_000)))
    for entry in entries:
        svc.add_job(Job(entry.name, entry.expression, partial(commands.run, entry),
                        timezone=entry.zone, overlap=args.overlap))
    # The handler only records the signal: it may run in the middle of any code of
    # the main thread (even inside a lock that code holds), so it must not take locks.
    interrupts: List[int] = []

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        interrupts.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("running %d job(s) from %s", len(entries), args.crontab,
                extra={"event": "started", "fields": {"jobs": len(entries)}})
    svc.start()
    # Short waits, not one long one: a signal the kernel hands to another thread is
    # only acted on when the main thread next runs Python code.
    pause = threading.Event()
    while not interrupts:
        pause.wait(0.1)
    name = signal.Signals(interrupts[0]).name
    logger.info("%s received: stopping (shutdown timeout %.3gs)", name, args.shutdown_timeout,
                extra={"event": "stopping", "fields": {"signal": name}})
    terminated = commands.signal_all(signal.SIGTERM)
    if terminated:
        logger.info("sent SIGTERM to %d running command(s)", terminated,
                    extra={"event": "terminate", "fields": {"commands": terminated}})
    stopper = threading.Thread(target=svc.shutdown, args=(args.shutdown_timeout,),
                               name="memory_scheduler-cli-shutdown")
    stopper.start()
    forced = False
    while stopper.is_alive():
        stopper.join(0.1)
        if not forced and signal.SIGINT in interrupts[1:]:
            forced = True
            logger.warning("second SIGINT: killing every command now",
                           extra={"event": "force_kill"})
            commands.signal_all(signal.SIGKILL)
    killed = commands.signal_all(signal.SIGKILL)
    if killed:
        logger.warning("killed %d command(s) still running after %.3gs", killed,
                       args.shutdown_timeout,
                       extra={"event": "killed", "fields": {"commands": killed}})
    if killed or forced:
        return 1
    logger.info("stopped cleanly", extra={"event": "stopped"})
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "next":
            print("\n".join(_next_runs(args.expression, args.tz, args.n, args.start)))
            return 0
        entries = _load(args)
        if args.shutdown_timeout < 0:
            raise SchedulerError(f"--shutdown-timeout {args.shutdown_timeout}: must be >= 0")
    except SchedulerError as exc:
        print(f"memory-scheduler: {exc}", file=sys.stderr)
        return 2
    if args.check:
        _check(entries)
        return 0
    return _run(entries, args)

