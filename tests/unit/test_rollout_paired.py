"""Issue 22, item 1, the pure part: paired windows and the decision on them.

Each customer weighs one; a customer with more than half of the paired rows is reported and
left out; the shift is judged by its spread across customers; latency is per row on the same
requests; several replicas' windows merge into one judgement."""

from __future__ import annotations

import numpy as np

from kfct.components.rollout_decision import FAIL, PASS, WAIT, Thresholds, evaluate_step
from kfct.contracts.window_stats import WindowStats, merge_windows, paired_window


def _pairs(customers: int, shift: float, attacker_rows: int = 0, attacker_shift: float = 0.0, seed: int = 1):
    """Rows of VersionStats.pairs: honest single-row customers whose label differs with probability
    |shift|, plus one attacker customer (id 0) with `attacker_rows` rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(1, customers + 1):
        dl = float(np.sign(shift)) if rng.random() < abs(shift) else 0.0
        rows.append((1.0, c, 1, dl, dl * 0.3, 1e-4, 1e-4))
    if attacker_rows:
        rows.append((1.0, 0, attacker_rows, attacker_shift * attacker_rows, 0.0, 1e-4 * attacker_rows, 1e-4 * attacker_rows))
    return np.asarray(rows, dtype=np.float64)


def _window(pairs, version="2", requests=500) -> WindowStats:
    w = WindowStats(version, requests=requests, customers=requests)
    paired_window(w, pairs)
    return w


def test_one_customer_with_most_rows_is_reported_and_left_out():
    w = _window(_pairs(100, 0.0, attacker_rows=3000, attacker_shift=0.6))
    assert w.dominated and w.top_customer_share > 0.9 and w.paired_customers == 100
    assert abs(w.label_shift) < 0.05  # the attacker's 3,000 rows moved nothing
    verdict, reasons = evaluate_step(WindowStats("1", requests=500), w, Thresholds(min_requests=100))
    assert verdict == PASS and "left out of the judgement" in reasons[0]


def test_a_real_shift_fails_once_clear_and_waits_for_customers():
    thr = Thresholds(min_requests=100, min_customers=20)
    bad = _window(_pairs(200, -0.6))
    assert evaluate_step(WindowStats("1", requests=500), bad, thr)[0] == FAIL
    few = _window(_pairs(10, -0.6))
    verdict, reasons = evaluate_step(WindowStats("1", requests=500), few, thr)
    assert verdict == WAIT and "10 of 20 customers" in reasons[0]


def test_latency_is_per_row_on_the_same_requests():
    pairs = _pairs(100, 0.0)
    big = np.asarray([(1.0, 0, 1000, 0.0, 0.0, 0.5, 0.45)])  # a 1,000-row batch: 0.5 ms/row vs 0.45 ms/row
    w = _window(np.vstack([pairs, big]))
    thr = Thresholds(min_requests=100, min_p99_latency_delta_ms=0.1)
    assert evaluate_step(WindowStats("1", requests=500), w, thr)[0] == PASS
    slow = pairs.copy()
    slow[:, 5] = 0.06  # 60 ms per row vs 0.1 ms
    verdict, reasons = evaluate_step(WindowStats("1", requests=500), _window(slow), thr)
    assert verdict == FAIL and "p99 latency per row" in reasons[0]


def test_replica_windows_merge_into_one_judgement():
    a, b = _pairs(15, -0.7, seed=2), _pairs(15, -0.7, seed=3)
    b[:, 1] += 1000  # other customers
    parts = [
        {"requests": 300, "customers": 300, "instances": 300, "pairs": a.tolist()},
        {"requests": 300, "customers": 300, "instances": 300, "pairs": b.tolist()},
    ]
    w = merge_windows("2", parts)
    assert w.requests == 600 and w.paired_customers == 30
    thr = Thresholds(min_requests=100, min_customers=20)
    assert evaluate_step(WindowStats("1", requests=500), w, thr)[0] == FAIL  # neither replica alone has 20
    assert evaluate_step(WindowStats("1", requests=500), merge_windows("2", parts[:1]), thr)[0] == WAIT


def _exact_pairs(customers: int, flipped: int) -> np.ndarray:
    """`customers` single-row customers of whom exactly `flipped` are labelled churn by the canary only."""
    rows = [(1.0, c, 1, 1.0 if c <= flipped else 0.0, 0.0, 1e-4, 1e-4) for c in range(1, customers + 1)]
    return np.asarray(rows, dtype=np.float64)


def test_an_early_few_customers_past_the_limit_by_chance_wait_instead_of_failing_a_good_canary():
    """The CI run of b42a39d: a good canary (true shift ~+4 %, 294-580 customers per window in other
    runs) showed +13.9 % on the first poll of its 100 % step, 10 of 72 customers, z=3.0 against 0:
    rolled back. What must be clear is the excess over the limit, not the shift over 0."""
    thr = Thresholds(min_requests=40, min_customers=20, max_churn_rate_shift=0.10, significance_z=3.0)
    early = _window(_exact_pairs(72, 10))
    assert round(early.label_shift, 4) == 0.1389 and early.label_shift / early.label_shift_se >= 3.0
    verdict, reasons = evaluate_step(WindowStats("1", requests=500), early, thr)
    assert verdict == WAIT and "not yet clear: predicted churn rate shift +13.89%" in reasons[0], reasons
    later = _window(_exact_pairs(400, 16))  # more customers: +4 %, under the limit
    assert evaluate_step(WindowStats("1", requests=500), later, thr)[0] == PASS
    clear = _window(_exact_pairs(400, 120))  # +30 %: past the limit by 20 points, ~8.7 standard errors
    verdict, reasons = evaluate_step(WindowStats("1", requests=500), clear, thr)
    assert verdict == FAIL and "beyond it by z=" in reasons[0], reasons
