"""The crontab runner's commands: each in a process group of its own, signalled and
killed by group at shutdown; and, as PID 1, the reaper of orphans.

Part of the command line (``memory-scheduler run``): see :mod:`memory_scheduler.cli`.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
from types import FrameType
from typing import Dict, Optional, Set

from memory_scheduler import current_run
from memory_scheduler.cli_relay import Output, relay, zone_label
from memory_scheduler.clock import utc_now
from memory_scheduler.crontab import CrontabEntry

__all__ = ["CommandFailed", "Commands", "init_parent", "live_groups", "signal_name"]

logger = logging.getLogger("memory_scheduler.cli")


class CommandFailed(Exception):
    """A command exited with a non-zero status or could not start (a failed run)."""


def live_groups(pgids: Set[int]) -> Set[int]:
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


class Commands:
    """Starts commands in process groups of their own; signals and kills the groups.

    A group is tracked from the spawn until it is found empty, not only while its
    shell runs: a background grandchild stays in its group after the shell exits.
    """

    def __init__(self, output: Output) -> None:
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
            "timezone": zone_label(entry.zone), "scheduled_time": scheduled}
        extra = {"job": entry.name, "fields": fields}
        with self._lock:
            if self._stopping:
                return
            run_id = next(self._run_ids)
            fields["run_id"] = run_id
            if self._lingering:
                self._lingering = live_groups(self._lingering)
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
        relays = [threading.Thread(target=relay,
                                   args=(self._output, entry, run_id, name, pipe),
                                   name=f"memory_scheduler-relay-{proc.pid}-{name}",
                                   daemon=True)
                  for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))]
        for thread in relays:
            thread.start()
        code = proc.wait()
        duration = max(0.0, (utc_now() - started).total_seconds())
        with self._lock:
            self._running.discard(proc.pid)
            self._lingering |= live_groups({proc.pid})
        for thread in relays:
            thread.join(1.0)  # a background grandchild may hold the pipe open
        if code < 0:
            outcome = f"killed by {signal_name(-code)}"
            end: Dict[str, object] = {"signal": signal_name(-code)}
        else:
            outcome = f"exited with status {code}"
            end = {"exit_status": code}
        logger.log(logging.INFO if code == 0 else logging.WARNING,
                   "[%s] run %d %s after %.3fs", entry.label, run_id, outcome, duration,
                   extra={**extra, "event": "command_exited",
                          "fields": {**fields, **end, "duration_secs": round(duration, 6)}})
        if code != 0:
            raise CommandFailed(outcome)

    def stop(self) -> int:
        """Start no more commands; SIGTERM every group with a member; count them."""
        with self._lock:
            self._stopping = True
            return self._signal(signal.SIGTERM)

    def alive(self) -> bool:
        """Whether a command, or something a command left behind, is still running."""
        with self._lock:
            self._lingering = live_groups(self._lingering)
            return bool(self._running or self._lingering)

    def kill(self) -> int:
        """SIGKILL every group that still has a member; count them."""
        with self._lock:
            self._stopping = True
            return self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> int:
        """Caller holds the lock."""
        self._lingering = live_groups(self._lingering)
        count = 0
        for pgid in live_groups(self._running | self._lingering):
            try:
                os.killpg(pgid, signum)
                count += 1
            except ProcessLookupError:
                pass
        return count


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def init_parent() -> Optional[int]:
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
