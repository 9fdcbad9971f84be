"""The monitoring stages' kfp component functions: load the windows, check drift.

The work lives in three modules by what it does: `drift_inputs` (the champion's training
snapshot, the current window, both scored by the champion), `drift_detect` (the
Evidently report and the figures: drift share, per-feature drift, churn-rate shift,
performance drop, severity) and `drift_report` (Markdown/HTML/JSON files, the MLflow
run). The undecorated `prepare_drift_data` / `check_drift` here (and
`retrain_policy.trigger_retrain`) are what `pipelines/monitoring.py` wraps with
`dsl.component`; `kfct monitor` calls the same functions in-process.
"""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Output

from kfct.components.drift_inputs import DriftInputError  # noqa: F401  (callers catch it from here)


def prepare_drift_data(
    current_uri: str,
    since: str,
    config_json: str,
    model_name: str,
    reference: Output[Dataset],
    current: Output[Dataset],
) -> str:
    """Load the champion's training snapshot and the current window (prediction log or batch),
    both scored by the champion; returns the champion version."""
    from kfct.runtime.stage import stage

    with stage("prepare-drift-data", config_json, stamp=current.metadata, model_name=model_name) as st:
        from kfct.components.drift_inputs import heldout_performance, load_current, load_reference, prepare_frames

        cfg = st.config
        ref, loaded, ref_source = load_reference(model_name, cfg.register_.alias, int(cfg.drift.window_rows))
        cur, cur_source, pred_col = load_current(current_uri or None, cfg, model_name, since or None)
        ref, cur = prepare_frames(ref, cur, loaded.model, cfg, pred_col)
        ref.to_parquet(reference.path, index=False)
        cur.to_parquet(current.path, index=False)
        common = {
            "model_name": model_name,
            "champion_version": loaded.version,
            "threshold": float(loaded.model.threshold),
            "heldout_performance": heldout_performance(loaded.tags),
        }
        reference.metadata.update({**common, "rows": len(ref), "source": ref_source})
        current.metadata.update({**common, "rows": len(cur), "source": cur_source})
        return loaded.version


def check_drift(
    reference: Input[Dataset],
    current: Input[Dataset],
    config_json: str,
    model_name: str,
    champion_version: str,
    report_html: Output[HTML],
    report_json: Output[Artifact],
    summary: Output[Markdown],
    summary_json: Output[Artifact],
    metrics: Output[Metrics],
) -> bool:
    """Evidently drift report (reference vs current): drift share, per-feature drift, churn-rate
    shift, performance drop, severity; returns whether a retrain is needed."""
    from kfct.runtime.stage import stage

    with stage("check-drift", config_json, stamp=summary_json.metadata, model_name=model_name) as st:
        import shutil
        import tempfile

        import pandas as pd

        from kfct.components.drift_detect import run_detection
        from kfct.components.drift_report import log_to_mlflow, save_reports
        from kfct.governance import audit

        cfg = st.config
        ref, cur = pd.read_parquet(reference.path), pd.read_parquet(current.path)
        threshold = reference.metadata.get("threshold")
        result = run_detection(
            ref, cur, cfg, None if threshold is None else float(threshold), reference.metadata.get("heldout_performance") or None
        )
        with tempfile.TemporaryDirectory() as tmp:
            paths = save_reports(result, result.report, tmp)
            for art, key in (
                (report_html, "html"),
                (report_json, "json"),
                (summary, "summary_md"),
                (summary_json, "summary_json"),
            ):
                shutil.copyfile(paths[key], art.path)
            run_id = log_to_mlflow(result, paths, model_name, champion_version, current.metadata.get("source", ""))
        metrics.log_metric("drift_share", float(result["drift_share"]))
        metrics.log_metric("n_drifted_features", int(result["n_drifted_features"]))
        for key in ("churn_rate_shift", "performance_drop"):
            if result.get(key) is not None:
                metrics.log_metric(key, float(result[key]))
        meta = {
            "severity": result["severity"],
            "retrain": bool(result["retrain"]),
            "reason": result["reason"],
            "mlflow_run_id": run_id,
            "champion_version": champion_version,
        }
        summary_json.metadata.update(meta)
        audit.record(
            "drift_checked",
            model_name=model_name,
            version=str(champion_version),
            severity=result["severity"],
            retrain_needed=bool(result["retrain"]),
            reason=result["reason"],
            drift_share=round(float(result["drift_share"]), 6),
            churn_rate_shift=result.get("churn_rate_shift"),
            performance_drop=result.get("performance_drop"),
            current_source=current.metadata.get("source"),
            mlflow_run_id=run_id,
        )
        st.log.info(
            "drift share %.3f, severity %s, retrain %s: %s",
            float(result["drift_share"]),
            result["severity"],
            "needed" if result["retrain"] else "not needed",
            result["reason"],
        )
        return bool(result["retrain"])
