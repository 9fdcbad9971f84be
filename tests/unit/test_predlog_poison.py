"""Issue 22, item 3: a row the log cannot write never takes other rows with it, and every lost row
is counted (kfct_prediction_log_dropped_total). A lone UTF-16 surrogate reaching the writer used to
make the whole flush unencodable: 200 legitimate requests answered, 185 logged, 15 lost, counter 0."""

from __future__ import annotations

import time

import numpy as np


def _dropped_metric(reason: str) -> float:
    from kfct.serving.metrics import prometheus

    return prometheus().log_dropped.labels(reason)._value.get()


def test_poison_rows_are_counted_and_every_legitimate_row_is_logged(tmp_path):
    from kfct.prediction_log import read_prediction_log
    from kfct.serving.prediction_log import PredictionLogger

    before = _dropped_metric("unencodable")
    log = PredictionLogger(root=tmp_path, s3=False, flush_seconds=60, flush_rows=10_000)
    legit = poison = 0
    try:
        for i in range(200):
            recs = [{"customer_id": f"C{i}-{j}", "x": float(j), "plan": "basic"} for j in range(3)]
            rid = f"r{i}"
            if i % 20 == 5:  # a poisoned customer id on the second record
                recs[1]["customer_id"] = "C\ud800"
                poison += 1
            elif i % 20 == 9:  # a poisoned string feature
                recs[2]["plan"] = "\udfff"
                poison += 1
            elif i % 20 == 13:  # a poisoned request id: every row of that request is unwritable
                rid = "r\ud800"
                poison += 3
            legit += 3 - (1 if i % 20 in (5, 9) else 3 if i % 20 == 13 else 0)
            log.log(time.time(), rid, "m", "1", "champion", recs, np.full(3, 0.5), np.ones(3, np.int64), 0.5)
        assert log.flush(30)
    finally:
        log.close()
    df = read_prediction_log(root=tmp_path, s3=False)
    assert len(df) == legit == 600 - poison
    assert log.dropped == poison
    assert _dropped_metric("unencodable") - before == poison
