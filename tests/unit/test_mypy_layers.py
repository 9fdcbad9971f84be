"""mypy sees across the layers: a type error against kfct.components|pipelines|serving is reported.

The card's folders sit at the top level and are reached as `kfct.components` etc. through the
symlinks kfct/components -> ../components (and pipelines, serving). Before them, setuptools'
package-dir did the mapping, which mypy does not follow: with `ignore_missing_imports` every such
import was `Any` and the errors below passed silently. `ignore_missing_imports` now holds only for
named third-party packages without types, so an unresolved kfct import is an error of its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PLANTED = """\
from kfct.components.retrain_policy import severity
from kfct.pipelines.kfp_client import normalise_cron
from kfct.serving.schemas import v1_records

ok: str = severity(0.5, None)
bad_component: int = severity(0.5, None)
bad_pipeline: bytes = normalise_cron("@daily")
bad_serving: int = v1_records([])
"""


def _mypy(path: Path) -> tuple[int, str]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--no-error-summary",
            "--show-error-codes",
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return out.returncode, out.stdout + out.stderr


@pytest.mark.tool  # runs mypy over the layers the planted file imports: make test-tools and make test
def test_mypy_reports_a_type_error_against_each_layer(tmp_path):
    # a module name of its own: mypy's cache (shared with `make lint`) would replay an earlier run's file
    planted = tmp_path / f"planted_{uuid.uuid4().hex}.py"
    planted.write_text(PLANTED)
    rc, out = _mypy(planted)
    mine = [line for line in out.splitlines() if line.startswith(str(planted))]
    assert rc == 1, out
    assert "import-not-found" not in out and "import-untyped" not in out, out
    lines = sorted(int(m.group(1)) for line in mine if (m := re.match(r".*?:(\d+): error:", line)))
    assert lines == [6, 7, 8], out
    assert all("[assignment]" in line for line in mine if ": error:" in line), out


def test_the_layer_folders_are_linked_into_the_kfct_package():
    for name in ("components", "pipelines", "serving"):
        link = ROOT / "kfct" / name
        assert link.is_symlink() and link.readlink() == Path("..") / name, link
        assert link.resolve() == (ROOT / name).resolve()
