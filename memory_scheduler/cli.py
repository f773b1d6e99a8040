"""Command line (``memory-scheduler`` and ``python -m memory_scheduler``).

* ``next EXPR``: the next run times of an expression.
* ``run CRONTAB``: run a crontab file in the foreground, like supercronic.

Exit status: 0 on success or a clean shutdown, 1 when commands had to be killed at
shutdown, 2 for bad input (the messages on stderr).

Only the public API is used here (``memory_scheduler``, ``memory_scheduler.clock`` and
the crontab syntax of ``memory_scheduler.crontab``).

Threads of ``run``: the main thread waits for signals and reloads or stops; the
scheduler's workers each run one command from spawn to exit; two relay threads per
command copy its output, line by line, to standard output.
"""

from __future__ import annotations

import argparse
import codecs
import itertools
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, tzinfo
from pathlib import Path
from types import FrameType
from typing import IO, Dict, List, Optional, Sequence, Set, Tuple

from memory_scheduler import (
    CronSchedule,
    Job,
    SchedulerConfig,
    SchedulerError,
    SchedulerService,
    __version__,
    current_run,
)
from memory_scheduler.clock import utc_now
from memory_scheduler.crontab import CrontabEntry, default_zone, parse_crontab

__all__ = ["LINE_LIMIT", "main"]

logger = logging.getLogger("memory_scheduler.cli")

#: Relayed output lines longer than this many bytes are cut into pieces of this size;
#: each piece but the last is marked, so memory stays bounded whatever a command prints.
LINE_LIMIT = 64 * 1024

_CUT_MARK = f" [cut at {LINE_LIMIT} bytes; the line continues]"


def _seconds(text: str) -> float:
    """argparse type of --shutdown-timeout: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or value > threading.TIMEOUT_MAX:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a finite number of seconds >= 0")
    return value


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
    run.add_argument("--tz", help="default zone of the jobs (default: $TZ, else the "
                                  "system's zone from /etc/localtime, else UTC)")
    run.add_argument("--check", action="store_true",
                     help="validate the file, print each job's next run, and exit")
    run.add_argument("--overlap", choices=["skip", "concurrent"], default="skip",
                     help="whether a job may start while its previous command runs "
                          "(default skip)")
    run.add_argument("--shutdown-timeout", type=_seconds, default=30.0, metavar="SECS",
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


# -- run: output and logs ---------------------------------------------------------------

def _timestamp() -> str:
    return utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _zone_label(zone: tzinfo) -> str:
    key = getattr(zone, "key", None)
    return key if isinstance(key, str) else str(zone)


class _Output:
    """Writes relayed lines to standard output; one lock so lines never interleave.

    When standard output is closed (``run ... | head -1``), the first failed write
    logs one warning; from then on output is read from the commands and dropped, and
    the jobs go on running.
    """

    def __init__(self, stream: IO[str], as_json: bool) -> None:
        self._stream = stream
        self._json = as_json
        self._lock = threading.Lock()  # guards writes to _stream and _closed
        self._closed = False

    def line(self, entry: CrontabEntry, run_id: int, stream: str, text: str,
             cut: bool) -> None:
        if self._closed:  # read without the lock: a stale False costs one write
            return
        if self._json:
            fields: Dict[str, object] = {"stream": stream, "text": text, "run_id": run_id,
                                         "line": entry.lineno}
            if cut:
                fields["cut"] = True
            out = json.dumps({"ts": _timestamp(), "level": "INFO", "job": entry.name,
                              "event": "output", "fields": fields})
        else:
            out = f"{_timestamp()} [{entry.label}] {stream}: {text}{_CUT_MARK if cut else ''}"
        self.write(out)

    def write(self, text: str) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._stream.write(text + "\n")
                self._stream.flush()
                return
            except BrokenPipeError:
                self._closed = True
                self._discard()
        logger.warning("standard output is closed: command output is dropped from now on",
                       extra={"event": "output_closed"})

    def _discard(self) -> None:
        # As the Python docs advise for SIGPIPE: point the descriptor at /dev/null, so
        # that what is still buffered does not fail again at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", None) or {})
        fields["message"] = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return json.dumps({
            "ts": _timestamp(), "level": record.levelname,
            "job": getattr(record, "job", None),
            "event": getattr(record, "event", None), "fields": fields,
        }, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{_timestamp()} {record.levelname:<7} {record.getMessage()}"
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
            # One start and one end line per run come from _Commands; the scheduler's
            # started/stopping/stopped lines from _run.
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


# -- run: commands ----------------------------------------------------------------------

class CommandFailed(Exception):
    """A command exited with a non-zero status or could not start (a failed run)."""


def _live(pgids: Set[int]) -> Set[int]:
    """The process groups among ``pgids`` that have a member which is not a zombie.

    ``killpg(pgid, 0)`` answers for most groups; a group it finds holds only zombies
    when the orphans it left wait for an init that does not reap them, which
    ``/proc`` tells (where there is one).
    """
    maybe: Set[int] = set()
    for pgid in pgids:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:  # a member changed its user: it is there
            pass
        maybe.add(pgid)
    if not maybe:
        return maybe
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return maybe  # the /proc of another PID namespace
        names = os.listdir("/proc")
    except OSError:
        return maybe
    live: Set[int] = set()
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue  # it has just gone
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and fields[0] not in (b"Z", b"X") and int(fields[2]) in maybe:
            live.add(int(fields[2]))
    return live


class _Commands:
    """Starts commands in process groups of their own; signals and kills the groups.

    A group is tracked from the spawn until it is found empty, not only while its
    shell runs: a background grandchild stays in its group after the shell exits.
    """

    def __init__(self, output: _Output) -> None:
        self._output = output
        # Guards everything below; held around the spawn, so that a command started
        # while stopping is either refused or signalled.
        self._lock = threading.Lock()
        self._running: Set[int] = set()  # groups whose shell is not reaped yet
        self._lingering: Set[int] = set()  # groups whose shell left members behind
        self._stopping = False
        self._run_ids = itertools.count(1)

    def run(self, entry: CrontabEntry) -> None:
        """Run one command from spawn to exit (in a scheduler worker).

        Raises:
            CommandFailed: it exited with a non-zero status, was killed, or did not start.
        """
        scheduled = current_run().scheduled_time.isoformat()
        env = {**os.environ, **entry.env, "SHELL": entry.shell}
        fields: Dict[str, object] = {
            "line": entry.lineno, "command": entry.command, "schedule": entry.expression,
            "timezone": _zone_label(entry.zone), "scheduled_time": scheduled}
        extra = {"job": entry.name, "fields": fields}
        with self._lock:
            if self._stopping:
                return
            run_id = next(self._run_ids)
            fields["run_id"] = run_id
            if self._lingering:
                self._lingering = _live(self._lingering)
            started = utc_now()  # the duration counts from the spawn
            try:
                proc = subprocess.Popen(
                    [entry.shell, "-c", entry.command], env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                )
            except OSError as exc:
                error: Optional[OSError] = exc
            else:
                error = None
                self._running.add(proc.pid)
        if error is not None:
            logger.error("[%s] run %d could not start %s: %s", entry.label, run_id,
                         entry.shell, error,
                         extra={**extra, "event": "command_not_started",
                                "fields": {**fields, "error": str(error)}})
            raise CommandFailed(f"could not start {entry.shell}: {error}")
        fields["pid"] = proc.pid
        logger.info("[%s] run %d started (pid %d, scheduled %s)", entry.label, run_id,
                    proc.pid, scheduled, extra={**extra, "event": "command_started"})
        relays = [threading.Thread(target=self._relay, args=(entry, run_id, name, pipe),
                                   name=f"memory_scheduler-relay-{proc.pid}-{name}",
                                   daemon=True)
                  for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))]
        for relay in relays:
            relay.start()
        code = proc.wait()
        duration = max(0.0, (utc_now() - started).total_seconds())
        with self._lock:
            self._running.discard(proc.pid)
            self._lingering |= _live({proc.pid})
        for relay in relays:
            relay.join(1.0)  # a background grandchild may hold the pipe open
        if code < 0:
            outcome = f"killed by {_signal_name(-code)}"
            end: Dict[str, object] = {"signal": _signal_name(-code)}
        else:
            outcome = f"exited with status {code}"
            end = {"exit_status": code}
        logger.log(logging.INFO if code == 0 else logging.WARNING,
                   "[%s] run %d %s after %.3fs", entry.label, run_id, outcome, duration,
                   extra={**extra, "event": "command_exited",
                          "fields": {**fields, **end, "duration_secs": round(duration, 6)}})
        if code != 0:
            raise CommandFailed(outcome)

    def _relay(self, entry: CrontabEntry, run_id: int, stream: str,
               pipe: Optional[IO[bytes]]) -> None:
        assert pipe is not None
        # Pieces of at most LINE_LIMIT bytes; the decoder keeps a character split
        # between two pieces for the next one.
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        with pipe:
            while True:
                raw = pipe.readline(LINE_LIMIT)
                if not raw:
                    break
                cut = len(raw) == LINE_LIMIT and not raw.endswith(b"\n")
                text = decoder.decode(raw, final=not cut)
                self._output.line(entry, run_id, stream,
                                  text if cut else text.rstrip("\r\n"), cut)

    def stop(self) -> int:
        """Start no more commands; SIGTERM every group with a member; count them."""
        with self._lock:
            self._stopping = True
            return self._signal(signal.SIGTERM)

    def alive(self) -> bool:
        """Whether a command, or something a command left behind, is still running."""
        with self._lock:
            self._lingering = _live(self._lingering)
            return bool(self._running or self._lingering)

    def kill(self) -> int:
        """SIGKILL every group that still has a member; count them."""
        with self._lock:
            self._stopping = True
            return self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> int:
        """Caller holds the lock."""
        self._lingering = _live(self._lingering)
        count = 0
        for pgid in _live(self._running | self._lingering):
            try:
                os.killpg(pgid, signum)
                count += 1
            except ProcessLookupError:
                pass
        return count


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# -- run: the crontab and its jobs ---------------------------------------------------------

class _Task:
    """A job's function: runs the command of its crontab line. A reload that keeps the
    job replaces ``entry`` (a moved line number) without touching the job."""

    def __init__(self, commands: _Commands, entry: CrontabEntry) -> None:
        self.commands = commands
        self.entry = entry

    def run(self) -> None:
        self.commands.run(self.entry)


def _read(path: str, zone: tzinfo) -> Tuple[List[CrontabEntry], List[str]]:
    """The jobs of the file, or the errors (each ``file:line: 'text': message``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"cannot read crontab {path!r}: {exc}"]
    entries, errors = parse_crontab(text, path, zone)
    return entries, [str(e) for e in errors]


class _Runner:
    """The service, one job per crontab line, and the reload that keeps them in step."""

    def __init__(self, args: argparse.Namespace, zone: tzinfo, commands: _Commands) -> None:
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
            max_workers=10_000))

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
        entries, errors = _read(self.path, self.zone)
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


# -- run: PID 1 ----------------------------------------------------------------------------

def _init_parent() -> Optional[int]:
    """As PID 1 (a container without an init): fork. The child returns None and runs
    the crontab; the parent reaps every orphan that the kernel hands to PID 1, forwards
    signals to the child, and returns the child's exit status.

    A separate reaper keeps ``waitpid(-1)`` away from the ``Popen.wait`` calls of the
    runner, which would lose exit statuses to it (supercronic forks for the same reason).
    Called before any thread exists.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        os.setpgid(0, 0)
        return None
    # Own process group for the child, the terminal's foreground one if there is a
    # terminal: Ctrl-C then reaches the runner once, not also through this process.
    try:
        os.setpgid(child, child)
    except OSError:
        pass  # the child did it first
    terminal = os.isatty(0)
    if terminal:
        try:
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            os.tcsetpgrp(0, child)
        except OSError:
            terminal = False

    def forward(signum: int, frame: Optional[FrameType]) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                   signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, forward)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:  # cannot happen while the child lives
            return 1
        if pid == child:
            if terminal:
                try:
                    os.tcsetpgrp(0, os.getpgrp())
                except OSError:
                    pass
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


# -- run: main ---------------------------------------------------------------------------

def _check(entries: List[CrontabEntry]) -> None:
    now = utc_now()
    for entry in entries:
        schedule = CronSchedule(entry.expression, entry.zone, hash_id=entry.name)
        print(f"line {entry.lineno}: {entry.expression!r} ({_zone_label(entry.zone)}) "
              f"next {schedule.next_after(now).isoformat()}: {entry.command}")
    print(f"{len(entries)} job(s) OK")


def _run(entries: List[CrontabEntry], zone: tzinfo, zone_source: str,
         args: argparse.Namespace) -> int:
    if os.getpid() == 1:
        code = _init_parent()
        if code is not None:
            return code
    output = _Output(sys.stdout, args.json)
    commands = _Commands(output)
    runner = _Runner(args, zone, commands)
    _configure_logging(args.json, sys.stderr, runner)
    runner.apply(entries)
    # The handler only records the signal: it may run in the middle of any code of
    # the main thread (even inside a lock that code holds), so it must not take locks.
    received: List[int] = []

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        received.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    logger.info("running %d job(s) from %s; default zone %s (from %s)", len(entries),
                args.crontab, _zone_label(zone), zone_source,
                extra={"event": "started", "fields": {
                    "jobs": len(entries), "crontab": args.crontab,
                    "zone": _zone_label(zone), "zone_source": zone_source}})
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


def _stop(runner: _Runner, commands: _Commands, signum: int, received: List[int],
          handled: int, timeout: float) -> int:
    """Stop within ``timeout``: SIGTERM every process group, SIGKILL what is left."""
    name = _signal_name(signum)
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "next":
            print("\n".join(_next_runs(args.expression, args.tz, args.n, args.start)))
            return 0
        zone, zone_source = default_zone(args.tz, os.environ)
        entries, errors = _read(args.crontab, zone)
        if errors:
            raise SchedulerError("\n".join(errors))
    except SchedulerError as exc:
        print(f"memory-scheduler: {exc}", file=sys.stderr)
        return 2
    if args.check:
        try:
            _check(entries)
        except BrokenPipeError:  # --check | head -1: the reader has what it wanted
            _Output(sys.stdout, False)._discard()
        return 0
    return _run(entries, zone, zone_source, args)
