"""Pure cores behind issue 9's 400s: the V2 binary parser, V2 datatype checks, JSON depth,
and the record schema shared by the server and batch scoring."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from kfct.serving.schemas import BadRequest


def _binary(inputs, blobs):
    head = json.dumps({"inputs": inputs}).encode()
    return head + b"".join(blobs), str(len(head))


def test_binary_request_round_trip():
    from kfct.serving.v2_binary import parse_binary_request

    blobs = [
        struct.pack("<qq", 3, 4),
        struct.pack("<I", 7) + b"monthly" + struct.pack("<I", 6) + b"annual",
        struct.pack("<ff", 0.5, 1.5),
    ]
    inputs = [
        {"name": "a", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
        {"name": "b", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(blobs[1])}},
        {"name": "c", "shape": [2, 1], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
    ]
    body, n = _binary(inputs, blobs)
    req = parse_binary_request(body, n)
    assert [i["data"] for i in req["inputs"]] == [[3, 4], ["monthly", "annual"], [0.5, 1.5]]
    assert all("parameters" not in i for i in req["inputs"])


@pytest.mark.parametrize(
    "what,size,blob,header,field",
    [
        ("header missing", 8, struct.pack("<q", 1), None, "inference-header-content-length"),
        ("header not a number", 8, struct.pack("<q", 1), "x", "inference-header-content-length"),
        ("header past the body", 8, struct.pack("<q", 1), "99999", "inference-header-content-length"),
        ("size past the body", 64, struct.pack("<q", 1), "ok", "a"),
        ("size not a multiple", 3, b"\x01\x02\x03", "ok", "a"),
        ("size a string", "8", struct.pack("<q", 1), "ok", "a"),
        ("size a float", 8.0, struct.pack("<q", 1), "ok", "a"),
        ("size negative", -8, struct.pack("<q", 1), "ok", "a"),
    ],
)
def test_binary_request_errors_name_the_part(what, size, blob, header, field):
    from kfct.serving.v2_binary import parse_binary_request

    inputs = [{"name": "a", "shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": size}}]
    body, n = _binary(inputs, [blob])
    with pytest.raises(BadRequest) as e:
        parse_binary_request(body, n if header == "ok" else header)
    assert e.value.field == field, (what, str(e.value))


def test_binary_bytes_prefixes_are_checked():
    from kfct.serving.v2_binary import parse_binary_request

    for blob in (b"\xff\xff\xff\xffabc", b"\x03\x00", struct.pack("<I", 2) + b"\xff\xfe"):
        inputs = [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}]
        body, n = _binary(inputs, [blob])
        with pytest.raises(BadRequest) as e:
            parse_binary_request(body, n)
        assert e.value.field == "s"


def test_v2_datatypes_hold_their_values_and_json_depth_is_bounded():
    from kfct.serving.schemas import _check_numeric, parse_json_body

    assert _check_numeric("x", "INT64", [1, 2]) == [1, 2]
    assert _check_numeric("x", "FP64", ["NaN", 1.5])[1] == 1.5
    for dt, v in [
        ("INT64", 1.5),
        ("UINT8", 300),
        ("INT8", -129),
        ("FP32", 1e39),
        ("FP64", 10**400),
        ("INT64", True),
        ("INT32", "7"),
    ]:
        with pytest.raises(BadRequest):
            _check_numeric("x", dt, [v])
    with pytest.raises(BadRequest, match="nested"):
        parse_json_body("[" * 10_000 + "]" * 10_000)
    assert parse_json_body('{"a": NaN, "s": "[[[[["}')["s"] == "[[[[["


def test_record_schema_online_and_batch_agree():
    from kfct.config import load_config
    from kfct.data.record_schema import RecordSchema
    from kfct.evidence.model import FeatureError

    sch = RecordSchema.from_config(load_config())
    ok = {"tenure_days": 10, "plan_monthly_eur": 20.5, "customer_id": "C1"}
    sch.check_records([ok])
    for field, value in [
        ("tenure_days", -1),
        ("tenure_days", 2.5),
        ("plan_monthly_eur", 1e39),
        ("tenure_days", 10**400),
        ("customer_id", ["x"]),
        ("customer_id", "C" * 500),
        ("customer_id", ""),
    ]:
        with pytest.raises(FeatureError) as e:
            sch.check_records([dict(ok, **{field: value})])
        assert e.value.field == field
        if field != "customer_id" and value != 10**400:
            with pytest.raises(FeatureError):
                sch.check_column(field, np.array([1.0, float(value)]))
    with pytest.raises(FeatureError, match="NaN"):
        sch.check_column("tenure_days", np.array([1.0, np.nan]))  # non-nullable: batch must not impute
    sch.check_column("monetary_std", np.array([1.0, np.nan]))  # nullable
