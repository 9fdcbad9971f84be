"""Two `kfct run` processes started at once on one fresh KFCT_HOME (a recurring run and a
drift-triggered one overlap like this on a cluster).

Both must succeed (the MLflow SQLite store is created once, under a lock) and each must
report its own run: its own run id, kfp run, data sha256 and MLflow run, in the printed
summary and in `--json`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROWS = 3000


def _kfct(home: Path, seed: int, out: Path) -> subprocess.Popen:
    env = {**os.environ, "KFCT_HOME": str(home)}
    for var in ("KFCT_MLFLOW_TRACKING_URI", "KFCT_CONFIG", "KFCT_S3_ENDPOINT", "KFCT_KFP_HOST"):
        env.pop(var, None)
    return subprocess.Popen(
        [sys.executable, "-m", "kfct", "run", "--rows", str(ROWS), "--seed", str(seed), "--json", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_ct_runs_at_once_on_a_fresh_home_each_report_their_own(tmp_path):
    from kfct.governance.lineage import sha256_file

    home = tmp_path / "kfct-home"
    procs = {seed: _kfct(home, seed, tmp_path / f"s{seed}.json") for seed in (1, 2)}
    outs = {seed: p.communicate(timeout=600)[0] for seed, p in procs.items()}
    for seed, p in procs.items():
        assert p.returncode == 0, f"run with seed {seed} failed:\n{outs[seed][-3000:]}"
    summaries = {seed: json.loads((tmp_path / f"s{seed}.json").read_text()) for seed in procs}
    a, b = summaries[1], summaries[2]
    for key in ("run_id", "run_name", "run_dir", "log", "mlflow_run_id"):
        assert a[key] and b[key] and a[key] != b[key], key
    assert a["data_uri"].endswith("seed=1") and b["data_uri"].endswith("seed=2")
    for seed, s in summaries.items():
        snapshot = Path(s["run_dir"]) / "ingest-data" / "dataset"
        # The summary's data sha is the snapshot this very run wrote, and the text output names this run.
        assert s["dataset"]["sha256"] == sha256_file(snapshot)
        assert s["run_id"] in outs[seed] and s["dataset"]["sha256"][:16] in outs[seed]
    assert a["dataset"]["sha256"] != b["dataset"]["sha256"]
