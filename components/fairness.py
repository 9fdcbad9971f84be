"""Fairness figures and the fairness gate: demographic parity and equalized odds per sensitive feature.

Pure numpy: the evaluate stage calls `fairness_report` on the test set (true labels,
thresholded predictions, one array of group values per sensitive feature) and
`fairness_gate` with `cfg.fairness`; a model over the limits is not deployed and the
reasons say which feature, which groups and by how much.

Definitions (Fairlearn's; tests/unit/test_fairness.py checks the figures against
`fairlearn.metrics` on the same data):
- selection rate of a group: share predicted positive;
- demographic parity difference: max - min selection rate across groups;
- equalized odds difference: max(TPR range, FPR range) across groups.
They are computed here rather than with Fairlearn because the gate needs what Fairlearn
does not give: minimum group sizes per rate, the groups behind each gap, and a standard
error per gap; and Fairlearn would be a runtime dependency of every stage image for four
subtractions.

Small groups make these figures noise, not signal, so a group with fewer than
`min_group_size` rows is left out (and listed as ignored). For the same reason a
group's TPR only enters the comparison when it has at least `min_group_size`
positives, and its FPR when it has at least `min_group_size` negatives: with 25
positives a TPR moves by +-0.1 from sampling alone.

Each difference also carries an approximate standard error (two independent
proportions, the max and the min group), so `fairness_gate` can, when
`significance_level` is configured, fail only differences that exceed the limit AND
are statistically distinguishable from zero (z-test, Bonferroni-adjusted for the
k(k-1)/2 group pairs the max-min gap was picked from). The packaged config sets
`fairness.significance_level: 0.05`; set it to null and the limit applies to the point
estimate alone, as in the case study, where on small test sets (a few thousand rows)
sampling noise by itself exceeds 0.10 for TPR/FPR gaps now and then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from kfct.config import FairnessConfig


def _binary(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    try:
        num = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must hold 0/1 values: {exc}") from exc
    if np.isnan(num).any():
        raise ValueError(f"{name} contains NaN at index {int(np.flatnonzero(np.isnan(num))[0])}")
    bad = ~np.isin(num, (0.0, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must hold 0/1 values; index {i} is {arr[i]!r}")
    return num.astype(np.int64)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _range(stats: dict[str, dict], key: str, count_key: str, min_count: int) -> dict:
    """max - min of stats[g][key] over groups with at least `min_count` in `count_key`."""
    eligible = {g: s for g, s in stats.items() if s[key] is not None and s[count_key] >= min_count}
    if len(eligible) < 2:
        return {"difference": 0.0, "max_group": None, "min_group": None, "se": 0.0, "groups_compared": len(eligible)}
    hi = max(eligible, key=lambda g: eligible[g][key])
    lo = min(eligible, key=lambda g: eligible[g][key])
    p1, n1 = eligible[hi][key], eligible[hi][count_key]
    p2, n2 = eligible[lo][key], eligible[lo][count_key]
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return {"difference": float(p1 - p2), "max_group": hi, "min_group": lo, "se": float(se), "groups_compared": len(eligible)}


def fairness_report(y_true: Any, y_pred: Any, groups: dict[str, Any], min_group_size: int) -> dict:
    """Per sensitive feature: per-group size, selection rate, TPR, FPR; DP and EO differences.

    `y_true`, `y_pred`: 0/1 arrays of equal length (predictions already thresholded).
    `groups`: {feature name: array of group values, same length}. Returns
    `{feature: {"groups": {value: {...}}, "ignored_groups": {value: size},
    "demographic_parity_difference", "equalized_odds_difference", "tpr_difference",
    "fpr_difference", "selection_rate": {...}, "tpr": {...}, "fpr": {...}, "comparable"}}`.
    """
    y = _binary("y_true", y_true)
    p = _binary("y_pred", y_pred)
    if len(y) != len(p):
        raise ValueError(f"y_true has {len(y)} values but y_pred has {len(p)}")
    if not isinstance(groups, Mapping):
        raise ValueError(f"groups must be a dict of feature name -> values, got {type(groups).__name__}")
    min_size = int(min_group_size)
    if min_size < 1:
        raise ValueError(f"min_group_size must be >= 1, got {min_group_size}")

    report: dict[str, dict] = {}
    for feature, values in groups.items():
        g = np.asarray(values)
        if g.ndim != 1 or len(g) != len(y):
            raise ValueError(
                f"sensitive feature {feature!r} has {len(g) if g.ndim == 1 else g.shape} values, "
                f"expected {len(y)} (one per prediction)"
            )
        g = g.astype(str)
        stats: dict[str, dict] = {}
        ignored: dict[str, int] = {}
        for value in np.unique(g):
            m = g == value
            n = int(m.sum())
            if n < min_size:
                ignored[str(value)] = n
                continue
            pos = m & (y == 1)
            neg = m & (y == 0)
            n_pos, n_neg = int(pos.sum()), int(neg.sum())
            stats[str(value)] = {
                "size": n,
                "positives": n_pos,
                "negatives": n_neg,
                "selection_rate": float(p[m].mean()),
                "tpr": _rate(int(p[pos].sum()), n_pos),
                "fpr": _rate(int(p[neg].sum()), n_neg),
            }
        sr = _range(stats, "selection_rate", "size", min_size)
        tpr = _range(stats, "tpr", "positives", min_size)
        fpr = _range(stats, "fpr", "negatives", min_size)
        eo = max(tpr["difference"], fpr["difference"])
        report[str(feature)] = {
            "groups": stats,
            "ignored_groups": ignored,
            "min_group_size": min_size,
            "demographic_parity_difference": sr["difference"],
            "equalized_odds_difference": float(eo),
            "tpr_difference": tpr["difference"],
            "fpr_difference": fpr["difference"],
            "selection_rate": sr,
            "tpr": tpr,
            "fpr": fpr,
            # False when fewer than two groups are large enough: no disparity can be measured.
            "comparable": sr["groups_compared"] >= 2,
        }
    return report


def _significant(diff: float, se: float, groups: int, level: float | None) -> tuple[bool, float | None]:
    """Two-sided z-test of diff == 0, Bonferroni-adjusted for the pairs the max-min was picked from.

    The max-min pair is the most extreme of k(k-1)/2 pairwise gaps, so its raw p-value is
    multiplied by that count. With no level every difference counts as significant.
    """
    if level is None:
        return True, None
    if se <= 0:
        return diff > 0, 0.0 if diff > 0 else 1.0
    pairs = max(1, groups * (groups - 1) // 2)
    pvalue = min(1.0, math.erfc(abs(diff) / se / math.sqrt(2.0)) * pairs)
    return pvalue < float(level), pvalue


def fairness_gate(report: dict, cfg: FairnessConfig, sensitive_features: list[str] | None = None) -> tuple[bool, list[str]]:
    """Check the report against the limits in `cfg.fairness`: (passed, reasons naming feature, groups and figures).

    `sensitive_features` is `dataset.sensitive_features` (None: every feature in the report).
    Fails when a configured sensitive feature has no figures (the data lacks it) or when
    its demographic parity / equalized odds difference is above the limit (and, when
    `significance_level` is set, statistically significant).
    """
    if not cfg.enabled:
        return True, ["fairness gate disabled"]
    max_dp = float(cfg.max_demographic_parity_difference)
    max_eo = float(cfg.max_equalized_odds_difference)
    level = None if not cfg.significance_level else float(cfg.significance_level)
    features = list(report.keys() if sensitive_features is None else sensitive_features)
    passed = True
    reasons: list[str] = []
    for feature in features:
        r = report.get(feature)
        if r is None:
            passed = False
            reasons.append(f"fairness: no figures for sensitive feature {feature!r} (column missing from the test set)")
            continue
        if not r.get("comparable", True):
            reasons.append(
                f"fairness {feature}: fewer than two groups with >= {r.get('min_group_size')} rows, disparity not measurable"
            )
            continue
        checks = (
            ("demographic parity difference", r["demographic_parity_difference"], max_dp, r["selection_rate"], "selection rate"),
            (
                "equalized odds difference",
                r["equalized_odds_difference"],
                max_eo,
                r["tpr"] if r["tpr_difference"] >= r["fpr_difference"] else r["fpr"],
                "TPR" if r["tpr_difference"] >= r["fpr_difference"] else "FPR",
            ),
        )
        for name, value, limit, detail, what in checks:
            over = value > limit
            sig, pvalue = (
                _significant(value, detail.get("se", 0.0), detail.get("groups_compared", 2), level) if over else (False, None)
            )
            groups = ""
            if detail.get("max_group") is not None:
                groups = f" ({what} {detail['max_group']} vs {detail['min_group']})"
            if over and sig:
                passed = False
                extra = f", p={pvalue:.3g} < {level}" if pvalue is not None else ""
                reasons.append(f"fairness {feature}: {name} {value:.4f} > {limit}{groups}{extra}")
            elif over:
                reasons.append(
                    f"fairness {feature}: {name} {value:.4f} > {limit}{groups} but not significant "
                    f"(p={pvalue:.3g} >= {level}): passes"
                )
            else:
                reasons.append(f"fairness {feature}: {name} {value:.4f} <= {limit}")
    return passed, reasons
