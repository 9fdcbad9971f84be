"""Gate logic: metrics, the paired bootstrap, the decision."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from kfct.components.evaluate import compute_metrics, decide, paired_bootstrap
from kfct.components.train import choose_threshold
from kfct.config import load_config
from kfct.evidence.abstats import auc_groups, grouped_auc

GATE = load_config().gate.model_copy(
    update={"thresholds": {"roc_auc": 0.80, "recall": 0.65}, "compare_metric": "roc_auc", "min_improvement": 0.002}
)


def _scores(n=4000, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    return y, 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, noise, n))))


def test_weighted_auc_equals_sklearn_with_unit_weights():
    y, p = _scores()
    p = np.round(p, 2)  # ties
    assert grouped_auc(*auc_groups(y, p), np.ones(len(y))) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_weighted_auc_equals_sklearn_with_integer_weights():
    y, p = _scores(500)
    w = np.random.default_rng(1).poisson(1.0, len(y))
    rep = np.repeat(np.arange(len(y)), w)
    assert grouped_auc(*auc_groups(y, p), w.astype(float)) == pytest.approx(roc_auc_score(y[rep], p[rep]), abs=1e-12)


def test_compute_metrics_confusion_consistency():
    y, p = _scores()
    m = compute_metrics(y, p, 0.5)
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    assert tn + fp + fn + tp == len(y)
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["precision"] == pytest.approx(tp / (tp + fp))


def test_bootstrap_detects_a_better_model_and_a_worse_one():
    y, good = _scores(noise=0.6, seed=3)
    _, bad = _scores(noise=1.6, seed=3)
    up = paired_bootstrap(y, good, bad, rounds=200)
    down = paired_bootstrap(y, bad, good, rounds=200)
    assert up["diff"] > 0 and up["significant_improvement"] and not up["significant_regression"]
    assert down["significant_regression"] and down["ci_high"] < 0


def test_bootstrap_same_model_is_zero():
    y, p = _scores()
    r = paired_bootstrap(y, p, p, rounds=50)
    assert r["diff"] == 0 and r["ci_low"] == 0 and r["ci_high"] == 0


def test_bootstrap_other_metric():
    y, good = _scores(noise=0.6, seed=4)
    _, bad = _scores(noise=1.6, seed=4)
    r = paired_bootstrap(y, good, bad, metric="f1", rounds=50)
    assert r["metric"] == "f1" and r["diff"] > 0


def test_first_model_faces_absolute_thresholds_only():
    ok, reasons = decide({"roc_auc": 0.85, "recall": 0.7}, GATE, None, None)
    assert ok and any("no champion" in r for r in reasons)
    ok, reasons = decide({"roc_auc": 0.85, "recall": 0.6}, GATE, None, None)
    assert not ok and "recall 0.6000 < 0.65" in reasons


def _cmp(diff, lo, hi):
    return {
        "metric": "roc_auc",
        "challenger": 0.85 + diff,
        "champion": 0.85,
        "diff": diff,
        "ci_low": lo,
        "ci_high": hi,
        "confidence": 0.95,
        "rounds": 100,
        "significant_regression": hi < 0,
        "significant_improvement": lo > 0,
        "champion_version": "3",
    }


def test_challenger_must_improve_by_min_improvement():
    m = {"roc_auc": 0.86, "recall": 0.7}
    assert decide(m, GATE, _cmp(0.01, 0.004, 0.016), None)[0]
    ok, reasons = decide(m, GATE, _cmp(0.001, -0.002, 0.004), None)
    assert not ok and any("< min_improvement" in r for r in reasons)


def test_significant_regression_blocks_even_with_zero_min_improvement():
    gate = GATE.model_copy(update={"min_improvement": -1.0})
    ok, reasons = decide({"roc_auc": 0.84, "recall": 0.7}, gate, _cmp(-0.01, -0.02, -0.003), None)
    assert not ok and any("significant regression" in r for r in reasons)


def test_unscorable_champion_blocks():
    ok, reasons = decide({"roc_auc": 0.86, "recall": 0.7}, GATE, {"error": "KeyError: x", "champion_version": "1"}, None)
    assert not ok and "could not be scored" in reasons[-1]


def test_fairness_failure_blocks():
    ok, reasons = decide({"roc_auc": 0.86, "recall": 0.7}, GATE, None, (False, ["age_group: demographic parity 0.3 > 0.1"]))
    assert not ok and any("demographic parity" in r for r in reasons)


def test_threshold_reaches_recall_target():
    y, p = _scores(noise=1.2)
    t = choose_threshold(y, p, 0.7)
    assert ((p >= t) & (y == 1)).sum() / y.sum() >= 0.7
    assert 0 < choose_threshold(y, p, None) < 1


def test_confusion_figures_are_scikit_learns_including_no_predicted_positive():
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    from kfct.components.evaluate import compute_metrics

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.6 * y + 0.5 * rng.random(400), 0, 1)
    for thr in (0.5, 0.8, 1.5):  # 1.5: nothing predicted positive
        m, pred = compute_metrics(y, p, thr), (p >= thr).astype(int)
        assert m["precision"] == precision_score(y, pred, zero_division=0)
        assert m["recall"] == recall_score(y, pred, zero_division=0)
        assert m["f1"] == f1_score(y, pred, zero_division=0) and m["accuracy"] == accuracy_score(y, pred)
        (tn, fp), (fn, tp) = m["confusion_matrix"]
        assert tp + fp == pred.sum() and tp + fn == y.sum() and tn + fp + fn + tp == len(y)
