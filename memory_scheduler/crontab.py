"""Crontab files for ``memory-scheduler run``: the line syntax, job names and zones.

Pure data; nothing runs here. Every bad line is collected, so one pass reports them all.

* ``EXPR COMMAND`` lines are jobs; ``NAME=value`` lines set the environment of the jobs
  below them (``CRON_TZ=Zone`` their zone, ``SHELL=/path`` their shell).
* A comment is a line whose first non-blank character is ``#`` (as cronie): a ``#``
  after a value or a command is no comment. An environment value that would carry one
  is rejected rather than kept; in a command it reaches the shell, which ignores it.
* A job's name is its expression and command (plus `` #k`` for the k-th exact
  duplicate), so ``H`` fields and the job's identity across a reload do not move when
  lines are added above it; line numbers are only for messages.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timezone, tzinfo
from typing import Dict, List, Mapping, Optional, Tuple
from zoneinfo import ZoneInfo

from .cron import CronSchedule
from .errors import InvalidCron, InvalidTimezone, SchedulerError
from .timezones import resolve_zone

__all__ = ["DEFAULT_SHELL", "CrontabEntry", "CrontabError", "default_zone", "parse_crontab"]

#: The shell of jobs above any ``SHELL=`` line (the caller's ``$SHELL`` is ignored).
DEFAULT_SHELL = "/bin/sh"

_ENV_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_FIELD_RE = re.compile(r"^(?:[0-9*/,#?-]+|[0-9]*[lL]|[hH].*|(?:sun|mon|tue|wed|thu|fri|sat)\S*)$",
                       re.IGNORECASE)
# A word that could only be a cron field: "*", digits, ",-/?" and month or day names.
# A command never starts with one; a year field (supercronic's 7th) always does.
_FIELD_WORD_RE = re.compile(
    r"^(?:[0-9*?,/-]|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
    r"|sun|mon|tue|wed|thu|fri|sat)+$", re.IGNORECASE)
_COMMENT_HINT = "comments are only allowed on their own line"


@dataclass(frozen=True)
class CrontabEntry:
    """One job line with the environment and zone in force where it stands."""

    lineno: int
    expression: str  # fields separated by single spaces
    command: str
    zone: tzinfo
    env: Mapping[str, str]  # set by the crontab's own NAME=value lines only
    name: str  # stable: the expression and the command, "#k" for the k-th duplicate

    @property
    def label(self) -> str:
        """``L<line> <command>`` (shortened): for messages, not an identity."""
        command = self.command if len(self.command) <= 40 else self.command[:37] + "..."
        return f"L{self.lineno} {command}"

    @property
    def shell(self) -> str:
        """``/bin/sh`` unless a ``SHELL=`` line above the job says otherwise."""
        return self.env.get("SHELL", DEFAULT_SHELL)


@dataclass(frozen=True)
class CrontabError:
    """A line the parser rejected."""

    path: str
    lineno: int
    line: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.line.strip()!r}: {self.message}"


def _env_value(text: str) -> str:
    """The value of a ``NAME=value`` line: quotes removed; raises ValueError for text
    after the closing quote or an inline comment."""
    value = text.strip()
    if value[:1] in ("'", '"'):
        end = value.find(value[0], 1)
        if end < 0:
            raise ValueError(f"no closing {value[0]} in the value")
        rest = value[end + 1:].strip()
        if rest:
            raise ValueError(f"{rest!r} after the closing quote: {_COMMENT_HINT}")
        return value[1:end]
    if re.search(r"\s#", value):
        raise ValueError(f"'#' after a blank in the value: {_COMMENT_HINT} "
                         "(quote the value if the '#' belongs to it)")
    return value


def _split_job(line: str, zone: tzinfo) -> Tuple[str, str]:
    """Split ``EXPR COMMAND``; raises InvalidCron.

    A macro takes one token. Otherwise six tokens are tried first (seconds first) and
    five after, so ``*/5 * * * * echo`` is a five-field job: "echo" is no day of week.
    A command whose first word can only be a cron field is a field this dialect does
    not have (a year), not a command: the shell would expand ``*`` into file names.
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
        rest = tokens[count:]
        if all(_FIELD_WORD_RE.match(word) for word in rest):
            raise InvalidCron(f"{line.strip()!r}: cron fields and no command")
        if _FIELD_WORD_RE.match(rest[0]):
            raise InvalidCron(_extra_field_message(rest[0], count))
        command = line.split(None, count)[count].strip()
        return expression, command
    if errors:
        # Blame the six-field reading only if the sixth token looks like a cron field.
        looks_like_field = len(tokens) > 5 and _FIELD_RE.match(tokens[5]) is not None
        raise errors[6] if looks_like_field and 6 in errors else errors[min(errors)]
    raise InvalidCron(f"{line.strip()!r}: expected a cron expression followed by a command")


def _extra_field_message(word: str, count: int) -> str:
    start = f"the command starts with {word!r}, which looks like"
    if count == 6:
        return (f"{start} a 7th field: seconds..year is not supported; drop the year "
                "(six fields are second minute hour day-of-month month day-of-week)")
    if count == 5:
        return (f"{start} a 6th field: a year field is not supported; drop the year "
                "(a sixth field would come first, as seconds)")
    return f"{start} a cron field: a macro stands for all the fields"


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
    seen: Dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_RE.match(line)
        if match:
            name = match.group(1)
            try:
                value = _env_value(match.group(2))
                if name == "CRON_TZ":
                    zone = resolve_zone(value)
                elif name == "SHELL" and not value:
                    raise ValueError("an empty SHELL")
            except (ValueError, InvalidTimezone) as exc:
                errors.append(CrontabError(path, lineno, raw, str(exc)))
                continue
            if name != "CRON_TZ":
                env = {**env, name: value}
            continue
        try:
            expression, command = _split_job(line, zone)
        except SchedulerError as exc:
            errors.append(CrontabError(path, lineno, raw, str(exc)))
            continue
        job_name = f"{expression} {command}"
        seen[job_name] = count = seen.get(job_name, 0) + 1
        if count > 1:
            job_name = f"{job_name} #{count}"
        entries.append(CrontabEntry(lineno, expression, command, zone, env, job_name))
    return entries, errors


# -- the runner's default zone -----------------------------------------------------------

# "UTC0", "EST5EDT,M3.2.0,M11.1.0", "<+03>-3": a name, then an offset.
_POSIX_TZ_RE = re.compile(r"^(?:[A-Za-z]{3,}|<[A-Za-z0-9+-]+>)[+-]?[0-9]")


def default_zone(tz_option: Optional[str], environ: Mapping[str, str],
                 localtime: str = "/etc/localtime") -> Tuple[tzinfo, str]:
    """The zone of jobs above any ``CRON_TZ=`` line, and where it came from.

    ``--tz``, else ``TZ`` (``Area/City``, ``:Area/City``, ``:/path/to/zonefile``; empty
    means UTC, as in the C library), else the system's zone (``/etc/localtime``: the
    IANA name it links to, or its rules), else UTC.

    Returns:
        ``(zone, source)``, source one of ``"--tz"``, ``"TZ"``, ``localtime``, ``"default"``.

    Raises:
        InvalidTimezone: a ``--tz`` or ``TZ`` value that names no zone; POSIX rule
            strings (``UTC0``) are not supported and the message says so.
    """
    if tz_option is not None:
        return _zone_setting(tz_option, "--tz"), "--tz"
    tz = environ.get("TZ")
    if tz is not None:
        if not tz:
            return timezone.utc, "TZ"
        return _zone_setting(tz, "TZ"), "TZ"
    if os.path.lexists(localtime):
        try:
            return _zone_file(localtime), localtime
        except (OSError, ValueError, InvalidTimezone):
            pass  # unreadable or not a zone file: cron would use UTC as well
    return timezone.utc, "default"


def _zone_setting(text: str, source: str) -> tzinfo:
    key = text[1:] if text.startswith(":") else text
    try:
        if key.startswith("/"):
            try:
                return _zone_file(key)
            except (OSError, ValueError) as exc:
                raise InvalidTimezone(f"invalid time zone {key!r}: cannot read a zone "
                                      f"file there ({exc})") from None
        return resolve_zone(key)
    except InvalidTimezone as exc:
        if _POSIX_TZ_RE.match(key):
            raise InvalidTimezone(
                f"{source}={text!r}: POSIX TZ rule strings are not supported; use an IANA "
                "name such as 'America/New_York' (or 'UTC')") from None
        raise InvalidTimezone(f"{source}: {exc}") from None


def _zone_file(path: str) -> tzinfo:
    """The zone a zone file names (``.../zoneinfo/Area/City``, often through a
    symlink), or else the rules it holds, named by its path."""
    target = os.path.realpath(path)
    marker = "/zoneinfo/"
    if marker in target:
        try:
            return resolve_zone(target.rsplit(marker, 1)[1])
        except InvalidTimezone:
            pass
    with open(path, "rb") as file:
        return ZoneInfo.from_file(file, key=path)
