"""Command line (``memory-scheduler`` and ``python -m memory_scheduler``).

* ``next EXPR``: the next run times of an expression.
* ``run CRONTAB``: run a crontab file in the foreground, like supercronic.

Exit status: 0 on success or a clean shutdown, 1 when commands had to be killed at
shutdown, 2 for bad input (the messages on stderr).

Only the public API is used here and in the modules of ``run`` (``memory_scheduler``,
``memory_scheduler.clock`` and the crontab syntax of ``memory_scheduler.crontab``).

Modules of the command line, each importing only those below it:

* ``cli`` (this one): arguments, ``next``, ``run --check``, exit codes;
* ``cli_runner``: the crontab runner (one job per line, SIGHUP reloads, log records,
  the shutdown);
* ``cli_commands``: commands in process groups, signalled and killed by group; the
  PID 1 reaper;
* ``cli_relay``: command output relayed line by line (cut at LINE_LIMIT bytes).

Threads of ``run``: the main thread waits for signals and reloads or stops; the
scheduler's workers each run one command from spawn to exit; two relay threads per
command copy its output, line by line, to standard output.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
from datetime import datetime
from typing import List, Optional, Sequence

from memory_scheduler import CronSchedule, SchedulerError, __version__
from memory_scheduler.cli_relay import LINE_LIMIT, Output, zone_label
from memory_scheduler.cli_runner import read_crontab, run_crontab
from memory_scheduler.clock import utc_now
from memory_scheduler.crontab import CrontabEntry, default_zone

__all__ = ["LINE_LIMIT", "main"]


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
    run.add_argument("--store", metavar="URL",
                     help="a run store shared by the runners of one crontab, so that each "
                          "occurrence runs in one of them: sqlite:///relative.db or "
                          "sqlite:////absolute/path.db (default: none)")
    run.add_argument("--namespace", default="default", metavar="NAME",
                     help="keys of runners with another namespace never meet in the store "
                          "(default 'default')")
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


# -- run --check -----------------------------------------------------------------------

def _check(entries: List[CrontabEntry]) -> None:
    now = utc_now()
    for entry in entries:
        schedule = CronSchedule(entry.expression, entry.zone, hash_id=entry.name)
        print(f"line {entry.lineno}: {entry.expression!r} ({zone_label(entry.zone)}) "
              f"next {schedule.next_after(now).isoformat()}: {entry.command}")
    print(f"{len(entries)} job(s) OK")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "next":
            print("\n".join(_next_runs(args.expression, args.tz, args.n, args.start)))
            return 0
        zone, zone_source = default_zone(args.tz, os.environ)
        entries, errors = read_crontab(args.crontab, zone)
        if errors:
            raise SchedulerError("\n".join(errors))
    except SchedulerError as exc:
        print(f"memory-scheduler: {exc}", file=sys.stderr)
        return 2
    if args.check:
        try:
            _check(entries)
        except BrokenPipeError:  # --check | head -1: the reader has what it wanted
            Output(sys.stdout, False).discard()
        return 0
    return run_crontab(entries, zone, zone_source, args)
