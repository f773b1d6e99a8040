"""Owner ids: one per process incarnation, and telling a dead same-host owner.

An owner id is ``"{hostname}:{pid}:{pidns}:{start}:{random}"``. The pid alone is not
enough: pids are reused, so the process start time (clock ticks after boot, from
``/proc/<pid>/stat``) tells a restarted process from the one that wrote the rows, and
the inode of the pid namespace tells whether a pid means the same process at all
(containers that share a volume have pid namespaces of their own). The random part
keeps two stores of one process apart when a test makes several.

Only Linux procfs is read. Where it is missing, ``pidns`` and ``start`` are ``"0"`` and
:func:`owner_is_dead` never declares an owner dead: leases alone decide.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Optional, Tuple

__all__ = ["new_owner_id", "new_salt", "owner_is_dead"]

_UNKNOWN = "0"


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return _UNKNOWN


def _start_time(pid: int) -> Optional[str]:
    """The start time of a living process ``pid``, or None if there is none.

    A zombie (``Z``) or dying (``X``) process counts as dead: a SIGKILLed child whose
    parent has not reaped it yet still has a ``stat`` file.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the
    # last ')'. What follows starts at field 3 (state); field 22 is the start time.
    fields = stat[stat.rfind(")") + 2:].split()
    if len(fields) < 20 or fields[0] in ("Z", "X", "x"):
        return None
    return fields[19]


def _host() -> str:
    return socket.gethostname() or "localhost"


def new_salt() -> str:
    """The random part of an owner id: one per store object."""
    return secrets.token_hex(4)


def new_owner_id(salt: str) -> str:
    """The owner id of the calling process for a store with this ``salt`` (see the
    module docstring).

    Deterministic within a process, so two threads that compute it at once agree; a
    forked child gets its own, since its pid and start time differ.
    """
    pid = os.getpid()
    pidns = _pid_namespace()
    start = _start_time(pid) if pidns != _UNKNOWN else None
    return f"{_host()}:{pid}:{pidns}:{start or _UNKNOWN}:{salt}"


def _parse(owner: str) -> Optional[Tuple[str, int, str, str]]:
    parts = owner.rsplit(":", 4)
    if len(parts) != 5 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2], parts[3]


def owner_is_dead(owner: str) -> bool:
    """True only if ``owner`` is surely a process of this host and pid namespace that
    has exited (or whose pid now belongs to a later process).

    False whenever that cannot be told: another host or namespace, no procfs, an owner
    id of another shape. Those owners are judged by their leases.
    """
    parsed = _parse(owner)
    if parsed is None:
        return False
    host, pid, pidns, start = parsed
    if pidns == _UNKNOWN or start == _UNKNOWN or host != _host() or pidns != _pid_namespace():
        return False
    return _start_time(pid) != start
