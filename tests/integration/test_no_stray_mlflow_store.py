"""The commands and the model server leave no MLflow default store in their working directory.

MLflow 3 falls back to `sqlite:///mlflow.db` in the working directory when nothing set a
tracking URI. Run where an operator might (a repository checkout), with only KFCT_HOME set,
each must use the configured store (<KFCT_HOME>/mlflow.db) and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faultkit.servers import free_port, stop_process

pytestmark = pytest.mark.slow

# Commands that read the registry; with no model registered each ends in a clear error.
REGISTRY_COMMANDS = (
    ["rollback", "--target", "local"],
    ["ab", "report"],
    ["score", "--input", "in.parquet", "--output", "out.parquet"],
)


def operator_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KFCT_", "MLFLOW_"))}
    return dict(env, KFCT_HOME=str(tmp_path / "home"), HOME=str(tmp_path))


def stray_stores(folder: Path) -> list[str]:
    return [n for n in ("mlflow.db", "mlruns") if (folder / n).exists()]


def test_registry_commands_use_the_configured_store_only(tmp_path):
    kfct = Path(sys.executable).with_name("kfct")
    for args in REGISTRY_COMMANDS:
        p = subprocess.run(
            [str(kfct), *args], cwd=tmp_path, env=operator_env(tmp_path), capture_output=True, text=True, timeout=180
        )
        assert p.returncode != 0 and "Traceback" not in p.stderr, (args, p.stderr[-2000:])
        assert not stray_stores(tmp_path), f"kfct {' '.join(args)} made {stray_stores(tmp_path)} where it ran"
    assert (tmp_path / "home" / "mlflow.db").exists(), "the commands never opened the configured store"


def test_the_model_server_reads_aliases_from_the_configured_store(tmp_path):
    """`kfct serve` follows the aliases: its first poll comes before any model load."""
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("kfct")), "serve", "--port", str(free_port())],
            cwd=tmp_path,
            env=operator_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "load of @champion failed" not in log.read_text():  # polled the aliases, then tried a load
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        stop_process(proc, grace=30)
    assert not stray_stores(tmp_path), f"kfct serve made {stray_stores(tmp_path)} where it ran"
    assert (tmp_path / "home" / "mlflow.db").exists()
