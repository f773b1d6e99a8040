"""Every example in the README runs and prints what the README says."""

from __future__ import annotations

import doctest
import inspect
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README) if lang == kind]


def cli(command: str) -> subprocess.CompletedProcess[str]:
    args = shlex.split(command)
    assert args[0] == "memory-scheduler"
    return subprocess.run([sys.executable, "-m", "memory_scheduler", *args[1:]],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples(index: int, make_scheduler: Callable[..., Any]) -> None:
    code = blocks("python")[index]
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    # Example test functions are run too, with the fixtures they name.
    for name, value in namespace.items():
        if name.startswith("test_") and callable(value):
            params = inspect.signature(value).parameters
            value(**{p: make_scheduler() for p in params if p == "scheduler"})


@pytest.mark.parametrize("index", range(len(blocks("pycon"))))
def test_pycon_examples(index: int) -> None:
    test = doctest.DocTestParser().get_doctest(
        blocks("pycon")[index], {}, f"README pycon {index}", "README.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def console_examples() -> list[tuple[str, str]]:
    found = []
    for body in blocks("console"):
        lines = body.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ "):
                output = []
                for rest in lines[i + 1:]:
                    if rest.startswith("$ "):
                        break
                    output.append(rest)
                found.append((line[2:], "\n".join(output).strip()))
    return found


@pytest.mark.parametrize(("command", "expected"), console_examples())
def test_console_examples(command: str, expected: str) -> None:
    result = cli(command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_the_first_command_runs_the_cli_on_the_example_crontab() -> None:
    first = blocks("console")[0].strip()
    assert "pip install" in first
    args = shlex.split(first.split("&& ")[-1])
    assert args[:2] == ["memory-scheduler", "run"]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "memory_scheduler", *args[1:]], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        # Output within a few seconds (the every-10-seconds job may speak first).
        lines = [proc.stdout.readline() for _ in range(2)]
        assert any("stdout: hello from memory-scheduler at" in line for line in lines)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("index", range(len(blocks("crontab"))))
def test_crontab_examples_pass_check(index: int, tmp_path: Path) -> None:
    path = tmp_path / "crontab"
    path.write_text(blocks("crontab")[index])
    result = cli(f"memory-scheduler run --check {path}")
    assert result.returncode == 0, result.stderr
    jobs = [line for line in blocks("crontab")[index].splitlines()
            if line.strip() and not line.lstrip().startswith("#") and "=" not in line.split()[0]]
    assert result.stdout.splitlines()[-1] == f"{len(jobs)} job(s) OK"


def test_there_are_crontab_examples() -> None:
    assert blocks("crontab")


def test_the_second_command_is_what_ci_runs() -> None:
    second = blocks("console")[1].strip()
    test_command = second.split("&& ")[-1]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert test_command in ci
