"""`make install` leaves kfct's own sources byte-compiled.

kfct is installed editable, so pip compiles its dependencies but not kfct. Each pipeline
stage is a fresh process that imports ~40 kfct modules; where PYTHONDONTWRITEBYTECODE is
set (many dev containers, this project's CI machine) nothing ever writes their bytecode and
every stage recompiled them from source (about 2.5 s of a 100k-row CT run, `make bench`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.tool  # runs `make install`: make test-tools and make test, not make test-fast

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kfct", "components", "pipelines", "serving")


def _stale(source: Path) -> bool:
    """Whether the interpreter would have to compile `source` (no pyc, or one for another version of it)."""
    pyc = Path(importlib.util.cache_from_source(str(source)))
    if not pyc.exists():
        return True
    header = pyc.read_bytes()[:16]
    st = source.stat()
    return (
        header[:4] != importlib.util.MAGIC_NUMBER
        or int.from_bytes(header[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
        or int.from_bytes(header[12:16], "little") != st.st_size & 0xFFFFFFFF
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_install_byte_compiles_the_projects_own_sources():
    victim = ROOT / "kfct" / "data" / "labels.py"
    Path(importlib.util.cache_from_source(str(victim))).unlink(missing_ok=True)
    assert _stale(victim)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(["make", "-s", "install"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    stale = [str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if _stale(p)]
    assert not stale, stale
