"""Statistics for judging two served models on realized outcomes (A/B tests, shadow).

Pure functions on numbers and arrays (numpy/scipy only), so every figure the A/B
report prints can be checked against scipy/statsmodels on fixed inputs.

- Fixed-horizon tests, as in the articles: two-proportion z-test on per-customer
  correctness, Welch's t-test, DeLong for AUC (independent arms, or paired when
  both models scored the same customers, as in shadow mode), Cohen's h / d.
- Sample size: labelled customers per arm needed to detect a minimum effect at
  a given power (normal approximation on Cohen's h).
- Peeking: a report run after every batch of outcomes inflates the false-positive
  rate of a fixed-horizon test. Decisions therefore use the mixture sequential
  probability ratio test (mSPRT; Johari, Pekelis & Walsh, "Always valid
  inference", 2017) on the difference of means with a normal mixing prior
  N(0, tau^2): its p-value stays valid however often it is looked at, provided the
  running minimum across looks is kept (`SequentialTest`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

Labels = np.ndarray | Sequence[float]  # 0/1 outcomes, one per customer


def _norm() -> Any:
    from scipy.stats import norm

    return norm


@dataclass
class TestResult:
    """One comparison of arm B against arm A: difference = B - A."""

    test: str
    estimate_a: float
    estimate_b: float
    diff: float
    ci_low: float
    ci_high: float
    statistic: float
    p_value: float
    n_a: int
    n_b: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def _rate(x: int, n: int, what: str) -> float:
    if n <= 0:
        raise ValueError(f"{what}: no observations")
    if not 0 <= x <= n:
        raise ValueError(f"{what}: {x} successes out of {n} observations")
    return x / n


def two_proportion_ztest(x_a: int, n_a: int, x_b: int, n_b: int, alpha: float = 0.05) -> TestResult:
    """Pooled z statistic (as statsmodels' proportions_ztest), unpooled Wald interval for p_b - p_a."""
    pa, pb = _rate(x_a, n_a, "arm A"), _rate(x_b, n_b, "arm B")
    pooled = (x_a + x_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    diff = pb - pa
    z = diff / se0 if se0 > 0 else 0.0
    p = float(2 * _norm().sf(abs(z)))
    se = math.sqrt(pa * (1 - pa) / n_a + pb * (1 - pb) / n_b)
    q = float(_norm().ppf(1 - alpha / 2))
    return TestResult(
        "two-proportion z-test", pa, pb, diff, diff - q * se, diff + q * se, z, p, n_a, n_b, {"cohens_h": cohens_h(pa, pb)}
    )


def welch_ttest(a: ArrayLike, b: ArrayLike, alpha: float = 0.05) -> TestResult:
    """Welch's unequal-variance t-test on per-customer values (e.g. correctness 0/1)."""
    from scipy.stats import t as student_t

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's t-test needs at least 2 observations per arm")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = float(b.mean() - a.mean())
    se = math.sqrt(va + vb)
    if se == 0:
        return TestResult(
            "Welch t-test",
            float(a.mean()),
            float(b.mean()),
            diff,
            diff,
            diff,
            0.0,
            1.0 if diff == 0 else 0.0,
            len(a),
            len(b),
            {"df": float("nan"), "cohens_d": 0.0},
        )
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = diff / se
    p = float(2 * student_t.sf(abs(t), df))
    q = float(student_t.ppf(1 - alpha / 2, df))
    return TestResult(
        "Welch t-test",
        float(a.mean()),
        float(b.mean()),
        diff,
        diff - q * se,
        diff + q * se,
        t,
        p,
        len(a),
        len(b),
        {"df": df, "cohens_d": cohens_d(a, b)},
    )


def cohens_h(p_a: float, p_b: float) -> float:
    """Effect size for two proportions: 2·asin(√p_b) − 2·asin(√p_a)."""
    return 2 * math.asin(math.sqrt(p_b)) - 2 * math.asin(math.sqrt(p_a))


def cohens_d(a: ArrayLike, b: ArrayLike) -> float:
    """Standardised mean difference (b − a) with the pooled standard deviation."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = len(a), len(b)
    pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    return float((b.mean() - a.mean()) / pooled) if pooled > 0 else 0.0


def n_per_arm(p_a: float, min_effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Labelled customers per arm to detect p_a → p_a + min_effect (two-sided, equal arms).

    n = 2·(z_{1−α/2} + z_{power})² / h², h = Cohen's h; the same normal approximation
    as statsmodels' NormalIndPower on h (which also adds the negligible far tail).
    """
    p_b = min(max(p_a + min_effect, 1e-9), 1 - 1e-9)
    h = abs(cohens_h(min(max(p_a, 1e-9), 1 - 1e-9), p_b))
    if h == 0:
        raise ValueError("min_effect must be non-zero")
    norm = _norm()
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return math.ceil(2 * z * z / (h * h))


# --------------------------------------------------------------------------- AUC (Mann-Whitney)


def auc_groups(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, int, np.ndarray]:
    """(group of each row, number of groups, positive mask): equal scores grouped once, so the AUC of
    many reweightings of the same rows (a Poisson bootstrap) costs O(n) each."""
    uniq, inv = np.unique(np.asarray(scores, dtype=float), return_inverse=True)
    return inv, len(uniq), np.asarray(labels).astype(bool)


def grouped_auc(inv: np.ndarray, n_groups: int, pos: np.ndarray, weights: np.ndarray | None = None) -> float:
    """ROC AUC over `auc_groups`' grouping, each row weighing `weights` (1 when None): the
    Mann-Whitney statistic, a tie counting one half, which is sklearn's `roc_auc_score`
    (tests/unit/test_outcomes_metrics.py). NaN when one class has no weight.

    Numpy only: the gate's bootstrap, reports and A/B looks compute it per resample, arm and
    window, where sklearn's input validation cost more than the sum itself."""
    wp = np.bincount(inv[pos], weights=None if weights is None else weights[pos], minlength=n_groups).astype(float)
    wn = np.bincount(inv[~pos], weights=None if weights is None else weights[~pos], minlength=n_groups).astype(float)
    tot_p, tot_n = wp.sum(), wn.sum()
    if tot_p == 0 or tot_n == 0:
        return float("nan")
    below = np.cumsum(wn) - wn  # negatives scored strictly lower
    return float((wp * (below + 0.5 * wn)).sum() / (tot_p * tot_n))


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC of `scores` for the 0/1 `labels` (NaN unless both occur)."""
    return grouped_auc(*auc_groups(labels, scores))


# --------------------------------------------------------------------------- AUC (DeLong)


def _structural(scores: ArrayLike, labels: ArrayLike) -> tuple[float, np.ndarray, np.ndarray]:
    """DeLong's structural components via midranks (Sun & Xu, 2014)."""
    from scipy.stats import rankdata

    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels).astype(bool)
    pos, neg = scores[labels], scores[~labels]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ValueError("AUC needs both outcomes (0 and 1) among the labelled customers")
    tz = rankdata(np.concatenate([pos, neg]))
    v10 = (tz[:m] - rankdata(pos)) / n
    v01 = 1.0 - (tz[m:] - rankdata(neg)) / m
    return float(v10.mean()), v10, v01


def auc_variance(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    auc, v10, v01 = _structural(scores, labels)
    return auc, float(v10.var(ddof=1) / len(v10) + v01.var(ddof=1) / len(v01))


def delong_unpaired(
    scores_a: ArrayLike, labels_a: Labels, scores_b: ArrayLike, labels_b: Labels, alpha: float = 0.05
) -> TestResult:
    """AUC of two arms scored on different customers (A/B): z on AUC_b − AUC_a."""
    auc_a, var_a = auc_variance(scores_a, labels_a)
    auc_b, var_b = auc_variance(scores_b, labels_b)
    return _auc_result("DeLong (independent arms)", auc_a, auc_b, var_a + var_b, len(labels_a), len(labels_b), alpha)


def delong_paired(labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike, alpha: float = 0.05) -> TestResult:
    """AUC of two models on the same customers (shadow): DeLong with the covariance term."""
    auc_a, v10a, v01a = _structural(scores_a, labels)
    auc_b, v10b, v01b = _structural(scores_b, labels)
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    cov = s10 / len(v10a) + s01 / len(v01a)
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    n = len(np.asarray(labels))
    return _auc_result("DeLong (paired)", auc_a, auc_b, var, n, n, alpha)


def _auc_result(name: str, auc_a: float, auc_b: float, var: float, n_a: int, n_b: int, alpha: float) -> TestResult:
    diff = auc_b - auc_a
    se = math.sqrt(max(var, 0.0))
    z = diff / se if se > 0 else 0.0
    p = float(2 * _norm().sf(abs(z))) if se > 0 else (1.0 if diff == 0 else 0.0)
    q = float(_norm().ppf(1 - alpha / 2))
    return TestResult(name, auc_a, auc_b, diff, diff - q * se, diff + q * se, z, p, n_a, n_b, {"se": se})


def mcnemar_paired(correct_a: ArrayLike, correct_b: ArrayLike) -> dict:
    """Exact McNemar test on paired per-customer correctness (shadow vs production)."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a).astype(bool), np.asarray(correct_b).astype(bool)
    only_b, only_a = int((b & ~a).sum()), int((a & ~b).sum())
    k = only_a + only_b
    p = 1.0 if k == 0 else float(binomtest(only_b, k, 0.5).pvalue)
    return {"test": "McNemar (exact)", "b_right_a_wrong": only_b, "a_right_b_wrong": only_a, "p_value": p}


# --------------------------------------------------------------------------- sequential (mSPRT)


def msprt(diff: float, variance: float, tau: float, alpha: float = 0.05) -> dict:
    """One look of the normal mSPRT for H0: θ = 0 with mixing prior N(0, τ²).

    Λ = √(V/(V+τ²)) · exp(τ²·d² / (2V(V+τ²))) with d the observed difference and V its
    variance; the always-valid p-value is min(1, 1/Λ) (take the running minimum
    across looks), and the confidence sequence is d ± √(V(V+τ²)/τ² · (log((V+τ²)/V) − 2 log α)).
    """
    if tau <= 0:
        raise ValueError("mSPRT tau must be positive")
    if variance <= 0:
        return {"lambda": 1.0, "p_value": 1.0, "ci_low": -math.inf, "ci_high": math.inf}
    v, t2 = variance, tau * tau
    log_lam = 0.5 * math.log(v / (v + t2)) + t2 * diff * diff / (2 * v * (v + t2))
    p = 1.0 if log_lam <= 0 else math.exp(-log_lam)
    half = math.sqrt(v * (v + t2) / t2 * (math.log((v + t2) / v) - 2 * math.log(alpha)))
    return {"lambda": math.exp(min(log_lam, 700.0)), "p_value": min(1.0, p), "ci_low": diff - half, "ci_high": diff + half}


B_BETTER, B_WORSE, INCONSISTENT = "b_better", "b_worse", "inconsistent"


@dataclass
class SequentialTest:
    """Running state of an always-valid test across looks (kept with the A/B test).

    One object decides: the running intersection of the confidence sequences. The test
    concludes at the first look where that interval excludes 0, and its direction is the
    interval's side of 0 (`verdict`), recorded with the look, the interval and the
    difference at that moment; later looks change nothing. (Significance from the running
    minimum p-value with the direction of the current difference promoted a B that the
    earlier look had shown worse.) An interval that becomes empty (the sequences disagree:
    the difference is not stable) also concludes, `inconsistent`: keep A.
    The per-look p <= alpha is the same event as 0 outside that look's sequence, so the
    intersection concludes no later than the running-minimum p-value did.
    """

    alpha: float
    tau: float
    min_p: float = 1.0
    ci_low: float = -math.inf
    ci_high: float = math.inf
    looks: int = 0
    verdict: str | None = None  # b_better / b_worse / inconsistent, once concluded
    concluded_at_look: int | None = None
    concluded_diff: float | None = None
    concluded_ci: list[float] | None = None

    def look(self, diff: float, variance: float) -> dict:
        r = msprt(diff, variance, self.tau, self.alpha)
        if self.verdict is None:
            self.looks += 1
            self.min_p = min(self.min_p, r["p_value"])
            # The running intersection of the confidence sequence is also valid at any time.
            self.ci_low, self.ci_high = max(self.ci_low, r["ci_low"]), min(self.ci_high, r["ci_high"])
            verdict = (
                INCONSISTENT
                if self.ci_low > self.ci_high
                else B_BETTER
                if self.ci_low > 0
                else B_WORSE
                if self.ci_high < 0
                else None
            )
            if verdict is not None:
                self.verdict, self.concluded_at_look = verdict, self.looks
                self.concluded_diff, self.concluded_ci = float(diff), [self.ci_low, self.ci_high]
        return {
            **r,
            "running_p_value": self.min_p,
            "running_ci": [self.ci_low, self.ci_high],
            "looks": self.looks,
            "verdict": self.verdict,
            "concluded_at_look": self.concluded_at_look,
        }

    @property
    def rejected(self) -> bool:
        """Concluded (either direction, or inconsistent): the decision is `verdict`, not a later difference."""
        return self.verdict is not None

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("ci_low", "ci_high"):
            if math.isinf(d[k]):
                d[k] = None
        return d

    @classmethod
    def from_json(cls, d: dict | None, alpha: float, tau: float) -> SequentialTest:
        if not d:
            return cls(alpha=alpha, tau=tau)
        return cls(
            alpha=float(d["alpha"]),
            tau=float(d["tau"]),
            min_p=float(d["min_p"]),
            ci_low=-math.inf if d.get("ci_low") is None else float(d["ci_low"]),
            ci_high=math.inf if d.get("ci_high") is None else float(d["ci_high"]),
            looks=int(d.get("looks", 0)),
            verdict=d.get("verdict"),
            concluded_at_look=d.get("concluded_at_look"),
            concluded_diff=d.get("concluded_diff"),
            concluded_ci=d.get("concluded_ci"),
        )


def mean_diff_variance(a: ArrayLike, b: ArrayLike) -> tuple[float, float]:
    """(mean_b − mean_a, its variance s²_a/n_a + s²_b/n_b) for the sequential test."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return 0.0, 0.0
    return float(b.mean() - a.mean()), float(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
