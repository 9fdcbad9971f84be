"""ruff on the package, the benchmarks and the tests, with the configuration in pyproject.toml:
`make test` catches what `make lint` would (mypy, slower, runs in `make lint` and its own CI job)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.tool  # runs ruff over the repository: make test-tools and make test, not make test-fast

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ["kfct", "components", "pipelines", "serving"]
LINTED = [*PACKAGE, "bench", "tests"]


def test_ruff_passes_on_the_package_the_benchmarks_and_the_tests():
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", *LINTED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_is_configured_and_catches_a_bad_module(tmp_path):
    """The check above can fail: the same configuration flags a late import and unused ones."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\nx = 1\nimport sys  # E402 and two unused imports\n")
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(ROOT / "pyproject.toml"), "--output-format", "concise", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "E402" in out.stdout and "F401" in out.stdout, out.stdout + out.stderr


def test_the_wider_rule_set_is_configured(tmp_path):
    """The rules `make lint` adds beyond pycodestyle/pyflakes/bugbear are on: a blind except, a
    builtin open(), a function over complexity 10 and an unsorted import block are each flagged."""
    branches = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(11))
    bad = tmp_path / "wide.py"
    bad.write_text(
        "import sys\nimport os\n\n\n"
        "def f():\n    try:\n        return open('x').read()\n    except Exception:\n        return None\n\n\n"
        f"def g(x):\n{branches}\n    return os.sep + sys.prefix\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(ROOT / "pyproject.toml"), "--output-format", "concise", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for code in ("BLE001", "PTH123", "C901", "I001"):
        assert code in out.stdout, (code, out.stdout + out.stderr)


def test_ruff_format_check_passes():
    """`make lint` also runs `ruff format --check`: the tree is formatted the way ruff formats it."""
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *LINTED], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
