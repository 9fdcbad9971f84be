"""No test and no CLI command may leave MLflow's default store (./mlflow.db, ./mlruns) behind.

MLflow 3 falls back to `sqlite:///mlflow.db` in the working directory when nothing set a
tracking URI; kfct always sets one (kfct.governance.registry.setup from Settings). tests/conftest.py
fails any test after which one appeared; here: that guard really fails. The commands and the
model server are checked in tests/integration/test_no_stray_mlflow_store.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

MAKES_A_STORE = """
from pathlib import Path


def test_makes_a_store():
    Path("mlflow.db").write_bytes(b"")


def test_makes_nothing():
    pass
"""


def test_the_conftest_guard_fails_the_test_that_made_a_default_store(tmp_path):
    (tmp_path / "test_probe.py").write_text(MAKES_A_STORE)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "test_probe.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    assert "ERROR at teardown of test_makes_a_store" in p.stdout, p.stdout[-3000:]
    assert "MLflow used without kfct.governance.registry.setup" in p.stdout
    assert "2 passed, 1 error" in p.stdout, p.stdout[-500:]
