"""Parse crontab files: ``EXPR COMMAND`` lines, ``NAME=value`` and ``CRON_TZ=Zone`` lines.

Pure data; nothing runs here. Every bad line is collected, so one pass reports them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import tzinfo
from typing import Dict, List, Mapping, Optional, Tuple

from .cron import CronSchedule
from .errors import InvalidCron, InvalidTimezone, SchedulerError
from .timezones import resolve_zone

__all__ = ["CrontabEntry", "CrontabError", "parse_crontab"]

_ENV_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_FIELD_RE = re.compile(r"^(?:[0-9*/,#?-]+|[0-9]*[lL]|[hH].*|(?:sun|mon|tue|wed|thu|fri|sat)\S*)$",
                       re.IGNORECASE)


@dataclass(frozen=True)
class CrontabEntry:
    """One job line with the environment and zone in force where it stands."""

    lineno: int
    expression: str
    command: str
    zone: tzinfo
    env: Mapping[str, str]

    @property
    def name(self) -> str:
        """``L<line> <command>``: unique within the file and recognisable in logs."""
        command = self.command if len(self.command) <= 40 else self.command[:37] + "..."
        return f"L{self.lineno} {command}"


@dataclass(frozen=True)
class CrontabError:
    """A line the parser rejected."""

    path: str
    lineno: int
    line: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.line.strip()!r}: {self.message}"


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _split_job(line: str, zone: tzinfo) -> Tuple[str, str]:
    """Split ``EXPR COMMAND``; raises InvalidCron for the expression.

    A macro takes one token. Otherwise six tokens are tried first (seconds first) and
    five after, so ``*/5 * * * * echo`` is a five-field job: "echo" is no day of week.
    """
    tokens = line.split()
    if tokens[0].startswith("@"):
        count_options: Tuple[int, ...] = (1,)
    else:
        count_options = (6, 5)
    errors: Dict[int, InvalidCron] = {}
    for count in count_options:
        if len(tokens) <= count:
            continue
        expression = " ".join(tokens[:count])
        try:
            CronSchedule(expression, zone, hash_id="crontab")
        except InvalidCron as exc:
            errors[count] = exc
            continue
        command = line.split(None, count)[count].strip()
        return expression, command
    if errors:
        # Blame the six-field reading only if the sixth token looks like a cron field.
        looks_like_field = len(tokens) > 5 and _FIELD_RE.match(tokens[5]) is not None
        raise errors[6] if looks_like_field and 6 in errors else errors[min(errors)]
    raise InvalidCron(f"{line.strip()!r}: expected a cron expression followed by a command")


def parse_crontab(text: str, path: str, default_zone: tzinfo,
                  base_env: Optional[Mapping[str, str]] = None,
                  ) -> Tuple[List[CrontabEntry], List[CrontabError]]:
    """Parse a whole file. Returns the jobs and every error found (with line numbers).

    ``NAME=value`` lines add to the environment of the jobs below them (quotes around
    the value are removed); ``CRON_TZ=Zone`` sets the zone of the jobs below it.
    """
    entries: List[CrontabEntry] = []
    errors: List[CrontabError] = []
    env: Dict[str, str] = dict(base_env or {})
    zone = default_zone
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_RE.match(line)
        if match:
            name, value = match.group(1), _unquote(match.group(2))
            if name == "CRON_TZ":
                try:
                    zone = resolve_zone(value)
                except InvalidTimezone as exc:
                    errors.append(CrontabError(path, lineno, raw, str(exc)))
            else:
                env = {**env, name: value}
            continue
        try:
            expression, command = _split_job(line, zone)
        except SchedulerError as exc:
            errors.append(CrontabError(path, lineno, raw, str(exc)))
            continue
        entries.append(CrontabEntry(lineno, expression, command, zone, env))
    return entries, errors
