"""Issue 22, item 3: a row the log cannot write never takes other rows with it, and every lost row
is counted (kfct_prediction_log_dropped_total). A lone UTF-16 surrogate reaching the writer used to
make the whole flush unencodable: 200 legitimate requests answered, 185 logged, 15 lost, counter 0."""

from __future__ import annotations

import time

import numpy as np
import pytest


def _dropped_metric(reason: str) -> float:
    from kfct.serving.metrics import prometheus

    return prometheus().log_dropped.labels(reason)._value.get()


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "child-encoder"])
def test_poison_rows_are_counted_and_every_legitimate_row_is_logged(tmp_path, in_child):
    from kfct.contracts.prediction_log import read_prediction_log
    from kfct.serving.prediction_log import PredictionLogger

    before = _dropped_metric("unencodable")
    log = PredictionLogger(root=tmp_path, s3=False, flush_seconds=60, flush_rows=10_000, encode_in_child=in_child)
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
        assert log.flush(60)
        assert in_child == (log._encoder is not None and log._encoder._pool is not None)  # it ran in the child
    finally:
        log.close()
    df = read_prediction_log(root=tmp_path, s3=False)
    assert len(df) == legit == 600 - poison
    assert log.dropped == poison
    assert _dropped_metric("unencodable") - before == poison


def test_per_request_values_are_stored_once_per_request_and_a_missing_request_id_is_written(tmp_path):
    """Issue 22, item 2: per-request values once per request (a dictionary column), nulls included."""
    import pyarrow.parquet as pq

    from kfct.contracts.prediction_log import read_prediction_log
    from kfct.serving.prediction_log import build_table

    rid = "x" * 10_000
    items = [
        (
            1.0,
            rid,
            "m",
            "1",
            "champion",
            [{"customer_id": f"C{j}", "x": 1.0} for j in range(500)],
            np.full(500, 0.5),
            np.ones(500, np.int64),
            0.5,
        ),
        (2.0, None, "m", "1", "canary", [{"customer_id": "D", "x": 2.0}], np.full(1, 0.2), np.zeros(1), 0.5),
    ]
    table = build_table(items)
    col = table.column("request_id").combine_chunks()
    assert len(col.dictionary) == 1 and col.null_count == 1  # the 10 kB id held once, not 500 times
    assert table.column("request_id").nbytes < 20_000
    (tmp_path / "date=1970-01-01").mkdir()
    pq.write_table(table, tmp_path / "date=1970-01-01" / "part-1000-2000-w-1.parquet")
    df = read_prediction_log(root=tmp_path, s3=False)
    assert df["request_id"].tolist() == [rid] * 500 + [None] and df["role"].iloc[-1] == "canary"
