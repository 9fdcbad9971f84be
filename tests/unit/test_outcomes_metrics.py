"""The realized-performance metrics (numpy only) give what sklearn gives on the same arrays."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from kfct.evidence.abstats import roc_auc
from kfct.evidence.outcomes import _metrics


@pytest.mark.parametrize("seed", range(8))
def test_metrics_match_sklearn_with_ties_and_skewed_classes(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 3000))
    y = (rng.random(n) < rng.uniform(0.02, 0.6)).astype(int)
    y[0], y[1] = 0, 1  # both classes
    proba = rng.random(n)
    if seed % 2:  # coarse scores: many ties, as a rounded or quantized model gives
        proba = np.round(proba, 1)
    label = (proba >= 0.5).astype(int)
    m = _metrics(y, proba, label)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, proba), abs=1e-12)
    assert m["recall"] == pytest.approx(recall_score(y, label, zero_division=0), abs=1e-12)
    if label.any():
        assert m["precision"] == pytest.approx(precision_score(y, label, zero_division=0), abs=1e-12)
    assert m["accuracy"] == pytest.approx((y == label).mean())


def test_one_class_or_no_positive_prediction_leaves_the_undefined_metrics_none():
    y, p = np.zeros(10, int), np.linspace(0, 1, 10)
    m = _metrics(y, p, np.zeros(10, int))
    assert m["roc_auc"] is None and m["recall"] is None and m["precision"] is None
    m = _metrics(np.ones(10, int), p, np.ones(10, int))
    assert m["roc_auc"] is None and m["recall"] == 1.0 and m["precision"] == 1.0


def test_auc_of_all_tied_scores_is_one_half():
    assert roc_auc(np.array([0, 1, 0, 1]), np.full(4, 0.3)) == 0.5
