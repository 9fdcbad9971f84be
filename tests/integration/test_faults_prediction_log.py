"""The prediction log survives the store going away (issue 12, item 1; disk full: item 5).

Real parts: moto's S3 server on loopback, reached through `tests.faultkit.FaultProxy`, the
same minio client code used with MinIO. Before the backlog existed every batch written
during an outage was lost ("prediction log write failed (300 rows lost)").
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from tests.faultkit.proxy import FaultProxy
from tests.faultkit.servers import fill, moto_s3, tiny_disk, tmpfs_available

pytestmark = pytest.mark.slow


@pytest.fixture
def store(tmp_path, monkeypatch):
    """moto S3 behind a fault proxy; KFCT_S3_ENDPOINT points at the proxy."""
    import uuid

    from kfct.runtime.settings import reset_settings

    bucket = f"kfct-faults-{uuid.uuid4().hex[:8]}"  # moto's backend is shared by every server in the process
    with moto_s3() as (host, port), FaultProxy(host, port) as proxy:
        monkeypatch.setenv("KFCT_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("KFCT_S3_ENDPOINT", proxy.address)
        monkeypatch.setenv("KFCT_S3_ACCESS_KEY", "testing")
        monkeypatch.setenv("KFCT_S3_SECRET_KEY", "testing")
        monkeypatch.setenv("KFCT_S3_BUCKET", bucket)
        monkeypatch.setenv("KFCT_S3_REGION", "us-east-1")
        monkeypatch.setenv("KFCT_PREDICTION_LOG_SPILL_DIR", str(tmp_path / "spill"))
        reset_settings()
        from kfct.data import s3

        s3.client().make_bucket(bucket)
        yield proxy
        reset_settings()


def _log_rows(logger, start: int, n: int, per_request: int = 10) -> None:
    """n rows, request ids r<start>.. in time order (one request = per_request rows)."""
    for i in range(start, start + n, per_request):
        k = min(per_request, start + n - i)
        recs = [{"customer_id": f"C{i + j}", "tenure_days": float(i + j), "contract_type": "monthly"} for j in range(k)]
        logger.log(
            time.time(),
            f"r{i:07d}",
            "churn-classifier",
            "1",
            "champion",
            recs,
            np.full(k, 0.25),
            np.zeros(k, dtype=np.int64),
            0.5,
        )


def _stored():
    from kfct.contracts.prediction_log import read_prediction_log

    return read_prediction_log()


def _spill_files(tmp_path):
    d = tmp_path / "spill"
    return sorted(p.name for p in d.glob("part-*.parquet")) if d.exists() else []


def test_rows_logged_during_an_outage_all_arrive_in_order_without_duplicates(store, tmp_path, monkeypatch):
    from kfct.data import s3
    from kfct.serving.prediction_log import PredictionLogger

    uploaded: list[str] = []  # keys in the order the store received them (the real upload runs)
    real_put = getattr(s3, "put_bytes", None)

    def spy(data, uri, *a, **kw):
        out = real_put(data, uri, *a, **kw)
        uploaded.append(uri.rsplit("/", 1)[-1])
        return out

    monkeypatch.setattr(s3, "put_bytes", spy, raising=False)
    logger = PredictionLogger(flush_seconds=0.1)
    try:
        _log_rows(logger, 0, 500)
        assert logger.flush(20)
        store.mode = "refuse"  # MinIO away
        for k in range(10):  # 3,000 rows over ~2 s of outage, batched every 0.1 s
            _log_rows(logger, 500 + k * 300, 300)
            time.sleep(0.2)
        assert not logger.flush(1.0)  # cannot reach the store: not done, and says so
        st = logger.status()
        assert st["store_ok"] is False and st["backlog_rows"] == 3000 and st["dropped"] == 0
        assert len(_spill_files(tmp_path)) == st["backlog_files"]  # on disk: a restart would keep them
        store.mode = "pass"  # it is back
        _log_rows(logger, 3500, 200)
        assert logger.flush(30), logger.status()
    finally:
        logger.close()
    df = _stored()
    assert len(df) == 3700 and df["customer_id"].is_unique  # nothing lost, nothing twice
    assert sorted(df["customer_id"]) == sorted(f"C{i}" for i in range(3700))
    seqs = [int(name.rsplit("-", 1)[1].split(".")[0]) for name in uploaded]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))  # in order, each batch once
    assert _spill_files(tmp_path) == [] and logger.status()["backlog_rows"] == 0


def test_what_shutdown_cannot_upload_stays_on_disk_and_the_next_start_uploads_it(store, tmp_path):
    from kfct.serving.prediction_log import PredictionLogger

    store.mode = "refuse"
    first = PredictionLogger(flush_seconds=0.1)
    _log_rows(first, 0, 1200)
    first.close(timeout=1.0)  # SIGTERM during the outage (kfct serve's handler calls close())
    left = _spill_files(tmp_path)
    assert left, "nothing kept on disk"
    store.mode = "pass"
    second = PredictionLogger(flush_seconds=0.1)  # the next pod start, same spill directory
    try:
        _log_rows(second, 1200, 100)
        assert second.flush(30), second.status()
    finally:
        second.close()
    df = _stored()
    assert len(df) == 1300 and df["customer_id"].is_unique
    assert _spill_files(tmp_path) == []


def test_a_full_backlog_drops_counts_and_logs_once_per_episode(store, tmp_path, caplog):
    from kfct.serving.metrics import prometheus
    from kfct.serving.prediction_log import PredictionLogger

    before = prometheus().log_dropped.labels("spill_full")._value.get()
    store.mode = "refuse"
    logger = PredictionLogger(flush_seconds=0.05, spill_max_rows=1000)
    caplog.set_level(logging.WARNING, logger="kfct.serving.predlog")
    try:
        for _ in range(6):
            _log_rows(logger, 0, 400)
            time.sleep(0.15)
        logger.flush(0.5)
        st = logger.status()
        assert st["backlog_rows"] <= 1000 and st["dropped"] > 0
        assert prometheus().log_dropped.labels("spill_full")._value.get() - before == st["dropped"]
        assert caplog.text.count("backlog full") == 1  # one line per episode, not per batch
        store.mode = "pass"
        assert logger.flush(30)
    finally:
        logger.close()
    assert len(_stored()) == 2400 - st["dropped"]


def _check_disk_full_keeps_serving_rows_in_memory(store, spill_dir, caplog):
    from kfct.serving.metrics import prometheus
    from kfct.serving.prediction_log import PredictionLogger

    caplog.set_level(logging.WARNING, logger="kfct.serving.predlog")
    store.mode = "refuse"
    logger = PredictionLogger(flush_seconds=0.05, spill_dir=spill_dir)
    try:
        for k in range(5):
            _log_rows(logger, k * 200, 200)
            time.sleep(0.12)
        logger.flush(0.5)
        st = logger.status()
        assert st["spill_disk_full"] is True and st["dropped"] == 0 and st["backlog_rows"] == 1000
        assert prometheus().log_spill_disk_full._value.get() == 1
        assert caplog.text.count("disk full") == 1  # said once, not per batch
        store.mode = "pass"
        assert logger.flush(30), logger.status()
    finally:
        logger.close()
    assert len(_stored()) == 1000


def test_spill_disk_full_on_a_real_tiny_filesystem(store, tmp_path, caplog):
    """A real 64 KiB tmpfs, filled up (needs root to mount; skipped elsewhere)."""
    if not tmpfs_available():
        pytest.skip("mounting a tmpfs needs root")
    try:
        with tiny_disk(tmp_path / "tiny", "64k") as d:
            fill(d)
            _check_disk_full_keeps_serving_rows_in_memory(store, d / "spill", caplog)
    except OSError as exc:
        pytest.skip(str(exc))


def test_spill_disk_full_simulated(store, tmp_path, caplog, monkeypatch):
    """Simulated ENOSPC at the file layer: every write below the spill directory fails as on a full disk."""
    import builtins
    import errno
    import io

    spill = tmp_path / "fullspill"
    real_open = builtins.open

    def full_open(file, mode="r", *a, **kw):
        if str(file).startswith(str(spill)) and any(c in mode for c in "wax"):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *a, **kw)

    # pathlib's Path.open calls io.open, not builtins.open: patch both so every way of opening a file fails
    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)
    _check_disk_full_keeps_serving_rows_in_memory(store, spill, caplog)


def test_an_answer_cut_mid_stream_is_retried_under_the_same_key_without_duplicates(store, tmp_path):
    """The store keeps the object but the client never hears back: the retry overwrites, never doubles."""
    from kfct.data import s3
    from kfct.runtime.settings import get_settings
    from kfct.serving.prediction_log import PredictionLogger

    store.cut_after = 0
    store.mode = "cut"
    logger = PredictionLogger(flush_seconds=0.1)
    try:
        _log_rows(logger, 0, 400)
        assert not logger.flush(1.5)
        bucket = get_settings().s3_bucket
        store.mode = "pass"
        keys_seen_during_cut = {o.object_name for o in s3.client().list_objects(bucket, prefix="predictions/", recursive=True)}
        assert keys_seen_during_cut, "the cut requests reached the store"
        assert logger.flush(30), logger.status()
    finally:
        logger.close()
    df = _stored()
    assert len(df) == 400 and df["customer_id"].is_unique


def test_a_hanging_store_does_not_stall_batching_and_nothing_is_lost(store, tmp_path):
    """The upload waits on a store that accepts and never answers; new batches still go to disk."""
    from kfct.serving.prediction_log import PredictionLogger

    logger = PredictionLogger(flush_seconds=0.1)
    try:
        store.mode = "hang"
        for k in range(5):
            _log_rows(logger, k * 100, 100)
            time.sleep(0.15)
        time.sleep(0.3)
        assert logger.queued == 0  # the collector kept batching while the upload hung
        assert len(_spill_files(tmp_path)) >= 3  # and kept the batches on disk
        store.mode = "pass"  # the held request completes, the rest follows
        assert logger.flush(30), logger.status()
    finally:
        logger.close()
    df = _stored()
    assert len(df) == 500 and df["customer_id"].is_unique
