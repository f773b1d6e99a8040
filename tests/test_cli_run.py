"""End-to-end tests of `memory-scheduler run` as a subprocess on temporary crontabs."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


class Cli:
    """A running `memory-scheduler run`, its output lines collected by threads."""

    def __init__(self, crontab: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memory_scheduler", "run", str(crontab), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        self.seen: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout, "stdout")),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr, "stderr")),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe: object, q: queue.Queue[str], name: str) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            q.put(line.rstrip("\n"))

    def expect(self, stream: str, pattern: str, timeout: float = 5.0) -> str:
        """The first line of ``stream`` matching ``pattern``, seen already or to come."""
        for line in self.seen[stream]:
            if re.search(pattern, line):
                return line
        q = self.stdout if stream == "stdout" else self.stderr
        while True:
            try:
                line = q.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no {stream} line matching {pattern!r}; seen: {self.seen[stream]}"
                ) from None
            self.seen[stream].append(line)
            if re.search(pattern, line):
                return line

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

    def start(crontab_text: str, *args: str, env: dict[str, str] | None = None) -> Cli:
        path = tmp_path / "crontab"
        path.write_text(crontab_text)
        cli = Cli(path, *args, env=env)
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


def test_output_is_relayed_with_prefixes_and_streams(run_cli) -> None:  # type: ignore[no-untyped-def]
    cli = run_cli("* * * * * * echo out; echo err >&2\n")
    assert cli.expect("stdout", r"^\[L1 echo out; echo err >&2\] stdout: out$")
    assert cli.expect("stdout", r"^\[L1 echo out; echo err >&2\] stderr: err$")
    assert cli.expect("stderr", r"command exited with status 0")
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


def test_validation_reports_every_bad_line_and_exits_2(tmp_path: Path) -> None:
    text = ("* * * * * echo fine\n"
            "61 * * * * echo bad minute\n"
            "CRON_TZ=Mars/Base\n"
            "@reboot echo nope\n"
            "* * * *\n")
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


def test_bad_tz_variable_and_missing_file(tmp_path: Path) -> None:
    result = check(tmp_path, "* * * * * true\n", env={"TZ": "Nowhere/Land"})
    assert result.returncode == 2 and "TZ: invalid time zone 'Nowhere/Land'" in result.stderr
    result = subprocess.run([sys.executable, "-m", "memory_scheduler", "run",
                             str(tmp_path / "missing")], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "cannot read crontab" in result.stderr


def test_six_and_five_field_lines(tmp_path: Path) -> None:
    result = check(tmp_path, "*/5 * * * * * echo six\n*/5 * * * * echo five\n"
                             "@hourly echo macro\n")
    lines = result.stdout.splitlines()
    assert "'*/5 * * * * *'" in lines[0] and lines[0].endswith(": echo six")
    assert "'*/5 * * * *'" in lines[1] and lines[1].endswith(": echo five")
    assert "'@hourly'" in lines[2]


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
    assert any("killed 1 command(s)" in line for line in cli.seen["stderr"])


def test_sigterm_stops_cooperative_commands_cleanly(run_cli) -> None:  # type: ignore[no-untyped-def]
    cli = run_cli("* * * * * * echo started; sleep 30\n", "--shutdown-timeout", "10")
    cli.expect("stdout", r"stdout: started")
    assert cli.stop(timeout=5) == 0  # sleep dies of SIGTERM at once
    assert any("sent SIGTERM to 1 running command(s)" in line for line in cli.seen["stderr"])


def test_second_sigint_forces_the_kill(run_cli) -> None:  # type: ignore[no-untyped-def]
    cli = run_cli("* * * * * * trap '' TERM; echo started; sleep 30\n",
                  "--shutdown-timeout", "30")
    cli.expect("stdout", r"stdout: started")
    cli.proc.send_signal(signal.SIGINT)
    cli.expect("stderr", r"SIGINT received")
    cli.proc.send_signal(signal.SIGINT)
    assert cli.wait(timeout=5) == 1
    assert any("second SIGINT" in line for line in cli.seen["stderr"])


def test_json_logs(run_cli) -> None:  # type: ignore[no-untyped-def]
    cli = run_cli("* * * * * * echo hi; exit 3\n", "--json")
    out = json.loads(cli.expect("stdout", r'"event": "output"'))
    assert out["job"] == "L1 echo hi; exit 3"
    assert out["fields"] == {"stream": "stdout", "line": "hi"}
    exited = json.loads(cli.expect("stderr", r'"event": "command_exited"'))
    assert exited["level"] == "WARNING"
    assert exited["fields"]["exit_code"] == 3
    failed = json.loads(cli.expect("stderr", r'"event": "run_failed"'))
    assert failed["level"] == "ERROR"
    assert failed["fields"]["error"] == "CommandFailed: command exited with status 3"
    assert cli.stop() == 0
    for line in cli.seen["stderr"] + cli.seen["stdout"]:
        record = json.loads(line)  # every line is one JSON object
        assert {"ts", "level", "job", "event", "fields"} <= set(record)
