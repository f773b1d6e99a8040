"""Command line: ``memory-scheduler next EXPR`` (and ``python -m memory_scheduler``).

Exit status: 0 on success, 2 for bad input (the library's message on stderr).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import List, Optional, Sequence

from . import __version__
from .cron import CronSchedule
from .errors import SchedulerError
from .service import utc_now

__all__ = ["main"]


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
    return parser


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "next":
            print("\n".join(_next_runs(args.expression, args.tz, args.n, args.start)))
    except SchedulerError as exc:
        print(f"memory-scheduler: {exc}", file=sys.stderr)
        return 2
    return 0
