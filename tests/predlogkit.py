"""A served-prediction log and stored outcomes, written fast in the layouts kfct reads.

The prediction log as `kfct.serving.prediction_log.PredictionLogger` leaves it
(`predictions/date=<day>/part-<first_ms>-<last_ms>-<pid>-<seq>.parquet`, metadata columns then
one column per feature) and outcomes snapshots as `kfct.evidence.outcomes.store_outcomes` leaves them
(`outcomes/<sha256>.parquet`), for tests of readers that must stay bounded on a large log.
"""

from __future__ import annotations

from pathlib import Path

T0_MS = 1_780_000_000_000  # 2026-05-28, a fixed start

# How long a test lets `PredictionLogger.flush` take. The encoder is a spawned child at nice 10
# (kfct.serving.predlog_encoder): beside busy xdist workers it gets ~10 % of a core, and its first
# batch (interpreter start, pandas and pyarrow imports) took over 10 s in a CI run whose 2 cores
# were saturated. The tests judge what is written, not how fast: the bound only stops a hang.
FLUSH_BOUND_S = 60


def write_log(home: Path, customers: int, files: int = 4, features: int = 10, seed: int = 0) -> int:
    """Two predictions per customer (champion and shadow of the same request), one day apart per
    file; returns the number of rows written."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    ids = np.array([f"c{i:08d}" for i in range(customers)], dtype=object)
    per = -(-customers // files)
    rows = 0
    for k in range(files):
        cid = ids[k * per : (k + 1) * per]
        n = len(cid)
        ts = T0_MS + k * 86_400_000 + np.arange(n)
        p = rng.random(n)
        cols = {
            "ts": pa.array(np.concatenate([ts, ts]), pa.timestamp("ms", tz="UTC")),
            "request_id": pa.array(np.concatenate([cid, cid]).astype(str), pa.string()),
            "model_name": pa.array(["m"] * (2 * n), pa.string()),
            "model_version": pa.array(["1"] * n + ["2"] * n, pa.string()),
            "role": pa.array(["champion"] * n + ["shadow"] * n, pa.string()),
            "customer_id": pa.array(np.concatenate([cid, cid]).astype(str), pa.string()),
            "probability": pa.array(np.concatenate([p, 1 - p])),
            "label": pa.array(np.concatenate([p >= 0.5, p < 0.5]).astype(np.int64)),
            "threshold": pa.array(np.full(2 * n, 0.5)),
        }
        for j in range(features):
            cols[f"f{j}"] = pa.array(rng.random(2 * n))
        day = Path(home) / "predictions" / f"date=2026-05-{28 + k:02d}"
        day.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), day / f"part-{int(ts[0])}-{int(ts[-1])}-1-{k}.parquet")
        rows += 2 * n
    return rows


def write_outcomes(home: Path, customers: int, seed: int = 1) -> Path:
    """One outcome per customer, observed two days after the last prediction file's day."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    out = Path(home) / "outcomes" / "snapshot.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    observed_us = (T0_MS + 6 * 86_400_000) * 1000
    t = pa.table(
        {
            "customer_id": pa.array([f"c{i:08d}" for i in range(customers)], pa.string()),
            "outcome": pa.array(rng.integers(0, 2, customers)),
            "observed_at": pa.array(np.full(customers, observed_us), pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(t, out)
    return out
