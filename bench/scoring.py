"""Batch scoring: 2.1M customers, parquet in, parquet of scores out.

kfct: `kfct.components.score.score_file` (what `kfct score` and the pipeline component run):
Arrow record batches, encoded straight from Arrow columns, the booster's threaded
predictor, ids/probability/label/version streamed to parquet.

Peer: what an MLflow user writes for a batch job: `mlflow.pyfunc.load_model(...)` on
the same registered version, `pandas.read_parquet`, `pyfunc.predict(df)` (schema
enforcement included), the scores written back with pandas.

Reference: the case study's monthly batch, 2.1M customers in 2 h 31 min.
Both are timed file to file (read, score, write); the model load is not included.
The input is generated once and cached (`--cache-dir`, default $TMPDIR/kfct-bench-cache),
keyed by the generator's source hash so a changed generator makes a new file.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from pathlib import Path

from bench.model import Context, ensure_registered

ROWS = 2_100_000
SEED = 7
CASE_STUDY_SECONDS = 2 * 3600 + 31 * 60  # 2 h 31 min for 2.1M customers


def cached_customers(ctx: Context, rows: int = ROWS, seed: int = SEED) -> tuple[Path, float | None]:
    """Path of the cached input (generated if missing) and the seconds it took to generate, if it did."""
    import kfct.data.datagen as datagen

    src = Path(datagen.__file__).read_bytes()
    key = hashlib.sha256(src).hexdigest()[:12]
    path = ctx.cache_dir / f"customers-{rows}-seed{seed}-{key}.parquet"
    if path.is_file():
        return path, None
    ctx.log(f"  generating {rows:,} customers once into {path} ...")
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    df = datagen.generate(rows, seed=seed)
    tmp = path.with_name(path.name + ".partial")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path, round(time.perf_counter() - t0, 2)


def score_kfct(model, name: str, version: str, src: Path, dest: Path, id_column: str) -> dict:
    from kfct.components.score import score_file

    s = score_file(model, src, dest, version, name, id_column=id_column)
    return {
        "rows": s.rows,
        "seconds": s.seconds,
        "read_s": s.read_seconds,
        "score_s": s.score_seconds,
        "write_s": s.write_seconds,
    }


def score_mlflow_pyfunc(pyfunc, src: Path, dest: Path, id_column: str, threshold: float) -> dict:
    import numpy as np
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_parquet(src)
    t1 = time.perf_counter()
    pred = np.asarray(pyfunc.predict(df))
    proba = pred[:, 1] if pred.ndim == 2 else pred
    t2 = time.perf_counter()
    pd.DataFrame(
        {id_column: df[id_column].to_numpy(), "probability": proba, "label": (proba >= threshold).astype("int8")}
    ).to_parquet(dest, index=False)
    t3 = time.perf_counter()
    return {
        "rows": len(df),
        "seconds": round(t3 - t0, 3),
        "read_s": round(t1 - t0, 3),
        "score_s": round(t2 - t1, 3),
        "write_s": round(t3 - t2, 3),
    }


def summarize(runs: list[dict]) -> dict:
    secs = [r["seconds"] for r in runs]
    med = statistics.median(secs)
    rows = runs[0]["rows"]
    return {
        "rows": rows,
        "repeats": len(runs),
        "seconds": round(med, 3),
        "seconds_range": [min(secs), max(secs)],
        "rows_per_s": round(rows / med, 1) if med else None,
        "read_s": round(statistics.median(r["read_s"] for r in runs), 3),
        "score_s": round(statistics.median(r["score_s"] for r in runs), 3),
        "write_s": round(statistics.median(r["write_s"] for r in runs), 3),
        "projected_2_1m_s": round(med * ROWS / rows, 2) if rows else None,
    }


def run(ctx: Context, repeats: int = 3, peer_repeats: int = 1, rows: int = ROWS) -> dict:
    from kfct.config import load_config

    cfg = load_config()
    id_col = cfg.dataset.id_column
    reg = ensure_registered(ctx)
    src, gen_s = cached_customers(ctx, rows)
    out_dir = ctx.workdir / "scores"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "input": str(src),
        "generated_s": gen_s,
        "case_study_s": CASE_STUDY_SECONDS,
        "case_study_rows_per_s": round(ROWS / CASE_STUDY_SECONDS, 1),
        "tools": {},
    }

    runs = []
    for r in range(repeats):
        runs.append(score_kfct(reg.model, reg.name, reg.version, src, out_dir / "kfct.parquet", id_col))
        ctx.log(f"  kfct score {r + 1}/{repeats}: {runs[-1]['rows']:,} rows in {runs[-1]['seconds']:.2f} s")
    result["tools"]["kfct"] = {"label": "kfct score (kfct.components.score)", **summarize(runs)}

    if peer_repeats > 0:
        import mlflow

        pyfunc = mlflow.pyfunc.load_model(f"models:/{reg.name}/{reg.version}")
        runs = []
        for r in range(peer_repeats):
            runs.append(score_mlflow_pyfunc(pyfunc, src, out_dir / "mlflow.parquet", id_col, float(reg.model.threshold)))
            ctx.log(f"  mlflow pyfunc {r + 1}/{peer_repeats}: {runs[-1]['rows']:,} rows in {runs[-1]['seconds']:.2f} s")
        result["tools"]["mlflow"] = {"label": "MLflow pyfunc + pandas", **summarize(runs)}
        del pyfunc
    k = result["tools"]["kfct"]
    result["speedup_vs_case_study"] = round(CASE_STUDY_SECONDS / k["projected_2_1m_s"], 1) if k["projected_2_1m_s"] else None
    if "mlflow" in result["tools"]:
        m = result["tools"]["mlflow"]
        result["kfct_over_mlflow_rows_per_s"] = round(k["rows_per_s"] / m["rows_per_s"], 2) if m["rows_per_s"] else None
    return result
