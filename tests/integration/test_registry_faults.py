"""The registry path against a real `mlflow server` behind a fault-injecting TCP proxy.

Issue 12 #3 and #6: transient faults (refused, hanging, cut mid-answer) are retried within
the timeouts Settings configures and never wait forever; permanent ones (403) fail at once
with one line; a registration whose answer was lost is not made twice. Issue 9 #12 on a
cluster-like store: threads racing through the MLflow-tag lease move the champion once.
"""

from __future__ import annotations

import http.server
import os
import threading
import time

import pytest

from kfct.config import load_config
from tests.faultkit import servers
from tests.faultkit.proxy import FaultProxy

pytestmark = pytest.mark.slow
NAME = "faulty-model"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, seed_mlflow_store):
    root = seed_mlflow_store(tmp_path_factory.mktemp("mlflow-server"))  # the server's backend: migrated once per run
    with servers.mlflow_server(f"sqlite:///{root}/mlflow.db", (root / "art").as_uri(), root / "server.log") as port:
        yield port


@pytest.fixture
def via_proxy(mlflow_server, kfct_home, monkeypatch):
    """Settings point MLflow at the proxy, with short timeouts and retries (the one place)."""
    from kfct.runtime.settings import reset_settings

    with FaultProxy("127.0.0.1", mlflow_server) as proxy:
        monkeypatch.setenv("KFCT_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("KFCT_MLFLOW_EXPERIMENT", f"exp-{time.monotonic_ns()}")
        monkeypatch.setenv("KFCT_NET_TIMEOUT_SECONDS", "2")
        monkeypatch.setenv("KFCT_MLFLOW_HTTP_MAX_RETRIES", "0")
        monkeypatch.setenv("KFCT_RETRY_ATTEMPTS", "3")
        monkeypatch.setenv("KFCT_RETRY_BACKOFF_SECONDS", "0.2")
        monkeypatch.setenv("KFCT_REGISTRY_LEASE_SECONDS", "60")
        reset_settings()
        from kfct.governance import registry

        registry.setup()
        yield proxy
    reset_settings()


def test_mlflow_timeouts_come_from_settings(via_proxy):
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "2"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"


def test_hanging_server_fails_within_the_configured_timeouts(via_proxy):
    from kfct.governance import registry
    from kfct.runtime.retry import TransientFailure

    via_proxy.mode = "hang"
    t0 = time.monotonic()
    with pytest.raises(TransientFailure) as err:
        registry.alias_version(NAME, "champion")
    took = time.monotonic() - t0
    msg = str(err.value)
    assert "\n" not in msg and "still failing after 3 tries" in msg and "read alias 'champion'" in msg
    assert took < 3 * 2 + 3 * 1.0 + 4, took  # 3 tries x 2 s timeout + backoff, never forever


def test_refused_then_back_is_retried(via_proxy):
    from kfct.governance import registry

    via_proxy.mode = "refuse"
    threading.Timer(0.15, lambda: setattr(via_proxy, "mode", "pass")).start()
    assert registry.alias_version(NAME, "champion") is None  # answered once the server is back
    assert via_proxy.connections >= 2


def test_lost_answer_to_a_registration_makes_no_second_version(via_proxy, monkeypatch):
    """The create request reaches the server, its answer is cut: the retry finds the version."""
    from mlflow.tracking.client import MlflowClient

    from kfct.governance import registry
    from tests.registrykit import log_tiny_model, versions

    uri, rid = log_tiny_model("cut")
    real = MlflowClient._create_model_version
    calls = []

    def cut_answer(self, *a, **kw):  # only the create request's answer is lost
        calls.append(1)
        via_proxy.mode = "cut"
        try:
            return real(self, *a, **kw)
        finally:
            via_proxy.mode = "pass"

    monkeypatch.setattr(MlflowClient, "_create_model_version", cut_answer)
    version, created = registry.register_once(uri, NAME, {}, rid)
    assert len(calls) == 1  # the create went through, its answer was lost; the retry looked up
    assert version == "1" and created is False
    assert versions(NAME) == [1]


class _Forbidden(http.server.BaseHTTPRequestHandler):
    hits = 0

    def _deny(self):
        type(self).hits += 1
        body = b'{"error_code": "PERMISSION_DENIED", "message": "no access"}'
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _deny

    def log_message(self, *a):
        pass


def test_permanent_403_fails_at_once(kfct_home, monkeypatch):
    from kfct.governance import registry
    from kfct.runtime.settings import reset_settings

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("KFCT_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{srv.server_address[1]}")
    monkeypatch.setenv("KFCT_RETRY_ATTEMPTS", "5")
    monkeypatch.setenv("KFCT_MLFLOW_HTTP_MAX_RETRIES", "3")
    reset_settings()
    try:
        t0 = time.monotonic()
        with pytest.raises(Exception) as err:
            registry.setup()
        assert time.monotonic() - t0 < 2
        assert _Forbidden.hits == 1
        assert "PERMISSION_DENIED" in str(err.value) or "403" in str(err.value)
    finally:
        srv.shutdown()
        reset_settings()


def test_threads_racing_through_the_tag_lease_move_the_champion_once(via_proxy):
    from kfct.components.register import register_version
    from kfct.governance import registry
    from tests.registrykit import log_tiny_model, versions

    name = f"lease-{time.monotonic_ns()}"
    uri, rid = log_tiny_model("v1")
    v1, _ = registry.register_once(uri, name, {}, rid)
    registry.set_alias(name, "champion", v1)
    cfg = load_config(overrides={"rollout": {"enabled": False}, "gate": {"on_champion_moved": "block"}})
    runs = [log_tiny_model(f"c{i}") for i in range(3)]
    barrier = threading.Barrier(len(runs))
    results, errors = [], []

    def go(uri, rid):
        barrier.wait()
        try:
            results.append(
                register_version(
                    {"mlflow_run_id": rid, "model_uri": uri},
                    {"deploy": True, "reasons": [], "metrics": {}, "champion_version": v1},
                    cfg,
                    name,
                    "d",
                    "sha",
                    rid[:6],
                    "c",
                )
            )
        except Exception as exc:  # noqa: BLE001  # pragma: no cover - every error goes to the test
            errors.append(exc)

    threads = [threading.Thread(target=go, args=r) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    moved = [r["version"] for r in results if r["version"]]
    assert len(moved) == 1 and len(results) == 3
    assert registry.aliases(name) == {"champion": moved[0]}
    assert versions(name) == [1, 2]
    assert registry.LEASE_TAG not in (registry.client().get_registered_model(name).tags or {})
