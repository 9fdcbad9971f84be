"""The model card's evidence, computed by evaluate and carried to register as one JSON artifact."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kfct.components.evaluate import compute_metrics, read_evidence, slice_metrics, write_evidence


def test_evidence_round_trips_charts_as_the_same_png_bytes(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    ev = {
        "rows_test": 12,
        "slices": {"region": {"north": {"n": 40}}},
        "top_features": {"features": []},
        "charts": {"roc_curve": png},
    }
    write_evidence(ev, str(tmp_path / "e.json"))
    assert read_evidence(str(tmp_path / "e.json")) == ev


def test_slices_are_the_metrics_of_each_group_and_skip_small_or_one_class_groups():
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame(
        {"region": rng.choice(["a", "b"], n), "tiny": ["x"] * 20 + ["y"] * (n - 20), "churned": rng.integers(0, 2, n)}
    )
    df.loc[df["region"] == "b", "churned"] = 1  # one class only: no AUC, skipped
    y, proba = df["churned"].to_numpy(np.int64), rng.random(n)
    from kfct.config import load_config

    cfg = load_config()
    cfg.dataset.sensitive_features = ["region", "tiny", "absent"]  # "absent": not a column of df
    out = slice_metrics(df, cfg, y, proba, 0.5)
    assert set(out) == {"region", "tiny"} and set(out["region"]) == {"a"}
    mask = (df["region"] == "a").to_numpy()
    want = compute_metrics(y[mask], proba[mask], 0.5)
    assert out["region"]["a"] == {
        "n": int(mask.sum()),
        "roc_auc": round(want["roc_auc"], 4),
        "recall": round(want["recall"], 4),
        "positive_rate": round(want["positive_rate"], 4),
    }
    assert set(out["tiny"]) == {"y"}  # 20 rows of "x": under 30, skipped


def test_card_evidence_from_a_fitted_model_has_every_chart_and_top_features(trained, cfg):
    from kfct.components.evaluate import card_evidence, evaluate_core

    model, _, _, te = trained
    res = evaluate_core(model, te, cfg)
    ev = card_evidence(model, te, cfg, res["y"], res["proba"])
    assert set(ev["charts"]) == {"roc_curve", "pr_curve", "calibration", "top_features"}
    assert all(png.startswith(b"\x89PNG") for png in ev["charts"].values())
    assert ev["rows_test"] == len(te) and len(ev["top_features"]["features"]) == 10
    assert set(ev["slices"]) == set(cfg.dataset.sensitive_features)
