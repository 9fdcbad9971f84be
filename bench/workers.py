"""Distributed training here: wall time and test AUC with 1, 2 and 4 local XGBoost workers (train.workers).

    python -m bench --only workers                     # inside make bench (rows: WORKERS_ROWS)
    python -m bench.workers --rows 1000000 --workers 1,2,4 --out bench/workers.json   # bench/workers.md

The data is generated, split and encoded once (featurize's own `featurize_core`), the splits
written as parquet; then each cell runs what the train step runs with `train.workers: N`:
N worker processes (`kfct.components.train_worker`) under the DMLC_* contract of Kubeflow
Trainer's xgboost-distributed runtime, tracker on 127.0.0.1, each reading its shard of the
parquet split, rank 0 writing the model. "in-pod" is today's single-process `train_core` on the
same splits. Wall time counts the processes' start (imports), their reads and the training;
test AUC is the written model's on the test split. The machine's cores are shared between the
N workers (OMP_NUM_THREADS = cores / N), as N pods would not share them: this cell shows that
the model does not depend on N and what N costs here, not a cluster's speed-up.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

WORKERS_ROWS = 300_000
WORKERS = (1, 2, 4)
SEED = 42


def prepare(workdir: Path, rows: int, seed: int = SEED, log=print) -> dict:
    """Generated data split and encoded as featurize does; the splits and the encoder on disk."""
    import joblib

    from kfct.components.featurize import featurize_core
    from kfct.config import load_config
    from kfct.data.datagen import generate

    cfg = load_config()
    t0 = time.perf_counter()
    tr, va, te, enc = featurize_core(generate(rows, seed=seed), cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {k: workdir / f"{k}.parquet" for k in ("train", "val")}
    tr.to_parquet(paths["train"], index=False, row_group_size=64_000)
    va.to_parquet(paths["val"], index=False, row_group_size=64_000)
    joblib.dump(enc, workdir / "preprocessor.joblib")
    log(
        f"  {rows:,} rows generated and split in {time.perf_counter() - t0:.1f} s "
        f"({len(tr):,} train / {len(va):,} val / {len(te):,} test)"
    )
    return {"cfg": cfg, "train": tr, "val": va, "test": te, "encoder": enc, "dir": workdir}


def _auc(model, test, label: str) -> float:
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(test[label], model.predict_positive(test))), 4)


def in_pod(data: dict) -> dict:
    from kfct.components.train import train_core

    t0 = time.perf_counter()
    model, _p, _v, info = train_core(data["train"], data["val"], data["cfg"], encoder=data["encoder"])
    import os

    from kfct.components.train_distributed import typed_config

    return {
        "workers": 1,
        "engine": "in-pod",
        "threads": os.cpu_count(),
        "seconds": round(time.perf_counter() - t0, 2),
        "fit_seconds": info["fit_seconds"],
        "trees": info["best_iteration"] + 1,
        "test_roc_auc": _auc(model, data["test"], typed_config(data["cfg"]).dataset.label),
    }


def local_workers(data: dict, n: int) -> dict:
    import joblib

    from kfct.components.train_distributed import config_json, run_local_workers, typed_config, worker_memory_limit

    d = data["dir"]
    rc = typed_config(data["cfg"]).model_copy(deep=True)
    rc.train.workers = n
    out = d / f"w{n}"
    out.mkdir(exist_ok=True)
    spec = {
        "config_json": config_json(rc),
        "train": [str(d / "train.parquet")],
        "val": [str(d / "val.parquet")],
        "preprocessor": str(d / "preprocessor.joblib"),
        "model": str(out / "model"),
        "info": str(out / "info.json"),
        "device": "cpu",
    }
    (out / "spec.json").write_text(json.dumps(spec))
    t0 = time.perf_counter()
    with held_workers(out) as record:
        run_local_workers(
            str(out / "spec.json"),
            n,
            float(rc.train.deadline_seconds),
            out / "logs",
            memory_limit=worker_memory_limit(rc.resources),
        )
    seconds = time.perf_counter() - t0
    info = json.loads((out / "info.json").read_text())["info"]
    import os

    peaks = [json.loads(line) for line in record.read_text().splitlines()] if record.is_file() else []
    return {
        "workers": n,
        "engine": "local-processes",
        "threads": max(1, (os.cpu_count() or 1) // n),
        "seconds": round(seconds, 2),
        "fit_seconds": info["fit_seconds"],
        "trees": info["best_iteration"] + 1,
        "test_roc_auc": _auc(joblib.load(out / "model"), data["test"], rc.dataset.label),
        "worker_peak_rss_mib": [p.get("peak_rss_mib") for p in peaks],
        "worker_limit_mib": peaks[0]["limit_mib"] if peaks else None,
    }


@contextlib.contextmanager
def held_workers(out: Path):
    """Each worker in its own cgroup v1 memory group at the per-worker limit (as `kfct run --pod-limits`
    holds them), when root and the controller are there; yields where their peaks are recorded."""
    import os

    from kfct.runtime import memgroup

    record = out / "memory.jsonl"
    if not memgroup.available():
        yield record
        return
    saved = {k: os.environ.get(k) for k in (memgroup.ENV_PARENT, memgroup.ENV_RECORD)}
    parent = memgroup.group_name("kfct-bench", f"workers-{os.getpid()}")
    os.environ.update({memgroup.ENV_PARENT: parent, memgroup.ENV_RECORD: str(record)})
    try:
        yield record
    finally:
        memgroup.remove_tree(parent)
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def run(workdir: Path, rows: int = WORKERS_ROWS, workers=WORKERS, log=print) -> dict:
    import os

    data = prepare(Path(workdir) / "workers", rows, log=log)
    cells = [in_pod(data)]
    log(f"  in-pod: {cells[-1]}")
    for n in workers:
        cells.append(local_workers(data, n))
        log(f"  {n} worker(s): {cells[-1]}")
    base = cells[0]["test_roc_auc"]
    for c in cells:
        c["auc_gap"] = round(c["test_roc_auc"] - base, 4)
    return {"rows": rows, "cores": os.cpu_count(), "cells": cells}


def render(sec: dict, title: str) -> list[str]:
    lines = [f"## {title}", ""]
    if sec.get("status") != "ok":
        return [*lines, f"_{str(sec.get('status', 'skipped')).capitalize()}: {sec.get('reason', '')}_", ""]
    d = sec["data"]
    lines += [
        f"`train.workers` on {d['rows']:,} generated rows, {d.get('cores')} cores shared by the workers "
        f"(bench/workers.py). in-pod: today's train step; N: N worker processes under Kubeflow Trainer's "
        f"DMLC_* contract. Wall time includes the workers' start and reads.",
        "",
        "| engine | workers | threads each | wall s | fit s | trees | test AUC | AUC vs in-pod | peak RSS per worker (limit) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in d["cells"]:
        peaks = " / ".join(f"{p:,.0f}" for p in c.get("worker_peak_rss_mib") or [] if p is not None)
        mem = f"{peaks} MiB ({c['worker_limit_mib']:,} MiB)" if peaks and c.get("worker_limit_mib") else "–"
        lines.append(
            f"| {c['engine']} | {c['workers']} | {c.get('threads', '?')} | {c['seconds']:.1f} | "
            f"{c['fit_seconds']:.1f} | {c['trees']} | {c['test_roc_auc']:.4f} | {c['auc_gap']:+.4f} | {mem} |"
        )
    return [*lines, ""]


def main(argv=None) -> int:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=WORKERS_ROWS)
    ap.add_argument("--workers", default=",".join(map(str, WORKERS)))
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kfct-bench-workers-") as tmp:
        res = run(Path(tmp), args.rows, [int(w) for w in args.workers.split(",")])
    print("\n".join(render({"status": "ok", "data": res}, "Distributed training (train.workers)")))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
