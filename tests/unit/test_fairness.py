"""Fairness figures against hand-computed values, and the gate's decisions and reasons."""

import numpy as np
import pytest

from kfct.components.fairness import fairness_gate, fairness_report
from kfct.config import FairnessConfig

CFG = FairnessConfig(
    enabled=True,
    max_demographic_parity_difference=0.10,
    max_equalized_odds_difference=0.10,
    min_group_size=2,
    significance_level=None,
)


def _data():
    # group a: 4 rows, y=[1,1,0,0], pred=[1,0,1,0] -> sel 0.5, TPR 0.5, FPR 0.5
    # group b: 4 rows, y=[1,1,0,0], pred=[1,1,0,0] -> sel 0.5, TPR 1.0, FPR 0.0
    # group c: 1 row  (ignored with min size 2)
    y = [1, 1, 0, 0, 1, 1, 0, 0, 1]
    p = [1, 0, 1, 0, 1, 1, 0, 0, 1]
    g = ["a"] * 4 + ["b"] * 4 + ["c"]
    return y, p, g


def test_report_matches_hand_computed_figures():
    y, p, g = _data()
    r = fairness_report(y, p, {"g": g}, min_group_size=2)["g"]
    assert r["groups"]["a"] == {"size": 4, "positives": 2, "negatives": 2, "selection_rate": 0.5, "tpr": 0.5, "fpr": 0.5}
    assert r["groups"]["b"]["tpr"] == 1.0 and r["groups"]["b"]["fpr"] == 0.0
    assert r["ignored_groups"] == {"c": 1}
    assert r["demographic_parity_difference"] == pytest.approx(0.0)
    assert r["tpr_difference"] == pytest.approx(0.5)
    assert r["fpr_difference"] == pytest.approx(0.5)
    assert r["equalized_odds_difference"] == pytest.approx(0.5)
    assert r["tpr"]["max_group"] == "b" and r["tpr"]["min_group"] == "a"


def test_small_group_is_ignored_not_counted():
    # group c alone would make DP = 1.0 - 0.5; ignored at min size 2 it must not count.
    y, p, g = _data()
    assert fairness_report(y, p, {"g": g}, 2)["g"]["demographic_parity_difference"] == pytest.approx(0.0)
    assert fairness_report(y, p, {"g": g}, 1)["g"]["demographic_parity_difference"] == pytest.approx(0.5)


def test_demographic_parity_on_random_data_matches_numpy():
    rng = np.random.default_rng(0)
    n = 5000
    g = rng.choice(["x", "y", "z"], n)
    y = rng.integers(0, 2, n)
    p = (rng.random(n) < np.where(g == "x", 0.6, 0.3)).astype(int)
    r = fairness_report(y, p, {"g": g, "h": rng.choice(["u", "v"], n)}, 30)
    rates = {k: p[g == k].mean() for k in "xyz"}
    assert r["g"]["demographic_parity_difference"] == pytest.approx(max(rates.values()) - min(rates.values()))
    tprs = [p[(g == k) & (y == 1)].mean() for k in "xyz"]
    fprs = [p[(g == k) & (y == 0)].mean() for k in "xyz"]
    assert r["g"]["equalized_odds_difference"] == pytest.approx(max(max(tprs) - min(tprs), max(fprs) - min(fprs)))
    assert set(r) == {"g", "h"}


def test_gate_fails_over_limit_and_names_feature_and_groups():
    y, p, g = _data()
    passed, reasons = fairness_gate(fairness_report(y, p, {"g": g}, 2), CFG)
    assert not passed
    bad = [r for r in reasons if "equalized odds" in r]
    assert bad and "0.5000 > 0.1" in bad[0] and "b vs a" in bad[0]
    assert any("demographic parity difference 0.0000 <= 0.1" in r for r in reasons)


def test_gate_passes_fair_model():
    rng = np.random.default_rng(1)
    n = 20000
    g = rng.choice(["a", "b"], n)
    y = rng.integers(0, 2, n)
    p = np.where(y == 1, rng.random(n) < 0.7, rng.random(n) < 0.2).astype(int)  # same TPR/FPR in both groups
    passed, reasons = fairness_gate(fairness_report(y, p, {"g": g}, 30), CFG)
    assert passed, reasons


def test_gate_fails_when_configured_feature_missing_and_disabled_gate_passes():
    y, p, g = _data()
    rep = fairness_report(y, p, {"g": g}, 2)
    passed, reasons = fairness_gate(rep, CFG, ["g", "region"])
    assert not passed and any("'region'" in r for r in reasons)
    assert fairness_gate(rep, CFG.model_copy(update={"enabled": False})) == (True, ["fairness gate disabled"])


def test_significance_level_lets_noise_pass_but_not_real_disparity():
    rng = np.random.default_rng(2)
    # Tiny groups: an apparent 0.2 gap in selection rate that is noise.
    y = np.ones(40, dtype=int)
    g = np.array(["a"] * 20 + ["b"] * 20)
    p = np.array([1] * 10 + [0] * 10 + [1] * 6 + [0] * 14)
    rep = fairness_report(y, p, {"g": g}, 10)
    assert rep["g"]["demographic_parity_difference"] == pytest.approx(0.2)
    assert not fairness_gate(rep, CFG)[0]
    passed, reasons = fairness_gate(rep, CFG.model_copy(update={"significance_level": 0.05}))
    assert passed and any("not significant" in r for r in reasons)
    # A large, real gap stays a failure with the significance test on.
    n = 4000
    g2 = rng.choice(["a", "b"], n)
    p2 = (rng.random(n) < np.where(g2 == "a", 0.5, 0.1)).astype(int)
    rep2 = fairness_report(rng.integers(0, 2, n), p2, {"g": g2}, 30)
    assert not fairness_gate(rep2, CFG.model_copy(update={"significance_level": 0.05}))[0]


def test_single_group_is_not_comparable_and_passes_with_reason():
    rep = fairness_report([1, 0, 1], [1, 1, 0], {"g": ["a", "a", "a"]}, 1)
    assert rep["g"]["comparable"] is False
    passed, reasons = fairness_gate(rep, CFG)
    assert passed and "not measurable" in reasons[0]


@pytest.mark.parametrize(
    "y,p,groups,msg",
    [
        ([0, 1, 2], [0, 1, 1], {"g": ["a"] * 3}, "y_true must hold 0/1"),
        ([0, 1], [0, 1, 1], {"g": ["a"] * 2}, "y_true has 2 values but y_pred has 3"),
        ([0, 1], [0, float("nan")], {"g": ["a"] * 2}, "y_pred contains NaN"),
        ([0, 1], [0, 1], {"g": ["a"]}, "sensitive feature 'g' has 1 values, expected 2"),
        ([0, 1], [0, 1], ["a", "b"], "groups must be a dict"),
    ],
)
def test_bad_inputs_name_the_problem(y, p, groups, msg):
    with pytest.raises(ValueError, match=msg):
        fairness_report(y, p, groups, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_figures_match_fairlearn_on_the_same_data(seed):
    """kfct's demographic parity and equalized odds differences are Fairlearn's (all groups counted)."""
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    rng = np.random.default_rng(seed)
    n = 3000
    g = rng.choice(["18-25", "26-40", "41-60", "60+"], n, p=[0.1, 0.4, 0.35, 0.15])
    y = (rng.random(n) < np.where(g == "60+", 0.45, 0.25)).astype(int)
    score = 0.55 * y + 0.45 * rng.random(n) + np.where(g == "18-25", 0.08, 0.0)
    pred = (score >= 0.5).astype(int)
    r = fairness_report(y, pred, {"age": g}, min_group_size=1)["age"]
    assert r["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(y, pred, sensitive_features=g), abs=1e-12
    )
    assert r["equalized_odds_difference"] == pytest.approx(equalized_odds_difference(y, pred, sensitive_features=g), abs=1e-12)
