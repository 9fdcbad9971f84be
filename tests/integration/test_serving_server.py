"""The KServe model server on loopback: V1/V2 round trips, bad input, readiness, reloads,
metrics and the prediction log — against versions registered in a temp MLflow store."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from tests.predlogkit import FLUSH_BOUND_S
from tests.servingkit import MODEL_NAME, Client, records, serving_env, serving_registry, v2_body, wait_for  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_server(serving_registry, tmp_path_factory):
    """One server for this module's tests that only send requests and read the answers: they move no
    alias, write no split file, change no setting, and read no counter or log another test adds to.
    A test that changes what serves, or reads the metrics or the prediction log, takes `server`."""
    from kfct.runtime.settings import reset_settings
    from kfct.serving.server import start_in_thread
    from tests.servingkit import reset_registry

    tmp = tmp_path_factory.mktemp("shared-server")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KFCT_HOME", str(serving_registry.home))
        for var in ("KFCT_MLFLOW_TRACKING_URI", "KFCT_CONFIG", "KFCT_S3_ENDPOINT"):
            mp.delenv(var, raising=False)
        reset_settings()
        reset_registry(serving_registry)
        srv = start_in_thread(
            port=0, state_path=str(tmp / "split.json"), prediction_log_dir=str(tmp / "predictions"), log_flush_seconds=0.2
        )
        yield srv
        srv.stop()
    reset_settings()


@pytest.fixture
def server(serving_env, tmp_path):
    from kfct.serving.server import start_in_thread

    srv = start_in_thread(
        port=0, state_path=str(tmp_path / "split.json"), prediction_log_dir=str(tmp_path / "predictions"), log_flush_seconds=0.2
    )
    yield srv
    srv.stop()


def expected(reg, role, recs):
    """What the registered model itself says (the vectorised DataFrame path)."""
    import pandas as pd

    from kfct.governance import registry

    lm = registry.load_version(MODEL_NAME, version=reg.versions[role])
    frame = pd.DataFrame.from_records(recs).drop(columns=["customer_id"])
    frame = frame.astype({c: "float64" for c in lm.model.encoder.numeric_})
    return lm.model.predict_positive(frame), lm.model.threshold


def test_v1_round_trip_matches_the_registered_model(shared_server, serving_env):
    recs = records(25, seed=3)
    c = Client(shared_server.url)
    status, body, headers = c.predict(MODEL_NAME, recs)
    assert status == 200, body
    v = serving_env.versions["good_a"]
    assert body["model_name"] == MODEL_NAME and body["model_version"] == v
    assert headers.get("x-kfct-model-version") == v
    probs, thr = expected(serving_env, "good_a", recs)
    got = np.array([p["probability"] for p in body["predictions"]])
    np.testing.assert_allclose(got, probs, atol=1e-6)
    assert [p["label"] for p in body["predictions"]] == [int(p >= thr) for p in probs]
    assert all(p["threshold"] == pytest.approx(thr) and p["model_version"] == v for p in body["predictions"])
    # the numpy tree walk is what answered (not a silent fallback)
    assert shared_server.router.route.champion.current.ensemble is not None


def test_v2_columnar_and_records_inputs(shared_server, serving_env):
    recs = records(7, seed=4)
    c = Client(shared_server.url)
    status, body, _ = c.request("POST", f"/v2/models/{MODEL_NAME}/infer", v2_body(recs))
    assert status == 200, body
    assert body["model_name"] == MODEL_NAME and body["model_version"] == serving_env.versions["good_a"]
    out = {o["name"]: o for o in body["outputs"]}
    assert set(out) == {"probability", "label", "threshold", "model_version"}
    assert out["probability"]["datatype"] == "FP64" and out["probability"]["shape"] == [7]
    probs, thr = expected(serving_env, "good_a", recs)
    np.testing.assert_allclose(out["probability"]["data"], probs, atol=1e-6)
    assert out["label"]["data"] == [int(p >= thr) for p in probs]
    assert out["model_version"]["data"] == [serving_env.versions["good_a"]] * 7

    single = {"inputs": [{"name": "instances", "shape": [2], "datatype": "BYTES", "data": [json.dumps(r) for r in recs[:2]]}]}
    status, body2, _ = c.request("POST", f"/v2/models/{MODEL_NAME}/infer", single)
    assert status == 200, body2
    np.testing.assert_allclose({o["name"]: o for o in body2["outputs"]}["probability"]["data"], probs[:2], atol=1e-6)

    status, meta, _ = c.request("GET", f"/v2/models/{MODEL_NAME}")
    assert status == 200 and {i["name"] for i in meta["inputs"]} >= {"tenure_days", "contract_type", "customer_id"}


def _bad_v1_cases(rec):
    def with_(**kw):
        r = dict(rec)
        r.update(kw)
        return r

    missing = dict(rec)
    del missing["tenure_days"]
    return [
        ("missing feature", {"instances": [missing]}, "tenure_days"),
        ("unknown feature", {"instances": [with_(favourite_colour="red")]}, "favourite_colour"),
        ("string for a number", {"instances": [with_(recency_days="twelve")]}, "recency_days"),
        ("bool for a number", {"instances": [with_(frequency=True)]}, "frequency"),
        ("number for a category", {"instances": [with_(contract_type=3)]}, "contract_type"),
        ("unknown category", {"instances": [with_(region="atlantis")]}, "region"),
        ("null where not nullable", {"instances": [with_(tenure_days=None)]}, "tenure_days"),
        ("empty instances", {"instances": []}, "instances"),
        ("instances not a list", {"instances": {"a": 1}}, "instances"),
        ("instance not an object", {"instances": [[1, 2, 3]]}, "instances"),
        ("no instances key", {"rows": [rec]}, "instances"),
    ]


def test_every_bad_v1_input_is_a_400_naming_the_field(shared_server, serving_env):
    rec = records(1, seed=5)[0]
    c = Client(shared_server.url)
    for what, body, field in _bad_v1_cases(rec):
        status, resp, _ = c.request("POST", f"/v1/models/{MODEL_NAME}:predict", body)
        assert status == 400, (what, status, resp)
        assert resp["field"] == field and field in resp["error"], (what, resp)
    # the second instance is the bad one: its index is reported
    good, bad = dict(rec), dict(rec)
    bad["peak_hour_ratio"] = "high"
    status, resp, _ = c.predict(MODEL_NAME, [good, bad])
    assert status == 400 and resp["index"] == 1 and resp["field"] == "peak_hour_ratio"


def test_non_finite_values_are_named_not_a_parse_error(shared_server):
    rec = records(1, seed=6)[0]
    c = Client(shared_server.url)
    for token in ("NaN", "Infinity", "-Infinity"):
        raw = (
            json.dumps({"instances": [rec]})
            .replace('"frustration_index": ' + json.dumps(rec["frustration_index"]), f'"frustration_index": {token}')
            .encode()
        )
        status, resp, _ = c.request("POST", f"/v1/models/{MODEL_NAME}:predict", raw=raw)
        assert status == 400 and resp["field"] == "frustration_index", (token, resp)
    # a nullable feature may be null (median-imputed), as in training
    nullable = dict(rec, monetary_std=None)
    status, resp, _ = c.predict(MODEL_NAME, [nullable])
    assert status == 200, resp


def test_bad_bodies_and_sizes(shared_server):
    from kfct.runtime.settings import get_settings

    c = Client(shared_server.url)
    status, resp, _ = c.request("POST", f"/v1/models/{MODEL_NAME}:predict", raw=b"{not json")
    assert status == 400 and resp["field"] == "body"
    limit = get_settings().max_request_bytes
    rec = records(1, seed=8)[0]
    per = len(json.dumps(rec)) + 2
    huge = {"instances": [rec] * (limit // per + 10)}
    status, resp, _ = c.request("POST", f"/v1/models/{MODEL_NAME}:predict", huge)
    assert status == 413 and "exceeds the limit" in resp["error"]
    # chunked upload without content-length is limited too
    import http.client

    conn = http.client.HTTPConnection(c.host, c.port, timeout=10)
    blob = json.dumps(huge).encode()
    conn.request(
        "POST",
        f"/v1/models/{MODEL_NAME}:predict",
        body=iter([blob[i : i + 65536] for i in range(0, len(blob), 65536)]),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    r = conn.getresponse()
    assert r.status == 413
    conn.close()
    # the server is still fine afterwards
    assert Client(shared_server.url).predict(MODEL_NAME, [rec])[0] == 200


def test_bad_v2_inputs_are_400s_naming_the_input(shared_server):
    recs = records(3, seed=9)
    c = Client(shared_server.url)
    path = f"/v2/models/{MODEL_NAME}/infer"

    def body_without(name):
        b = v2_body(recs)
        b["inputs"] = [i for i in b["inputs"] if i["name"] != name]
        return b

    def body_with(name, **changes):
        b = v2_body(recs)
        for i in b["inputs"]:
            if i["name"] == name:
                i.update(changes)
        return b

    cases = [
        (body_without("tenure_days"), "tenure_days"),
        (body_with("tenure_days", data=[1, 2]), "tenure_days"),  # shape says 3
        (body_with("recency_days", datatype="BYTES", data=["a", "b", "c"]), "recency_days"),
        (body_with("contract_type", datatype="FP64", data=[1.0, 2.0, 3.0]), "contract_type"),
        (body_with("frustration_index", data=["NaN", 0.1, 0.2]), "frustration_index"),
        (body_with("frequency", shape=[3, 2]), "frequency"),
        (
            {"inputs": v2_body(recs)["inputs"] + [{"name": "shoe_size", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]}]},
            "shoe_size",
        ),
        ({"inputs": []}, "inputs"),
    ]
    for body, field in cases:
        status, resp, _ = c.request("POST", path, body)
        assert status == 400, (field, status, resp)
        assert field in resp.get("field", "") or field in resp["error"], (field, resp)
    status, resp, _ = c.request("POST", path, {"inputs": [{"name": "x", "shape": [1], "data": [1]}]})
    assert status == 400 and "datatype" in resp["field"]


def test_unknown_model_is_404_and_no_500_anywhere(shared_server):
    c = Client(shared_server.url)
    status, _, _ = c.predict("no-such-model", records(1))
    assert status == 404
    status, _body, _ = c.request("GET", "/metrics")
    assert status == 200


def test_readiness_false_until_a_champion_exists_then_true(serving_env, tmp_path):
    """Started before any champion: 503 everywhere, then ready once the alias appears."""
    from kfct.governance import registry
    from kfct.serving.server import start_in_thread

    registry.delete_alias(MODEL_NAME, "champion", reason="readiness test")
    srv = start_in_thread(
        port=0,
        state_path=str(tmp_path / "split.json"),
        wait_for_model=False,
        log_predictions=False,
        retry_seconds=0.2,
        poll_seconds=0.1,
    )
    try:
        c = Client(srv.url)
        assert c.request("GET", "/v2/health/live")[0] == 200
        assert c.request("GET", "/v2/health/ready")[0] == 503
        assert c.request("GET", f"/v2/models/{MODEL_NAME}/ready")[0] == 503
        assert c.request("GET", f"/v1/models/{MODEL_NAME}")[0] == 503
        assert c.predict(MODEL_NAME, records(1))[0] == 503
        registry.set_alias(MODEL_NAME, "champion", serving_env.versions["good_a"], reason="readiness test")
        wait_for(lambda: c.request("GET", "/v2/health/ready")[0] == 200, what="readiness")
        assert c.request("GET", f"/v1/models/{MODEL_NAME}")[0] == 200
        status, body, _ = c.predict(MODEL_NAME, records(1))
        assert status == 200 and body["model_version"] == serving_env.versions["good_a"]
    finally:
        srv.stop()


def test_failed_reload_keeps_serving_the_old_model(server, serving_env, tmp_path):
    from kfct.contracts.split_state import update_state

    c = Client(server.url)
    v_a = serving_env.versions["good_a"]
    # The load-failure path of the split file itself: with alias following on, a file that names
    # another champion than the alias is overridden before any load (tests/unit/test_convergence.py).
    server.watcher.follow_aliases = server.router.follows_aliases = False
    # 1) a version that does not exist
    st = update_state(MODEL_NAME, server.state_path, champion_version="999")
    wait_for(lambda: server.router.failed_generation >= st.generation, what="failed apply")
    assert "999" in server.router.last_error
    status, body, _ = c.predict(MODEL_NAME, records(2))
    assert status == 200 and body["model_version"] == v_a
    # 2) a registered version whose artifact no longer matches its sha256
    from kfct.governance import registry
    from kfct.governance.lineage import sha256_file

    v_b = serving_env.versions["good_b"]
    src = registry.client().get_model_version_download_uri(MODEL_NAME, v_b)
    from urllib.parse import urlparse

    pkl = next(p for p in Path(urlparse(src).path).rglob("model.pkl"))
    original = pkl.read_bytes()
    try:
        pkl.write_bytes(original + b"tampered")
        assert sha256_file(pkl) != registry.client().get_model_version(MODEL_NAME, v_b).tags["model_sha256"]
        st = update_state(MODEL_NAME, server.state_path, champion_version=v_b)
        wait_for(lambda: server.router.failed_generation >= st.generation, what="integrity failure")
        assert "sha256" in server.router.last_error
        status, body, _ = c.predict(MODEL_NAME, records(2))
        assert status == 200 and body["model_version"] == v_a
    finally:
        pkl.write_bytes(original)
    # 3) the good version loads once intact
    st = update_state(MODEL_NAME, server.state_path, champion_version=v_b)
    wait_for(lambda: server.router.applied_generation >= st.generation, what="reload")
    assert c.predict(MODEL_NAME, records(1))[1]["model_version"] == v_b


def test_metrics_count_requests_errors_latency_and_predictions(server, serving_env):
    c = Client(server.url)
    v = serving_env.versions["good_a"]

    def scrape():
        text = c.request("GET", "/metrics")[1]
        out = {}
        for line in text.splitlines():
            if line.startswith("kfct_") and f'model_version="{v}"' in line and 'model_name="churn-classifier"' in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    before = scrape()
    recs = records(30, seed=12)
    for r in recs[:20]:
        assert c.predict(MODEL_NAME, [r])[0] == 200
    assert c.predict(MODEL_NAME, recs[20:])[0] == 200  # one request, 10 instances
    bad = dict(recs[0], tenure_days="x")
    assert c.predict(MODEL_NAME, [bad])[0] == 400
    after = scrape()

    def delta(prefix, **labels):
        keys = [k for k in after if k.startswith(prefix) and all(f'{a}="{b}"' in k for a, b in labels.items())]
        return sum(after[k] - before.get(k, 0.0) for k in keys)

    assert delta("kfct_requests_total", role="champion", protocol="v1") == 21
    assert delta("kfct_request_errors_total", kind="client") == 1
    assert delta("kfct_request_latency_seconds_count") == 21
    assert delta("kfct_prediction_probability_count") == 30
    assert delta("kfct_predictions_total") == 30
    text = c.request("GET", "/metrics")[1]
    assert "kfct_model_info{" in text and 'role="champion"' in text


def test_prediction_log_is_written_off_the_request_path(server, serving_env, tmp_path):
    from kfct.contracts.prediction_log import read_prediction_log

    c = Client(server.url)
    t0 = time.time()
    recs = records(12, seed=13)
    for r in recs[:10]:
        assert c.predict(MODEL_NAME, [r], headers={"x-request-id": f"req-{r['customer_id']}"})[0] == 200
    assert c.request("POST", f"/v2/models/{MODEL_NAME}/infer", v2_body(recs[10:]))[0] == 200
    assert server.prediction_log.flush(FLUSH_BOUND_S)
    df = read_prediction_log(since=t0, root=tmp_path / "predictions")
    assert len(df) == 12
    assert set(df["model_version"]) == {serving_env.versions["good_a"]} and set(df["role"]) == {"champion"}
    assert df["customer_id"].tolist() == [r["customer_id"] for r in recs]
    assert df["request_id"].iloc[0] == f"req-{recs[0]['customer_id']}"
    assert np.allclose(df["tenure_days"], [r["tenure_days"] for r in recs])
    assert df["contract_type"].tolist() == [r["contract_type"] for r in recs]
    probs, thr = expected(serving_env, "good_a", recs)
    np.testing.assert_allclose(df["probability"], probs, atol=1e-6)
    assert (df["label"] == (probs >= thr)).all()
    assert str(df["ts"].dt.tz) == "UTC" and df["ts"].min().timestamp() >= t0 - 1
    # `since` filters, the files roll under date= partitions
    assert read_prediction_log(since=time.time() + 60, root=tmp_path / "predictions").empty
    assert list((tmp_path / "predictions").glob("date=*/part-*.parquet"))
    assert not math.isnan(df["probability"].sum())


def test_model_dir_mode_verifies_the_artifact_hash(serving_env, tmp_path):
    """The InferenceService path: an MLflow model folder (as KServe's storage initializer leaves it)."""
    import mlflow

    from kfct.governance import registry
    from kfct.serving.server import start_in_thread

    v = serving_env.versions["good_a"]
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL_NAME}/{v}", dst_path=str(tmp_path / "mnt"))
    sha = registry.client().get_model_version(MODEL_NAME, v).tags["model_sha256"]
    srv = start_in_thread(port=0, model_dir=local, model_sha256=sha, version=v, log_predictions=False)
    try:
        status, body, _ = Client(srv.url).predict(MODEL_NAME, records(3))
        assert status == 200 and body["model_version"] == v
        assert srv.state_path is None  # no local split file on a cluster
    finally:
        srv.stop()
    bad = start_in_thread(port=0, model_dir=local, model_sha256="0" * 64, version=v, log_predictions=False, wait_for_model=True)
    try:
        c = Client(bad.url)
        assert c.request("GET", "/v2/health/ready")[0] == 503
        assert c.predict(MODEL_NAME, records(1))[0] == 503
        assert "does not match" in bad.router.route.champion.last_error
    finally:
        bad.stop()


def test_predictor_alone_answers_both_protocols(serving_env):
    """ChurnPredictor is a complete kserve.Model on its own (what a plain KServe ModelServer would host)."""
    import asyncio

    from kfct.cluster import kserve_sdk
    from kfct.serving.predictor import ChurnPredictor

    kserve = kserve_sdk.load()
    p = ChurnPredictor(MODEL_NAME, version=serving_env.versions["good_b"])
    assert p.ready is False and p.load() and p.ready
    recs = records(4, seed=14)
    out, headers = asyncio.run(p({"instances": recs}, headers={}))
    assert headers["x-kfct-model-version"] == serving_env.versions["good_b"] and len(out["predictions"]) == 4
    body = v2_body(recs)
    req = kserve.InferRequest(
        MODEL_NAME, [kserve.InferInput(i["name"], i["shape"], i["datatype"], i["data"]) for i in body["inputs"]]
    )
    res, _ = asyncio.run(p(req, headers={}))
    probs = next(o for o in res.outputs if o.name == "probability").data
    np.testing.assert_allclose(probs, [x["probability"] for x in out["predictions"]])
    assert not ChurnPredictor(MODEL_NAME, version="999").load()  # a failed load is not ready, not a crash
