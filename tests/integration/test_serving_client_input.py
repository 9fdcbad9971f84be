"""Issue 22, items 3 and 4: client input that used to reach the server's internals.

- a lone UTF-16 surrogate ("\\ud800", valid JSON) in a customer id or a V2 request id was a 500
  (router.customer_key, or after the request was scored and logged) and, reaching the prediction
  log's writer, made a whole flush unencodable: every row in it lost, uncounted;
- a feature value nested ~1,000 deep (under orjson's 1,024 limit, so the 64-level check of the
  fallback parser never ran) raised RecursionError: a 500.
Each is now a 400 naming the field, and nothing it sends reaches the log."""

from __future__ import annotations

import json

import pytest

from tests.servingkit import MODEL_NAME, Client, records, serving_env, serving_registry, v2_body  # noqa: F401

pytestmark = pytest.mark.slow

LONE = "\ud800"


def start(tmp_path, **kw):
    from kfct.serving.server import start_in_thread

    kw.setdefault("state_path", str(tmp_path / "split.json"))
    kw.setdefault("log_predictions", False)
    kw.setdefault("poll_seconds", 0.1)
    return start_in_thread(port=0, **kw)


def _raw(obj) -> bytes:
    return json.dumps(obj).encode()  # ensure_ascii: the lone surrogate travels as the escape \ud800


def _cases():
    recs = records(3)
    v1_first = [dict(recs[0], customer_id=LONE), *recs[1:]]
    v1_second = [recs[0], dict(recs[1], customer_id="C-" + LONE), recs[2]]
    v2_cols = v2_body([dict(r, customer_id=LONE if i == 1 else r["customer_id"]) for i, r in enumerate(recs)])
    v2_inst = {
        "inputs": [
            {
                "name": "instances",
                "shape": [2],
                "datatype": "BYTES",
                "data": [json.dumps(recs[0]), json.dumps(dict(recs[1], customer_id=LONE))],
            }
        ]
    }
    v2_id = dict(v2_body(recs), id="req-" + LONE)
    deep = json.dumps({"instances": [dict(recs[0], tenure_days="DEEP")]}).encode()
    deep = deep.replace(b'"DEEP"', b"[" * 1000 + b"1.0" + b"]" * 1000)  # json.dumps itself would recurse
    v1 = f"/v1/models/{MODEL_NAME}:predict"
    v2 = f"/v2/models/{MODEL_NAME}/infer"
    ce = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "test", "ce-type": "predict"}
    return [
        ("v1 first customer_id", v1, _raw({"instances": v1_first}), {}, "customer_id"),
        ("v1 second customer_id", v1, _raw({"instances": v1_second}), {}, "customer_id"),
        ("v2 customer_id column", v2, _raw(v2_cols), {}, "customer_id"),
        ("v2 instances row", v2, _raw(v2_inst), {}, "customer_id"),
        ("v2 request id", v2, _raw(v2_id), {}, "id"),
        ("cloudevent customer_id", v1, _raw({"instances": v1_first}), ce, "customer_id"),
        ("v1 nested 1000 deep", v1, deep, {}, "tenure_days"),
    ]


def test_client_input_is_a_400_naming_the_field_and_never_reaches_the_log(serving_env, tmp_path):
    root = tmp_path / "predictions"
    srv = start(tmp_path, log_predictions=True, prediction_log_dir=str(root))
    try:
        c = Client(srv.url)
        got = {}
        for name, path, raw, headers, _field in _cases():
            status, body, _ = c.request("POST", path, raw=raw, headers=headers)
            got[name] = (status, body.get("field") if isinstance(body, dict) else body)
        want = {name: (400, field) for name, _p, _r, _h, field in _cases()}
        assert got == want
        good = records(5, seed=11)
        assert c.predict(MODEL_NAME, good)[0] == 200
        assert srv.router.prediction_log.flush(20)
        from kfct.contracts.prediction_log import read_prediction_log

        df = read_prediction_log(root=root)
        assert sorted(df["customer_id"]) == sorted(r["customer_id"] for r in good), got
        assert srv.router.prediction_log.dropped == 0
    finally:
        srv.stop()
