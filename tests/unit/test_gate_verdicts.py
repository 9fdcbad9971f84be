"""Gate verdicts on the data, not the model: a collapsed champion stops the run; leakage blocks.

Issue 23, items 1 and 3: a batch with inverted labels made the champion score AUC 0.08
(registered 0.90) and the challenger fitted to the inverted labels "won" by +0.81; a
feature `calls = 4*churn + {0,1}` gave AUC 1.0 and was promoted. Real models here
(scikit-learn logistic regression inside kfct's own encoder), real bootstrap.
"""

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from kfct.components.evaluate import champion_collapse, evaluate_core, feature_aucs, leakage_findings
from kfct.config import LeakageConfig, load_config
from kfct.evidence.model import ChurnModel, TabularEncoder


def _cfg(**leak):
    cfg = load_config()  # the label `y` of these frames is no column of the packaged schema: copies, not validation
    ds = cfg.dataset.model_copy(update={"label": "y", "sensitive_features": []})
    gate = cfg.gate.model_copy(update={"bootstrap_rounds": 50, "leakage": cfg.gate.leakage.model_copy(update=leak)})
    return cfg.model_copy(update={"dataset": ds, "gate": gate})


def _frame(n=3000, seed=0, leak=False):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2.0 * a + 1.5 * b)))).astype(int)
    df = pd.DataFrame({"a": a, "b": b, "y": y})
    if leak:
        df["calls"] = 4 * y + rng.integers(0, 2, n)
    return df


def _fit(df):
    feats = [c for c in df.columns if c != "y"]
    enc = TabularEncoder(numeric=feats).fit(df[feats])
    est = LogisticRegression().fit(enc.transform(df[feats]), df["y"])
    return ChurnModel(enc, est, 0.5)


def test_inverted_labels_stop_the_run_instead_of_promoting():
    champion = _fit(_frame(seed=1))
    bad = _frame(seed=2)
    bad["y"] = 1 - bad["y"]  # the batch arrives with its labels inverted
    challenger = _fit(bad)
    res = evaluate_core(challenger, bad, _cfg(), champion, "3", {"roc_auc": 0.90})
    assert res["comparison"]["diff"] > 0.5  # the challenger "wins" by a mile on the broken data
    assert res["deploy"] is False
    assert res["stop"].startswith("stopped: champion v3 collapsed on this data: roc_auc 0.")
    assert "below chance" in res["stop"] and res["reasons"][0] == res["stop"]


def test_a_champion_far_under_its_registered_metric_stops_a_healthy_one_does_not():
    gate = load_config().gate.model_copy(update={"compare_metric": "roc_auc", "champion_max_drop": 0.2})
    assert champion_collapse("2", {"roc_auc": 0.62}, {"roc_auc": 0.90}, gate).startswith("stopped: champion v2")
    assert champion_collapse("2", {"roc_auc": 0.85}, {"roc_auc": 0.90}, gate) is None
    no_drop = gate.model_copy(update={"champion_max_drop": None})
    assert champion_collapse("2", {"roc_auc": 0.62}, {"roc_auc": 0.90}, no_drop) is None


def test_a_fair_comparison_still_promotes():
    champion = _fit(_frame(n=400, seed=1))
    fresh = _frame(seed=2)
    res = evaluate_core(_fit(fresh), fresh, _cfg(), champion, "3", {"roc_auc": 0.86})
    assert res["stop"] is None and not res["leakage"]


def test_a_feature_that_alone_predicts_the_label_blocks_the_gate_by_name():
    df = _frame(leak=True)
    res = evaluate_core(_fit(df), df, _cfg())
    assert res["deploy"] is False
    assert res["leakage"] and res["leakage"][0].startswith("leakage: feature 'calls' alone predicts the label (AUC 1.0000")
    assert res["feature_auc"]["calls"] == 1.0 and res["feature_auc"]["a"] < 0.9


def test_leakage_accepted_knowingly_passes():
    df = _frame(leak=True)
    res = evaluate_core(_fit(df), df, _cfg(accept=["calls"]))
    assert not res["leakage"] and res["deploy"] is True


def test_categorical_leak_and_perfect_metric():
    y = np.array([0, 1] * 200)
    df = pd.DataFrame({"plan": np.where(y == 1, "gold", "basic"), "x": np.arange(400) % 7})
    aucs = feature_aucs(df, ["plan", "x"], y)
    assert aucs["plan"] == 1.0 and aucs["x"] < 0.7
    found, notes = leakage_findings({"roc_auc": 1.0}, {"x": 0.6}, LeakageConfig(max_feature_auc=0.99, max_roc_auc=0.9995))
    assert found == [] and notes[0].startswith("note: test roc_auc 1.0000 >= 0.9995 is suspiciously perfect")
    assert leakage_findings({"roc_auc": 1.0}, {"x": 0.6}, LeakageConfig(accept=["*"])) == ([], [])


def test_a_strong_real_feature_on_a_small_test_set_is_not_called_leakage():
    # breast cancer's worst concave points: AUC 0.9948 on its 86-row test split (32 malignant); a leak is 1.0
    leak = LeakageConfig(max_feature_auc=0.99)
    assert leakage_findings({"roc_auc": 0.99}, {"worst_concave_points": 0.9948}, leak, 32, 54) == ([], [])
    found, _ = leakage_findings({"roc_auc": 0.99}, {"calls": 1.0}, leak, 32, 54)
    assert found and "'calls'" in found[0]
