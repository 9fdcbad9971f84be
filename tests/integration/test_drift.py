"""Drift detection with a real Evidently report on generated data.

Drifted data (`generate(..., drift=1.0)`) must call for retraining; undrifted data from
another seed must not; the reports must contain the figures the result claims.
"""

import json
import re

import numpy as np
import pytest

from kfct.components.drift_detect import PREDICTION, detect_drift
from kfct.components.drift_report import save_reports
from kfct.config import feature_columns
from kfct.data.datagen import generate

pytestmark = pytest.mark.slow  # full Evidently reports on thousands of rows: make test, not make test-fast


@pytest.fixture(scope="module")
def reference(trained):
    model, train, _, _ = trained
    ref = train.copy()
    ref[PREDICTION] = model.predict_positive(ref)
    return ref


def _scored(model, df):
    df = df.copy()
    df[PREDICTION] = model.predict_positive(df)
    return df


def _heldout(model, test):
    """The model's test-set figures: what the registry records and monitoring compares against."""
    from kfct.components.evaluate import compute_metrics

    m = compute_metrics(test["churned"].to_numpy(), model.predict_positive(test), model.threshold)
    return {"roc_auc": m["roc_auc"], "recall": m["recall"]}


def _run(cfg, trained, reference, current):
    model, _, _, test = trained
    return detect_drift(
        reference,
        current,
        cfg,
        feature_columns(cfg),
        prediction_column=PREDICTION,
        label_column="churned",
        reference_predictions=reference[PREDICTION].to_numpy(),
        threshold=model.threshold,
        reference_performance=_heldout(model, test),
    )


@pytest.fixture(scope="module")
def drifted(cfg, trained, reference):
    return _run(cfg, trained, reference, _scored(trained[0], generate(4000, seed=21, drift=1.0)))


@pytest.fixture(scope="module")
def undrifted(cfg, trained, reference):
    return _run(cfg, trained, reference, _scored(trained[0], generate(4000, seed=22)))


def test_drifted_data_triggers_retraining(drifted, cfg):
    assert drifted["retrain"] is True
    assert drifted["drift_share"] > cfg.drift.drift_share_threshold
    assert drifted["severity"] in ("high", "critical")
    assert "drift share" in drifted["reason"]
    # The generator's drift knob moves these; the untouched ones stay put.
    for col in ("recency_days", "data_usage_gb_30d", "activity_trend", "support_tickets_90d"):
        assert drifted["features"][col]["drifted"], col
    for col in ("age_group", "region", "peak_hour_ratio"):
        assert not drifted["features"][col]["drifted"], col
    # Predicted churn rises with drift, and the drifted concept costs AUC.
    cr = drifted["churn_rate"]
    assert cr["current"] > cr["reference"] and cr["reference_source"] == "reference predictions"
    assert drifted["performance"]["current"]["roc_auc"] < drifted["performance"]["reference"]["roc_auc"]
    assert drifted["performance"]["reference_source"] == "held-out metrics of the model"
    assert drifted["prediction_drift"]["drifted"] is True


def test_undrifted_data_does_not(undrifted):
    assert undrifted["retrain"] is False
    assert undrifted["severity"] == "low"
    assert undrifted["drift_share"] <= 0.1
    assert undrifted["churn_rate_shift"] < 0.3
    assert abs(undrifted["performance_drop"]) < 0.05 and undrifted["performance_drop_used"]
    assert undrifted["has_labels"] is True


def test_in_sample_reference_performance_is_reported_not_acted_on(cfg, trained, reference):
    # Against its own training rows a model looks better than it is: that gap must not retrain.
    model = trained[0]
    res = detect_drift(
        reference,
        _scored(model, generate(4000, seed=22)),
        cfg,
        feature_columns(cfg),
        prediction_column=PREDICTION,
        label_column="churned",
        reference_predictions=reference[PREDICTION].to_numpy(),
        threshold=model.threshold,
    )
    assert res["performance"]["reference_source"].startswith("reference data (in-sample")
    assert res["performance_drop_used"] is False
    assert "ROC AUC" not in res["reason"]


def test_result_agrees_with_own_figures(drifted):
    feats = drifted["features"]
    assert drifted["n_drifted_features"] == sum(f["drifted"] for f in feats.values())
    assert drifted["drift_share"] == pytest.approx(drifted["n_drifted_features"] / drifted["n_features"])
    for f in feats.values():
        # Evidently's verdict and the score/threshold it reports must agree.
        if f["stattest_kind"] == "distance":
            assert f["drifted"] == (f["score"] >= f["threshold"])
        else:
            assert f["drifted"] == (f["score"] < f["threshold"])
    cr = drifted["churn_rate"]
    assert drifted["churn_rate_shift"] == pytest.approx(abs(cr["current"] - cr["reference"]) / cr["reference"])


def test_reports_contain_the_figures_they_claim(drifted, tmp_path):
    paths = save_reports(drifted, drifted.report, tmp_path)
    summary = json.loads(paths["summary_json"].read_text())
    assert summary["drift_share"] == pytest.approx(drifted["drift_share"])
    assert summary["retrain"] is True and summary["severity"] == drifted["severity"]

    ev = json.loads(paths["json"].read_text())
    counts = [m for m in ev["metrics"] if m["config"]["type"].endswith("DriftedColumnsCount")]
    assert counts[0]["value"]["share"] == pytest.approx(drifted["drift_share"])
    assert counts[0]["value"]["count"] == drifted["n_drifted_features"]
    values = {m["config"]["column"]: m["value"] for m in ev["metrics"] if m["config"]["type"].endswith("ValueDrift")}
    for col, f in drifted["features"].items():
        assert values[col] == pytest.approx(f["score"]), col

    html = paths["html"].read_text()
    found = dict()
    for col, score, state in re.findall(
        r'"title": "Value Drift for column (\w+)", "description": "Drift score is '
        r'([0-9.]+)\. .*?", "state": "(\w+)"',
        html,
    ):
        found[col] = (float(score), state)
    for col, f in drifted["features"].items():
        score, state = found[col]
        assert score == pytest.approx(round(f["score"], 2), abs=0.006), col
        assert state == ("fail" if f["drifted"] else "success"), col
    assert f"Share of Drifted Columns: Actual value {drifted['drift_share']:.3f}" in html

    md = paths["summary_md"].read_text()
    assert f"drift share: {drifted['drift_share']:.4f}" in md and drifted["severity"].upper() in md
    assert f"relative shift {drifted['churn_rate_shift']:.4f}" in md
    for col, f in drifted["features"].items():
        assert f"| {col} | {f['stattest']} | {f['score']:.4f} |" in md


def test_small_windows_use_p_value_tests(cfg):
    ref = generate(600, seed=31)
    cur = generate(600, seed=32, drift=1.0)
    res = detect_drift(ref, cur, cfg, feature_columns(cfg), label_column="churned")
    kinds = {f["stattest"] for f in res["features"].values()}
    assert kinds <= {"ks", "chisquare", "z"}
    assert all(f["threshold"] == cfg.drift.stattest_threshold for f in res["features"].values())
    assert res["retrain"] is True
    # Without model predictions the reference rate falls back to labels and no shift is measured.
    assert res["churn_rate"]["reference_source"] == "reference labels" and res["churn_rate_shift"] is None


def test_window_rows_caps_both_sides(cfg):
    import copy

    c = copy.deepcopy(cfg)
    c.drift.window_rows = 1500
    res = detect_drift(generate(3000, seed=41), generate(2500, seed=42), c, feature_columns(c))
    assert res["rows"] == {"reference": 1500, "reference_total": 3000, "current": 1500, "current_total": 2500}


def test_bad_inputs_are_named(cfg):
    ref = generate(300, seed=1)
    with pytest.raises(ValueError, match="current data lacks feature column\\(s\\): frustration_index"):
        detect_drift(ref, ref.drop(columns=["frustration_index"]), cfg, feature_columns(cfg))
    with pytest.raises(ValueError, match="current data is empty"):
        detect_drift(ref, ref.head(0), cfg, feature_columns(cfg))
    with pytest.raises(ValueError, match="no prediction column 'score'"):
        detect_drift(ref, ref, cfg, feature_columns(cfg), prediction_column="score")
    with pytest.raises(ValueError, match="reference_predictions has 3 values for 300"):
        detect_drift(ref, ref, cfg, feature_columns(cfg), reference_predictions=np.zeros(3))


def test_column_without_values_is_skipped_and_named(cfg):
    ref = generate(1500, seed=51)
    cur = generate(1500, seed=52)
    cur["monetary_std"] = float("nan")
    res = detect_drift(ref, cur, cfg, feature_columns(cfg))
    assert res["skipped_features"] == {"monetary_std": "no values in current"}
    assert "monetary_std" not in res["features"] and res["n_features"] == len(feature_columns(cfg)) - 1
