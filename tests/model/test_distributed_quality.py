"""Quality does not depend on the engine: a local CT run with `kfct run --workers 2` (two XGBoost
worker processes under the DMLC_* contract of Kubeflow Trainer's xgboost-distributed runtime)
completes, registers, and its test AUC is within 0.005 of the in-pod model's on the same data;
each model card says how its model was trained. A third run takes the same data through the parts
pipeline (map -> reduce, each worker reading its own parts, as at 20M rows) with every process
held at its pod's memory limit (`--pod-limits`, where root and cgroup v1 allow it).

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
    from kfct.runtime import memgroup

    held = ["--pod-limits"] if memgroup.available() else []
    runs = {}
    for name, extra in (
        ("in-pod", []),
        ("workers", ["--workers", "2"]),
        ("parts-workers", ["--workers", "2", "--part-rows", "7500", *held]),
    ):
        home = tmp_path / name
        env = {**os.environ, "KFCT_HOME": str(home)}
        env.pop("KFCT_CONFIG", None)
        runs[name] = (
            home,
            subprocess.Popen(
                [_kfct(), "run", "--data-uri", str(data), "--json", str(home / "s.json"), *extra],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
    out = {}
    for name, (home, proc) in runs.items():
        log, _ = proc.communicate(timeout=1200)
        assert proc.returncode == 0, f"{name} run failed:\n{log[-3000:]}"
        out[name] = json.loads((home / "s.json").read_text())
        assert out[name]["registered"]["version"] == "1", name

    auc = {k: out[k]["decision"]["metrics"]["roc_auc"] for k in out}
    assert abs(auc["workers"] - auc["in-pod"]) <= MAX_AUC_GAP, auc
    assert abs(auc["parts-workers"] - auc["in-pod"]) <= MAX_AUC_GAP, auc
    if held:  # every task and both workers ran inside their pods' limits
        mem = out["parts-workers"]["memory"]
        assert {r["process"] for r in mem} >= {"task", "worker 0 of 2", "worker 1 of 2"}
        assert all(r["exit"] == 0 and r["peak_rss_mib"] < r["limit_mib"] for r in mem), mem

    for name, line in (
        ("in-pod", "| Trained | 1 worker, in-pod, cpu |"),
        ("workers", "| Trained | 2 workers, local-processes, cpu |"),
        ("parts-workers", "| Trained | 2 workers, local-processes, cpu |"),
    ):
        (card,) = Path(out[name]["run_dir"]).rglob("register-model/model_card")
        assert line in card.read_text(), name
