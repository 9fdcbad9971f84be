"""Outcomes: validation at the boundary and the prediction ↔ outcome join."""

from __future__ import annotations

import pandas as pd
import pytest

from kfct.evidence.outcomes import OutcomesError, join_predictions, realized_performance
from kfct.evidence.outcomes import validate_outcomes as _validate_outcomes

T0 = pd.Timestamp("2026-03-01", tz="UTC")


def _preds(rows):
    return pd.DataFrame(
        [
            {
                "ts": T0 + pd.Timedelta(days=d),
                "request_id": f"r{i}",
                "model_version": v,
                "role": role,
                "customer_id": cid,
                "probability": p,
                "label": int(p >= 0.5),
                "threshold": 0.5,
            }
            for i, (cid, d, v, role, p) in enumerate(rows)
        ]
    )


def _outs(rows):
    return pd.DataFrame([{"customer_id": c, "outcome": y, "observed_at": T0 + pd.Timedelta(days=d)} for c, d, y in rows])


def test_each_prediction_is_judged_by_the_first_outcome_after_it_within_the_horizon():
    preds = _preds(
        [
            ("a", 0, "1", "champion", 0.9),  # outcome at day 10 -> judged
            ("a", 12, "1", "champion", 0.2),  # after the first outcome: the second one (day 50) is 38 d away
            ("b", 0, "2", "canary", 0.7),  # outcome on day 45: beyond the 30-day horizon
            ("c", 5, "2", "canary", 0.1),  # outcome before the prediction: not judged
            ("d", 1, "1", "champion", 0.6),
        ]
    )  # no outcome
    outs = _outs([("a", 10, 1), ("a", 50, 0), ("b", 45, 1), ("c", 2, 1)])
    j = join_predictions(preds, outs, horizon_days=30)
    assert list(j["request_id"]) == ["r0"]
    assert j.iloc[0]["outcome"] == 1 and j.iloc[0]["model_version"] == "1" and j.iloc[0]["role"] == "champion"
    wide = join_predictions(preds, outs, horizon_days=60)
    assert sorted(wide["request_id"]) == ["r0", "r1", "r2"] and wide["request_id"].is_unique
    assert wide.set_index("request_id").loc["r1", "outcome"] == 0


def test_realized_performance_per_version():
    preds = _preds(
        [(f"c{i}", 0, "1" if i % 2 else "2", "champion", p) for i, p in enumerate([0.9, 0.8, 0.2, 0.1, 0.7, 0.4, 0.6, 0.3])]
    )
    outs = _outs([(f"c{i}", 3, y) for i, y in enumerate([1, 1, 0, 0, 1, 1, 0, 0])])
    rows = {r["model_version"]: r for r in realized_performance(join_predictions(preds, outs))}
    assert rows["2"]["n"] == 4 and rows["2"]["accuracy"] == 0.75
    assert rows["1"]["roc_auc"] == 1.0 and rows["1"]["observed_rate"] == 0.5


def test_outcomes_are_validated_with_clear_errors(cfg):
    from functools import partial

    from kfct.components.validate import validate_frame

    validate_outcomes = partial(_validate_outcomes, validate_frame=validate_frame)
    ok = pd.DataFrame({"customer_id": ["a", "b"], "churned": [1, 0], "observed_at": ["2026-03-01", "2026-03-02T10:00Z"]})
    v = validate_outcomes(ok, cfg)
    assert list(v["outcome"]) == [1, 0] and str(v["observed_at"].dt.tz) == "UTC"
    with pytest.raises(OutcomesError, match=r"lack column.*observed_at"):
        validate_outcomes(ok.drop(columns="observed_at"), cfg)
    with pytest.raises(OutcomesError, match=r"churned: 1 value\(s\) outside"):
        validate_outcomes(ok.assign(churned=[1, 7]), cfg)
    with pytest.raises(OutcomesError, match="observed_at: not a timestamp"):
        validate_outcomes(ok.assign(observed_at=["yesterday", "2026-03-01"]), cfg)
    with pytest.raises(OutcomesError, match="empty id"):
        validate_outcomes(ok.assign(customer_id=[None, "b"]), cfg)


def test_string_labels_map_once_at_the_boundary(cfg):
    import copy

    from kfct.config import ColumnSpec

    c = copy.deepcopy(cfg)
    c.dataset.columns["churned"] = ColumnSpec(dtype="category", nullable=False, categories=["yes", "no"])
    c.dataset.positive_label = "yes"
    df = pd.DataFrame({"customer_id": ["a", "b"], "churned": ["yes", "no"], "observed_at": ["2026-03-01"] * 2})
    assert list(_validate_outcomes(df, c, gx=False)["outcome"]) == [1, 0]


def test_decay_asks_for_retraining_only_beyond_the_limit():
    from kfct.components.outcomes_report import decay

    rows = [{"roc_auc": 0.80, "n": 500}]
    assert decay(rows, {"roc_auc": 0.87}, 0.05)["retrain"] is True
    assert decay(rows, {"roc_auc": 0.84}, 0.05)["retrain"] is False
    assert decay(rows, None, 0.05) == {"assessed": False, "retrain": False, "reason": "no baseline test metrics"}
    assert decay([{"roc_auc": None, "n": 3}], {"roc_auc": 0.9}, 0.05)["assessed"] is False
