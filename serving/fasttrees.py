"""A numpy evaluator for small batches of an XGBoost binary classifier.

Why: `Booster.inplace_predict` costs 0.2-1 ms per call whatever the batch size
(proxy DMatrix, JSON array interface, predictor configuration, OpenMP start),
which alone would blow a 1 ms request budget. Walking all trees level by level
with numpy gathers costs ~40 us for one row of a 400-tree, depth-5 model.

The ensemble is compiled from the booster's own JSON dump and then checked
against the booster on rows built around every split threshold (the only place
where float rounding could send a row down another branch); any mismatch, an
unsupported objective or a tree shape we do not handle means `compile_booster`
returns None and the caller keeps using the booster. Large batches go to the
booster, whose multithreaded predictor wins there.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

SUPPORTED_OBJECTIVES = {"binary:logistic", "reg:logistic"}


class TreeEnsemble:
    """Flattened trees: node -> (feature, threshold, left child); right child is left + 1."""

    def __init__(self, feature, threshold, left, default_left, leaf_value, roots, depth, base_margin):
        self.feature = feature
        self.threshold = threshold
        self.left = left
        self.default_left = default_left
        self.leaf_value = leaf_value
        self.roots = roots
        self.depth = depth
        self.base_margin = base_margin
        self.n_nodes = len(feature)
        self.n_features = int(feature.max()) + 1 if len(feature) else 0

    def margin(self, X: np.ndarray) -> np.ndarray:
        """Raw margin for a float32 matrix without NaN (the encoder imputes them)."""
        n = X.shape[0]
        feat, thr, left = self.feature, self.threshold, self.left
        if n == 1:
            x = X[0]
            node = self.roots
            for _ in range(self.depth):
                node = left[node] + (x[feat[node]] >= thr[node])
            return np.array([self.leaf_value[node].sum() + self.base_margin])
        flat = X.reshape(-1)
        width = X.shape[1]
        row_off = np.repeat(np.arange(n, dtype=np.intp) * width, len(self.roots))
        node = np.tile(self.roots, n)
        for _ in range(self.depth):
            node = left[node] + (flat[row_off + feat[node]] >= thr[node])
        return self.leaf_value[node].reshape(n, -1).sum(axis=1) + self.base_margin

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        m = self.margin(X)
        return 1.0 / (1.0 + np.exp(-m))


def _base_margin(learner: dict) -> float:
    raw = str(learner["learner_model_param"]["base_score"]).strip("[]")
    base_score = float(raw.split(",")[0])
    if not 0.0 < base_score < 1.0:
        raise ValueError(f"base_score {base_score} is not a probability")
    return math.log(base_score / (1.0 - base_score))


def _compile(booster: Any) -> TreeEnsemble:
    doc = json.loads(booster.save_raw("json"))
    learner = doc["learner"]
    if learner["objective"]["name"] not in SUPPORTED_OBJECTIVES:
        raise ValueError(f"objective {learner['objective']['name']} not supported")
    params = learner["learner_model_param"]
    if int(params.get("num_class", 0)) > 1 or int(params.get("num_target", 1)) != 1:
        raise ValueError("multi-output models not supported")
    gb = learner["gradient_booster"]
    if gb["name"] != "gbtree":
        raise ValueError(f"booster {gb['name']} not supported")
    trees = gb["model"]["trees"]
    feats, thrs, lefts, dlefts, leafs, roots = [], [], [], [], [], []
    offset, depth = 0, 0
    for t in trees:
        if any(int(s) != 0 for s in t.get("split_type", [])):
            raise ValueError("categorical splits not supported")
        if int(t["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise ValueError("vector leaves not supported")
        left = np.asarray(t["left_children"], dtype=np.int64)
        right = np.asarray(t["right_children"], dtype=np.int64)
        n = len(left)
        leaf = left < 0
        if np.any(right[~leaf] != left[~leaf] + 1):
            raise ValueError("right child is not left + 1")
        cond = np.asarray(t["split_conditions"], dtype=np.float32)
        idx = np.arange(n, dtype=np.int64)
        # Leaves point to themselves with an infinite threshold: x >= inf is False, so they stay.
        lefts.append(np.where(leaf, idx, left) + offset)
        feats.append(np.where(leaf, 0, np.asarray(t["split_indices"], dtype=np.int64)))
        thrs.append(np.where(leaf, np.float32(np.inf), cond))
        dlefts.append(np.asarray(t["default_left"], dtype=bool))
        leafs.append(np.where(leaf, cond.astype(np.float64), 0.0))
        roots.append(offset)
        d = np.zeros(n, dtype=np.int64)
        for i in range(n):  # parents precede children in xgboost's numbering
            if not leaf[i]:
                d[left[i]] = d[right[i]] = d[i] + 1
        depth = max(depth, int(d.max()) if n else 0)
        offset += n
    if not trees:
        raise ValueError("model has no trees")
    return TreeEnsemble(
        feature=np.concatenate(feats).astype(np.intp),
        threshold=np.concatenate(thrs),
        left=np.concatenate(lefts).astype(np.intp),
        default_left=np.concatenate(dlefts),
        leaf_value=np.concatenate(leafs),
        roots=np.asarray(roots, dtype=np.intp),
        depth=depth,
        base_margin=_base_margin(learner),
    )


def probe_matrix(ens: TreeEnsemble, n_features: int, rows: int = 256, seed: int = 0) -> np.ndarray:
    """Rows whose values sit exactly on, just below and just above split thresholds."""
    rng = np.random.default_rng(seed)
    X = np.zeros((rows, n_features), dtype=np.float32)
    internal = ens.threshold != np.inf
    for f in range(n_features):
        t = ens.threshold[internal & (ens.feature == f)]
        if len(t) == 0:
            X[:, f] = rng.normal(size=rows).astype(np.float32)
            continue
        pick = t[rng.integers(0, len(t), size=rows)]
        nudge = rng.integers(-1, 2, size=rows)
        X[:, f] = np.where(nudge < 0, np.nextafter(pick, np.float32(-np.inf)),
                           np.where(nudge > 0, np.nextafter(pick, np.float32(np.inf)), pick))
    return X


def compile_booster(booster: Any, n_features: int, reference: Any = None,
                    tolerance: float = 1e-5) -> TreeEnsemble | None:
    """Compile and verify; None when unsupported or not identical to `reference`.

    `reference(X) -> probabilities` is the model's own scoring of an encoded matrix
    (default: the booster's `inplace_predict`), so whatever the model does (all trees,
    a best iteration) is what the compiled copy must reproduce.
    """
    try:
        ens = _compile(booster)
        if ens.n_features > n_features:
            return None
        X = probe_matrix(ens, n_features)
        ref = reference or booster.inplace_predict
        expected = np.asarray(ref(X), dtype=np.float64)
        got = ens.predict_proba(X)
        single = np.array([ens.predict_proba(X[i : i + 1])[0] for i in range(8)])
    except Exception:  # any surprise in the dump format: keep the booster
        return None
    if not np.allclose(got, expected, rtol=0, atol=tolerance):
        return None
    if not np.allclose(single, expected[:8], rtol=0, atol=tolerance):
        return None
    return ens
