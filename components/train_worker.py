"""One XGBoost worker of a distributed train step, run as `python -m kfct.components.train_worker --spec URI`.

The same code runs in a Kubeflow Trainer pod and as a local process. It follows the
contract of Trainer's `xgboost-distributed` runtime (kubeflow/trainer v2.2.0 .. v2.3.0, read at
commit 8c0f5059: pkg/runtime/framework/plugins/xgboost/xgboost.go and
manifests/base/runtimes/xgboost_distributed.yaml):

- the runtime sets `DMLC_TRACKER_URI` (rank 0's pod: `<job>-node-0-0.<job>`),
  `DMLC_TRACKER_PORT` (29500), `DMLC_TASK_ID` (the Job completion index) and `DMLC_NUM_WORKER`
  (nodes x GPUs per node, 1 per CPU node); it runs no tracker itself;
- so the worker with `DMLC_TASK_ID=0` starts `xgboost.tracker.RabitTracker` on that port
  (as docs/user-guides/xgboost.md in that repository does) and every worker joins through
  `xgboost.collective.CommunicatorContext(dmlc_tracker_uri, dmlc_tracker_port, dmlc_task_id)`
  (xgboost 3.2: collective.py, tracker.py). The tracker sorts by task id, so the collective
  rank is the completion index.

Each worker reads only its shard of the train and validation parts (`kfct.data.shards`), encodes
it with the encoder featurize fitted (read from featurize's output, never refitted), and
trains with the in-pod estimator's own settings (`train.xgb_booster_params`): histogram
sketches, split statistics, `scale_pos_weight` counts and the validation AUC that stops
training early are all reduced across workers. Rank 0 then assembles the same `ChurnModel`
the in-pod path does (encoder + trimmed booster + threshold chosen on validation) and writes
it to the train step's model artifact, which evaluate and register read unchanged.

The spec (JSON, at a local path or s3:// URI) names: `config_json`, `train` and `val` (lists
of parquet parts), `preprocessor` (the fitted encoder), `model` and `info` (where rank 0
writes), `device`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

DMLC_ENV = ("DMLC_TRACKER_URI", "DMLC_TRACKER_PORT", "DMLC_TASK_ID", "DMLC_NUM_WORKER")
SPEC_KEYS = ("config_json", "train", "val", "preprocessor", "model", "info", "device")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
FAILED_PREFIX = "kfct train worker"  # the line a failed worker leaves last in its log


@dataclass(frozen=True)
class Collective:
    """Where this worker sits in the group, from the runtime's DMLC_* variables."""

    tracker_uri: str
    tracker_port: int
    rank: int
    world: int


def collective_from_env(env: Mapping[str, str]) -> Collective:
    """The DMLC_* contract read from `env`; a clear error naming a missing or bad variable."""
    missing = [k for k in DMLC_ENV if not env.get(k)]
    if missing:
        raise ValueError(
            f"worker environment lacks {', '.join(missing)} (set by Kubeflow Trainer's XGBoost runtime "
            f"or by `kfct run --workers N`)"
        )
    try:
        c = Collective(
            env["DMLC_TRACKER_URI"], int(env["DMLC_TRACKER_PORT"]), int(env["DMLC_TASK_ID"]), int(env["DMLC_NUM_WORKER"])
        )
    except ValueError:
        raise ValueError(
            "DMLC_TRACKER_PORT, DMLC_TASK_ID and DMLC_NUM_WORKER must be integers, got "
            + ", ".join(f"{k}={env[k]!r}" for k in DMLC_ENV[1:])
        ) from None
    if c.world < 1 or not 0 <= c.rank < c.world:
        raise ValueError(f"DMLC_TASK_ID {c.rank} is outside 0..{c.world - 1} (DMLC_NUM_WORKER {c.world})")
    return c


def tracker_host(tracker_uri: str) -> str:
    """Where rank 0's tracker listens: loopback here; every interface in a pod (as the upstream guide does)."""
    return "127.0.0.1" if tracker_uri in LOOPBACK else "0.0.0.0"


def parse_spec(text: str) -> dict[str, Any]:
    """The worker spec, checked: every key present, part lists non-empty."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"worker spec is not JSON: {exc}") from None
    missing = [k for k in SPEC_KEYS if k not in spec] if isinstance(spec, dict) else list(SPEC_KEYS)
    if missing:
        raise ValueError(f"worker spec lacks {', '.join(missing)}")
    for key in ("train", "val"):
        if not isinstance(spec[key], list) or not spec[key] or not all(isinstance(u, str) for u in spec[key]):
            raise ValueError(f"worker spec {key!r} must be a non-empty list of parquet parts, got {spec[key]!r}")
    checked: dict[str, Any] = spec
    return checked


def _xy(table: Any, encoder: Any, label: str) -> tuple[Any, Any]:
    import numpy as np

    df = table.to_pandas()
    return encoder.transform(df), df[label].to_numpy(np.int64)


def _xy_shard(uris: list[str], coll: Collective, encoder: Any, label: str) -> tuple[Any, Any]:
    """This worker's encoded shard, encoded one part at a time: the worker holds its shard's float32
    features and labels, plus one part as pandas (a whole shard as pandas is several times that:
    its strings become Python objects), so 7M rows of a 20M-row train split fit a pod."""
    import numpy as np

    from kfct.data.shards import iter_shard

    xs, ys = [], []
    for table in iter_shard(uris, coll.rank, coll.world):
        X, y = _xy(table, encoder, label)
        xs.append(X)
        ys.append(y)
        del table, X
    if len(xs) == 1:
        return xs[0], ys[0]
    X = np.empty((sum(len(x) for x in xs), xs[0].shape[1]), dtype=xs[0].dtype)  # filled piece by piece, freed as it goes
    at = 0
    while xs:
        x = xs.pop(0)
        X[at : at + len(x)] = x
        at += len(x)
        del x
    return X, np.concatenate(ys)


def _score_parts(booster: Any, uris: list[str], encoder: Any, label: str) -> tuple[Any, Any]:
    """Labels and scores of every row of the parts, one part in memory at a time."""
    import numpy as np

    from kfct.data.shards import read_all

    ys, ps = [], []
    for uri in uris:
        X, y = _xy(read_all([uri]), encoder, label)
        ps.append(np.asarray(booster.inplace_predict(X), dtype=np.float64))
        ys.append(y)
        del X
    return np.concatenate(ys), np.concatenate(ps)


def peak_rss_mib() -> float:
    """This process's own peak resident set: VmHWM, which starts afresh at exec. (`ru_maxrss` does not:
    Linux keeps it across execve, so a worker forked from a large parent would report the parent's size.)"""
    import re
    from pathlib import Path

    m = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if m:
        return round(int(m.group(1)) / 1024, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_worker(spec: dict[str, Any], coll: Collective, log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Train this worker's share; rank 0 writes the model and returns its info (others return None)."""
    import io

    import joblib
    import numpy as np
    import xgboost as xgb
    from xgboost import collective
    from xgboost.tracker import RabitTracker

    from kfct.components.train import threshold_and_metrics, xgb_booster_params
    from kfct.components.train_distributed import typed_config
    from kfct.config import config_from_json
    from kfct.data.shards import read_bytes, write_bytes
    from kfct.evidence.model import ChurnModel

    rc = typed_config(config_from_json(spec["config_json"]))
    ct, label = rc.train, rc.dataset.label
    device = str(spec["device"] or ct.device).lower()
    encoder = joblib.load(io.BytesIO(read_bytes(spec["preprocessor"])))  # featurize's fitted encoder
    Xtr, ytr = _xy_shard(spec["train"], coll, encoder, label)
    Xva, yva = _xy_shard(spec["val"], coll, encoder, label)
    if len(ytr) == 0 or len(yva) == 0:
        raise ValueError(
            f"worker {coll.rank} of {coll.world} got {len(ytr)} train / {len(yva)} validation rows: "
            f"fewer rows than workers; lower train.workers"
        )
    log(f"worker {coll.rank}/{coll.world}: {len(ytr)} train rows, {len(yva)} validation rows")

    from kfct.runtime.testhooks import pause_at

    pause_at("train_worker")  # inert unless a test names it (a worker that never finishes)
    tracker = None
    if coll.rank == 0:  # the runtime points every worker at rank 0's pod: the tracker lives here
        tracker = RabitTracker(
            n_workers=coll.world, host_ip=tracker_host(coll.tracker_uri), port=coll.tracker_port, sortby="task"
        )
        tracker.start()
    t0 = time.perf_counter()
    with collective.CommunicatorContext(
        dmlc_tracker_uri=coll.tracker_uri, dmlc_tracker_port=coll.tracker_port, dmlc_task_id=str(coll.rank)
    ):
        n_pos, n_tr, n_va = (
            int(v) for v in collective.allreduce(np.array([ytr.sum(), len(ytr), len(yva)], dtype=np.float64), collective.Op.SUM)
        )
        params, rounds, early = xgb_booster_params(dict(ct.xgboost), n_pos, n_tr - n_pos, ct, device)
        max_bin = params.get("max_bin")  # every QuantileDMatrix and the booster must agree on it
        dtrain = xgb.QuantileDMatrix(Xtr, label=ytr, max_bin=max_bin)
        dval = xgb.QuantileDMatrix(Xva, label=yva, ref=dtrain, max_bin=max_bin)
        booster = xgb.train(
            params, dtrain, num_boost_round=rounds, evals=[(dval, "validation")], early_stopping_rounds=early, verbose_eval=False
        )
        best = int(booster.best_iteration)
    fit_seconds = round(time.perf_counter() - t0, 3)
    if tracker is not None:
        tracker.wait_for()
    if coll.rank != 0:
        return None

    # Rank 0's own shard is not needed any more: free it before the whole validation split is scored,
    # or rank 0 would hold its shard and that split at once (over a pod's limit at 20M rows).
    del Xtr, ytr, Xva, yva, dtrain, dval
    booster = booster[: best + 1]
    booster.set_param({"device": "cpu", "nthread": 0})  # serve on CPU whatever trained it
    # The threshold is chosen on the whole validation split, as in-pod (only rank 0, after training),
    # scored part by part: rank 0 holds the split's labels and scores, never the split.
    yv_all, val_proba = _score_parts(booster, spec["val"], encoder, label)
    threshold, val_metrics = threshold_and_metrics(yv_all, val_proba, ct)
    model = ChurnModel(encoder=encoder, estimator=booster, threshold=threshold)
    buf = io.BytesIO()
    joblib.dump(model, buf)
    write_bytes(buf.getvalue(), spec["model"])
    info = {
        "params": dict(ct.xgboost),
        "val_metrics": val_metrics,
        "info": {
            "model": "xgboost",
            "device": device,
            "tune_trials": 0,
            "threshold": threshold,
            "n_train": n_tr,
            "n_val": n_va,
            "best_iteration": best,
            "fit_seconds": fit_seconds,
            "workers": coll.world,
        },
    }
    write_bytes(json.dumps(info).encode(), spec["info"])
    log(
        f"worker 0/{coll.world}: trained {best + 1} rounds on {n_tr} rows in {fit_seconds:.1f} s; "
        f"validation AUC {val_metrics['val_roc_auc']:.4f}; model -> {spec['model']}"
    )
    return info


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m kfct.components.train_worker", description=__doc__.split("\n")[0])
    ap.add_argument("--spec", required=True, help="worker spec JSON: a local path or s3:// URI")
    args = ap.parse_args(argv)
    try:
        from kfct.data.shards import read_bytes

        coll = collective_from_env(os.environ)
        spec = parse_spec(read_bytes(args.spec).decode())
        run_worker(spec, coll, log=lambda m: print(m, flush=True))
        print(f"worker {coll.rank}/{coll.world}: peak RSS {peak_rss_mib()} MiB", flush=True)
    except Exception as exc:  # noqa: BLE001 - the pod's log and exit status say which worker failed and why
        rank = os.environ.get("DMLC_TASK_ID", "?")
        first = (str(exc).strip().splitlines() or [""])[0]  # XGBoost appends a native stack trace
        print(f"{FAILED_PREFIX} {rank} failed: {type(exc).__name__}: {first}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave before native teardown on success (pyarrow's pools can abort at exit: kfct.runtime.stageproc).
    os._exit(code) if code == 0 else sys.exit(code)
