"""Drift detection with Evidently 0.7: reference (the champion's training snapshot) vs current window.

`detect_drift` runs one Evidently report (new API: `evidently.Report`, `Dataset`,
`DataDefinition`) with a `DriftedColumnsCount` over the feature columns plus a
`ValueDrift` per feature (and for the model's prediction when both sides have one),
and, when labels and probabilities are on both sides, `RocAuc`/`Recall` on the
current window. From it comes plain values: the drift share, per-feature drift
(stattest, score, threshold, drifted), the relative shift of the predicted churn
rate, the ROC AUC / recall drop, and the retrain decision with its severity
(`kfct.components.retrain_policy`).

Statistical tests follow Evidently's own choice per column (`get_stattest`): with
more than 1000 reference rows, normed Wasserstein distance for numeric columns and
Jensen-Shannon distance for categorical ones (and numeric ones with <= 5 values);
with fewer, K-S / chi-square / Z-test p-values. p-value tests use
`drift.stattest_threshold` (0.05), distance tests `drift.distance_threshold` (0.1,
Evidently's default); `drift.num_method` / `drift.cat_method` override the test.
Both frames are cut to `drift.window_rows` first (the reference sampled, the current
window its most recent rows) so a report takes seconds, not minutes.

The undecorated `prepare_drift_data` / `check_drift` functions here, and `trigger_retrain`
in `kfct.components.retrain_policy`, are what `pipelines/monitoring.py` wraps with
`dsl.component`.
"""


import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Output

PREDICTION = "prediction_proba"     # column holding the champion's probability in prepared frames
P_VALUE_TESTS = {"ks", "chisquare", "z", "t_test", "mannw", "anderson", "cramer_von_mises", "fisher_exact",
                 "g_test", "es", "empirical_mmd", "TVD"}
DISTANCE_TESTS = {"wasserstein", "jensenshannon", "psi", "hellinger", "kl_div", "ed"}


class DriftResult(dict):
    """The drift figures (a plain, JSON-serialisable dict) plus the Evidently snapshot as `.report`."""

    report: Any = None


# --------------------------------------------------------------------------- helpers
def _column_kind(name: str, frame, cfg: dict) -> str:
    spec = cfg["dataset"]["columns"].get(name)
    if spec is not None:
        return "categorical" if spec.get("dtype") in ("category", "string", "bool") else "numerical"
    import pandas as pd

    s = frame[name]
    return "numerical" if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s) else "categorical"


def _window(df, n: int, how: str, seed: int):
    if n <= 0 or len(df) <= n:
        return df.reset_index(drop=True), np.arange(len(df))
    if how == "tail":
        idx = np.arange(len(df) - n, len(df))
    else:
        idx = np.sort(np.random.default_rng(seed).choice(len(df), size=n, replace=False))
    return df.iloc[idx].reset_index(drop=True), idx


def _is_binary(values: np.ndarray) -> bool:
    return bool(np.isin(values, (0.0, 1.0)).all())


def churn_rate(values, threshold: float | None = None) -> float:
    """Predicted churn rate: share at/above the decision threshold; labels as given; else mean probability."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        raise ValueError("no finite predictions to compute a churn rate from")
    if threshold is not None and not _is_binary(v):
        return float((v >= float(threshold)).mean())
    return float(v.mean())


def relative_shift(reference_rate: float | None, current_rate: float | None) -> float | None:
    """|current - reference| / reference (None when it cannot be measured)."""
    if reference_rate is None or current_rate is None or reference_rate <= 0:
        return None
    return abs(current_rate - reference_rate) / reference_rate


def _performance(y, p, threshold: float | None) -> dict | None:
    from sklearn.metrics import recall_score, roc_auc_score

    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(p)
    y, p = y[ok].astype(np.int64), p[ok]
    if len(np.unique(y)) < 2:
        return None
    pred = p if _is_binary(p) else (p >= (0.5 if threshold is None else float(threshold))).astype(np.float64)
    return {"roc_auc": float(roc_auc_score(y, p)), "recall": float(recall_score(y, (pred >= 0.5).astype(np.int64))),
            "rows": int(len(y)), "positive_rate": float((y == 1).mean())}


def _resolve_stattest(ref_s, cur_s, kind: str, cfg_drift: dict) -> tuple[str, float, str]:
    """(method name, threshold, 'p_value'|'distance') for one column, as Evidently would pick it."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    ctype = ColumnType.Numerical if kind == "numerical" else ColumnType.Categorical
    override = cfg_drift["num_method" if kind == "numerical" else "cat_method"]
    try:
        test = get_stattest(ref_s, cur_s, ctype, override or None)
    except Exception as exc:
        raise ValueError(f"drift: stattest {override!r} cannot be used for {kind} column {ref_s.name!r}: {exc}") from exc
    name = test.name
    if name in P_VALUE_TESTS:
        return name, float(cfg_drift["stattest_threshold"]), "p_value"
    if name in DISTANCE_TESTS:
        return name, float(cfg_drift["distance_threshold"]), "distance"
    return name, float(test.default_threshold), "p_value" if "p_value" in test.display_name else "distance"


def _check_frames(reference, current, features: list[str], prediction_column, label_column, reference_predictions):
    import pandas as pd

    for name, df in (("reference", reference), ("current", current)):
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
        if len(df) == 0:
            raise ValueError(f"{name} data is empty")
        missing = [c for c in features if c not in df.columns]
        if missing:
            raise ValueError(f"{name} data lacks feature column(s): {', '.join(missing)}")
    if not features:
        raise ValueError("no feature columns given for drift detection")
    if prediction_column is not None and prediction_column not in current.columns:
        raise ValueError(f"current data has no prediction column {prediction_column!r}")
    if reference_predictions is not None and len(reference_predictions) != len(reference):
        raise ValueError(f"reference_predictions has {len(reference_predictions)} values for {len(reference)} "
                         f"reference rows")
    if label_column is not None and label_column not in current.columns and label_column not in reference.columns:
        raise ValueError(f"label column {label_column!r} is in neither the reference nor the current data")


# --------------------------------------------------------------------------- core
def detect_drift(reference, current, cfg: dict, feature_columns, prediction_column: str | None = None,
                 label_column: str | None = None, reference_predictions=None, *, threshold: float | None = None,
                 reference_performance: dict | None = None, seed: int = 0) -> DriftResult:
    """Compare `current` with `reference`; returns drift figures, severity and the retrain decision.

    `prediction_column`: column of `current` with the model's output (probability, or 0/1);
    `reference_predictions`: the same model's output on `reference` (aligned with its rows);
    without it the reference churn rate is the reference label rate (as in the case study).
    `label_column`: when present on both sides with predictions, ROC AUC and recall are
    compared. `threshold`: the model's decision threshold (probabilities -> churn labels).
    `reference_performance`: the model's held-out figures (`{"roc_auc": .., "recall": ..}`,
    e.g. its test metrics from the registry). Only a drop against held-out figures can
    trigger a retrain: on its own training snapshot a model scores optimistically (in-sample),
    so a drop measured against that is reported but not acted on.
    """
    import pandas as pd
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, Recall, RocAuc, ValueDrift

    from kfct.components.retrain_policy import assess

    t0 = time.perf_counter()
    cfg_drift = cfg["drift"]
    features = [str(c) for c in feature_columns]
    _check_frames(reference, current, features, prediction_column, label_column, reference_predictions)
    window = int(cfg_drift["window_rows"])
    ref, ref_idx = _window(reference, window, "sample", seed)
    cur, _ = _window(current, window, "tail", seed)
    ref_pred = None
    if reference_predictions is not None:
        ref_pred = np.asarray(reference_predictions, dtype=np.float64)[ref_idx]
    cur_pred = None if prediction_column is None else pd.to_numeric(cur[prediction_column], errors="coerce").to_numpy(np.float64)

    # Frames as Evidently sees them: typed features, optional prediction and label.
    kinds = {c: _column_kind(c, reference, cfg) for c in features}
    def typed(df):
        out = pd.DataFrame(index=df.index)
        for c in features:
            out[c] = df[c].astype(str) if kinds[c] == "categorical" else pd.to_numeric(df[c], errors="coerce").astype(float)
        return out
    ref_e, cur_e = typed(ref), typed(cur)
    num_cols = [c for c in features if kinds[c] == "numerical"]
    cat_cols = [c for c in features if kinds[c] == "categorical"]
    has_pred = ref_pred is not None and cur_pred is not None
    has_labels = (has_pred and label_column is not None and label_column in ref.columns
                  and label_column in cur.columns)
    if has_pred:
        ref_e[PREDICTION], cur_e[PREDICTION] = ref_pred, cur_pred
        num_cols.append(PREDICTION)
    classification = None
    if has_labels:
        ref_e[label_column] = pd.to_numeric(ref[label_column], errors="coerce").astype("Int64")
        cur_e[label_column] = pd.to_numeric(cur[label_column], errors="coerce").astype("Int64")
        ref_e, cur_e = ref_e.dropna(subset=[label_column]), cur_e.dropna(subset=[label_column])
        classification = [BinaryClassification(target=label_column, prediction_probas=PREDICTION, pos_label=1)]

    # A column with no values on one side (e.g. all null in a small window) cannot be tested:
    # it is left out and named, rather than failing the whole report.
    skipped = {c: "no values in " + " and ".join(n for n, d in (("reference", ref_e), ("current", cur_e))
                                                 if d[c].notna().sum() == 0)
               for c in features if ref_e[c].notna().sum() == 0 or cur_e[c].notna().sum() == 0}
    features = [c for c in features if c not in skipped]
    if not features:
        raise ValueError(f"no feature has values on both sides: {skipped}")
    num_cols = [c for c in num_cols if c not in skipped]
    cat_cols = [c for c in cat_cols if c not in skipped]
    ref_e, cur_e = ref_e.drop(columns=list(skipped)), cur_e.drop(columns=list(skipped))

    # The test per column is resolved here (to pick its threshold) exactly as Evidently would; the
    # name is passed on only when the config overrides it, so Evidently's own choice stays in charge.
    methods = {c: _resolve_stattest(ref_e[c].dropna(), cur_e[c].dropna(), kinds[c], cfg_drift) for c in features}
    override = {c: cfg_drift["num_method" if kinds[c] == "numerical" else "cat_method"] or None for c in features}
    metrics = [DriftedColumnsCount(columns=features,
                                   per_column_method={c: o for c, o in override.items() if o} or None,
                                   per_column_threshold={c: m[1] for c, m in methods.items()},
                                   drift_share=float(cfg_drift["drift_share_threshold"]))]
    metrics += [ValueDrift(column=c, method=override[c], threshold=m[1]) for c, m in methods.items()]
    pred_method = None
    if has_pred:
        pred_method = _resolve_stattest(ref_e[PREDICTION].dropna(), cur_e[PREDICTION].dropna(), "numerical", cfg_drift)
        metrics.append(ValueDrift(column=PREDICTION, method=cfg_drift["num_method"] or None,
                                  threshold=pred_method[1]))
    if classification:
        thr = 0.5 if threshold is None else float(threshold)
        metrics += [RocAuc(probas_threshold=thr), Recall(probas_threshold=thr)]

    definition = DataDefinition(numerical_columns=num_cols, categorical_columns=cat_cols,
                                **({"classification": classification} if classification else {}))
    snapshot = Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(cur_e, data_definition=definition),
        reference_data=Dataset.from_pandas(ref_e, data_definition=definition),
    )
    d = snapshot.dict()

    scores: dict[str, float] = {}
    share, count = None, -1
    for m in d["metrics"]:
        conf = m.get("config", {})
        if conf.get("type", "").endswith("ValueDrift"):
            scores[conf["column"]] = float(m["value"])
        elif conf.get("type", "").endswith("DriftedColumnsCount"):
            share, count = float(m["value"]["share"]), int(m["value"]["count"])
    drifted = {}
    for t in d.get("tests", []):
        params = (t.get("metric_config") or {}).get("params") or {}
        if params.get("type", "").endswith("ValueDrift"):
            drifted[params["column"]] = t["status"] == "FAIL"

    per_feature = {}
    for c in features:
        name, thr_c, kind = methods[c]
        per_feature[c] = {"type": kinds[c], "stattest": name, "stattest_kind": kind, "score": scores[c],
                          "threshold": thr_c, "drifted": bool(drifted[c])}
    # Evidently's count and ours must agree; they come from the same tests.
    n_drifted = sum(f["drifted"] for f in per_feature.values())
    if share is None or n_drifted != count:
        raise RuntimeError(f"Evidently drift count {count} disagrees with per-column tests ({n_drifted})")

    # Predicted churn rate: reference from the model's reference predictions, else reference labels.
    ref_rate, source = None, None
    if ref_pred is not None:
        ref_rate, source = churn_rate(ref_pred, threshold), "reference predictions"
    elif label_column is not None and label_column in ref.columns:
        ref_rate, source = float(pd.to_numeric(ref[label_column], errors="coerce").mean()), "reference labels"
    cur_rate = churn_rate(cur_pred, threshold) if cur_pred is not None else None
    shift = relative_shift(ref_rate, cur_rate)

    performance, drop = None, None
    pc = None
    if has_labels:
        pc = _performance(cur_e[label_column].to_numpy(np.float64), cur_e[PREDICTION].to_numpy(), threshold)
    elif label_column is not None and cur_pred is not None and label_column in cur.columns:
        pc = _performance(pd.to_numeric(cur[label_column], errors="coerce").to_numpy(np.float64), cur_pred, threshold)
    if pc:
        if reference_performance:
            missing = [k for k in ("roc_auc", "recall") if reference_performance.get(k) is None]
            if missing:
                raise ValueError(f"reference_performance lacks {', '.join(missing)}")
            pr = {k: float(reference_performance[k]) for k in ("roc_auc", "recall")}
            perf_source = "held-out metrics of the model"
        elif has_labels:
            pr = _performance(ref_e[label_column].to_numpy(np.float64), ref_e[PREDICTION].to_numpy(), threshold)
            perf_source = "reference data (in-sample for a training snapshot: not used for the decision)"
        else:
            pr = None
        if pr:
            performance = {"reference": pr, "current": pc, "reference_source": perf_source,
                           "roc_auc_drop": pr["roc_auc"] - pc["roc_auc"], "recall_drop": pr["recall"] - pc["recall"]}
            if reference_performance:
                drop = performance["roc_auc_drop"]

    decision = assess(share, shift, cfg_drift, drop)
    result = DriftResult(
        drift_share=share,
        n_drifted_features=n_drifted,
        n_features=len(features),
        dataset_drift=share > float(cfg_drift["drift_share_threshold"]),
        features=per_feature,
        drifted_features=[c for c, f in per_feature.items() if f["drifted"]],
        skipped_features=skipped,
        prediction_drift=None if pred_method is None else {
            "stattest": pred_method[0], "score": scores[PREDICTION], "threshold": pred_method[1],
            "drifted": bool(drifted.get(PREDICTION, False))},
        churn_rate={"reference": ref_rate, "current": cur_rate, "relative_shift": shift, "reference_source": source,
                    "decision_threshold": threshold},
        churn_rate_shift=shift,
        performance=performance,
        performance_drop=None if performance is None else performance["roc_auc_drop"],
        performance_drop_used=drop is not None,
        has_labels=bool(has_labels),
        severity=decision["severity"],
        retrain=decision["retrain"],
        reason=decision["reason"],
        rows={"reference": int(len(ref)), "reference_total": int(len(reference)),
              "current": int(len(cur)), "current_total": int(len(current))},
        thresholds={k: cfg_drift[k] for k in ("drift_share_threshold", "prediction_shift_threshold",
                                                  "stattest_threshold", "window_rows")}
        | {"distance_threshold": float(cfg_drift["distance_threshold"]),
           "performance_drop_threshold": float(cfg_drift["performance_drop_threshold"])},
        seconds=round(time.perf_counter() - t0, 3),
    )
    result.report = snapshot
    return result


# --------------------------------------------------------------------------- reports
def summary_markdown(result: dict) -> str:
    """Human-readable summary (the KFP Markdown artifact and the MLflow summary)."""
    cr = result.get("churn_rate") or {}
    lines = [f"# Drift report — severity {result['severity'].upper()}", "",
             f"**Retrain: {'yes' if result['retrain'] else 'no'}** — {result['reason']}", "",
             f"- drift share: {result['drift_share']:.4f} ({result['n_drifted_features']} of {result['n_features']} "
             f"features drifted; threshold {result['thresholds']['drift_share_threshold']})"]
    if result.get("churn_rate_shift") is not None:
        lines.append(f"- predicted churn rate: reference {cr['reference']:.4f} ({cr['reference_source']}), "
                     f"current {cr['current']:.4f}, relative shift {result['churn_rate_shift']:.4f} "
                     f"(threshold {result['thresholds']['prediction_shift_threshold']})")
    else:
        lines.append("- predicted churn rate shift: not measured")
    perf = result.get("performance")
    if perf:
        lines.append(f"- ROC AUC: reference {perf['reference']['roc_auc']:.4f}, current {perf['current']['roc_auc']:.4f} "
                     f"(drop {perf['roc_auc_drop']:.4f}); recall: reference {perf['reference']['recall']:.4f}, "
                     f"current {perf['current']['recall']:.4f}; reference figures: {perf['reference_source']}")
    r = result["rows"]
    lines += [f"- rows: reference {r['reference']} (of {r['reference_total']}), current {r['current']} "
              f"(of {r['current_total']})", "", "| feature | stattest | score | threshold | drifted |",
              "|---|---|---|---|---|"]
    for name, f in sorted(result["features"].items(), key=lambda kv: (not kv[1]["drifted"], kv[0])):
        lines.append(f"| {name} | {f['stattest']} | {f['score']:.4f} | {f['threshold']} | "
                     f"{'**yes**' if f['drifted'] else 'no'} |")
    pd_ = result.get("prediction_drift")
    if pd_:
        lines += ["", f"Prediction drift ({pd_['stattest']}): score {pd_['score']:.4f}, threshold {pd_['threshold']}, "
                      f"{'drifted' if pd_['drifted'] else 'not drifted'}"]
    return "\n".join(lines) + "\n"


def save_reports(result: dict, report_obj, out_dir) -> dict[str, Path]:
    """Write the Evidently report (HTML + JSON) and our summary (JSON + Markdown) to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    snap = report_obj if report_obj is not None else getattr(result, "report", None)
    if snap is None:
        raise ValueError("no Evidently report to save: pass the snapshot detect_drift produced")
    paths = {"html": out / "drift_report.html", "json": out / "drift_report.json",
             "summary_json": out / "drift_summary.json", "summary_md": out / "drift_summary.md"}
    snap.save_html(str(paths["html"]))
    snap.save_json(str(paths["json"]))
    paths["summary_json"].write_text(json.dumps(dict(result), indent=2, sort_keys=True, default=float))
    paths["summary_md"].write_text(summary_markdown(result))
    return paths


# --------------------------------------------------------------------------- inputs of a monitoring run
class DriftInputError(ValueError):
    """Reference or current data for drift monitoring cannot be had (message names what and why)."""


def _kfct_error(exc: Exception):
    from kfct.errors import KfctError

    return KfctError(str(exc))


def load_reference(model_name: str, alias: str = "champion"):
    """The champion's training snapshot, the champion itself and its tags.

    The snapshot is the MLflow artifact `data/train_snapshot.parquet` of the run that
    trained the version (its `reference_uri` tag); a version without one falls back to
    the dataset it was trained on (`data_uri` tag), checked against `dataset_sha256`.
    Returns (reference DataFrame, LoadedModel, description of the source).
    """
    import tempfile

    import pandas as pd
    from mlflow.exceptions import MlflowException

    from kfct import registry

    registry.setup()
    try:
        loaded = registry.load_version(model_name, alias=alias)
    except MlflowException as exc:
        raise DriftInputError(f"no {alias!r} version of model {model_name!r} to monitor: train and register one first "
                              f"(kfct run); MLflow said: {str(exc).splitlines()[0][:200]}") from exc
    uri = loaded.tags.get("reference_uri") or (f"runs:/{loaded.run_id}/data/train_snapshot.parquet" if loaded.run_id else "")
    if uri:
        import mlflow

        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
                return pd.read_parquet(local), loaded, uri
        except (MlflowException, OSError) as exc:
            missing = f"{uri} ({type(exc).__name__})"
    else:
        missing = "no reference_uri tag"
    data_uri = loaded.tags.get("data_uri")
    if not data_uri:
        raise DriftInputError(f"{model_name} v{loaded.version}: no training snapshot ({missing}) and no data_uri tag")
    from kfct.datasource import snapshot_dataset
    from kfct.lineage import sha256_file

    with tempfile.TemporaryDirectory() as tmp:  # same snapshot ingest made, so the same data version
        df = snapshot_dataset(data_uri, f"{tmp}/snapshot.parquet")
        actual = sha256_file(f"{tmp}/snapshot.parquet")
    expected = loaded.tags.get("dataset_sha256")
    if expected and actual != expected:
        raise DriftInputError(f"{model_name} v{loaded.version}: training snapshot missing ({missing}) and {data_uri} "
                              f"no longer has the recorded content (sha256 {expected[:12]}...)")
    return df, loaded, data_uri


def load_current(current_uri: str | None, cfg: dict, model_name: str | None = None, since=None):
    """The current window: a batch (`current_uri`: path, s3://, generate://) or the serving prediction log.

    From the log, shadow rows are dropped (they repeat inputs the champion already
    answered) and the logged `probability` becomes the prediction. Returns (frame,
    description of the source, name of the prediction column or None).
    """
    if current_uri:
        from kfct.datasource import read_dataset

        df = read_dataset(current_uri)
        pred = "probability" if "probability" in df.columns else None
        return df, current_uri, pred
    from kfct.prediction_log import read_prediction_log

    if since is None:
        import datetime as dt

        days = float(cfg["drift"]["window_days"])
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)
    df = read_prediction_log(since=since, model_name=model_name)
    if "role" in df.columns:
        df = df[df["role"] != "shadow"].reset_index(drop=True)
    # The log's `label` is the *predicted* label: never mistake it for ground truth.
    df = df.rename(columns={"label": "predicted_label"})
    if len(df) == 0:
        raise DriftInputError(f"the prediction log has no rows for model {model_name!r} since {since}: serve traffic "
                              f"first (kfct serve) or give a batch with --current URI")
    return df, f"prediction log since {since}", "probability"


def prepare_frames(reference, current, model, cfg: dict, prediction_column: str | None):
    """Both frames with the champion's probability in column `PREDICTION` (scored where not logged)."""
    from kfct.config import feature_columns

    features = feature_columns(cfg)
    for name, df in (("reference", reference), ("current", current)):
        missing = [c for c in features if c not in df.columns]
        if missing:
            raise DriftInputError(f"{name} data lacks feature column(s) {', '.join(missing)}")
    reference = reference.copy()
    current = current.copy()
    try:
        reference[PREDICTION] = model.predict_positive(reference)
        if prediction_column and prediction_column in current.columns:
            current[PREDICTION] = current[prediction_column].astype(float)
        else:
            current[PREDICTION] = model.predict_positive(current)
    except ValueError as exc:  # FeatureError: unknown category, missing column
        raise DriftInputError(f"the champion cannot score the data: {exc}") from exc
    return reference, current


def heldout_performance(tags: dict) -> dict | None:
    """The champion's test-set ROC AUC and recall from its registry tags (`test_roc_auc`, `test_recall`)."""
    try:
        return {"roc_auc": float(tags["test_roc_auc"]), "recall": float(tags["test_recall"])}
    except (KeyError, TypeError, ValueError):
        return None


def with_binary_labels(frame, cfg: dict):
    """The label column as 0/1 (the training snapshot's coding), when the frame has one."""
    from kfct.labels import binary_labels

    ds = cfg["dataset"]
    label = ds["label"]
    if label not in frame.columns or frame[label].isna().all():
        return frame
    out = frame.copy()
    known = out[label].notna()
    out.loc[known, label] = binary_labels(out.loc[known, label], ds["positive_label"], ds["columns"][label]["values"])
    return out


def run_detection(reference, current, cfg: dict, threshold: float | None,
                  reference_performance: dict | None = None) -> DriftResult:
    """detect_drift on prepared frames (features, PREDICTION, label when present)."""
    from kfct.config import feature_columns

    label = cfg["dataset"]["label"]
    current = with_binary_labels(current, cfg)
    return detect_drift(reference, current, cfg, feature_columns(cfg), prediction_column=PREDICTION,
                        label_column=label if label in current.columns else None,
                        reference_predictions=reference[PREDICTION].to_numpy(), threshold=threshold,
                        reference_performance=reference_performance)


def log_to_mlflow(result: dict, paths: dict, model_name: str, champion_version: str, source: str) -> str:
    """The drift run in MLflow (experiment `kfct-monitoring`): metrics, tags, reports. Returns its run id."""
    import mlflow

    from kfct import registry

    registry.setup(experiment="kfct-monitoring")
    with mlflow.start_run(run_name=f"drift-{model_name}-v{champion_version}") as run:
        mlflow.set_tags({"model_name": model_name, "champion_version": str(champion_version), "stage": "drift",
                         "severity": result["severity"], "retrain": str(result["retrain"]),
                         "current_source": str(source)[:500], "reason": str(result["reason"])[:4000]})
        metrics = {"drift_share": result["drift_share"], "n_drifted_features": result["n_drifted_features"]}
        for key in ("churn_rate_shift", "performance_drop"):
            if result.get(key) is not None:
                metrics[key] = float(result[key])
        mlflow.log_metrics(metrics)
        for p in paths.values():
            mlflow.log_artifact(str(p), artifact_path="drift")
        return run.info.run_id


# --------------------------------------------------------------------------- component functions
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
    from kfct.components.drift import heldout_performance, load_current, load_reference, prepare_frames
    from kfct.config import config_from_json

    cfg = config_from_json(config_json)
    ref, loaded, ref_source = load_reference(model_name, cfg["register"]["alias"])
    cur, cur_source, pred_col = load_current(current_uri or None, cfg, model_name, since or None)
    ref, cur = prepare_frames(ref, cur, loaded.model, cfg, pred_col)
    ref.to_parquet(reference.path, index=False)
    cur.to_parquet(current.path, index=False)
    common = {"model_name": model_name, "champion_version": loaded.version, "threshold": float(loaded.model.threshold),
              "heldout_performance": heldout_performance(loaded.tags)}
    reference.metadata.update({**common, "rows": int(len(ref)), "source": ref_source})
    current.metadata.update({**common, "rows": int(len(cur)), "source": cur_source})
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
    import shutil
    import tempfile

    import pandas as pd

    from kfct.components.drift import log_to_mlflow, run_detection, save_reports
    from kfct import audit
    from kfct.config import config_from_json

    cfg = config_from_json(config_json)
    ref, cur = pd.read_parquet(reference.path), pd.read_parquet(current.path)
    threshold = reference.metadata.get("threshold")
    result = run_detection(ref, cur, cfg, None if threshold is None else float(threshold),
                           reference.metadata.get("heldout_performance") or None)
    with tempfile.TemporaryDirectory() as tmp:
        paths = save_reports(result, result.report, tmp)
        for art, key in ((report_html, "html"), (report_json, "json"), (summary, "summary_md"),
                         (summary_json, "summary_json")):
            shutil.copyfile(paths[key], art.path)
        run_id = log_to_mlflow(result, paths, model_name, champion_version, current.metadata.get("source", ""))
    metrics.log_metric("drift_share", float(result["drift_share"]))
    metrics.log_metric("n_drifted_features", int(result["n_drifted_features"]))
    for key in ("churn_rate_shift", "performance_drop"):
        if result.get(key) is not None:
            metrics.log_metric(key, float(result[key]))
    meta = {"severity": result["severity"], "retrain": bool(result["retrain"]), "reason": result["reason"],
            "mlflow_run_id": run_id, "champion_version": champion_version}
    summary_json.metadata.update(meta)
    audit.record("drift_checked", model_name=model_name, version=str(champion_version),
                 severity=result["severity"], retrain_needed=bool(result["retrain"]), reason=result["reason"],
                 drift_share=round(float(result["drift_share"]), 6), churn_rate_shift=result.get("churn_rate_shift"),
                 performance_drop=result.get("performance_drop"), current_source=current.metadata.get("source"),
                 mlflow_run_id=run_id)
    from kfct.logs import stage_logger

    stage_logger("kfct.components.drift").info("drift share %.3f, severity %s, retrain %s: %s",
                                               float(result["drift_share"]), result["severity"],
                                               "needed" if result["retrain"] else "not needed", result["reason"])
    return bool(result["retrain"])
