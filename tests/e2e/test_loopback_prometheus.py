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
    lat = Histogram(
        "kfct_request_latency_seconds", "l", ["model_name", "model_version"], buckets=[0.005, 0.01, 0.05], registry=reg
    )
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


def test_paired_figures_through_prometheus_equal_the_local_judgement():
    """The canary pod's kfct_paired_* series (serving.metrics.PairedMetrics, in a registry of their own,
    exposed by prometheus_client's HTTP server), read back through `PrometheusMetrics.paired` with PromQL
    `sum by (shard) (increase(...))`, give the same paired figures as `paired_groups` over the same
    requests grouped by customer shard: the cluster judges what the local server judges."""
    import numpy as np
    from prometheus_client import REGISTRY, start_http_server

    from kfct.components.rollout_backends import PrometheusMetrics
    from kfct.contracts.window_stats import CUSTOMER_SHARDS, WindowStats, customer_shard, paired_groups
    from kfct.serving import metrics as M

    paired = M.PairedMetrics("m-paired", "2", "1")  # the process-wide registry, as in a pod
    rng = np.random.default_rng(4)
    srv, _ = start_http_server(0, addr="127.0.0.1", registry=REGISTRY)
    try:
        with LoopbackPrometheus(interval=0.1) as prom:
            prom.add_target(f"http://127.0.0.1:{srv.server_address[1]}", {"service": "m-canary-v2-predictor"})
            time.sleep(0.4)  # every shard's series is scraped at 0 before the first request
            sums = np.zeros((CUSTOMER_SHARDS, 3))
            for i in range(300):
                cust, n = int(rng.integers(0, 10**6)), int(rng.integers(1, 5)) if i % 50 else 400
                a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
                pa, pb = rng.random(n), rng.random(n)
                paired.observe(cust, a, b, pa, pb, 2e-5 * n, 1e-5 * n)
                sums[customer_shard(cust)] += (n, (a - b).sum(), (pa - pb).sum())
            time.sleep(0.5)
            got = WindowStats("2")
            PrometheusMetrics(prom.url, "m-paired").paired(got, "1", 30, 'service="m-canary-v2-predictor"')
    finally:
        srv.shutdown()
    want = WindowStats("2")
    paired_groups(want, sums[:, 0], sums[:, 1], sums[:, 2])
    assert got.paired_requests == 300 and got.paired_rows == want.paired_rows
    assert got.paired_customers == want.paired_customers > 20
    for f in ("label_shift", "label_shift_se", "probability_shift", "probability_shift_se", "top_customer_share"):
        assert getattr(got, f) == pytest.approx(getattr(want, f), abs=1e-9), f
    assert 1e-5 < got.paired_p99_instance_s <= 5e-5 and got.paired_champion_p99_instance_s <= 2e-5
