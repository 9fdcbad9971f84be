"""Model card content and feature attributions (XGBoost SHAP, permutation fallback)."""

from html import escape

import numpy as np
import pytest

from kfct.components.fairness import fairness_report
from kfct.evidence.modelcard import build_model_card, top_features_shap


def test_shap_groups_one_hot_columns_back_to_their_feature(trained):
    import xgboost as xgb

    model, _, _, test = trained
    X = test.drop(columns=["churned"]).head(500)
    top = top_features_shap(model, X, k=30)
    assert top["kind"] == "shap" and "SHAP" in top["method"] and top["rows"] == 500
    names = [f["feature"] for f in top["features"]]
    assert len(names) == len(set(names)) == len(model.feature_names)
    assert set(names) == set(model.feature_names)  # source features, no "col=value"
    assert not any("=" in n for n in names)
    # Recompute one categorical feature's importance by hand from the raw contributions.
    M = model.encoder.transform(X)
    contrib = model.estimator.predict(xgb.DMatrix(M), pred_contribs=True)
    cols = [i for i, n in enumerate(model.encoder.output_names_) if n.startswith("contract_type=")]
    expected = np.abs(contrib[:, cols].sum(axis=1)).mean()
    got = next(f["importance"] for f in top["features"] if f["feature"] == "contract_type")
    assert got == pytest.approx(expected, rel=1e-5)
    # The churn drivers of the generator rank high.
    assert {"contract_type", "frustration_index"} <= set(names[:5])
    assert sum(f["share"] for f in top["features"]) == pytest.approx(1.0)


def test_non_xgboost_model_falls_back_to_permutation_and_says_so(small_df, cfg):
    import copy

    from kfct.components.featurize import featurize_core
    from kfct.components.train import train_core

    c = copy.deepcopy(cfg)
    c.train.model = "logistic_regression"
    tr, va, te, enc = featurize_core(small_df, c)
    model, *_ = train_core(tr, va, c, encoder=enc)
    top = top_features_shap(model, te.drop(columns=["churned"]).head(400), k=5)
    assert top["kind"] == "permutation" and len(top["features"]) == 5
    assert all(f["importance"] >= 0 for f in top["features"])
    md, html = build_model_card({"model_name": "m", "version": "2", "top_features": top})
    assert "permutation importance" in md and "not SHAP" in md and "not SHAP" in html


def test_card_contains_every_section_and_figure(trained):
    model, _, _, test = trained
    X = test.drop(columns=["churned"])
    y = test["churned"].to_numpy()
    pred = (model.predict_positive(X) >= model.threshold).astype(int)
    fair = fairness_report(y, pred, {"age_group": test["age_group"], "region": test["region"]}, 30)
    info = {
        "model_name": "churn-classifier",
        "version": "7",
        "alias": "champion",
        "run_id": "abc123",
        "model_kind": "xgboost",
        "threshold": model.threshold,
        "dataset": {"uri": "generate://8000?seed=11", "sha256": "f" * 64, "rows": 8000, "rows_test": len(test)},
        "metrics": {"roc_auc": 0.8612, "recall": 0.7001},
        "fairness": fair,
        "gate": {
            "deploy": True,
            "reasons": ["roc_auc 0.8612 >= 0.8", "recall 0.7001 >= 0.65"],
            "thresholds": {"roc_auc": 0.8, "recall": 0.65},
        },
        "lineage": {"dataset_sha256": "f" * 64, "code_version": "deadbeef", "pipeline_run": "ct-1"},
        "top_features": top_features_shap(model, X.head(300), k=10),
        "slices": {"age_group": {"18_35": {"n": 400, "roc_auc": 0.81, "recall": 0.7}}},
        "intended_use": "Rank customers for retention calls.",
    }
    md, html = build_model_card(info)
    for heading in (
        "Intended use",
        "Data snapshot",
        "Metrics (test set)",
        "Metrics by slice",
        "Fairness",
        "Top features",
        "Thresholds and gate decision",
        "Lineage",
    ):
        assert f"## {heading}" in md and f"<h2>{heading}</h2>" in html
    for text in (
        "churn-classifier v7",
        "f" * 64,
        "8,000",
        "0.8612",
        "DEPLOY",
        "roc_auc 0.8612 >= 0.8",
        "deadbeef",
        "Rank customers for retention calls.",
        "18_35",
        "SHAP",
    ):
        assert text in md, text
        assert escape(text) in html, text
    dp = fair["age_group"]["demographic_parity_difference"]
    assert f"{dp:.4f}" in md and f"{dp:.4f}" in html
    top1 = info["top_features"]["features"][0]["feature"]
    assert f"| 1 | {top1} |" in md


def test_card_says_what_is_missing_and_escapes_html():
    md, html = build_model_card({"model_name": "<script>", "version": "1"})
    assert "Fairness was not evaluated" in md and "Not computed." in md and "No lineage recorded." in md
    assert "<script>" not in html and "&lt;script&gt;" in html
    with pytest.raises(ValueError, match="must be a dict"):
        build_model_card(["not", "a", "dict"])


def test_card_shows_curves_and_top_features_inline(trained, tmp_path):
    import base64
    import shutil
    import subprocess

    from kfct.config import load_config
    from kfct.evidence.modelcard import description, model_description
    from kfct.evidence.modelcard_charts import curve_charts

    model, _, _, test = trained
    X, y = test.drop(columns=["churned"]).head(800), test["churned"].head(800).to_numpy()
    top = top_features_shap(model, X.head(200), k=8)
    charts = curve_charts(y, model.predict_positive(X), top)
    assert set(charts) == {"roc_curve", "pr_curve", "calibration", "top_features"}
    assert all(png.startswith(b"\x89PNG") for png in charts.values())
    info = {
        "model_name": "m",
        "version": "2",
        "top_features": top,
        "charts": charts,
        "dataset": {"uri": "d.csv", "sha256": "ab" * 32, "rows": 5, "columns": 3, "rows_test": 2},
        "gate": {"deploy": True, "reasons": ["roc_auc 0.9 >= 0.8"]},
    }
    md, html = build_model_card(info)
    for key in charts:
        assert f"]({key}.png)" in md
        assert f'src="data:image/png;base64,{base64.b64encode(charts[key]).decode()}"' in html
    text = description(info)
    assert text.startswith("Intended use:") and "d.csv" in text and "DEPLOY - roc_auc 0.9 >= 0.8" in text
    assert "churned == 1" in model_description(load_config())
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip(
            "needs Chromium to render the HTML headlessly: chromium is not installed "
            "(Debian: apt-get install -y chromium; .ci/run installs it as root)"
        )
    page = tmp_path / "card.html"
    page.write_text(html)
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert dom.count("<img") == 4 and "Calibration curve" in dom
