"""A/B statistics checked against scipy and statsmodels on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kfct.evidence import abstats


def test_two_proportion_ztest_matches_statsmodels():
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    r = abstats.two_proportion_ztest(412, 1000, 463, 1000)
    z, p = proportions_ztest([463, 412], [1000, 1000])
    assert r.statistic == pytest.approx(z, rel=1e-9) and r.p_value == pytest.approx(p, rel=1e-9)
    lo, hi = confint_proportions_2indep(463, 1000, 412, 1000, method="wald", compare="diff")
    assert (r.ci_low, r.ci_high) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))
    assert r.diff == pytest.approx(0.051)


def test_welch_matches_scipy():
    from scipy.stats import ttest_ind

    rng = np.random.default_rng(3)
    a, b = rng.normal(0.0, 1.0, 70), rng.normal(0.4, 2.0, 45)
    r = abstats.welch_ttest(a, b)
    ref = ttest_ind(b, a, equal_var=False)
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (r.ci_low, r.ci_high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))


def test_effect_sizes():
    from statsmodels.stats.proportion import proportion_effectsize

    assert abstats.cohens_h(0.5, 0.6) == pytest.approx(-proportion_effectsize(0.5, 0.6), rel=1e-9)
    a, b = np.array([1.0, 2, 3, 4]), np.array([2.0, 3, 4, 5, 6])
    pooled = math.sqrt((3 * a.var(ddof=1) + 4 * b.var(ddof=1)) / 7)
    assert abstats.cohens_d(a, b) == pytest.approx((b.mean() - a.mean()) / pooled)


@pytest.mark.parametrize("p_a,effect", [(0.80, 0.02), (0.5, 0.05), (0.9, -0.03)])
def test_sample_size_matches_statsmodels_power(p_a, effect):
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    h = abs(proportion_effectsize(p_a + effect, p_a))
    ref = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=1.0)
    assert abs(abstats.n_per_arm(p_a, effect) - math.ceil(ref)) <= 1


def test_delong_auc_and_variance_against_sklearn_and_bootstrap():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 600)
    s = y * 0.8 + rng.normal(0, 1, 600)
    auc, var = abstats.auc_variance(s, y)
    assert auc == pytest.approx(roc_auc_score(y, s), rel=1e-12)
    boots = []
    for _ in range(400):
        i = rng.integers(0, 600, 600)
        boots.append(roc_auc_score(y[i], s[i]))
    assert math.sqrt(var) == pytest.approx(np.std(boots), rel=0.15)


def test_delong_paired_is_tighter_than_unpaired_for_correlated_models():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 800)
    base = y * 1.0 + rng.normal(0, 1, 800)
    a, b = base + rng.normal(0, 0.3, 800), base + rng.normal(0, 0.3, 800)
    paired = abstats.delong_paired(y, a, b)
    unpaired = abstats.delong_unpaired(a, y, b, y)
    assert paired.diff == pytest.approx(unpaired.diff)
    assert paired.extra["se"] < unpaired.extra["se"] / 2


def test_mcnemar_matches_statsmodels_exact():
    from statsmodels.stats.contingency_tables import mcnemar

    rng = np.random.default_rng(2)
    ca, cb = rng.random(300) < 0.7, rng.random(300) < 0.75
    r = abstats.mcnemar_paired(ca, cb)
    table = [[np.sum(ca & cb), np.sum(ca & ~cb)], [np.sum(~ca & cb), np.sum(~ca & ~cb)]]
    assert r["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)


def test_msprt_values_and_confidence_sequence():
    v, tau, d = 0.0004, 0.02, 0.05
    r = abstats.msprt(d, v, tau, alpha=0.05)
    lam = math.sqrt(v / (v + tau**2)) * math.exp(tau**2 * d**2 / (2 * v * (v + tau**2)))
    assert r["lambda"] == pytest.approx(lam) and r["p_value"] == pytest.approx(min(1, 1 / lam))
    # the confidence sequence excludes exactly the values the test rejects
    for theta in (r["ci_low"], r["ci_high"]):
        edge = abstats.msprt(d - theta, v, tau, alpha=0.05)
        assert edge["p_value"] == pytest.approx(0.05, rel=1e-6)
    assert abstats.msprt(0.0, v, tau)["p_value"] == 1.0


def test_sequential_state_keeps_the_running_minimum_and_roundtrips():
    t = abstats.SequentialTest(alpha=0.05, tau=0.02)
    t.look(0.05, 0.0004)
    low = t.min_p
    t.look(0.0, 0.0004)
    assert t.min_p == low and t.looks == 2
    again = abstats.SequentialTest.from_json(t.to_json(), 0.05, 0.02)
    assert again.min_p == low and again.looks == 2
