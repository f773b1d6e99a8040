"""The sdist ships the licence and a test suite that runs (helpers, examples and all)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("setuptools", reason="building an sdist needs setuptools")

ROOT = Path(__file__).resolve().parent.parent


def test_the_sdist_ships_the_licence_and_the_whole_test_suite(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path),
         "sdist", "--dist-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    [sdist] = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    wanted = {"LICENSE", "README.md", "pyproject.toml", "setup.cfg", "setup.py", "tox.ini",
              ".ci/run", "examples/hello.crontab", "memory_scheduler/py.typed"}
    wanted |= {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("*.py")}
    assert "tests/conftest.py" in wanted and "tests/helpers.py" in wanted
    assert wanted <= names, sorted(wanted - names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
