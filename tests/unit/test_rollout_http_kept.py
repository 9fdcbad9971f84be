"""A rollout's backends keep one HTTP client for all their polls: one TCP connection (and one SSL
context) for many queries, not one per poll (components/rollout_backends.py `KeptClient`)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def http_server():
    peers: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus and uvicorn answer

        def do_GET(self):
            peers.append(self.client_address[1])
            if self.path.startswith("/api/v1/query"):
                body = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "2"]}]}}
            else:
                body = {"applied_generation": 0}
            raw = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    srv = _Server(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", peers
    srv.shutdown()
    srv.server_close()


def test_prometheus_polls_share_one_connection(http_server):
    from kfct.components.rollout_backends import PrometheusMetrics

    url, peers = http_server
    m = PrometheusMetrics(url, model_name="m", timeout=5)
    assert [m.query('sum(kfct_requests_total{model_name="m"})') for _ in range(6)] == [2.0] * 6
    assert len(peers) == 6 and len(set(peers)) == 1, peers


def test_model_server_polls_share_one_connection(http_server, tmp_path):
    from kfct.components.rollout_backends import LocalRouterBackend

    url, peers = http_server
    b = LocalRouterBackend("m", url, state_path=tmp_path / "split.json", http_timeout=5)
    for _ in range(5):
        assert b.reachable()
    assert len(peers) == 5 and len(set(peers)) == 1, peers
