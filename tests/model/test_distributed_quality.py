"""Quality does not depend on the engine: a local CT run with `kfct run --workers 2` (two XGBoost
worker processes under the DMLC_* contract of Kubeflow Trainer's xgboost-distributed runtime)
completes, registers, and its test AUC is within 0.005 of the in-pod model's on the same data;
each model card says how its model was trained.

Both runs go through the CLI, each in a KFCT_HOME of its own (each registers v1 as the first
champion, so neither gate compares against the other), concurrently to halve the wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROWS = 30_000
MAX_AUC_GAP = 0.005


def _kfct() -> str:
    return str(Path(sys.executable).with_name("kfct"))


def test_two_workers_match_the_in_pod_model_and_the_card_says_how(tmp_path):
    from kfct.data.datagen import generate, write_frame

    data = write_frame(generate(ROWS, seed=11), tmp_path / "customers.parquet")
    runs = {}
    for name, extra in (("in-pod", []), ("workers", ["--workers", "2"])):
        home = tmp_path / name
        env = {**os.environ, "KFCT_HOME": str(home)}
        env.pop("KFCT_CONFIG", None)
        runs[name] = (home, subprocess.Popen([_kfct(), "run", "--data-uri", str(data), "--json", str(home / "s.json"),
                                              *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                             text=True))
    out = {}
    for name, (home, proc) in runs.items():
        log, _ = proc.communicate(timeout=1200)
        assert proc.returncode == 0, f"{name} run failed:\n{log[-3000:]}"
        out[name] = json.loads((home / "s.json").read_text())
        assert out[name]["registered"]["version"] == "1", name

    auc = {k: out[k]["decision"]["metrics"]["roc_auc"] for k in out}
    assert abs(auc["workers"] - auc["in-pod"]) <= MAX_AUC_GAP, auc

    for name, line in (("in-pod", "| Trained | 1 worker, in-pod, cpu |"),
                       ("workers", "| Trained | 2 workers, local-processes, cpu |")):
        (card,) = Path(out[name]["run_dir"]).rglob("register-model/model_card")
        assert line in card.read_text(), name
