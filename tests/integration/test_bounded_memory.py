"""The commands that read a whole dataset or log, run as a pod runs them: under a memory limit.

Each command runs in a fresh process inside a cgroup v1 memory group (tests/e2e/pod.py's
`memory_cgroup`, the e2e's pod limit), as root; a process over the limit is killed by the
kernel (status 137), as a pod is OOM-killed. The data is sized so that the earlier code,
which loaded everything, went over the limit (measured before the change: `kfct data push`
of a 600k-row CSV peaked at 463 MB RSS, `kfct outcomes report` over a 1.2M-row prediction
log at 1,217 MB), and the bounded code stays well under it (177 MB; 470 MB, flat from
0.3M to 1.2M logged predictions).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.pod import CGROUP_V1_MEMORY, _enter, memory_cgroup

pytestmark = pytest.mark.slow

KFCT = str(Path(sys.executable).parent / "kfct")


def run_limited(argv: list[str], env: dict, cwd: Path, limit_mib: int) -> subprocess.CompletedProcess:
    """`argv` in a memory group of `limit_mib` MiB (page cache included, reclaimed under pressure)."""
    if os.geteuid() != 0 or not (CGROUP_V1_MEMORY / "memory.limit_in_bytes").exists():
        pytest.skip("needs root and the cgroup v1 memory controller to put a limit on the command")
    group = memory_cgroup(f"kfct-tests/bounded-{os.getpid()}-{Path(cwd).name}", limit_mib << 20)
    try:
        return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600, preexec_fn=_enter(group, None))
    finally:
        group.rmdir()
        with contextlib.suppress(OSError):
            group.parent.rmdir()  # kfct-tests/, when no other test's group is in it


def _env(home: Path, **extra) -> dict:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "KFCT_HOME": str(home / ".kfct"),
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "DO_NOT_TRACK": "true",
        **extra,
    }


def _verdict(p: subprocess.CompletedProcess, limit_mib: int) -> str:
    code = 128 - p.returncode if p.returncode < 0 else p.returncode
    return f"exit {code} under {limit_mib} MiB" + (" (OOM-killed)" if code == 137 else "") + f": {p.stderr[-1500:]}"


def test_data_push_streams_a_csv_under_a_memory_limit(tmp_path):
    """`kfct data push big.csv` (600k rows, 77 MB of text) under 320 MiB: the CSV is read in blocks into
    parquet, never whole; what is stored reads back as the CSV."""
    import boto3
    import pandas as pd

    from kfct.data.datagen import generate
    from tests.faultkit.servers import moto_s3

    head, body = generate(rows=2_000, seed=3).to_csv(index=False).split("\n", 1)
    csv = tmp_path / "big.csv"
    with csv.open("w") as f:
        f.write(head + "\n" + body * 300)
    with moto_s3() as (host, port):
        url = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
        s3.create_bucket(Bucket="kfct")
        env = _env(
            tmp_path, KFCT_S3_ENDPOINT=f"{host}:{port}", KFCT_S3_ACCESS_KEY="x", KFCT_S3_SECRET_KEY="x", KFCT_S3_BUCKET="kfct"
        )
        p = run_limited([KFCT, "data", "push", str(csv)], env, tmp_path, 320)
        assert p.returncode == 0, _verdict(p, 320)
        uri = p.stdout.split()[0]
        assert uri.startswith("s3://kfct/datasets/") and uri.endswith(".parquet")
        s3.download_file("kfct", uri.split("/", 3)[3], str(tmp_path / "stored.parquet"))
    import pyarrow.parquet as pq

    stored = pq.ParquetFile(tmp_path / "stored.parquet")
    assert stored.metadata.num_rows == 600_000 and stored.metadata.num_row_groups > 1
    first = stored.read_row_group(0).to_pandas()
    expect = pd.read_csv(csv, nrows=len(first))
    pd.testing.assert_frame_equal(first, expect)


def test_outcomes_report_reads_a_bounded_sample_under_a_memory_limit(tmp_path, seed_mlflow_store):
    """`kfct outcomes report` over 800k logged predictions (10 features each) and 400k stored outcomes,
    under 640 MiB: a sample of outcomes.max_predictions (here 50,000) by customer, and only those
    customers' outcomes are read; the report says so."""
    import json

    from tests.predlogkit import write_log, write_outcomes

    home = tmp_path / ".kfct"
    seed_mlflow_store(home)
    total = write_log(home, customers=400_000, files=8)
    write_outcomes(home, 400_000)
    cfg = tmp_path / "config.yaml"
    cfg.write_text("outcomes:\n  max_predictions: 50000\n")
    p = run_limited(
        [KFCT, "outcomes", "report", "--model-name", "m", "--out", str(tmp_path / "report")],
        _env(tmp_path, KFCT_CONFIG=str(cfg)),
        tmp_path,
        640,
    )
    assert p.returncode == 0, _verdict(p, 640)
    assert f"judged on a sample of 50,000 of {total:,} served predictions" in p.stdout
    rep = json.loads((tmp_path / "report" / "realized_performance.json").read_text())
    assert rep["sample"]["predictions_read"] == 50_000 and rep["sample"]["predictions_total"] == total == 800_000
    assert 0 < rep["n_judged"] <= 50_000
    assert "Judged on a sample of 50,000 of 800,000" in (tmp_path / "report" / "realized_performance.md").read_text()
