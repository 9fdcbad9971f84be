"""Issue 22, item 6: the prediction log's work off the serving process's request path.

What the server keeps of a logged request until the flush is one bytes object (pickled on the
request path): the garbage collector has nothing of the buffered rows to traverse, and the flush
sends the child one payload instead of pickling every row's dict under the GIL. The encoder child
runs at a lower CPU priority than the server. Timings live in `python -m bench --only tail`; these
tests hold the properties that make them, and that nothing is lost or changed on the way.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import time

import numpy as np
import pytest


def _records(i: int, n: int = 2) -> list[dict]:
    return [{"customer_id": f"C{i}-{j}", "x": float(j), "plan": "basic", "tickets": j} for j in range(n)]


def test_buffered_requests_hold_nothing_for_the_garbage_collector(tmp_path):
    """2,000 buffered requests used to keep ~4,000 GC-tracked objects (each request's records list
    and its tuple) alive until the flush, traversed by every collection meanwhile."""
    from kfct.serving.prediction_log import PredictionLogger

    log = PredictionLogger(root=tmp_path, s3=False, flush_seconds=3600, flush_rows=1_000_000)
    try:
        gc.collect()
        before = len(gc.get_objects())
        for i in range(2000):
            log.log(time.time(), f"r{i}", "m", "1", "champion", _records(i), np.full(2, 0.5), np.ones(2, np.int64), 0.5)
        gc.collect()
        assert log.files_written == 0  # all still waiting for the flush
        assert len(gc.get_objects()) - before < 200
        assert log.flush(60)
        assert log.rows_written == 4000
    finally:
        log.close()


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "child-encoder"])
def test_values_reach_the_log_unchanged(tmp_path, in_child):
    """Pickled on the request path, decoded in the child: NaN stays NaN, None null, numpy scalars
    (V2 binary rows) numbers, big ints, unicode, the request id and the per-request values as sent."""
    from kfct.contracts.prediction_log import read_prediction_log
    from kfct.serving.prediction_log import PredictionLogger

    log = PredictionLogger(root=tmp_path, s3=False, flush_seconds=3600, encode_in_child=in_child)
    recs = [
        {"customer_id": "Zoë-1", "x": math.nan, "n": None, "big": 2**62, "f32": np.float32(1.5), "plan": "ü"},
        {"customer_id": "C-2", "x": 2.0, "n": 3.0, "big": 7, "f32": np.float32(2.5), "plan": "basic"},
    ]
    try:
        log.log(1_700_000_000.25, "rid-é", "m", "7", "canary", recs, np.array([0.1, 0.9]), np.array([0, 1]), 0.4)
        assert log.flush(60)
    finally:
        log.close()
    df = read_prediction_log(root=tmp_path, s3=False)
    assert df["customer_id"].tolist() == ["Zoë-1", "C-2"] and df["plan"].tolist() == ["ü", "basic"]
    assert math.isnan(df["x"].iloc[0]) and df["x"].iloc[1] == 2.0
    assert df["big"].tolist() == [float(2**62), 7.0] and df["f32"].tolist() == [1.5, 2.5]
    assert df["probability"].tolist() == [0.1, 0.9] and df["label"].tolist() == [0, 1]
    assert set(df["request_id"]) == {"rid-é"} and set(df["role"]) == {"canary"} and set(df["threshold"]) == {0.4}
    assert df["ts"].iloc[0].timestamp() == pytest.approx(1_700_000_000.25)


def test_the_encoder_child_runs_below_the_servers_priority():
    """Its burst of encoding every flush yields to request handling on shared cores."""
    from kfct.serving.predlog_encoder import BACKGROUND_NICE, ChildEncoder, encode_payload

    enc = ChildEncoder()
    try:
        enc.encode(b"", "customer_id")  # starts the child (an empty batch encodes to nothing)
        child_nice = enc._pool.submit(os.nice, 0).result(timeout=60)
    finally:
        enc.close()
    assert child_nice == min(19, os.nice(0) + BACKGROUND_NICE)
    assert encode_payload(b"", "customer_id") == (None, 0, 0, None)


def test_requests_taken_but_not_yet_batched_still_count_against_the_byte_bound(tmp_path):
    """The collector swaps the whole buffer out at once; until those requests are batched their bytes
    stay in `max_queue_bytes`, or a slow encoder would let the server hold twice the bound (and more
    with each take). Nothing is lost silently: every request is written or counted as dropped."""
    import threading

    from kfct.serving.prediction_log import PredictionLogger

    log = PredictionLogger(root=tmp_path, s3=False, flush_seconds=3600, flush_rows=20, max_queue_bytes=60_000)
    release = threading.Event()
    real_batch = log._batch

    def slow_batch(items):  # an encoder that cannot keep up
        release.wait(60)
        real_batch(items)

    log._batch = slow_batch
    sent = 0

    def send() -> None:
        nonlocal sent
        log.log(time.time(), f"r{sent}", "m", "1", "champion", _records(sent, 10), np.full(10, 0.5), np.ones(10, np.int64), 0.5)
        sent += 10

    try:
        while log.dropped == 0:
            send()
        time.sleep(1.0)  # the collector has taken the buffer and waits in the encoder
        assert log.queued == 0
        before = log.dropped
        send()
        assert log.dropped == before + 10  # still full: what was taken has not been batched
        release.set()
        assert log.flush(60)
    finally:
        release.set()
        log.close()
    assert log.rows_written + log.dropped == sent


def test_shutdown_writes_the_last_rows_even_when_the_encoder_child_is_stuck(tmp_path):
    """Flush on shutdown within its budget: a child that stopped answering (here SIGSTOP; a
    low-priority child on a saturated machine looks the same) used to hold the final flush for its
    120 s timeout, past close()'s budget, and the rows still queued were lost with the process."""
    import signal

    from kfct.serving.prediction_log import PredictionLogger

    log = PredictionLogger(root=tmp_path, s3=False, flush_seconds=3600, encode_in_child=True)
    pid = None
    try:
        log.log(time.time(), "r0", "m", "1", "champion", _records(0), np.full(2, 0.5), np.ones(2, np.int64), 0.5)
        assert log.flush(60)  # the child is up and wrote the first batch
        pid = next(iter(log._encoder._pool._processes))
        os.kill(pid, signal.SIGSTOP)
        for i in range(1, 6):
            log.log(time.time(), f"r{i}", "m", "1", "champion", _records(i), np.full(2, 0.5), np.ones(2, np.int64), 0.5)
        log._flush_req.set()  # the collector is now waiting on the stuck child
        time.sleep(0.5)
        t0 = time.monotonic()
        log.close(timeout=5)
        assert time.monotonic() - t0 < 8
    finally:
        if pid is not None:
            for sig in (signal.SIGKILL, signal.SIGCONT):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
    assert log.rows_written == 12 and log.dropped == 0
