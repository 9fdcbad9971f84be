"""A numpy evaluator for small batches of an XGBoost binary classifier.

Why: `Booster.inplace_predict` costs 0.2-1 ms per call whatever the batch size
(proxy DMatrix, JSON array interface, predictor configuration, OpenMP start),
which alone would blow a 1 ms request budget. `python -m bench.trees` measures
this evaluator against treelite/tl2cgen and ONNX Runtime (figures and the decision
in bench/results.md, "Tree evaluator").

Layout: every tree is padded to a complete binary tree of the forest's depth D and
the forest is stored in heap order. Slot k's children are 2k (left) and 2k + 1
(right); tree t's root is slot T + t (T trees), so level l holds slots
[T*2^l, T*2^(l+1)) and the leaves are slots [T*2^D, T*2^(D+1)). A leaf that XGBoost
reached above depth D is copied into both children of a padding split, so which
way the padding sends a row does not matter. Moving down a level is `2k + go`:
no child table to look up.

One row decides every split at once (two numpy calls over all slots), turns that
into each slot's next slot and hops D times: about a dozen numpy calls whatever the
forest's size, where a per-level walk needs six per level. A batch walks all
(row, tree) pairs level by level: three gathers and a compare per level below the
roots (whose splits are known without a lookup).

The ensemble is compiled from the booster's own JSON dump and then checked
against the model on rows built around every split threshold (the only place
where float rounding could send a row down another branch); any mismatch, an
unsupported objective or a tree shape we do not handle means `compile_booster`
returns None and the caller keeps using the booster.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

SUPPORTED_OBJECTIVES = {"binary:logistic", "reg:logistic"}
MAX_SLOTS = 1 << 20  # padded forest size (T * 2^D, ~21 bytes a slot) above which deep trees keep the booster
ONE_ROW_TABLE_MAX = 1 << 14  # one row: the next-slot table beats the walk up to ~2e4 slots (measured with 100-800 trees)


class TreeEnsemble:
    """A forest in heap order (see the module docstring): per-slot split tables and leaf values."""

    def __init__(
        self,
        feature: np.ndarray,
        threshold: np.ndarray,
        default_right: np.ndarray,
        leaf_value: np.ndarray,
        n_trees: int,
        depth: int,
        base_margin: float,
    ):
        self.feature = feature  # (T * 2^D,) split slot -> feature (slots below T are unused)
        self.threshold = threshold  # float32: go right when x >= threshold
        self.default_right = default_right  # where a missing value (NaN) goes
        self.leaf_value = leaf_value  # (T * 2^D,) leaf slot - T * 2^D -> value
        self.n_trees = n_trees
        self.depth = depth
        self.base_margin = base_margin
        self.n_slots = n_trees << depth
        self.n_features = int(feature[threshold != np.inf].max(initial=-1)) + 1
        self._roots = np.arange(n_trees, 2 * n_trees, dtype=np.intp)
        self._left_of: np.ndarray | None = None  # one-row path: slot -> 2 * slot, its left child (as a leaf index
        # below the last level of splits)
        self._first = self._roots if depth else self._roots - self.n_slots  # one-row path: where the hops start
        if self.n_slots <= ONE_ROW_TABLE_MAX:
            self._left_of = 2 * np.arange(self.n_slots, dtype=np.intp)
            if depth:
                self._left_of[self.n_slots // 2 :] -= self.n_slots  # leaf slots counted from the first leaf

    def margin(self, X: np.ndarray) -> np.ndarray:
        """Raw margin (log-odds) of each row of X; NaN is a missing value, as in XGBoost."""
        X = np.asarray(X, dtype=np.float32)
        if X.shape[0] == 1 and self._left_of is not None:
            return np.array([self._one_row(X[0])])
        return self._walk(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.shape[0] == 1 and self._left_of is not None:  # math on one float is cheaper than two ufunc calls
            return np.array([_sigmoid(self._one_row(X[0]))])
        return 1.0 / (1.0 + np.exp(-self._walk(X)))

    def _one_row(self, x: np.ndarray) -> float:
        """Decide every split at once, turn that into each slot's next slot, then hop D times."""
        assert self._left_of is not None
        values = x.take(self.feature)
        go = values >= self.threshold
        if math.isnan(x @ x):  # a NaN (and only a NaN: inf * inf is inf) makes the sum of squares NaN
            go |= np.isnan(values) & self.default_right  # NaN >= t was False (left): go its missing-value way
        nxt = self._left_of + go
        slot = self._first
        for _ in range(self.depth):
            slot = nxt.take(slot)
        return float(np.add.reduce(self.leaf_value.take(slot))) + self.base_margin

    def _walk(self, X: np.ndarray) -> np.ndarray:
        """All (row, tree) pairs down one level per step: three gathers and a compare each, except
        the first step, where every pair sits at its tree's root and the roots' splits are known."""
        n, width = X.shape
        missing = bool(np.isnan(X).any())
        slot = np.tile(self._roots, n)
        if self.depth:
            slot <<= 1
            slot += self._go(X[:, self.feature[self._roots]], self._roots, missing).reshape(-1)
        flat = X.reshape(-1)
        row_start = np.repeat(np.arange(0, n * width, width, dtype=np.intp), self.n_trees)
        at = np.empty_like(slot)
        for _ in range(self.depth - 1):
            np.take(self.feature, slot, out=at)
            at += row_start
            go = self._go(flat.take(at), slot, missing)
            slot <<= 1
            slot += go
        slot -= self.n_slots
        return self.leaf_value.take(slot).reshape(n, self.n_trees).sum(axis=1) + self.base_margin

    def _go(self, values: np.ndarray, slot: np.ndarray, missing: bool) -> np.ndarray:
        """Whether each value goes right at its slot's split (a NaN goes the split's missing-value way)."""
        go = values >= self.threshold.take(slot)
        if missing:
            go |= np.isnan(values) & self.default_right.take(slot)
        return go


def _sigmoid(m: float) -> float:
    if m >= 0:
        return 1.0 / (1.0 + math.exp(-m))
    e = math.exp(m)  # no overflow for very negative margins
    return e / (1.0 + e)


def _base_margin(learner: dict) -> float:
    raw = str(learner["learner_model_param"]["base_score"]).strip("[]")
    base_score = float(raw.split(",")[0])
    if not 0.0 < base_score < 1.0:
        raise ValueError(f"base_score {base_score} is not a probability")
    return math.log(base_score / (1.0 - base_score))


def _check_learner(learner: dict) -> list[dict]:
    """The trees of a single-output binary gbtree model; ValueError for anything else."""
    if learner["objective"]["name"] not in SUPPORTED_OBJECTIVES:
        raise ValueError(f"objective {learner['objective']['name']} not supported")
    params = learner["learner_model_param"]
    if int(params.get("num_class", 0)) > 1 or int(params.get("num_target", 1)) != 1:
        raise ValueError("multi-output models not supported")
    gb = learner["gradient_booster"]
    if gb["name"] != "gbtree":
        raise ValueError(f"booster {gb['name']} not supported")
    trees = gb["model"]["trees"]
    if not trees:
        raise ValueError("model has no trees")
    for t in trees:
        if any(int(s) != 0 for s in t.get("split_type", [])):
            raise ValueError("categorical splits not supported")
        if int(t["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise ValueError("vector leaves not supported")
    return trees


def _concat_nodes(trees: list[dict]) -> dict[str, np.ndarray]:
    """All trees' node arrays end to end (children renumbered), plus each tree's root."""
    sizes = [len(t["left_children"]) for t in trees]
    offsets = np.cumsum([0, *sizes[:-1]])

    def cat(key: str, dtype: type) -> np.ndarray:
        return np.concatenate([np.asarray(t[key], dtype=dtype) for t in trees])

    shift = np.repeat(offsets, sizes)
    left, right = cat("left_children", np.int64), cat("right_children", np.int64)
    leaf = left < 0
    return {
        "leaf": leaf,
        "left": np.where(leaf, -1, left + shift),
        "right": np.where(leaf, -1, right + shift),
        "feature": cat("split_indices", np.int64),
        "cond": cat("split_conditions", np.float32),
        "default_left": cat("default_left", np.int64).astype(bool),
        "roots": offsets.astype(np.int64),
    }


def _heap_nodes(nodes: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
    """For every slot of the padded heap, the XGBoost node it holds (slots below T: -1)."""
    leaf, level, depth = nodes["leaf"], nodes["roots"], 0
    per_level = [np.full(len(level), -1), level]
    while not leaf[level].all():
        depth += 1
        if len(level) * 2 > MAX_SLOTS:
            raise ValueError(f"padded forest would need more than {MAX_SLOTS} slots")
        # a leaf is copied into both children; a split's children follow it in heap order (2k, 2k + 1)
        children = np.stack(
            [np.where(leaf[level], level, nodes["left"][level]), np.where(leaf[level], level, nodes["right"][level])], axis=1
        )
        level = children.reshape(-1)
        per_level.append(level)
    return np.concatenate(per_level), depth


def _compile(booster: Any) -> TreeEnsemble:
    learner = json.loads(booster.save_raw("json"))["learner"]
    nodes = _concat_nodes(_check_learner(learner))
    heap, depth = _heap_nodes(nodes)
    n_trees = len(nodes["roots"])
    n_slots = n_trees << depth
    inner, leaves = heap[:n_slots], heap[n_slots:]
    # Unused slots (below T) and padding splits (a copied leaf) get feature 0 and an infinite threshold.
    is_split = (inner >= 0) & ~nodes["leaf"][inner]
    return TreeEnsemble(
        feature=np.where(is_split, nodes["feature"][inner], 0).astype(np.intp),
        threshold=np.where(is_split, nodes["cond"][inner], np.float32(np.inf)).astype(np.float32),
        default_right=is_split & ~nodes["default_left"][inner],
        leaf_value=nodes["cond"][leaves].astype(np.float64),
        n_trees=n_trees,
        depth=depth,
        base_margin=_base_margin(learner),
    )


def probe_matrix(ens: TreeEnsemble, n_features: int, rows: int = 256, seed: int = 0) -> np.ndarray:
    """Rows whose values sit exactly on, just below and just above split thresholds."""
    rng = np.random.default_rng(seed)
    X = np.zeros((rows, n_features), dtype=np.float32)
    real = ens.threshold != np.inf
    for f in range(n_features):
        t = ens.threshold[real & (ens.feature == f)]
        if len(t) == 0:
            X[:, f] = rng.normal(size=rows).astype(np.float32)
            continue
        pick = t[rng.integers(0, len(t), size=rows)]
        nudge = rng.integers(-1, 2, size=rows)
        X[:, f] = np.where(
            nudge < 0, np.nextafter(pick, np.float32(-np.inf)), np.where(nudge > 0, np.nextafter(pick, np.float32(np.inf)), pick)
        )
    return X


def compile_booster(
    booster: Any, n_features: int, reference: Callable[[np.ndarray], Any] | None = None, tolerance: float = 1e-5
) -> TreeEnsemble | None:
    """Compile and verify; None when unsupported or not identical to `reference`.

    `reference(X) -> probabilities` is the model's own scoring of an encoded matrix
    (default: the booster's `inplace_predict`), so whatever the model does (all trees,
    a best iteration) is what the compiled copy must reproduce. Both the one-row and
    the batch path are checked.
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
    except Exception:  # noqa: BLE001 - any surprise in the dump format: keep the booster
        return None
    if not np.allclose(got, expected, rtol=0, atol=tolerance):
        return None
    if not np.allclose(single, expected[:8], rtol=0, atol=tolerance):
        return None
    return ens
