"""No test and no CLI command may leave MLflow's default store (./mlflow.db, ./mlruns) behind.

MLflow 3 falls back to `sqlite:///mlflow.db` in the working directory when nothing set a
tracking URI; kfct always sets one (kfct.registry.setup from Settings). tests/conftest.py
fails any test after which one appeared; here: that guard really fails, and the commands
that read the registry do not make one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

MAKES_A_STORE = '''
from pathlib import Path


def test_makes_a_store():
    Path("mlflow.db").write_bytes(b"")


def test_makes_nothing():
    pass
'''


def test_the_conftest_guard_fails_the_test_that_made_a_default_store(tmp_path):
    (tmp_path / "test_probe.py").write_text(MAKES_A_STORE)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
                        "--rootdir", str(tmp_path), "test_probe.py"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    assert "ERROR at teardown of test_makes_a_store" in p.stdout, p.stdout[-3000:]
    assert "MLflow used without kfct.registry.setup" in p.stdout
    assert "2 passed, 1 error" in p.stdout, p.stdout[-500:]


# Commands that read the registry; with no model registered each ends in a clear error, after
# having opened the configured store (<KFCT_HOME>/mlflow.db).
REGISTRY_COMMANDS = (
    ["rollback", "--target", "local"],
    ["ab", "report"],
    ["score", "--input", "in.parquet", "--output", "out.parquet"],
)


def test_registry_commands_leave_no_default_store_in_the_working_directory(tmp_path):
    """Run where an operator might (a repository checkout), with only KFCT_HOME set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KFCT_", "MLFLOW_"))}
    env.update(KFCT_HOME=str(tmp_path / "home"), HOME=str(tmp_path))
    kfct = Path(sys.executable).with_name("kfct")
    for args in REGISTRY_COMMANDS:
        p = subprocess.run([str(kfct), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
        assert p.returncode != 0 and "Traceback" not in p.stderr, (args, p.stderr[-2000:])
        stray = [n for n in ("mlflow.db", "mlruns") if (tmp_path / n).exists()]
        assert not stray, f"kfct {' '.join(args)} made {stray} in its working directory"
    assert (tmp_path / "home" / "mlflow.db").exists(), "the commands never opened the configured store"
