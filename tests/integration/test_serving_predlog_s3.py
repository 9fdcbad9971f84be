"""The prediction log on an S3-protocol server (moto on loopback), through the same minio client
code used with MinIO: written off the request path, read back with `since`."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_home(tmp_path, monkeypatch):
    from moto.server import ThreadedMotoServer

    from kfct.runtime.settings import reset_settings

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("KFCT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KFCT_S3_ENDPOINT", f"{host}:{port}")
    monkeypatch.setenv("KFCT_S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("KFCT_S3_SECRET_KEY", "testing")
    monkeypatch.setenv("KFCT_S3_BUCKET", "kfct-preds")
    monkeypatch.setenv("KFCT_S3_REGION", "us-east-1")
    reset_settings()
    from kfct.data import s3

    s3.client().make_bucket("kfct-preds")
    try:
        yield tmp_path / "home"
    finally:
        server.stop()
        reset_settings()


def test_prediction_log_round_trip_through_s3(s3_home):
    from kfct.contracts.prediction_log import read_prediction_log
    from kfct.data import s3
    from kfct.runtime.settings import get_settings
    from kfct.serving.prediction_log import PredictionLogger

    log = PredictionLogger(flush_seconds=60)  # S3 chosen from KFCT_S3_ENDPOINT
    assert log.s3 and log.status()["target"] == "s3://kfct-preds/predictions/"
    now = time.time()
    recs = [{"customer_id": f"C{i}", "tenure_days": i, "contract_type": "monthly"} for i in range(5)]
    log.log(now - 7200, "old", "churn-classifier", "1", "champion", recs[:2], np.array([0.1, 0.2]), np.array([0, 0]), 0.5)
    assert log.flush(20)
    log.log(now, "new", "churn-classifier", "2", "canary", recs[2:], np.array([0.6, 0.7, 0.8]), np.array([1, 1, 1]), 0.5)
    log.close()
    assert log.errors == 0, log.last_error
    keys = [o.object_name for o in s3.client().list_objects("kfct-preds", prefix="predictions/", recursive=True)]
    assert len(keys) == 2 and all(k.startswith("predictions/date=") and k.endswith(".parquet") for k in keys)
    assert not (s3_home / "predictions").exists()  # nothing kept locally
    df = read_prediction_log()
    assert df["request_id"].tolist() == ["old", "old", "new", "new", "new"]
    recent = read_prediction_log(since=now - 60)
    assert recent["customer_id"].tolist() == ["C2", "C3", "C4"] and set(recent["model_version"]) == {"2"}
    assert get_settings().s3_bucket == "kfct-preds"
