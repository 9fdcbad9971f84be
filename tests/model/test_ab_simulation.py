"""A/B decisions on simulated outcomes drawn from the generator's ground truth.

Models are the ground truth seen through noise: arm B with less noise is truly better
(by a margin that the ground truth fixes), two arms with the same noise are identical.
The sequential test is looked at after every batch of outcomes (peeking), as an
operator running `kfct ab report` daily would.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kfct import abstats
from kfct.components.ab_test import ab_report_core

def _cfg():
    from kfct.config import load_config

    return load_config(overrides={"ab": {"alpha": 0.05, "power": 0.8, "min_effect": 0.02, "min_per_arm": 100,
                                         "max_duration_days": 28}})


CFG = _cfg()


def _world(n: int, seed: int):
    from kfct.datagen import _sigmoid, churn_logit, generate

    df = generate(n, seed=seed)
    z = churn_logit(df)
    rng = np.random.default_rng(seed + 1)
    y = (rng.random(n) < _sigmoid(z + rng.normal(0, 0.45, n))).astype(int)
    return z, y, rng


def _joined(z, y, rng, noise_a: float, noise_b: float, thr: float = 0.5):
    n = len(y)
    arm_b = rng.random(n) < 0.5
    noise = np.where(arm_b, noise_b, noise_a)
    from kfct.datagen import _sigmoid

    p = _sigmoid(z + rng.normal(0, 1, n) * noise)
    ts = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s")
    return pd.DataFrame({"ts": ts, "request_id": [f"r{i}" for i in range(n)],
                         "model_version": np.where(arm_b, "2", "1"), "role": np.where(arm_b, "canary", "champion"),
                         "customer_id": [f"c{i}" for i in range(n)], "probability": p,
                         "label": (p >= thr).astype(int), "threshold": thr, "outcome": y,
                         "observed_at": ts + pd.Timedelta(days=3)})


def _run(joined, batches: int):
    state = {"model_name": "m", "arm_a": "1", "arm_b": "2", "percent": 50, "started_at": 0.0,
             "started_at_iso": "2025-12-31T00:00:00Z", "sequential": None}
    naive_rejected = False
    rep = None
    for k in range(1, batches + 1):
        part = joined.iloc[: len(joined) * k // batches]
        rep = ab_report_core(part, state, CFG, now=1.0)
        state["sequential"] = rep["sequential_state"]
        naive_rejected |= rep.get("z_test", {}).get("p_value", 1.0) <= 0.05
        if rep["decision"]["action"] != "continue":
            break
    return rep, naive_rejected


def test_a_truly_better_b_is_declared_the_winner():
    z, y, rng = _world(30_000, seed=8)
    joined = _joined(z, y, rng, noise_a=2.0, noise_b=0.2)
    truth_gap = (joined[joined.role == "canary"].label == joined[joined.role == "canary"].outcome).mean() - \
                (joined[joined.role == "champion"].label == joined[joined.role == "champion"].outcome).mean()
    assert truth_gap > 0.02
    rep, _ = _run(joined, batches=10)
    assert rep["decision"]["action"] == "promote_b", rep["decision"]
    assert rep["cohens_h"] > 0


@pytest.mark.slow  # 120 simulated tests, 10 looks each: make test, not make test-fast
def test_identical_arms_keep_the_false_positive_rate_under_alpha_despite_peeking():
    runs, fp_seq, fp_naive = 120, 0, 0
    for seed in range(runs):
        z, y, rng = _world(2_000, seed=1000 + seed)
        rep, naive = _run(_joined(z, y, rng, noise_a=1.0, noise_b=1.0), batches=10)
        fp_seq += rep["decision"]["action"] != "continue"
        fp_naive += naive
    rate = fp_seq / runs
    print(f"identical arms, 10 looks each, {runs} runs: sequential FPR {rate:.3f}, naive peeking FPR {fp_naive / runs:.3f}")
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / runs), rate   # at most alpha (binomial slack)
    assert fp_naive >= fp_seq  # the fixed-horizon test, peeked at, rejects more often


def test_sample_size_shrinks_as_outcomes_arrive():
    z, y, rng = _world(6_000, seed=4)
    joined = _joined(z, y, rng, noise_a=1.0, noise_b=1.0)
    state = {"model_name": "m", "arm_a": "1", "arm_b": "2", "percent": 50, "started_at": 0.0,
             "started_at_iso": "2025-12-31T00:00:00Z", "sequential": None}
    small = ab_report_core(joined.iloc[:1000], state, CFG, now=1.0, record_look=False)
    big = ab_report_core(joined, state, CFG, now=1.0, record_look=False)
    assert small["sample_size"]["more_needed"] > big["sample_size"]["more_needed"]
    assert abstats.n_per_arm(small["arms"]["A"]["accuracy"], 0.02) == small["sample_size"]["per_arm_needed"]
