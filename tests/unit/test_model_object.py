"""The encoder and ChurnModel: vectorised and per-record paths agree, bad records are named."""

import math

import numpy as np
import pytest

from kfct.evidence.model import FeatureError


def _records(df, n=5):
    return df.drop(columns=["churned"]).head(n).to_dict(orient="records")


def test_record_path_matches_frame_path(trained):
    model, _, _, te = trained
    X = te.drop(columns=["churned"]).head(50)
    np.testing.assert_allclose(model.predict_proba_records(X.to_dict(orient="records")), model.predict_positive(X), rtol=1e-6)


def test_predict_proba_shape_and_threshold(trained):
    model, _, _, te = trained
    X = te.drop(columns=["churned"])
    p = model.predict_proba(X)
    assert p.shape == (len(X), 2) and np.allclose(p.sum(axis=1), 1)
    assert ((p[:, 1] >= model.threshold).astype(int) == model.predict(X)).all()
    assert 0.0 < model.threshold < 1.0


@pytest.mark.parametrize(
    "mutate, field, message",
    [
        (lambda r: r.pop("tenure_days"), "tenure_days", "missing"),
        (lambda r: r.update(contract_type="lifetime"), "contract_type", "unknown category"),
        (lambda r: r.update(recency_days="ten"), "recency_days", "expected a number"),
        (lambda r: r.update(recency_days=True), "recency_days", "expected a number"),
        (lambda r: r.update(frustration_index=math.nan), "frustration_index", "non-finite"),
        (lambda r: r.update(monetary_total=math.inf), "monetary_total", "non-finite"),
        (lambda r: r.update(plan_monthly_eur=None), "plan_monthly_eur", "null not allowed"),
    ],
)
def test_bad_record_names_the_field(trained, mutate, field, message):
    model, _, _, te = trained
    recs = _records(te, 3)
    mutate(recs[2])
    with pytest.raises(FeatureError) as err:
        model.predict_proba_records(recs)
    assert err.value.field == field and err.value.index == 2
    assert message in str(err.value) and field in str(err.value)


def test_nullable_feature_accepts_null_and_nan(trained):
    model, _, _, te = trained
    recs = _records(te, 2)
    recs[0]["monetary_std"] = None
    recs[1]["monetary_std"] = math.nan
    p = model.predict_proba_records(recs)
    assert np.isfinite(p).all()


def test_frame_with_unknown_category_is_named(trained):
    model, _, _, te = trained
    X = te.drop(columns=["churned"]).head(10).copy()
    X.loc[X.index[3], "region"] = "mars"
    with pytest.raises(FeatureError, match="region"):
        model.predict_positive(X)
