"""A hostile corpus (tests/integration/data/hostile_corpus.json, V1, V2 JSON and V2 binary)
against a real KServe ModelServer on loopback: no 5xx, each case the status it must get,
nothing counted as a model failure, and the server ready and correct afterwards."""

from __future__ import annotations

import base64
import http.client
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from tests.servingkit import MODEL_NAME, Client, records, serving_env, serving_registry  # noqa: F401
from tests.servingkit.hostile import expand

pytestmark = pytest.mark.slow

CORPUS = Path(__file__).parent / "data" / "hostile_corpus.json"


def load_corpus() -> list[dict]:
    return json.loads(CORPUS.read_text())["cases"]


def send(host: str, port: int, c: dict) -> tuple[int, bytes]:
    if "b64" in c:
        body = base64.b64decode(c["b64"])
    elif "json" in c:
        body = expand(json.dumps(c["json"])).encode()
    elif "raw" in c:
        body = expand(c["raw"]).encode()
    else:
        body = None
    headers = {"Content-Type": "application/json", **c["headers"]}
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        if "Content-Length" in headers:  # a forged header: send it as is
            conn.putrequest(c["method"], c["path"])
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders(body)
        else:
            conn.request(c["method"], c["path"], body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_corpus_is_large_and_covers_three_protocols():
    cases = load_corpus()
    assert len(cases) >= 150
    binary = [c for c in cases if "b64" in c and c["path"].endswith("/infer")]
    v2_json = [c for c in cases if c["path"].endswith("/infer") and "b64" not in c]
    v1 = [c for c in cases if c["path"].startswith("/v1/")]
    assert len(binary) >= 30 and len(v2_json) >= 40 and len(v1) >= 60


def test_hostile_corpus_gets_no_5xx_and_the_server_stays_correct(serving_env, tmp_path, caplog):
    from kfct.serving.server import start_in_thread
    from tests.integration.test_serving_server import expected

    srv = start_in_thread(
        port=0, state_path=str(tmp_path / "split.json"), prediction_log_dir=str(tmp_path / "predictions"), log_flush_seconds=0.2
    )
    wrong = []
    try:
        with caplog.at_level(logging.DEBUG, logger="kfct.serving"):
            for c in load_corpus():
                status, body = send(srv.host, srv.port, c)
                if status >= 500 or status not in c["expect"]:
                    wrong.append((c["name"], status, c["expect"], body[:300]))
        assert not wrong, "\n".join(map(str, wrong))
        # nothing the clients did was a model failure
        stats = srv.router.stats()
        assert all(v["server_errors"] == 0 for v in stats["versions"].values()), stats["versions"]
        # no ERROR lines, no tracebacks for client errors
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors][:5]
        # still ready, still the champion, still correct
        cl = Client(srv.url)
        assert cl.request("GET", "/v2/health/ready")[0] == 200
        recs = records(5, seed=21)
        st, body, _ = cl.predict(MODEL_NAME, recs)
        assert st == 200 and body["model_version"] == serving_env.versions["good_a"]
        probs, _ = expected(serving_env, "good_a", recs)
        np.testing.assert_allclose([p["probability"] for p in body["predictions"]], probs, atol=1e-6)
    finally:
        srv.stop()
