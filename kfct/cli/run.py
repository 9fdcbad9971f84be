"""`kfct run` (the CT pipeline locally) and `kfct mlflow-ui`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from kfct.config import load_config
    from kfct.errors import KfctError, ValidationFailed
    from kfct.pipelines.local import format_summary, format_validation_failure, run_ct

    # Validated with the rest of the config (e.g. --workers 2 needs model xgboost).
    train = {k: v for k, v in (("model", args.model), ("workers", args.workers)) if v is not None}
    cfg = load_config(overrides={"train": train} if train else None)
    if args.tune_trials and cfg.train.workers > 1:  # fail now, not at the train stage
        from kfct.config import ConfigError

        raise ConfigError("--tune-trials needs train.workers: 1 (tuning runs in one process); drop --workers")
    data_uri = args.data_uri or f"generate://{args.rows}?seed={args.seed}"
    if args.part_rows and not args.data_uri:
        data_uri += f"&part_rows={args.part_rows}"
    print(f"kfct: running the CT pipeline on {data_uri} (kfp.local SubprocessRunner) ...", flush=True)
    try:
        summary = run_ct(
            data_uri=data_uri,
            cfg=cfg,
            model_name=args.model_name,
            device=args.device,
            tune_trials=args.tune_trials,
            run_reason=args.reason,
            verbose=args.verbose,
            raise_on_validation=False,
            parts=True if args.part_rows else None,
            part_rows=args.part_rows,
            pod_limits=args.pod_limits,
        )
    except KfctError as exc:  # unreadable data, a failed stage: on the record like a failed validation
        from kfct.governance import audit
        from kfct.runtime.stagefail import recorded_for_run

        # A stage that failed recorded `stage_failed` itself: one failure, one entry.
        run_id = getattr(exc, "run_id", None)
        if run_id and recorded_for_run(run_id):
            raise
        audit.record(
            "run_failed",
            model_name=args.model_name or cfg.register_.model_name,
            data_uri=data_uri,
            error_type=type(exc).__name__,
            error=str(exc)[:500],
            reason=args.reason,
            **({"run_id": run_id} if run_id else {}),
        )
        raise
    print(format_summary(summary))
    if args.json:
        import json

        with Path(args.json).open("w") as fh:
            json.dump(summary, fh, indent=2, default=str)
    if not summary["validation"]["passed"]:
        raise ValidationFailed(format_validation_failure(summary))
    stop = (summary.get("decision") or {}).get("stop")
    if stop:
        from kfct.errors import DataVerdict

        raise DataVerdict(stop)
    return 0


def _mlflow_ui(args: argparse.Namespace) -> int:
    import os

    from kfct.runtime.settings import get_settings

    s = get_settings()
    s.home.mkdir(parents=True, exist_ok=True)
    root = s.artifact_root or (s.home / "mlartifacts").resolve().as_uri()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "ui",
        "--backend-store-uri",
        s.tracking_uri,
        "--default-artifact-root",
        root,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print("kfct: " + " ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)
    return 0  # pragma: no cover


def add_commands(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run the CT pipeline end to end locally (kfp.local)")
    r.add_argument("--data-uri", help="path (.parquet/.csv), s3://bucket/key or generate://ROWS?seed=S")
    r.add_argument("--rows", type=int, default=100_000, help="generated rows when no --data-uri")
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--model", choices=["xgboost", "logistic_regression", "random_forest", "hist_gradient_boosting"])
    r.add_argument("--model-name", help="registered model name (default from config)")
    r.add_argument("--device", choices=["cpu", "cuda"])
    r.add_argument("--tune-trials", type=int, default=0)
    r.add_argument(
        "--workers",
        type=int,
        help="XGBoost workers (train.workers; >1: N processes with XGBoost's "
        "collective, as Kubeflow Trainer runs them on a cluster)",
    )
    r.add_argument(
        "--part-rows",
        type=int,
        help="run the map -> reduce pipeline over parts of this many rows "
        "(a parts dataset in --data-uri uses it without this flag)",
    )
    r.add_argument(
        "--pod-limits",
        action="store_true",
        help="hold every stage process (and each training worker) to the memory limit the compiled "
        "pipeline gives its pod, in a cgroup v1 memory group (root); over it: killed, as an "
        "OOM-killed pod",
    )
    r.add_argument("--reason", default="manual", help="why this run (recorded on the run)")
    r.add_argument("--json", help="also write the summary as JSON to this path")
    r.add_argument("-v", "--verbose", action="store_true", help="stream kfp's own log too")
    r.set_defaults(func=_run)
    u = sub.add_parser("mlflow-ui", help="open the MLflow UI on the local store")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=5000)
    u.set_defaults(func=_mlflow_ui)
