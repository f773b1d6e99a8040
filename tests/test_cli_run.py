"""End-to-end tests of `memory-scheduler run` as a subprocess on temporary crontabs."""

from __future__ import annotations

import json
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


class Cli:
    """A running `memory-scheduler run`, its output lines collected by threads.

    ``stdout``: a descriptor for the runner's standard output instead of a pipe read
    here; ``prefix``: a command the runner is started under (``unshare ...``).
    """

    def __init__(self, crontab: Path, *args: str, env: dict[str, str] | None = None,
                 stdout: int | None = None, prefix: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "memory_scheduler", "run", str(crontab), *args],
            stdout=subprocess.PIPE if stdout is None else stdout, stderr=subprocess.PIPE,
            text=True, env={**os.environ, **(env or {})})
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        self.seen: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr, "stderr")),
        ]
        if stdout is None:
            self._readers.append(threading.Thread(
                target=self._read, args=(self.proc.stdout, self.stdout, "stdout")))
        for reader in self._readers:
            reader.start()

    def _read(self, pipe: object, q: queue.Queue[str], name: str) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            q.put(line.rstrip("\n"))

    def expect(self, stream: str, pattern: str, timeout: float = 5.0) -> str:
        """The first line of ``stream`` matching ``pattern``, seen already or to come
        within ``timeout`` seconds (however many other lines arrive meanwhile)."""
        for line in self.seen[stream]:
            if re.search(pattern, line):
                return line
        q = self.stdout if stream == "stdout" else self.stderr
        expired = threading.Event()
        timer = threading.Timer(timeout, expired.set)
        timer.start()
        try:
            while not expired.is_set():
                try:
                    line = q.get(timeout=0.05)
                except queue.Empty:
                    continue
                self.seen[stream].append(line)
                if re.search(pattern, line):
                    return line
        finally:
            timer.cancel()
        raise AssertionError(f"no {stream} line matching {pattern!r}; seen: {self.seen[stream]}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        self.proc.send_signal(signum)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(5)
        for name, q in (("stdout", self.stdout), ("stderr", self.stderr)):
            while not q.empty():
                self.seen[name].append(q.get())
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.wait(5)


@pytest.fixture
def run_cli(tmp_path: Path) -> Iterator[object]:
    started: list[Cli] = []

    def start(crontab_text: str, *args: str, **options: Any) -> Cli:
        path = tmp_path / "crontab"
        path.write_text(crontab_text)
        cli = Cli(path, *args, **options)
        started.append(cli)
        return cli

    yield start
    for cli in started:
        cli.kill()


def check(tmp_path: Path, text: str, *args: str,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "crontab"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "memory_scheduler", "run", "--check", str(path), *args],
        capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})})


TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def records(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


def test_output_is_relayed_with_timestamps_prefixes_and_streams(run_cli) -> None:  # type: ignore[no-untyped-def]
    cli = run_cli("* * * * * * echo out; echo err >&2\n", env={"TZ": "UTC"})
    cli.expect("stderr", r"running 1 job\(s\) from .*; default zone UTC \(from TZ\)")
    assert cli.expect("stdout", rf"^{TS} \[L1 echo out; echo err >&2\] stdout: out$")
    assert cli.expect("stdout", rf"^{TS} \[L1 echo out; echo err >&2\] stderr: err$")
    assert cli.expect("stderr", r"run 1 exited with status 0 after")
    assert cli.stop() == 0
    assert any("stopped cleanly" in line for line in cli.seen["stderr"])


def test_environment_lines_apply_to_the_jobs_below(run_cli) -> None:  # type: ignore[no-untyped-def]
    cli = run_cli(
        "# comment\n"
        "\n"
        "* * * * * * echo \"above=[$GREETING]\"\n"
        "GREETING = 'hello world'\n"
        "* * * * * * echo \"below=[$GREETING]\"\n",
        env={"GREETING": ""})
    assert cli.expect("stdout", r"below=\[hello world\]")
    assert cli.expect("stdout", r"above=\[\]")
    assert cli.stop() == 0


def test_commands_run_with_bin_sh_not_the_callers_shell(run_cli) -> None:  # type: ignore[no-untyped-def]
    # Defect 2: $SHELL of the caller (here /bin/false) used to run every command.
    cli = run_cli("* * * * * * echo \"one [$SHELL]\"\n"
                  "SHELL=/bin/bash\n"
                  "* * * * * * echo \"two [$SHELL] [${BASH_VERSION:+bash}]\"\n",
                  env={"SHELL": "/bin/false"})
    assert cli.expect("stdout", r"stdout: one \[/bin/sh\]$")
    assert cli.expect("stdout", r"stdout: two \[/bin/bash\] \[bash\]$")
    assert cli.stop() == 0


def test_cron_tz_and_default_zones(tmp_path: Path) -> None:
    text = ("0 9 * * * echo default\n"
            "CRON_TZ=Asia/Tokyo\n"
            "0 9 * * * echo tokyo\n")
    result = check(tmp_path, text, env={"TZ": "Europe/Paris"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.match(r"line 1: '0 9 \* \* \*' \(Europe/Paris\) next \S+T09:00:00\+01:00: "
                    r"echo default", lines[0])
    assert re.match(r"line 3: '0 9 \* \* \*' \(Asia/Tokyo\) next \S+T09:00:00\+09:00: "
                    r"echo tokyo", lines[1])
    assert lines[-1] == "2 job(s) OK"
    result = check(tmp_path, text, "--tz", "America/New_York", env={"TZ": "Europe/Paris"})
    assert "(America/New_York)" in result.stdout.splitlines()[0]


def test_tz_variable_forms(tmp_path: Path) -> None:
    # Defect 13: ":Area/City" and ":/path/to/zonefile" are what the C library accepts.
    zoneinfo = tmp_path / "zoneinfo" / "Asia"
    zoneinfo.mkdir(parents=True)
    (zoneinfo / "Tokyo").write_bytes(b"")  # only the name of the link's target is read
    (tmp_path / "localtime").symlink_to(zoneinfo / "Tokyo")
    for tz in (":Asia/Tokyo", f":{tmp_path / 'localtime'}", str(tmp_path / "localtime")):
        result = check(tmp_path, "0 9 * * * true\n", env={"TZ": tz})
        assert result.returncode == 0, (tz, result.stderr)
        assert "(Asia/Tokyo) next" in result.stdout, tz


@pytest.mark.parametrize("tz", ["UTC0", "EST5EDT,M3.2.0,M11.1.0", "<+03>-3"])
def test_posix_tz_rule_strings_are_refused_by_name(tmp_path: Path, tz: str) -> None:
    result = check(tmp_path, "0 9 * * * true\n", env={"TZ": tz})
    assert result.returncode == 2
    assert f"TZ={tz!r}: POSIX TZ rule strings are not supported" in result.stderr


def test_validation_reports_every_bad_line_and_exits_2(tmp_path: Path) -> None:
    text = ("* * * * * echo fine\n"
            "61 * * * * echo bad minute\n"
            "CRON_TZ=Mars/Base\n"
            "@reboot echo nope\n"
            "* * * *\n"
            "*/2 * * * * * * echo hi\n"
            "* * * * * *\n"
            "CRON_TZ=Asia/Tokyo   # an inline comment\n")
    path = tmp_path / "crontab"
    path.write_text(text)
    for extra in ([], ["--check"]):
        result = subprocess.run([sys.executable, "-m", "memory_scheduler", "run", *extra,
                                 str(path)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        assert result.stdout == ""  # nothing started, nothing printed
        err = result.stderr
        assert f"{path}:2: '61 * * * * echo bad minute': invalid cron expression " \
               "'61 * * * *': minute field '61': value 61 is out of range 0-59" in err
        assert f"{path}:3: 'CRON_TZ=Mars/Base': invalid time zone 'Mars/Base'" in err
        assert f"{path}:4: '@reboot echo nope': invalid cron expression '@reboot'" in err
        assert f"{path}:5: '* * * *'" in err
        # Defect 3: supercronic's seven fields used to run "* echo hi" (the shell then
        # ran the first file name of the working directory).
        assert f"{path}:6: '*/2 * * * * * * echo hi': the command starts with '*', which " \
               "looks like a 7th field: seconds..year is not supported; drop the year" in err
        assert f"{path}:7: '* * * * * *': '* * * * * *': cron fields and no command" in err
        # Defect 1: comments only on their own line.
        assert f"{path}:8:" in err and "comments are only allowed on their own line" in err


def test_bad_tz_variable_and_missing_file(tmp_path: Path) -> None:
    result = check(tmp_path, "* * * * * true\n", env={"TZ": "Nowhere/Land"})
    assert result.returncode == 2 and "TZ: invalid time zone 'Nowhere/Land'" in result.stderr
    result = subprocess.run([sys.executable, "-m", "memory_scheduler", "run",
                             str(tmp_path / "missing")], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "cannot read crontab" in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "soon"])
def test_bad_shutdown_timeout_exits_2(tmp_path: Path, value: str) -> None:
    # Defect 7: nan and inf printed a traceback and exited 1.
    path = tmp_path / "crontab"
    path.write_text("* * * * * true\n")
    result = subprocess.run([sys.executable, "-m", "memory_scheduler", "run", str(path),
                             f"--shutdown-timeout={value}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"argument --shutdown-timeout: {value!r}" in result.stderr
    assert "Traceback" not in result.stderr


def test_six_and_five_field_lines(tmp_path: Path) -> None:
    result = check(tmp_path, "*/5 * * * * * echo six\n*/5 * * * * echo five\n"
                             "@hourly echo macro\n")
    lines = result.stdout.splitlines()
    assert "'*/5 * * * * *'" in lines[0] and lines[0].endswith(": echo six")
    assert "'*/5 * * * *'" in lines[1] and lines[1].endswith(": echo five")
    assert "'@hourly'" in lines[2]


def test_h_does_not_move_when_lines_are_added_above(tmp_path: Path) -> None:
    # Defect 6: jobs were named by line number, and H hashes the name.
    job = "H H * * * echo nightly\n"
    first = check(tmp_path, job, env={"TZ": "UTC"}).stdout.splitlines()[0]
    second = check(tmp_path, "# a new comment\n\n" + job,
                   env={"TZ": "UTC"}).stdout.splitlines()[0]
    assert first.startswith("line 1: ") and second.startswith("line 3: ")
    assert first.split(": ", 1)[1] == second.split(": ", 1)[1]


def test_a_running_command_makes_the_next_run_skip(run_cli) -> None:  # type: ignore[no-untyped-def]
    cli = run_cli("* * * * * * echo start; sleep 1.3\n")
    cli.expect("stdout", r"stdout: start")
    cli.expect("stderr", r"skipped: its previous run is still going")
    assert cli.stop() == 0


def test_sigterm_kills_a_command_that_ignores_it(run_cli) -> None:  # type: ignore[no-untyped-def]
    cli = run_cli("* * * * * * trap '' TERM; echo started; sleep 30\n",
                  "--shutdown-timeout", "0.5")
    cli.expect("stdout", r"stdout: started")
    cli.proc.send_signal(signal.SIGTERM)
    # Killed after the timeout: the process exits within timeout + 1 s.
    assert cli.wait(timeout=1.5) == 1
    assert any("killed 1 process group(s)" in line for line in cli.seen["stderr"])
    assert any("run 1 killed by SIGKILL after" in line for line in cli.seen["stderr"])


def process_state(pid: int) -> str | None:
    """The state letter of a process (Z: a zombie), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()[0]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigterm_kills_a_grandchild_the_shell_left_behind(run_cli) -> None:  # type: ignore[no-untyped-def]
    # Defect 4: the shell dies of SIGTERM, its background child ignores it and was
    # orphaned while the runner reported a clean stop.
    cli = run_cli("* * * * * * (trap '' TERM; exec sleep 30) & echo \"child $!\"; wait\n",
                  "--shutdown-timeout", "0.5")
    child = int(cli.expect("stdout", r"stdout: child \d+$").rsplit(" ", 1)[1])
    assert process_state(child) not in (None, "Z")
    cli.proc.send_signal(signal.SIGTERM)
    assert cli.wait(timeout=3) == 1
    assert process_state(child) in (None, "Z")  # killed (a zombie until its init reaps it)
    assert any("killed 1 process group(s)" in line for line in cli.seen["stderr"])
    assert not any("stopped cleanly" in line for line in cli.seen["stderr"])


def test_sigterm_stops_cooperative_commands_cleanly(run_cli) -> None:  # type: ignore[no-untyped-def]
    cli = run_cli("* * * * * * echo started; sleep 30\n", "--shutdown-timeout", "10")
    cli.expect("stdout", r"stdout: started")
    assert cli.stop(timeout=5) == 0  # sleep dies of SIGTERM at once
    assert any("sent SIGTERM to 1 process group(s)" in line for line in cli.seen["stderr"])


def test_second_sigint_forces_the_kill(run_cli) -> None:  # type: ignore[no-untyped-def]
    cli = run_cli("* * * * * * trap '' TERM; echo started; sleep 30\n",
                  "--shutdown-timeout", "30")
    cli.expect("stdout", r"stdout: started")
    cli.proc.send_signal(signal.SIGINT)
    cli.expect("stderr", r"SIGINT received")
    cli.proc.send_signal(signal.SIGINT)
    assert cli.wait(timeout=5) == 1
    assert any("second SIGINT" in line for line in cli.seen["stderr"])


def test_json_records(run_cli) -> None:  # type: ignore[no-untyped-def]
    # Defects 10 and 11: one start and one end record per run, one duration from the
    # spawn; every record names its event; a signal is named, not "status -9".
    cli = run_cli("*/2 * * * * * echo hi; sleep 0.3; exit 3\n"
                  "* * * * * * kill -KILL $$\n", "--json", env={"TZ": "UTC"})
    out = json.loads(cli.expect("stdout", r'"event": "output"'))
    assert out["job"] == "*/2 * * * * * echo hi; sleep 0.3; exit 3"
    assert re.fullmatch(TS, out["ts"])
    assert out["fields"] == {"stream": "stdout", "text": "hi", "line": 1,
                             "run_id": out["fields"]["run_id"]}
    exited = json.loads(cli.expect("stderr", r'"event": "command_exited".*"exit_status": 3'))
    assert exited["level"] == "WARNING"
    fields = exited["fields"]
    assert fields["duration_secs"] >= 0.3
    assert fields["line"] == 1 and fields["command"] == "echo hi; sleep 0.3; exit 3"
    assert fields["schedule"] == "*/2 * * * * *"
    assert re.fullmatch(r"\S+T\S+:\d\d\+00:00", fields["scheduled_time"])
    killed = json.loads(cli.expect("stderr", r'"event": "command_exited".*"signal"'))
    assert killed["fields"]["signal"] == "SIGKILL" and "exit_status" not in killed["fields"]
    assert "killed by SIGKILL" in killed["fields"]["message"]
    assert cli.stop() == 0
    logs = records(cli.seen["stderr"])
    for record in logs + records(cli.seen["stdout"]):
        assert {"ts", "level", "job", "event", "fields"} <= set(record)
        assert record["event"] and record["event"] != "memory_scheduler"
    events = [r["event"] for r in logs]
    assert events[0] == "started" and events[-2:] == ["stopping", "stopped"]
    assert logs[0]["fields"]["zone"] == "UTC"
    assert "run_failed" not in events  # the command_exited record says it all
    runs: dict[int, list[str]] = {}
    for record in logs:
        if record["event"].startswith("command_"):
            runs.setdefault(record["fields"]["run_id"], []).append(record["event"])
    finished = [run for run in runs.values() if len(run) == 2]
    assert len(finished) >= 2  # both jobs ran
    assert all(run == ["command_started", "command_exited"] for run in finished)


def test_a_failed_run_is_logged_once_in_text(run_cli) -> None:  # type: ignore[no-untyped-def]
    cli = run_cli("* * * * * * sleep 0.2; exit 3\n")
    line = cli.expect("stderr", r"run 1 exited with status 3 after")
    assert float(re.search(r"after (\S+)s$", line).group(1)) >= 0.2  # type: ignore[union-attr]
    cli.expect("stderr", r"run 2 started")
    assert cli.stop() == 0
    about_run_1 = [x for x in cli.seen["stderr"] if "] run 1 " in x or "failed after" in x]
    assert len(about_run_1) == 2, about_run_1  # started, exited


def test_closed_stdout_is_reported_once_and_the_jobs_go_on(run_cli) -> None:  # type: ignore[no-untyped-def]
    # Defect 8: every relay thread died with a BrokenPipeError traceback.
    read_end, write_end = os.pipe()
    try:
        cli = run_cli("* * * * * * echo out\n", stdout=write_end)
    finally:
        os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], 10)
    assert ready and b"stdout: out" in os.read(read_end, 4096)
    os.close(read_end)  # as `| head -1` does
    cli.expect("stderr", r"standard output is closed")
    cli.expect("stderr", r"\] run 3 exited with status 0")  # the jobs go on
    assert cli.stop() == 0
    err = "\n".join(cli.seen["stderr"])
    assert err.count("standard output is closed") == 1, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert "stopped cleanly" in err


def test_sighup_reloads_the_crontab(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Defect 9: SIGHUP killed the runner (exit 129) and orphaned running commands.
    go = tmp_path / "go"
    long = (f"* * * * * * echo waiting; for i in $(seq 200); do [ -e {go} ] && break; "
            "sleep 0.05; done; echo finished")
    cli = run_cli(f"* * * * * * echo kept\n{long}\n")
    crontab = tmp_path / "crontab"
    cli.expect("stdout", r"stdout: waiting")
    crontab.write_text("# a comment moves the kept line\n"
                       "* * * * * * echo kept\n"
                       "* * * * * * echo added\n")
    cli.proc.send_signal(signal.SIGHUP)
    cli.expect("stderr", r"SIGHUP: reloaded .*: 2 job\(s\), 1 added, 1 removed, 0 changed")
    cli.expect("stdout", r"\[L3 echo added\] stdout: added")
    cli.expect("stdout", r"\[L2 echo kept\] stdout: kept")
    go.touch()  # the removed line's command was left running
    cli.expect("stdout", r"stdout: finished")
    # An invalid file: every error with its line; the previous crontab runs on.
    crontab.write_text("61 * * * * * echo bad\nCRON_TZ=Mars/Base\n* * * * * * echo new\n")
    cli.proc.send_signal(signal.SIGHUP)
    cli.expect("stderr", r"still running the previous crontab")
    assert cli.expect("stderr", rf"reload: {crontab}:1: '61 \* \* \* \* \* echo bad'")
    assert cli.expect("stderr", rf"reload: {crontab}:2: 'CRON_TZ=Mars/Base'")
    count = len(cli.seen["stdout"])
    cli.expect("stdout", r"stdout: added")  # (the next one)
    cli.seen["stdout"] = cli.seen["stdout"][count:]
    cli.expect("stdout", r"stdout: added")
    assert cli.stop() == 0
    assert not any("stdout: new" in line for line in cli.seen["stdout"])
    assert not any("Traceback" in line for line in cli.seen["stderr"])


def test_long_lines_are_cut_and_memory_stays_bounded(run_cli) -> None:  # type: ignore[no-untyped-def]
    # Defect 14: a 64 MB line without a newline took the runner to ~340 MB.
    size = 16 * 2**20
    cli = run_cli(f"@hourly true\n* * * * * * head -c {size} /dev/zero | tr '\\0' x; "
                  "echo; echo after; sleep 30\n", "--json")
    cli.expect("stdout", r'"text": "after"', timeout=20)
    peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB",  # type: ignore[union-attr]
                            Path(f"/proc/{cli.proc.pid}/status").read_text()).group(1))
    assert cli.stop() == 0
    pieces = [r["fields"] for r in records(cli.seen["stdout"]) if r["fields"]["text"] != "after"]
    assert len(pieces) == size // (64 * 1024) + 1  # the last one is the empty rest
    assert all(p.get("cut") is True and len(p["text"]) == 64 * 1024 for p in pieces[:-1])
    assert "cut" not in pieces[-1]
    assert "".join(p["text"] for p in pieces) == "x" * size
    assert peak_kb < 60 * 1024, f"peak RSS {peak_kb} kB"


def processes() -> dict[int, tuple[str, int]]:
    """pid -> (state, parent pid) of every process /proc shows."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            found[int(entry.name)] = (fields[0], int(fields[1]))
    return found


def descendants(root: int) -> dict[int, str]:
    """pid -> state of every descendant of ``root``."""
    table = processes()
    found: dict[int, str] = {}
    parents = {root}
    while parents:
        children = {pid for pid, (_, ppid) in table.items() if ppid in parents}
        found.update((pid, table[pid][0]) for pid in children)
        parents = children - parents
    return found


def unshare_pid_works() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
                               "true"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists() or not unshare_pid_works(),
                    reason="needs /proc and `unshare --pid --fork --mount-proc` "
                           "(root or user namespaces)")
def test_as_pid_1_it_reaps_orphans(run_cli) -> None:  # type: ignore[no-untyped-def]
    # Defect 5: as PID 1 (a container without an init) every orphan became a zombie.
    cli = run_cli("* * * * * * (sleep 0.1 &); echo tick\n",
                  prefix=("unshare", "--pid", "--fork", "--kill-child", "--mount-proc"))
    cli.expect("stderr", r"\] run 3 exited")
    # The sleeps of the first two runs have ended; their zombies must be reaped.
    pause = threading.Event()
    for _ in range(60):
        zombies = [pid for pid, state in descendants(cli.proc.pid).items() if state == "Z"]
        if not zombies:
            break
        pause.wait(0.05)
    assert not zombies, f"zombies left: {zombies}"
    [init] = [pid for pid, (_, ppid) in processes().items() if ppid == cli.proc.pid]
    os.kill(init, signal.SIGTERM)  # forwarded to the runner
    assert cli.wait(timeout=10) == 0
    assert any("stopped cleanly" in line for line in cli.seen["stderr"])
