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

The figures only: reading inputs is `drift_inputs`, writing reports `drift_report`.
"""

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from evidently.core.report import Snapshot

    from kfct.config import DriftConfig, RunConfig

PREDICTION = "prediction_proba"  # column holding the champion's probability in prepared frames
P_VALUE_TESTS = {
    "ks",
    "chisquare",
    "z",
    "t_test",
    "mannw",
    "anderson",
    "cramer_von_mises",
    "fisher_exact",
    "g_test",
    "es",
    "empirical_mmd",
    "TVD",
}
DISTANCE_TESTS = {"wasserstein", "jensenshannon", "psi", "hellinger", "kl_div", "ed"}


class DriftResult(dict[str, Any]):
    """The drift figures (a plain, JSON-serialisable dict) plus the Evidently snapshot as `.report`."""

    report: Any = None


# --------------------------------------------------------------------------- helpers
def _column_kind(name: str, frame: "pd.DataFrame", cfg: "RunConfig") -> str:
    spec = cfg.dataset.columns.get(name)
    if spec is not None:
        return "categorical" if spec.dtype in ("category", "string", "bool") else "numerical"
    import pandas as pd

    s = frame[name]
    return "numerical" if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s) else "categorical"


def _window(df: "pd.DataFrame", n: int, how: str, seed: int) -> "tuple[pd.DataFrame, np.ndarray]":
    if n <= 0 or len(df) <= n:
        return df.reset_index(drop=True), np.arange(len(df))
    if how == "tail":
        idx = np.arange(len(df) - n, len(df))
    else:
        idx = np.sort(np.random.default_rng(seed).choice(len(df), size=n, replace=False))
    return df.iloc[idx].reset_index(drop=True), idx


def _is_binary(values: np.ndarray) -> bool:
    return bool(np.isin(values, (0.0, 1.0)).all())


def churn_rate(values: "np.ndarray | pd.Series", threshold: float | None = None) -> float:
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


def _performance(y: np.ndarray, p: np.ndarray, threshold: float | None) -> dict[str, Any] | None:
    from sklearn.metrics import recall_score, roc_auc_score

    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(p)
    y, p = y[ok].astype(np.int64), p[ok]
    if len(np.unique(y)) < 2:
        return None
    pred = p if _is_binary(p) else (p >= (0.5 if threshold is None else float(threshold))).astype(np.float64)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "recall": float(recall_score(y, (pred >= 0.5).astype(np.int64))),
        "rows": len(y),
        "positive_rate": float((y == 1).mean()),
    }


def _resolve_stattest(ref_s: "pd.Series", cur_s: "pd.Series", kind: str, cfg_drift: "DriftConfig") -> tuple[str, float, str]:
    """(method name, threshold, 'p_value'|'distance') for one column, as Evidently would pick it."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    ctype = ColumnType.Numerical if kind == "numerical" else ColumnType.Categorical
    override = cfg_drift.num_method if kind == "numerical" else cfg_drift.cat_method
    try:
        test = get_stattest(ref_s, cur_s, ctype, override or None)
    except Exception as exc:
        raise ValueError(f"drift: stattest {override!r} cannot be used for {kind} column {ref_s.name!r}: {exc}") from exc
    name = test.name
    if name in P_VALUE_TESTS:
        return name, float(cfg_drift.stattest_threshold), "p_value"
    if name in DISTANCE_TESTS:
        return name, float(cfg_drift.distance_threshold), "distance"
    return name, float(test.default_threshold), "p_value" if "p_value" in test.display_name else "distance"


def _check_frames(
    reference: "pd.DataFrame",
    current: "pd.DataFrame",
    features: list[str],
    prediction_column: str | None,
    label_column: str | None,
    reference_predictions: "np.ndarray | pd.Series | None",
) -> None:
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
        raise ValueError(f"reference_predictions has {len(reference_predictions)} values for {len(reference)} reference rows")
    if label_column is not None and label_column not in current.columns and label_column not in reference.columns:
        raise ValueError(f"label column {label_column!r} is in neither the reference nor the current data")


# --------------------------------------------------------------------------- core
def detect_drift(
    reference: "pd.DataFrame",
    current: "pd.DataFrame",
    cfg: "RunConfig",
    feature_columns: list[str],
    prediction_column: str | None = None,
    label_column: str | None = None,
    reference_predictions: "np.ndarray | pd.Series | None" = None,
    *,
    threshold: float | None = None,
    reference_performance: dict[str, Any] | None = None,
    seed: int = 0,
) -> DriftResult:
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
    from kfct.components.retrain_policy import assess

    t0 = time.perf_counter()
    cfg_drift = cfg.drift
    features = [str(c) for c in feature_columns]
    _check_frames(reference, current, features, prediction_column, label_column, reference_predictions)
    ref, cur, ref_pred, cur_pred = _windows(
        reference, current, int(cfg_drift.window_rows), seed, prediction_column, reference_predictions
    )
    kinds = {c: _column_kind(c, reference, cfg) for c in features}
    frames = _evidently_frames(ref, cur, features, kinds, ref_pred, cur_pred, label_column)
    snapshot, methods, pred_method = _run_report(frames, kinds, cfg_drift, threshold)
    per_feature, share, scores, drifted = _read_report(snapshot.dict(), frames.features, kinds, methods)
    ref_rate, source = _reference_churn_rate(ref, ref_pred, label_column, threshold)
    cur_rate = churn_rate(cur_pred, threshold) if cur_pred is not None else None
    shift = relative_shift(ref_rate, cur_rate)
    performance, drop = _performance_change(frames, cur, cur_pred, label_column, threshold, reference_performance)

    decision = assess(share, shift, cfg_drift, drop)
    result = DriftResult(
        drift_share=share,
        n_drifted_features=sum(f["drifted"] for f in per_feature.values()),
        n_features=len(frames.features),
        dataset_drift=share > float(cfg_drift.drift_share_threshold),
        features=per_feature,
        drifted_features=[c for c, f in per_feature.items() if f["drifted"]],
        skipped_features=frames.skipped,
        prediction_drift=None
        if pred_method is None
        else {
            "stattest": pred_method[0],
            "score": scores[PREDICTION],
            "threshold": pred_method[1],
            "drifted": bool(drifted.get(PREDICTION, False)),
        },
        churn_rate={
            "reference": ref_rate,
            "current": cur_rate,
            "relative_shift": shift,
            "reference_source": source,
            "decision_threshold": threshold,
        },
        churn_rate_shift=shift,
        performance=performance,
        performance_drop=None if performance is None else performance["roc_auc_drop"],
        performance_drop_used=drop is not None,
        has_labels=bool(frames.has_labels),
        severity=decision["severity"],
        retrain=decision["retrain"],
        reason=decision["reason"],
        rows={"reference": len(ref), "reference_total": len(reference), "current": len(cur), "current_total": len(current)},
        thresholds=_thresholds(cfg_drift),
        seconds=round(time.perf_counter() - t0, 3),
    )
    result.report = snapshot
    return result


def _windows(
    reference: "pd.DataFrame",
    current: "pd.DataFrame",
    window: int,
    seed: int,
    prediction_column: str | None,
    reference_predictions: "np.ndarray | pd.Series | None",
) -> "tuple[pd.DataFrame, pd.DataFrame, np.ndarray | None, np.ndarray | None]":
    """Both frames cut to the window, with the model's outputs aligned to the kept rows."""
    import pandas as pd

    ref, ref_idx = _window(reference, window, "sample", seed)
    cur, _ = _window(current, window, "tail", seed)
    ref_pred = None
    if reference_predictions is not None:
        ref_pred = np.asarray(reference_predictions, dtype=np.float64)[ref_idx]
    cur_pred = None
    if prediction_column is not None:
        cur_pred = pd.to_numeric(cur[prediction_column], errors="coerce").to_numpy(np.float64)
    return ref, cur, ref_pred, cur_pred


@dataclass
class _Frames:
    """Reference and current as Evidently sees them: typed features, optional prediction and label."""

    ref: Any
    cur: Any
    features: list[Any]
    num_cols: list[Any]
    cat_cols: list[Any]
    skipped: dict[str, Any]
    has_pred: bool
    has_labels: bool
    label: str | None


def _evidently_frames(
    ref: "pd.DataFrame",
    cur: "pd.DataFrame",
    features: list[str],
    kinds: dict[str, str],
    ref_pred: np.ndarray | None,
    cur_pred: np.ndarray | None,
    label_column: str | None,
) -> _Frames:
    import pandas as pd

    def typed(df: "pd.DataFrame") -> "pd.DataFrame":
        out = pd.DataFrame(index=df.index)
        for c in features:
            out[c] = df[c].astype(str) if kinds[c] == "categorical" else pd.to_numeric(df[c], errors="coerce").astype(float)
        return out

    ref_e, cur_e = typed(ref), typed(cur)
    num_cols = [c for c in features if kinds[c] == "numerical"]
    cat_cols = [c for c in features if kinds[c] == "categorical"]
    has_pred = ref_pred is not None and cur_pred is not None
    has_labels = has_pred and label_column is not None and label_column in ref.columns and label_column in cur.columns
    if has_pred:
        ref_e[PREDICTION], cur_e[PREDICTION] = ref_pred, cur_pred
        num_cols.append(PREDICTION)
    if has_labels:
        ref_e[label_column] = pd.to_numeric(ref[label_column], errors="coerce").astype("Int64")
        cur_e[label_column] = pd.to_numeric(cur[label_column], errors="coerce").astype("Int64")
        ref_e, cur_e = ref_e.dropna(subset=[label_column]), cur_e.dropna(subset=[label_column])

    # A column with no values on one side (e.g. all null in a small window) cannot be tested:
    # it is left out and named, rather than failing the whole report.
    skipped = {
        c: "no values in " + " and ".join(n for n, d in (("reference", ref_e), ("current", cur_e)) if d[c].notna().sum() == 0)
        for c in features
        if ref_e[c].notna().sum() == 0 or cur_e[c].notna().sum() == 0
    }
    kept = [c for c in features if c not in skipped]
    if not kept:
        raise ValueError(f"no feature has values on both sides: {skipped}")
    return _Frames(
        ref=ref_e.drop(columns=list(skipped)),
        cur=cur_e.drop(columns=list(skipped)),
        features=kept,
        num_cols=[c for c in num_cols if c not in skipped],
        cat_cols=[c for c in cat_cols if c not in skipped],
        skipped=skipped,
        has_pred=has_pred,
        has_labels=has_labels,
        label=label_column if has_labels else None,
    )


def _run_report(
    frames: _Frames, kinds: dict[str, Any], cfg_drift: "DriftConfig", threshold: float | None
) -> "tuple[Snapshot, dict[str, tuple[str, float, str]], tuple[str, float, str] | None]":
    """One Evidently report: drifted-columns count, a ValueDrift per feature (+ prediction), ROC AUC/recall."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, Recall, RocAuc, ValueDrift

    ref_e, cur_e, features = frames.ref, frames.cur, frames.features
    # The test per column is resolved here (to pick its threshold) exactly as Evidently would; the
    # name is passed on only when the config overrides it, so Evidently's own choice stays in charge.
    methods = {c: _resolve_stattest(ref_e[c].dropna(), cur_e[c].dropna(), kinds[c], cfg_drift) for c in features}
    override = {c: (cfg_drift.num_method if kinds[c] == "numerical" else cfg_drift.cat_method) or None for c in features}
    metrics = [
        DriftedColumnsCount(
            columns=features,
            per_column_method={c: o for c, o in override.items() if o} or None,
            per_column_threshold={c: m[1] for c, m in methods.items()},
            drift_share=float(cfg_drift.drift_share_threshold),
        )
    ]
    metrics += [ValueDrift(column=c, method=override[c], threshold=m[1]) for c, m in methods.items()]
    pred_method = None
    if frames.has_pred:
        pred_method = _resolve_stattest(ref_e[PREDICTION].dropna(), cur_e[PREDICTION].dropna(), "numerical", cfg_drift)
        metrics.append(ValueDrift(column=PREDICTION, method=cfg_drift.num_method or None, threshold=pred_method[1]))
    classification = None
    if frames.has_labels:
        classification = [BinaryClassification(target=frames.label, prediction_probas=PREDICTION, pos_label=1)]
        thr = 0.5 if threshold is None else float(threshold)
        metrics += [RocAuc(probas_threshold=thr), Recall(probas_threshold=thr)]
    definition = DataDefinition(
        numerical_columns=frames.num_cols,
        categorical_columns=frames.cat_cols,
        **({"classification": classification} if classification else {}),
    )
    snapshot = Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(cur_e, data_definition=definition),
        reference_data=Dataset.from_pandas(ref_e, data_definition=definition),
    )
    return snapshot, methods, pred_method


def _read_report(
    d: dict[str, Any],
    features: list[Any],
    kinds: dict[str, Any],
    methods: dict[str, Any],
) -> tuple[dict[str, Any], float, dict[str, float], dict[str, bool]]:
    """Per-feature drift, the drift share, the scores and the test outcomes from the report's dict."""
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
        per_feature[c] = {
            "type": kinds[c],
            "stattest": name,
            "stattest_kind": kind,
            "score": scores[c],
            "threshold": thr_c,
            "drifted": bool(drifted[c]),
        }
    # Evidently's count and ours must agree; they come from the same tests.
    n_drifted = sum(f["drifted"] for f in per_feature.values())
    if share is None or n_drifted != count:
        raise RuntimeError(f"Evidently drift count {count} disagrees with per-column tests ({n_drifted})")
    return per_feature, share, scores, drifted


def _reference_churn_rate(
    ref: "pd.DataFrame", ref_pred: np.ndarray | None, label_column: str | None, threshold: float | None
) -> tuple[float | None, str | None]:
    """Predicted churn rate on the reference: from the model's reference predictions, else the labels."""
    import pandas as pd

    if ref_pred is not None:
        return churn_rate(ref_pred, threshold), "reference predictions"
    if label_column is not None and label_column in ref.columns:
        return float(pd.to_numeric(ref[label_column], errors="coerce").mean()), "reference labels"
    return None, None


def _performance_change(
    frames: _Frames,
    cur: "pd.DataFrame",
    cur_pred: np.ndarray | None,
    label_column: str | None,
    threshold: float | None,
    reference_performance: dict[str, Any] | None,
) -> tuple[dict[str, Any] | None, float | None]:
    """(performance figures or None, the ROC AUC drop the decision may use or None)."""
    import pandas as pd

    pc = None
    if frames.has_labels:
        pc = _performance(frames.cur[label_column].to_numpy(np.float64), frames.cur[PREDICTION].to_numpy(), threshold)
    elif label_column is not None and cur_pred is not None and label_column in cur.columns:
        pc = _performance(pd.to_numeric(cur[label_column], errors="coerce").to_numpy(np.float64), cur_pred, threshold)
    if not pc:
        return None, None
    pr: dict[str, Any] | None = None
    if reference_performance:
        missing = [k for k in ("roc_auc", "recall") if reference_performance.get(k) is None]
        if missing:
            raise ValueError(f"reference_performance lacks {', '.join(missing)}")
        pr = {k: float(reference_performance[k]) for k in ("roc_auc", "recall")}
        perf_source = "held-out metrics of the model"
    elif frames.has_labels:
        pr = _performance(frames.ref[label_column].to_numpy(np.float64), frames.ref[PREDICTION].to_numpy(), threshold)
        perf_source = "reference data (in-sample for a training snapshot: not used for the decision)"
    if not pr:
        return None, None
    performance = {
        "reference": pr,
        "current": pc,
        "reference_source": perf_source,
        "roc_auc_drop": pr["roc_auc"] - pc["roc_auc"],
        "recall_drop": pr["recall"] - pc["recall"],
    }
    return performance, performance["roc_auc_drop"] if reference_performance else None


def _thresholds(cfg_drift: "DriftConfig") -> dict[str, Any]:
    return cfg_drift.model_dump(
        include={"drift_share_threshold", "prediction_shift_threshold", "stattest_threshold", "window_rows"}
    ) | {
        "distance_threshold": float(cfg_drift.distance_threshold),
        "performance_drop_threshold": float(cfg_drift.performance_drop_threshold),
    }


def run_detection(
    reference: "pd.DataFrame",
    current: "pd.DataFrame",
    cfg: "RunConfig",
    threshold: float | None,
    reference_performance: dict[str, Any] | None = None,
) -> DriftResult:
    """detect_drift on prepared frames (features, PREDICTION, label when present)."""
    from kfct.components.drift_inputs import with_binary_labels
    from kfct.config import feature_columns

    label = cfg.dataset.label
    current = with_binary_labels(current, cfg)
    return detect_drift(
        reference,
        current,
        cfg,
        feature_columns(cfg),
        prediction_column=PREDICTION,
        label_column=label if label in current.columns else None,
        reference_predictions=reference[PREDICTION].to_numpy(),
        threshold=threshold,
        reference_performance=reference_performance,
    )
