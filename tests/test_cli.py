from __future__ import annotations

import subprocess
import sys

import pytest

from memory_scheduler.cli import main


def test_next_prints_runs_with_offsets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["next", "0 12 * * *", "--tz", "Europe/London", "--from",
                 "2026-03-28T00:00", "-n", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2026-03-28T12:00:00+00:00  GMT  Sat",
        "2026-03-29T12:00:00+01:00  BST  Sun",
    ]


def test_next_with_an_aware_start_and_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["next", "*/20 * * * * *", "--from", "2026-01-01T00:00:00+01:00",
                 "-n", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2025-12-31T23:00:20+00:00  UTC  Wed",
        "2025-12-31T23:00:40+00:00  UTC  Wed",
    ]


def test_next_defaults_to_now(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["next", "@hourly"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5


@pytest.mark.parametrize(("args", "message"), [
    (["next", "61 * * * *"], "invalid cron expression '61 * * * *'"),
    (["next", "* * * * *", "--tz", "Mars/Base"], "invalid time zone 'Mars/Base'"),
    (["next", "* * * * *", "--from", "yesterday"], "--from 'yesterday'"),
    (["next", "* * * * *", "-n", "0"], "-n 0"),
])
def test_bad_input_exits_2(args: list[str], message: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "memory_scheduler", "next", "0 0 1 1 *", "--from", "2026-06-01",
         "-n", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout == "2027-01-01T00:00:00+00:00  UTC  Fri\n"


CLI_MODULES = ("cli", "cli_runner", "cli_commands", "cli_relay")


def test_the_cli_uses_the_public_api_only() -> None:
    import ast
    import importlib
    from pathlib import Path

    import memory_scheduler

    package = Path(memory_scheduler.__file__).parent
    # Every module of the command line is listed (a new one must be checked too).
    assert {p.stem for p in package.glob("cli*.py")} == set(CLI_MODULES)
    public = {"memory_scheduler": set(memory_scheduler.__all__),
              "memory_scheduler.clock": {"utc_now"},
              "memory_scheduler.crontab": {"CrontabEntry", "default_zone", "parse_crontab"}}
    for index, name in enumerate(CLI_MODULES):
        module = importlib.import_module(f"memory_scheduler.{name}")
        # A module of the CLI may import the public API and the CLI modules below it.
        allowed = {**public, **{f"memory_scheduler.{lower}": set(
            importlib.import_module(f"memory_scheduler.{lower}").__all__)
            for lower in CLI_MODULES[index + 1:]}}
        tree = ast.parse(Path(str(module.__file__)).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or "memory_scheduler" in
                                                     (node.module or "")):
                assert node.level == 0 and node.module in allowed, (name, ast.dump(node))
                names = {alias.name for alias in node.names}
                assert names <= allowed[node.module], (name, names - allowed[node.module])
            if isinstance(node, ast.Import):
                assert not any("memory_scheduler" in alias.name for alias in node.names), (
                    name, ast.dump(node))
