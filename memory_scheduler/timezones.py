"""Turn ``str | tzinfo`` into a tzinfo, or raise :class:`InvalidTimezone`."""

from __future__ import annotations

from datetime import datetime, tzinfo
from datetime import timezone as _dt_timezone
from typing import Union
from zoneinfo import ZoneInfo

from .errors import InvalidTimezone

__all__ = ["ZoneLike", "resolve_zone", "to_local", "zone_name"]

ZoneLike = Union[str, tzinfo]

# Longest IANA key is ~32 characters; anything far longer is garbage, and refusing it
# early keeps zoneinfo from touching the filesystem with it.
_MAX_KEY_LEN = 255


def resolve_zone(zone: object) -> tzinfo:
    """Return the tzinfo for an IANA name or a PEP 495 tzinfo.

    Raises:
        InvalidTimezone: unknown, empty, path-like or over-long names; pytz zones
            (they ignore ``fold``, which the DST rules depend on); any other type.
    """
    if isinstance(zone, tzinfo):
        if hasattr(zone, "localize"):
            raise InvalidTimezone(
                f"invalid time zone {zone!r}: pytz zones do not support PEP 495 fold; "
                "pass the zone's name instead"
            )
        return zone
    if not isinstance(zone, str):
        raise InvalidTimezone(
            f"invalid time zone {zone!r}: expected an IANA name or a tzinfo, "
            f"got {type(zone).__name__}"
        )
    reason = _key_problem(zone)
    if reason is None:
        try:
            return ZoneInfo(zone)
        except Exception as exc:  # ZoneInfoNotFoundError, ValueError, OSError, ...
            raise InvalidTimezone(
                f"invalid time zone {zone!r}: not a known IANA time zone"
            ) from exc
    raise InvalidTimezone(f"invalid time zone {zone!r}: {reason}")


def _key_problem(key: str) -> str | None:
    if not key.strip():
        return "the name is empty"
    if len(key) > _MAX_KEY_LEN:
        return f"the name is longer than {_MAX_KEY_LEN} characters"
    if "\x00" in key:
        return "the name contains a NUL byte"
    if key.startswith("/") or "\\" in key or ".." in key.split("/") or key != key.strip():
        return "path-like names are not allowed; use an IANA name such as 'Europe/Paris'"
    if not key.isascii() or not key.isprintable():
        return "the name contains characters no IANA name has"
    return None


def zone_name(zone: tzinfo) -> str:
    """The name users know a zone by: the IANA key when there is one."""
    key = getattr(zone, "key", None)
    if isinstance(key, str):
        return key
    if zone is _dt_timezone.utc:
        return "UTC"
    return str(zone)


def to_local(when: datetime, zone: tzinfo) -> datetime:
    """The aware UTC instant ``when`` as a local time in ``zone``, with ``fold`` set for
    the second pass of a repeated hour.

    Not ``when.astimezone(zone)``: freezegun's datetime class rebuilds the result of
    ``astimezone`` without its ``fold``, naming the instant an hour earlier.
    """
    return zone.fromutc(when.replace(tzinfo=zone))
