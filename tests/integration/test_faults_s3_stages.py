"""Pipeline stages against a MinIO outage (issue 12, item 3).

moto's S3 server behind a `FaultProxy`, reached through kfct's own minio code. The store
refuses connections for ~1.5 s (MinIO restarting) and comes back: the idempotent steps —
ingest's download, `kfct data push`, the prediction-log read drift does — retry with
backoff (`KFCT_RETRY_*`) and succeed. A permanent answer (403 from a store that rejects
the keys, a missing bucket) fails at once with one line: no retry, no backoff wait.
"""

from __future__ import annotations

import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from tests.faultkit.proxy import FaultProxy
from tests.faultkit.servers import moto_s3

OUTAGE_S = 1.5


@pytest.fixture
def store(tmp_path, monkeypatch):
    """(proxy, bucket): moto S3 behind a fault proxy; KFCT_S3_ENDPOINT points at the proxy."""
    from kfct.runtime.settings import reset_settings

    bucket = f"kfct-stages-{uuid.uuid4().hex[:8]}"  # moto's backend is shared by every server in the process
    with moto_s3() as (host, port), FaultProxy(host, port) as proxy:
        for k, v in {
            "KFCT_HOME": str(tmp_path / "home"),
            "KFCT_S3_ENDPOINT": proxy.address,
            "KFCT_S3_ACCESS_KEY": "testing",
            "KFCT_S3_SECRET_KEY": "testing",
            "KFCT_S3_BUCKET": bucket,
            "KFCT_S3_REGION": "us-east-1",
            "KFCT_RETRY_ATTEMPTS": "5",
            "KFCT_RETRY_BACKOFF_SECONDS": "0.4",
            "KFCT_NET_TIMEOUT_SECONDS": "5",
            "KFCT_NET_CONNECT_TIMEOUT_SECONDS": "2",
        }.items():
            monkeypatch.setenv(k, v)
        reset_settings()
        from kfct.data import s3

        s3.client().make_bucket(bucket)
        yield proxy, bucket
        reset_settings()


def _outage(proxy: FaultProxy, seconds: float = OUTAGE_S) -> threading.Thread:
    """Refuse connections now; pass again after `seconds` (in the background)."""
    proxy.mode = "refuse"

    def back():
        time.sleep(seconds)
        proxy.mode = "pass"

    t = threading.Thread(target=back, daemon=True)
    t.start()
    return t


def _frame(n: int = 50) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": [f"C{i}" for i in range(n)], "x": range(n), "churned": [i % 2 for i in range(n)]})


def test_ingest_download_and_dataset_push_ride_out_a_short_outage(store, tmp_path):
    from kfct.data import datastore, s3
    from kfct.data.datasource import snapshot_dataset

    proxy, _bucket = store
    src = tmp_path / "data.parquet"
    _frame().to_parquet(src, index=False)

    t = _outage(proxy)
    t0 = time.monotonic()
    uri = datastore.push_dataset(src)  # stat + upload, retried until the store is back
    assert time.monotonic() - t0 >= OUTAGE_S * 0.8, "the outage did not hit the push"
    t.join()
    assert s3.exists(uri)

    t = _outage(proxy)
    snapshot_dataset(uri, tmp_path / "snap.parquet")  # ingest: download + sha256 check
    t.join()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "snap.parquet"), _frame())


def test_prediction_log_read_rides_out_a_short_outage(store, tmp_path):
    from kfct.contracts.prediction_log import PREFIX, read_prediction_log
    from kfct.data import s3

    proxy, bucket = store
    part = tmp_path / "part.parquet"
    now = time.time()
    pd.DataFrame(
        {
            "ts": [now, now + 1],
            "request_id": ["a", "b"],
            "model_name": ["m", "m"],
            "model_version": ["1", "1"],
            "probability": [0.2, 0.7],
        }
    ).to_parquet(part, index=False)
    s3.upload(part, f"s3://{bucket}/{PREFIX}/2026/11/24/part-{int(now * 1000)}-{int(now * 1000) + 1000}-x.parquet")

    t = _outage(proxy)
    df = read_prediction_log(s3=True)  # what drift monitoring reads
    t.join()
    assert list(df["request_id"]) == ["a", "b"]


def test_missing_bucket_fails_at_once_with_one_line(store, tmp_path, monkeypatch):
    from kfct.data import datastore
    from kfct.data.datasource import snapshot_dataset
    from kfct.errors import DataSourceError

    monkeypatch.setenv("KFCT_RETRY_BACKOFF_SECONDS", "5")  # one retry would show in the elapsed time
    from kfct.runtime.settings import reset_settings

    monkeypatch.setenv("KFCT_S3_BUCKET", "no-such-bucket-kfct")
    reset_settings()
    src = tmp_path / "data.parquet"
    _frame().to_parquet(src, index=False)
    for call, expected in (
        (lambda: snapshot_dataset("s3://no-such-bucket-kfct/datasets/x.parquet", tmp_path / "snap.parquet"), "not found"),
        (lambda: datastore.push_dataset(src), "bucket 'no-such-bucket-kfct' does not exist"),
    ):
        t0 = time.monotonic()
        with pytest.raises(DataSourceError) as err:
            call()
        assert time.monotonic() - t0 < 2.0
        line = str(err.value)
        assert "\n" not in line and expected in line, line


class _Forbidden(BaseHTTPRequestHandler):
    """An S3 endpoint that rejects every request's keys (403 AccessDenied), counting requests."""

    count = 0

    def _deny(self):
        type(self).count += 1
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            b"<Message>Access Denied</Message><RequestId>1</RequestId></Error>"
        )
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = _deny

    def log_message(self, *args):
        pass


def test_403_fails_at_once_with_one_line(tmp_path, monkeypatch):
    from kfct.data import datastore
    from kfct.data.datasource import snapshot_dataset
    from kfct.errors import DataSourceError
    from kfct.runtime.settings import reset_settings

    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        for k, v in {
            "KFCT_HOME": str(tmp_path / "home"),
            "KFCT_S3_ENDPOINT": f"127.0.0.1:{srv.server_address[1]}",
            "KFCT_S3_ACCESS_KEY": "wrong",
            "KFCT_S3_SECRET_KEY": "wrong",
            "KFCT_S3_REGION": "us-east-1",
            "KFCT_RETRY_ATTEMPTS": "5",
            "KFCT_RETRY_BACKOFF_SECONDS": "5",
        }.items():
            monkeypatch.setenv(k, v)
        reset_settings()
        src = tmp_path / "data.parquet"
        _frame().to_parquet(src, index=False)
        for call in (
            lambda: snapshot_dataset("s3://kfct/datasets/x.parquet", tmp_path / "snap.parquet"),
            lambda: datastore.push_dataset(src),
        ):
            _Forbidden.count = 0
            t0 = time.monotonic()
            with pytest.raises(DataSourceError) as err:
                call()
            assert time.monotonic() - t0 < 2.0
            assert _Forbidden.count == 1, f"{_Forbidden.count} requests: a 403 was retried"
            line = str(err.value)
            assert "\n" not in line and "credentials rejected" in line and "AccessDenied" in line, line
    finally:
        srv.shutdown()
        srv.server_close()
        reset_settings()
