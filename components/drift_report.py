"""Drift reports: the Markdown summary, the files a monitoring run leaves, the MLflow run."""

import json
from pathlib import Path
from typing import Any


def summary_markdown(result: dict[str, Any]) -> str:
    """Human-readable summary (the KFP Markdown artifact and the MLflow summary)."""
    cr = result.get("churn_rate") or {}
    lines = [
        f"# Drift report — severity {result['severity'].upper()}",
        "",
        f"**Retrain: {'yes' if result['retrain'] else 'no'}** — {result['reason']}",
        "",
        f"- drift share: {result['drift_share']:.4f} ({result['n_drifted_features']} of {result['n_features']} "
        f"features drifted; threshold {result['thresholds']['drift_share_threshold']})",
    ]
    if result.get("churn_rate_shift") is not None:
        lines.append(
            f"- predicted churn rate: reference {cr['reference']:.4f} ({cr['reference_source']}), "
            f"current {cr['current']:.4f}, relative shift {result['churn_rate_shift']:.4f} "
            f"(threshold {result['thresholds']['prediction_shift_threshold']})"
        )
    else:
        lines.append("- predicted churn rate shift: not measured")
    perf = result.get("performance")
    if perf:
        lines.append(
            f"- ROC AUC: reference {perf['reference']['roc_auc']:.4f}, current {perf['current']['roc_auc']:.4f} "
            f"(drop {perf['roc_auc_drop']:.4f}); recall: reference {perf['reference']['recall']:.4f}, "
            f"current {perf['current']['recall']:.4f}; reference figures: {perf['reference_source']}"
        )
    r = result["rows"]
    lines += [
        f"- rows: reference {r['reference']} (of {r['reference_total']}), current {r['current']} (of {r['current_total']})",
        "",
        "| feature | stattest | score | threshold | drifted |",
        "|---|---|---|---|---|",
    ]
    for name, f in sorted(result["features"].items(), key=lambda kv: (not kv[1]["drifted"], kv[0])):
        lines.append(
            f"| {name} | {f['stattest']} | {f['score']:.4f} | {f['threshold']} | {'**yes**' if f['drifted'] else 'no'} |"
        )
    pd_ = result.get("prediction_drift")
    if pd_:
        lines += [
            "",
            f"Prediction drift ({pd_['stattest']}): score {pd_['score']:.4f}, threshold {pd_['threshold']}, "
            f"{'drifted' if pd_['drifted'] else 'not drifted'}",
        ]
    return "\n".join(lines) + "\n"


def save_reports(result: dict[str, Any], report_obj: Any, out_dir: str | Path) -> dict[str, Path]:
    """Write the Evidently report (HTML + JSON) and our summary (JSON + Markdown) to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    snap = report_obj if report_obj is not None else getattr(result, "report", None)
    if snap is None:
        raise ValueError("no Evidently report to save: pass the snapshot detect_drift produced")
    paths = {
        "html": out / "drift_report.html",
        "json": out / "drift_report.json",
        "summary_json": out / "drift_summary.json",
        "summary_md": out / "drift_summary.md",
    }
    snap.save_html(str(paths["html"]))
    snap.save_json(str(paths["json"]))
    paths["summary_json"].write_text(json.dumps(dict(result), indent=2, sort_keys=True, default=float))
    paths["summary_md"].write_text(summary_markdown(result))
    return paths


def log_to_mlflow(result: dict[str, Any], paths: dict[str, Any], model_name: str, champion_version: str, source: str) -> str:
    """The drift run in MLflow (experiment `kfct-monitoring`): metrics, tags, reports. Returns its run id."""
    import mlflow

    from kfct.governance import registry

    registry.setup(experiment="kfct-monitoring")
    with mlflow.start_run(run_name=f"drift-{model_name}-v{champion_version}") as run:
        mlflow.set_tags(
            {
                "model_name": model_name,
                "champion_version": str(champion_version),
                "stage": "drift",
                "severity": result["severity"],
                "retrain": str(result["retrain"]),
                "current_source": str(source)[:500],
                "reason": str(result["reason"])[:4000],
            }
        )
        metrics = {"drift_share": result["drift_share"], "n_drifted_features": result["n_drifted_features"]}
        for key in ("churn_rate_shift", "performance_drop"):
            if result.get(key) is not None:
                metrics[key] = float(result[key])
        mlflow.log_metrics(metrics)
        for p in paths.values():
            mlflow.log_artifact(str(p), artifact_path="drift")
        return str(run.info.run_id)
