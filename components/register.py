"""Stage 6 — register: a model version with lineage tags, a model card, and an alias.

Runs only under the gate's `deploy`. Without a rollout configured the version
becomes `champion` at once; with one, it becomes `challenger` and the canary
rollout decides whether `champion` moves.
"""


from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output


def lineage_tags(meta: dict, data_uri: str, dataset_sha256: str, pipeline_run: str, code_version: str,
                 decision: dict) -> dict[str, str]:
    m = decision.get("metrics", {})
    tags = {
        "dataset_sha256": dataset_sha256,
        "data_uri": data_uri,
        "pipeline_run": pipeline_run,
        "code_version": code_version,
        "mlflow_run_id": meta.get("mlflow_run_id", ""),
        "model_sha256": meta.get("model_sha256", ""),
        "model_kind": meta.get("model", ""),
        "threshold": f"{float(meta.get('threshold', 0.5)):.6f}",
        "gate.reason": "; ".join(decision.get("reasons", []))[:4000],
        "reference_uri": f"runs:/{meta.get('mlflow_run_id', '')}/data/train_snapshot.parquet",
    }
    for k in ("roc_auc", "recall", "precision", "f1"):
        if k in m:
            tags[f"test_{k}"] = f"{float(m[k]):.4f}"
    return tags


def register_core(meta: dict, decision: dict, cfg: dict, model_name: str, data_uri: str, dataset_sha256: str,
                  pipeline_run: str, code_version: str) -> dict:
    """Register the version, set `champion` (or `challenger` when a rollout is configured). Returns plain values."""
    from kfct import audit, registry

    if not decision.get("deploy"):
        raise RuntimeError("register called for a model the gate did not approve")
    tags = lineage_tags(meta, data_uri, dataset_sha256, pipeline_run, code_version, decision)
    version = registry.register(meta["model_uri"], model_name, tags)
    audit.record("model_registered", model_name=model_name, version=version, mlflow_run_id=meta.get("mlflow_run_id"),
                 dataset_sha256=dataset_sha256, code_version=code_version, pipeline_run=pipeline_run,
                 model_sha256=meta.get("model_sha256"))
    rollout = bool(cfg["rollout"]["enabled"])
    alias = "challenger" if rollout else cfg["register"]["alias"]
    previous = registry.set_alias(model_name, alias, version,
                                  reason="gate passed" + ("; canary rollout decides promotion" if rollout else ""),
                                  pipeline_run=pipeline_run)
    return {"version": version, "alias": alias, "previous": previous, "tags": tags}


def register_model(
    model: Input[Model],
    decision: Input[Artifact],
    dataset: Input[Dataset],
    test: Input[Dataset],
    config_json: str,
    model_name: str,
    data_uri: str,
    dataset_sha256: str,
    pipeline_run: str,
    code_version: str,
    model_card: Output[Markdown],
) -> str:
    """Register the approved model in MLflow with lineage tags and a model card; set its alias. Returns the version."""
    from kfct.stageclock import StageClock

    clock = StageClock()
    import json
    import tempfile

    import joblib
    import mlflow
    import pandas as pd

    from kfct.components.register import _slice_metrics, register_core
    from kfct import registry
    from kfct.config import config_from_json
    from kfct.logs import stage_logger
    from kfct.modelcard import build_model_card, description, model_description, top_features_shap
    from kfct.modelcard_charts import curve_charts

    cfg = config_from_json(config_json)
    with open(decision.path) as fh:
        dec = json.load(fh)
    meta = dict(model.metadata)
    registry.setup()
    # A pointer (dataset://latest) moves: the version's lineage names the snapshot ingest resolved it to.
    data_uri = dataset.metadata.get("resolved_uri") or data_uri
    out = register_core(meta, dec, cfg, model_name, data_uri, dataset_sha256, pipeline_run, code_version)

    fitted = joblib.load(model.path)
    test_df = pd.read_parquet(test.path)
    label = cfg["dataset"]["label"]
    sample = test_df.drop(columns=[label]).sample(n=min(2000, len(test_df)), random_state=0)
    info = {
        "model_name": model_name, "version": out["version"], "alias": out["alias"],
        "run_id": meta.get("mlflow_run_id"), "model_kind": meta.get("model"), "threshold": meta.get("threshold"),
        "dataset": {"uri": data_uri, "sha256": dataset_sha256, "rows": int(dataset.metadata.get("rows", 0)),
                    "columns": int(dataset.metadata.get("columns", 0)), "rows_test": int(len(test_df))},
        "metrics": dec.get("metrics", {}), "fairness": dec.get("fairness"), "comparison": dec.get("comparison"),
        "gate": {"deploy": dec.get("deploy"), "reasons": dec.get("reasons", []), "thresholds": cfg["gate"]["thresholds"]},
        "lineage": out["tags"], "top_features": top_features_shap(fitted, sample, k=10),
        "slices": _slice_metrics(fitted, test_df, cfg),
    }
    y = test_df[label].to_numpy()
    info["charts"] = curve_charts(y, fitted.predict_positive(test_df.drop(columns=[label])), info["top_features"])
    md, html = build_model_card(info)
    with open(model_card.path, "w") as fh:
        fh.write(md)
    model_card.metadata.update({"version": out["version"], "alias": out["alias"]})
    registry.describe(model_name, out["version"], description(info), model_description(cfg))
    stage_logger("kfct.components.register").info("registered %s v%s, alias %s", model_name, out["version"], out["alias"])
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=meta["mlflow_run_id"]):
        files = [(f"{k}.png", png) for k, png in info["charts"].items()]
        files += [("model_card.md", md.encode()), ("model_card.html", html.encode())]
        for name, data in files:
            with open(f"{tmp}/{name}", "wb") as fh:
                fh.write(data)
            mlflow.log_artifact(f"{tmp}/{name}", artifact_path="model_card")
    clock.stamp(model_card.metadata)
    return out["version"]


def _slice_metrics(model, test_df, cfg: dict) -> dict:
    """AUC / recall / positive rate per value of each sensitive feature."""
    import numpy as np

    from kfct.components.evaluate import compute_metrics

    label = cfg["dataset"]["label"]
    proba = model.predict_positive(test_df.drop(columns=[label]))
    y = test_df[label].to_numpy(np.int64)
    out = {}
    for col in cfg["dataset"]["sensitive_features"]:
        if col not in test_df:
            continue
        vals = test_df[col].astype(str).to_numpy()
        out[col] = {}
        for v in sorted(set(vals)):
            mask = vals == v
            if mask.sum() < 30 or len(set(y[mask])) < 2:
                continue
            m = compute_metrics(y[mask], proba[mask], model.threshold)
            out[col][v] = {"n": int(mask.sum()), "roc_auc": round(m["roc_auc"], 4), "recall": round(m["recall"], 4),
                           "positive_rate": round(m["positive_rate"], 4)}
    return out
