"""The crontab syntax of `memory-scheduler run` and its default zone, as pure tables."""

from __future__ import annotations

from datetime import timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from memory_scheduler import InvalidTimezone
from memory_scheduler.crontab import default_zone, parse_crontab

UTC = timezone.utc


def parse(text: str) -> tuple[list[tuple[int, str, str, str]], list[str]]:
    entries, errors = parse_crontab(text, "ct", UTC)
    return ([(e.lineno, e.expression, e.command, e.name) for e in entries],
            [f"{e.lineno}: {e.message}" for e in errors])


@pytest.mark.parametrize(("line", "value"), [
    ('GREETING="hello  # not a comment"', "hello  # not a comment"),
    ("GREETING='hello world'   ", "hello world"),
    ("GREETING = plain", "plain"),
    ("URL=http://example.com/#top", "http://example.com/#top"),
    ("EMPTY=", ""),
])
def test_environment_values(line: str, value: str) -> None:
    entries, errors = parse_crontab(f"{line}\n* * * * * true\n", "ct", UTC)
    assert errors == []
    assert list(entries[0].env.values()) == [value]


@pytest.mark.parametrize(("line", "message"), [
    # Defect 1: the README's annotated crontab kept these comments in the values.
    ('MAILTO=""   # no mail', "'# no mail' after the closing quote: comments are only "
                              "allowed on their own line"),
    ("CRON_TZ=Asia/Tokyo   # the zone", "'#' after a blank in the value: comments are only "
                                        "allowed on their own line (quote the value if the "
                                        "'#' belongs to it)"),
    ('GREETING="hello', 'no closing " in the value'),
    ("SHELL=", "an empty SHELL"),
])
def test_bad_environment_lines(line: str, message: str) -> None:
    assert parse(f"{line}\n") == ([], [f"1: {message}"])


def test_comments_stand_on_their_own_lines() -> None:
    text = "# a comment\n   # an indented one\n* * * * * echo hi   # for the shell\n"
    assert parse(text) == ([(3, "* * * * *", "echo hi   # for the shell",
                             "* * * * * echo hi   # for the shell")], [])


@pytest.mark.parametrize(("line", "message"), [
    # Defect 3: supercronic's 7 fields (seconds..year) and 6 fields (minute..year).
    ("*/2 * * * * * * echo hi", "the command starts with '*', which looks like a 7th "
                                "field: seconds..year is not supported; drop the year"),
    ("0 0 9 * * * 2027 echo hi", "the command starts with '2027', which looks like a 7th"),
    ("0 9 1 1 * 2027 echo hi", "the command starts with '2027', which looks like a 6th "
                               "field: a year field is not supported; drop the year"),
    ("@daily * echo hi", "the command starts with '*', which looks like a cron field"),
    ("* * * * * mon-fri,sat 1-5/2", "cron fields and no command"),
    ("* * * * * *", "cron fields and no command"),
    ("* * * * *", "expected a cron expression followed by a command"),
])
def test_field_like_commands_are_rejected(line: str, message: str) -> None:
    entries, errors = parse(line + "\n")
    assert entries == []
    assert len(errors) == 1 and message in errors[0], errors


@pytest.mark.parametrize("command", ["7z a backup.7z /data", "/usr/bin/env true",
                                     "./run.sh", "-x", "date", "2>&1 true"])
def test_ordinary_commands_are_kept(command: str) -> None:
    entries, errors = parse(f"*/5 * * * * {command}\n")
    assert errors == [] and entries[0][2] == command


def test_names_are_stable_and_duplicates_numbered() -> None:
    # Defect 6: names were "L<line> <command>", so H moved when a line was added.
    text = "H H * * *   echo a\n*/5 * * * * echo b\n\n# moved\nH H * * * echo a\n"
    entries, errors = parse(text)
    assert errors == []
    assert [(lineno, name) for lineno, _, _, name in entries] == [
        (1, "H H * * * echo a"), (2, "*/5 * * * * echo b"), (5, "H H * * * echo a #2")]
    moved, _ = parse("# a new first line\n" + text)
    assert [name for *_, name in moved] == [name for *_, name in entries]


def test_shell_comes_from_the_crontab_only() -> None:
    entries, _ = parse_crontab("* * * * * a\nSHELL=/bin/bash\n* * * * * b\n", "ct", UTC)
    assert [e.shell for e in entries] == ["/bin/sh", "/bin/bash"]


def zone_link(tmp_path: Path, key: str) -> Path:
    """A symlink like /etc/localtime pointing into a zoneinfo tree (which need not be
    real: only the name of the target is read)."""
    target = tmp_path / "usr" / "share" / "zoneinfo" / key
    target.parent.mkdir(parents=True)
    target.write_bytes(b"")
    link = tmp_path / "localtime"
    link.symlink_to(target)
    return link


@pytest.mark.parametrize(("tz_option", "environ", "expected", "source"), [
    ("Asia/Tokyo", {"TZ": "Europe/Paris"}, ZoneInfo("Asia/Tokyo"), "--tz"),
    (None, {"TZ": "Europe/Paris"}, ZoneInfo("Europe/Paris"), "TZ"),
    (None, {"TZ": ":Europe/Paris"}, ZoneInfo("Europe/Paris"), "TZ"),
    (None, {"TZ": ""}, UTC, "TZ"),  # as the C library reads it
    (None, {}, ZoneInfo("America/Chicago"), "LINK"),
])
def test_default_zone_order(tmp_path: Path, tz_option: str | None, environ: dict[str, str],
                            expected: object, source: str) -> None:
    # Defect 13: the system's zone came last to nothing: without TZ it was always UTC.
    link = zone_link(tmp_path, "America/Chicago")
    assert default_zone(tz_option, environ, str(link)) == (
        expected, str(link) if source == "LINK" else source)


def test_default_zone_falls_back_to_utc(tmp_path: Path) -> None:
    assert default_zone(None, {}, str(tmp_path / "missing")) == (UTC, "default")
    (tmp_path / "garbage").write_bytes(b"not a zone file")
    assert default_zone(None, {}, str(tmp_path / "garbage")) == (UTC, "default")


def test_tz_may_name_a_zone_file(tmp_path: Path) -> None:
    link = zone_link(tmp_path, "Asia/Tokyo")
    assert default_zone(None, {"TZ": f":{link}"}) == (ZoneInfo("Asia/Tokyo"), "TZ")


@pytest.mark.parametrize(("environ", "message"), [
    ({"TZ": "UTC0"}, "TZ='UTC0': POSIX TZ rule strings are not supported"),
    ({"TZ": "EST5EDT,M3.2.0,M11.1.0"}, "POSIX TZ rule strings are not supported"),
    ({"TZ": "Mars/Base"}, "TZ: invalid time zone 'Mars/Base'"),
    ({"TZ": ":/nonexistent/zone"}, "invalid time zone '/nonexistent/zone': cannot read"),
])
def test_bad_tz_values(environ: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidTimezone) as caught:
        default_zone(None, environ)
    assert message in str(caught.value)


def test_est5edt_is_an_iana_name_not_a_rule_string() -> None:
    assert default_zone(None, {"TZ": "EST5EDT"}) == (ZoneInfo("EST5EDT"), "TZ")
