"""Serving with MLflow or MinIO away (issue 12, item 4).

Real parts: a real `mlflow server` (SQLite registry, artifacts in S3) and moto's S3 server,
each behind a `FaultProxy`; the model server is KServe's ModelServer on loopback. At start
with a dependency away the server is not ready, says why (503 body and gauges) and retries
with backoff; it is ready once the dependency is back. A reload during an outage keeps the
loaded model serving and is applied once the dependency returns.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest

from tests.faultkit.proxy import FaultProxy
from tests.faultkit.servers import mlflow_server, moto_s3
from tests.servingkit import MODEL_NAME, Client, records, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deps(tmp_path_factory, seed_mlflow_store):
    """MLflow server + S3 artifact store, both behind proxies; one model registered twice (v1, v2)."""
    from kfct.runtime.settings import reset_settings

    tmp = seed_mlflow_store(tmp_path_factory.mktemp("faults-serving"))  # the server's backend: migrated once per run
    bucket = f"mlflow-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as mp, moto_s3() as (s3_host, s3_port), FaultProxy(s3_host, s3_port) as s3_proxy:
        for k, v in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "1",
            "MLFLOW_S3_ENDPOINT_URL": f"http://{s3_proxy.address}",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
        }.items():
            mp.setenv(k, v)
        import boto3

        boto3.client("s3", endpoint_url=f"http://{s3_host}:{s3_port}").create_bucket(Bucket=bucket)
        with (
            mlflow_server(f"sqlite:///{tmp / 'mlflow.db'}", f"s3://{bucket}/artifacts", tmp / "mlflow-server.log") as ml_port,
            FaultProxy("127.0.0.1", ml_port) as ml_proxy,
        ):
            mp.setenv("KFCT_HOME", str(tmp / "home"))
            mp.setenv("KFCT_MLFLOW_TRACKING_URI", f"http://{ml_proxy.address}")
            mp.setenv("KFCT_MLFLOW_ARTIFACT_ROOT", f"s3://{bucket}/artifacts")
            for var in ("KFCT_CONFIG", "KFCT_S3_ENDPOINT"):
                mp.delenv(var, raising=False)
            reset_settings()
            versions = _register(tmp)
            yield {"mlflow": ml_proxy, "s3": s3_proxy, "versions": versions, "tmp": tmp, "mp": mp}
            reset_settings()


def _register(tmp) -> list[str]:
    import mlflow

    from kfct.governance import registry
    from tests.servingkit import train_small

    model, te = train_small(seed=101, rows=2000)
    exp = registry.setup()
    with mlflow.start_run(experiment_id=exp, run_name="faults"):
        info = registry.log_model(model, te.drop(columns=["churned"]).head(5))
    versions = [
        registry.register(info["model_uri"], MODEL_NAME, {"model_sha256": info["model_sha256"]}) for _ in range(2)
    ]  # two versions of one artifact: enough to see which one answers
    registry.set_alias(MODEL_NAME, "champion", versions[0], reason="test setup")
    return versions


@pytest.fixture
def healthy(deps, tmp_path):
    deps["mlflow"].mode = "pass"
    deps["s3"].mode = "pass"
    yield deps
    deps["mlflow"].mode = "pass"
    deps["s3"].mode = "pass"


def _start(tmp_path):
    from kfct.serving.server import start_in_thread

    return start_in_thread(
        port=0, state_path=str(tmp_path / "split.json"), log_predictions=False, retry_seconds=0.3, poll_seconds=0.1
    )


def _metric(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.parametrize("away,reason", [("mlflow", "registry_unreachable"), ("s3", "store_unreachable")])
def test_dependency_away_at_start_not_ready_says_why_then_ready(healthy, tmp_path, away, reason):
    healthy[away].mode = "refuse"
    srv = _start(tmp_path)
    try:
        c = Client(srv.url)
        status, body, _ = c.request("GET", "/v2/health/ready")
        assert status == 503 and reason in body["error"], body
        status, body, _ = c.request("GET", f"/v2/models/{MODEL_NAME}/ready")
        assert status == 503 and reason in body["error"] and "retrying in" in body["error"], body
        metrics = c.request("GET", "/metrics")[1]
        assert _metric(metrics, "kfct_model_ready", model_name=MODEL_NAME) == 0
        assert _metric(metrics, "kfct_model_load_failing", model_name=MODEL_NAME, reason=reason) == 1
        assert c.predict(MODEL_NAME, records(1))[0] == 503
        time.sleep(1.5)  # still away: it keeps retrying, backing off
        assert srv.watcher._backoff > srv.watcher.retry_seconds
        healthy[away].mode = "pass"
        wait_for(lambda: c.request("GET", "/v2/health/ready")[0] == 200, timeout=30, what="ready after return")
        status, body, _ = c.predict(MODEL_NAME, records(3))
        assert status == 200 and body["model_version"] == healthy["versions"][0]
        metrics = c.request("GET", "/metrics")[1]
        assert _metric(metrics, "kfct_model_ready", model_name=MODEL_NAME) == 1
        assert _metric(metrics, "kfct_model_load_failing", model_name=MODEL_NAME, reason=reason) == 0
    finally:
        srv.stop()


def test_mlflow_away_during_a_reload_keeps_serving_then_applies_it(healthy, tmp_path):
    from kfct.contracts.split_state import SplitState, write_state

    v1, v2 = healthy["versions"]
    srv = _start(tmp_path)
    try:
        c = Client(srv.url)
        wait_for(lambda: c.request("GET", "/v2/health/ready")[0] == 200, timeout=30, what="ready")
        healthy["mlflow"].mode = "refuse"
        write_state(SplitState(model_name=MODEL_NAME, champion_version=v2, reason="test"), srv.state_path)
        wait_for(lambda: srv.router.failed_generation > 0, timeout=15, what="failed reload")
        for _ in range(5):  # the loaded model keeps answering
            status, body, _ = c.predict(MODEL_NAME, records(2))
            assert status == 200 and body["model_version"] == v1
        assert c.request("GET", "/v2/health/ready")[0] == 200
        metrics = c.request("GET", "/metrics")[1]
        assert _metric(metrics, "kfct_model_load_failing", model_name=MODEL_NAME, reason="registry_unreachable") == 1
        assert "registry" in (c.request("GET", "/kfct/split")[1]["last_error"] or "") or srv.router.load_error
        healthy["mlflow"].mode = "pass"  # back: the reload that failed is retried, not forgotten
        wait_for(
            lambda: c.predict(MODEL_NAME, records(1))[1]["model_version"] == v2,
            timeout=30,
            what="v2 applied after MLflow returned",
        )
    finally:
        srv.stop()


def test_sigterm_during_a_minio_outage_keeps_the_prediction_log_for_the_next_start(healthy, tmp_path, monkeypatch):
    """`python -m kfct.serving` logging to S3; MinIO goes away; SIGTERM; the next start uploads the rest."""
    import os
    import signal
    import subprocess
    import sys

    import boto3

    from kfct.runtime.settings import reset_settings

    bucket = f"predlog-{uuid.uuid4().hex[:8]}"
    s3_host, s3_port = healthy["s3"].upstream
    boto3.client("s3", endpoint_url=f"http://{s3_host}:{s3_port}").create_bucket(Bucket=bucket)
    home = tmp_path / "pod-home"
    env = dict(
        os.environ,
        KFCT_HOME=str(home),
        KFCT_S3_ENDPOINT=healthy["s3"].address,
        KFCT_S3_BUCKET=bucket,
        KFCT_S3_ACCESS_KEY="testing",
        KFCT_S3_SECRET_KEY="testing",
        KFCT_S3_REGION="us-east-1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kfct.serving", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        deadline = time.monotonic() + 90
        while not line.startswith("kfct: serving") and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "server exited"
        url = re.search(r"http://[\d.]+:\d+", line).group(0)
        c = Client(url)
        for i in range(20):
            assert c.predict(MODEL_NAME, records(5, seed=i), headers={"x-request-id": f"req-{i}"})[0] == 200
        healthy["s3"].mode = "refuse"  # MinIO away while traffic flows
        for i in range(20, 40):
            status = c.predict(MODEL_NAME, records(5, seed=i), headers={"x-request-id": f"req-{i}"})[0]
            assert status == 200  # the server keeps answering
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-2000:]
    spilled = list((home / "predictions-spill").glob("part-*.parquet"))
    assert spilled, out[-2000:]  # what could not be uploaded stayed on disk
    healthy["s3"].mode = "pass"
    for k, v in env.items():
        if k.startswith("KFCT_"):
            monkeypatch.setenv(k, v)
    reset_settings()
    from kfct.contracts.prediction_log import read_prediction_log
    from kfct.serving.prediction_log import PredictionLogger

    nxt = PredictionLogger()  # the next start of the pod
    assert nxt.flush(30), nxt.status()
    nxt.close()
    df = read_prediction_log()
    assert not list((home / "predictions-spill").glob("part-*.parquet"))
    counts = df.groupby("request_id").size()
    assert len(df) == 200 and len(counts) == 40 and set(counts) == {5}  # every request once, none twice
