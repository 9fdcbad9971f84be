"""The e2e's loopback Prometheus (tests/e2e/prometheus.py) against a real exposition: prometheus_client's
own HTTP server, read through kfct's `PrometheusMetrics` as the rollout reads a real Prometheus."""

import math
import time

import pytest
import requests

from tests.e2e.prometheus import LoopbackPrometheus, bucket_quantile


def test_bucket_quantile_interpolates_as_promql():
    # promql/quantile.go bucketQuantile: rank 0.5*100 = 50 lies in (0.01, 0.05] holding 40 of 20..60
    assert bucket_quantile(0.5, [(0.01, 20), (0.05, 60), (math.inf, 100)]) == pytest.approx(0.01 + 0.04 * 30 / 40)
    assert bucket_quantile(0.99, [(0.01, 20), (0.05, 60), (math.inf, 100)]) == 0.05  # +Inf: the highest bound
    assert math.isnan(bucket_quantile(0.5, [(0.01, 0), (math.inf, 0)]))


def test_windows_from_a_real_exposition_and_the_api_format():
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

    from kfct.components.rollout_backends import PrometheusMetrics

    reg = CollectorRegistry()
    req = Counter("kfct_requests", "r", ["model_name", "model_version", "role", "protocol"], registry=reg)
    lat = Histogram("kfct_request_latency_seconds", "l", ["model_name", "model_version"],
                    buckets=[0.005, 0.01, 0.05], registry=reg)
    pred = Counter("kfct_predictions", "p", ["model_name", "model_version", "label"], registry=reg)
    srv, _ = start_http_server(0, addr="127.0.0.1", registry=reg)
    try:
        with LoopbackPrometheus(interval=0.1) as prom:
            req.labels("m", "2", "primary", "v1").inc(0)
            lat.labels("m", "2")
            for label in "01":
                pred.labels("m", "2", label).inc(0)
            prom.add_target(f"http://127.0.0.1:{srv.server_address[1]}", {"revision": "m-predictor-00002"})
            time.sleep(0.4)
            for i in range(100):
                req.labels("m", "2", "primary", "v1").inc()
                lat.labels("m", "2").observe(0.007)
                pred.labels("m", "2", "1" if i % 4 == 0 else "0").inc()
            time.sleep(0.4)
            w = PrometheusMetrics(prom.url, "m").window("2", 5, 'revision="m-predictor-00002"')
            assert (w.requests, w.instances, w.positives) == (100, 100, 25)
            assert 0.005 < w.p99_latency_s <= 0.01
            other = PrometheusMetrics(prom.url, "m").window("2", 5, 'revision="m-predictor-00001"')
            assert (other.requests, other.p99_latency_s) == (0, 0.0)  # an empty vector, as Prometheus answers
            body = requests.get(f"{prom.url}/api/v1/query", params={"query": "up"}, timeout=5)
            assert body.status_code == 400 and body.json()["errorType"] == "bad_data"
    finally:
        srv.shutdown()
