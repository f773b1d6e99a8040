"""The crontab runner: one job per crontab line in a SchedulerService, SIGHUP reloads,
the log records (text or JSON), and the shutdown that SIGTERMs and then SIGKILLs.

Part of the command line (``memory-scheduler run``): see :mod:`memory_scheduler.cli`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from datetime import tzinfo
from pathlib import Path
from types import FrameType
from typing import IO, Dict, List, Optional, Tuple

from memory_scheduler import Job, SchedulerConfig, SchedulerError, SchedulerService
from memory_scheduler.cli_commands import CommandFailed, Commands, init_parent, signal_name
from memory_scheduler.cli_relay import Output, timestamp, zone_label
from memory_scheduler.crontab import CrontabEntry, parse_crontab

__all__ = ["read_crontab", "run_crontab"]

logger = logging.getLogger("memory_scheduler.cli")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", None) or {})
        fields["message"] = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return json.dumps({
            "ts": timestamp(), "level": record.levelname,
            "job": getattr(record, "job", None),
            "event": getattr(record, "event", None), "fields": fields,
        }, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{timestamp()} {record.levelname:<7} {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _Records(logging.Filter):
    """Drops the library's records that the runner's own lines replace, names the
    event of every other record, and adds the crontab line to records about a job."""

    def __init__(self, runner: _Runner) -> None:
        super().__init__()
        self._runner = runner

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "event", None)
        if record.name == "memory_scheduler":
            # One start and one end line per run come from Commands; the scheduler's
            # started/stopping/stopped lines from run_crontab.
            if event in ("run_started", "run_succeeded"):
                return False
            exc = record.exc_info[1] if record.exc_info else None
            if event == "run_failed" and isinstance(exc, CommandFailed):
                return False
            if event is None:
                if record.levelno < logging.WARNING:
                    return False
                record.event = f"scheduler_{record.levelname.lower()}"
        job = getattr(record, "job", None)
        fields = getattr(record, "fields", None)
        if isinstance(job, str) and isinstance(fields, dict) and "line" not in fields:
            line = self._runner.lines.get(job)
            if line is not None:
                record.fields = {"line": line, **fields}
        return True


def _configure_logging(as_json: bool, stream: IO[str], runner: _Runner) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JsonFormatter() if as_json else _TextFormatter())
    handler.addFilter(_Records(runner))
    root = logging.getLogger("memory_scheduler")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


class _Task:
    """A job's function: runs the command of its crontab line. A reload that keeps the
    job replaces ``entry`` (a moved line number) without touching the job."""

    def __init__(self, commands: Commands, entry: CrontabEntry) -> None:
        self.commands = commands
        self.entry = entry

    def run(self) -> None:
        self.commands.run(self.entry)


def read_crontab(path: str, zone: tzinfo) -> Tuple[List[CrontabEntry], List[str]]:
    """The jobs of the file, or the errors (each ``file:line: 'text': message``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"cannot read crontab {path!r}: {exc}"]
    entries, errors = parse_crontab(text, path, zone)
    return entries, [str(e) for e in errors]


class _Runner:
    """The service, one job per crontab line, and the reload that keeps them in step."""

    def __init__(self, args: argparse.Namespace, zone: tzinfo, commands: Commands) -> None:
        self.path: str = args.crontab
        self.zone = zone
        self.overlap: str = args.overlap
        self.commands = commands
        self.tasks: Dict[str, _Task] = {}  # the main thread's alone
        # Job name -> line, for log records made in any thread: replaced, not changed.
        self.lines: Dict[str, int] = {}
        # Threads are made only for commands that run at once, so the cap is only a cap.
        self.svc = SchedulerService(SchedulerConfig(
            default_timezone="UTC", shutdown_timeout_secs=args.shutdown_timeout,
            max_workers=10_000, store=args.store, namespace=args.namespace))

    def _add(self, entry: CrontabEntry, replace: bool) -> None:
        task = self.tasks[entry.name] = _Task(self.commands, entry)
        self.svc.add_job(Job(entry.name, entry.expression, task.run, timezone=entry.zone,
                             overlap=self.overlap), replace_existing=replace)

    def apply(self, entries: List[CrontabEntry]) -> Tuple[int, int, int]:
        """Make the jobs those of ``entries``; running commands are left alone.
        Returns how many jobs were added, removed and changed."""
        new = {entry.name: entry for entry in entries}
        removed = [name for name in self.tasks if name not in new]
        for name in removed:
            del self.tasks[name]
            self.svc.remove_job(name)  # a run going on finishes
        added = changed = 0
        for name, entry in new.items():
            task = self.tasks.get(name)
            if task is None:
                self._add(entry, replace=False)
                added += 1
            elif (task.entry.zone, task.entry.env) != (entry.zone, entry.env):
                self._add(entry, replace=True)
                changed += 1
            else:
                task.entry = entry
        self.lines = {name: entry.lineno for name, entry in new.items()}
        return added, len(removed), changed

    def reload(self) -> None:
        entries, errors = read_crontab(self.path, self.zone)
        if errors:
            for error in errors:
                logger.error("reload: %s", error,
                             extra={"event": "reload_error", "fields": {"error": error}})
            logger.warning("SIGHUP: %s has %d error(s); still running the previous "
                           "crontab", self.path, len(errors),
                           extra={"event": "reload_failed", "fields": {"errors": len(errors)}})
            return
        try:
            added, removed, changed = self.apply(entries)
        except SchedulerError as exc:  # not expected: the file was validated
            logger.error("SIGHUP: reloading %s failed half-way: %s", self.path, exc,
                         extra={"event": "reload_failed", "fields": {"error": str(exc)}})
            return
        logger.info("SIGHUP: reloaded %s: %d job(s), %d added, %d removed, %d changed",
                    self.path, len(entries), added, removed, changed,
                    extra={"event": "reloaded", "fields": {
                        "jobs": len(entries), "added": added, "removed": removed,
                        "changed": changed}})


def run_crontab(entries: List[CrontabEntry], zone: tzinfo, zone_source: str,
                args: argparse.Namespace) -> int:
    if os.getpid() == 1:
        code = init_parent()
        if code is not None:
            return code
    output = Output(sys.stdout, args.json)
    commands = Commands(output)
    try:
        runner = _Runner(args, zone, commands)
    except SchedulerError as exc:  # --store or --namespace: nothing has started
        print(f"memory-scheduler: {exc}", file=sys.stderr)
        return 2
    _configure_logging(args.json, sys.stderr, runner)
    runner.apply(entries)
    # The handler only records the signal: it may run in the middle of any code of
    # the main thread (even inside a lock that code holds), so it must not take locks.
    received: List[int] = []

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        received.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    started: Dict[str, object] = {"jobs": len(entries), "crontab": args.crontab,
                                  "zone": zone_label(zone), "zone_source": zone_source}
    shared = ""
    if args.store is not None:
        started.update(store=args.store, namespace=args.namespace)
        shared = f"; run store {args.store} (namespace {args.namespace!r})"
    logger.info("running %d job(s) from %s; default zone %s (from %s)%s", len(entries),
                args.crontab, zone_label(zone), zone_source, shared,
                extra={"event": "started", "fields": started})
    runner.svc.start()
    # Short waits, not one long one: a signal the kernel hands to another thread is
    # only acted on when the main thread next runs Python code.
    pause = threading.Event()
    handled = 0
    stop: Optional[int] = None
    while stop is None:
        pause.wait(0.1)
        while handled < len(received) and stop is None:
            got = received[handled]
            handled += 1
            if got == signal.SIGHUP:
                runner.reload()
            else:
                stop = got
    return _stop(runner, commands, stop, received, handled, args.shutdown_timeout)


def _stop(runner: _Runner, commands: Commands, signum: int, received: List[int],
          handled: int, timeout: float) -> int:
    """Stop within ``timeout``: SIGTERM every process group, SIGKILL what is left."""
    name = signal_name(signum)
    logger.info("%s received: stopping (shutdown timeout %.3gs)", name, timeout,
                extra={"event": "stopping", "fields": {"signal": name}})
    # One deadline for the whole shutdown: the timer's Event.wait counts real time.
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.daemon = True
    timer.start()
    terminated = commands.stop()
    if terminated:
        logger.info("sent SIGTERM to %d process group(s)", terminated,
                    extra={"event": "terminate", "fields": {"groups": terminated}})
    stopper = threading.Thread(target=runner.svc.shutdown, args=(timeout,),
                               name="memory_scheduler-cli-shutdown")
    stopper.start()
    forced = False
    # Until every command and every process it left behind is gone, or the deadline.
    while not deadline.wait(0.05):
        if signal.SIGINT in received[handled:]:
            forced = True
            logger.warning("second SIGINT: killing every command now",
                           extra={"event": "force_kill"})
            break
        if not stopper.is_alive() and not commands.alive():
            break
    timer.cancel()
    killed = commands.kill()
    if killed:
        logger.warning("killed %d process group(s) still running after %.3gs", killed,
                       timeout, extra={"event": "killed", "fields": {"groups": killed}})
    stopper.join()
    if killed or forced:
        return 1
    logger.info("stopped cleanly", extra={"event": "stopped"})
    return 0
