"""Request and response shapes for both KServe protocols, and the errors bad input gets.

V1 (`POST /v1/models/<name>:predict`)::

    {"instances": [{"customer_id": "C1", "contract_type": "monthly", "tenure_days": 230, ...}, ...]}
    -> {"model_name": "churn-classifier", "model_version": "3",
        "predictions": [{"probability": 0.71, "label": 1, "threshold": 0.42, "model_version": "3"}, ...]}

V2 (`POST /v2/models/<name>/infer`), columnar like every tabular V2 server (MLServer,
Triton's python backend): one input per feature, shape `[N]` (or `[N, 1]`), numeric
features as FP32/FP64/INT32/INT64, categorical ones and `customer_id` as BYTES::

    {"inputs": [{"name": "tenure_days", "shape": [2], "datatype": "INT64", "data": [230, 12]},
                {"name": "contract_type", "shape": [2], "datatype": "BYTES", "data": ["monthly", "annual"]}, ...]}

For clients that already hold records, a single BYTES input named `instances` whose
elements are JSON objects (one per row) is accepted too. Outputs: `probability`
(FP64), `label` (INT64), `threshold` (FP64) and `model_version` (BYTES), each `[N]`;
the response's own `model_version` names the version when one version answered all rows.

Every rejected input raises `BadRequest` (a KServe `InvalidInput`, so HTTP 400) whose
message and `field` name what is wrong.
"""

from __future__ import annotations

import json
import math
from typing import Any


class BadRequest(ValueError):
    """Input the server refuses: `field` names the feature/part, `index` the instance.

    A plain ValueError (importing kserve here would cost seconds); the server maps
    it to HTTP 400 with `{"error", "field", "index"}`.
    """

    status_code = 400

    def __init__(self, message: str, field: str | None = None, index: int | None = None):
        self.field = field
        self.index = index
        self.reason = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.reason

    def to_json(self) -> dict:
        out: dict[str, Any] = {"error": self.reason}
        if self.field is not None:
            out["field"] = self.field
        if self.index is not None:
            out["index"] = self.index
        return out


NUMERIC_V2 = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
RECORDS_INPUT = "instances"


MAX_JSON_DEPTH = 64  # a feature record is 3 levels deep; anything far deeper is an attack on the parser


def parse_json_body(body: bytes | bytearray | str) -> Any:
    """JSON with NaN/Infinity accepted, so a non-finite feature is named instead of a parse error.

    Used only after orjson refused the body. The stdlib parser recurses per nesting level:
    depth is checked first so a 10,000-deep body is a 400, not a RecursionError (500)."""
    _check_depth(body)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", field="body") from None


def _check_depth(body: bytes | bytearray | str) -> None:
    """Bracket depth outside strings, in one pass (C-speed translate + a short Python loop)."""
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
    depth = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise BadRequest(f"request body is nested more than {MAX_JSON_DEPTH} levels deep", field="body")
        elif ch in "]}":
            depth -= 1


def v1_records(payload: Any) -> list[dict]:
    """`{"instances": [record, ...]}` -> records (structure only; features are checked by the model)."""
    if isinstance(payload, (bytes, bytearray, str)):
        payload = parse_json_body(payload)
    if not isinstance(payload, dict):
        raise BadRequest(f"request body must be a JSON object with 'instances', got {type(payload).__name__}", field="body")
    if "instances" not in payload:
        if "inputs" in payload:
            raise BadRequest(
                "V1 endpoint takes 'instances' (list of feature objects); use /v2/models/<name>/infer for 'inputs'",
                field="instances",
            )
        raise BadRequest("missing 'instances': expected a list of feature objects", field="instances")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise BadRequest(f"'instances' must be a list, got {type(instances).__name__}", field="instances")
    if not instances:
        raise BadRequest("'instances' is empty: send at least one record", field="instances")
    for i, rec in enumerate(instances):
        if not isinstance(rec, dict):
            raise BadRequest(
                f"'instances'[{i}] must be an object of features, got {type(rec).__name__}", field="instances", index=i
            )
    return instances


def _input_rows(inp: Any) -> int:
    shape = list(inp.shape or [])
    if not shape or any((not isinstance(s, int)) or s < 0 for s in shape):
        raise BadRequest(f"input {inp.name!r}: shape {shape} must be [N] or [N, 1]", field=inp.name)
    if (len(shape) == 2 and shape[1] != 1) or len(shape) > 2:
        raise BadRequest(f"input {inp.name!r}: shape {shape} must be [N] or [N, 1] (one input per feature)", field=inp.name)
    return shape[0]


def _flat(data: Any, name: str) -> list:
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: 'data' must be a list", field=name)
    if data and isinstance(data[0], list):  # [[v], [v]] for shape [N, 1]
        out = []
        for row in data:
            if not isinstance(row, list) or len(row) != 1:
                raise BadRequest(f"input {name!r}: nested data must hold one value per row", field=name)
            out.append(row[0])
        return out
    return data


def _bytes_value(v: Any) -> Any:
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else v


def v2_records(request: Any) -> tuple[list[dict], str | None]:
    """A KServe `InferRequest` -> (records, request id). Columnar or one `instances` BYTES input."""
    inputs = list(getattr(request, "inputs", None) or [])
    if not inputs:
        raise BadRequest("'inputs' is empty: send one input per feature", field="inputs")
    req_id = getattr(request, "id", None)
    if len(inputs) == 1 and inputs[0].name == RECORDS_INPUT:
        return _v2_instances(inputs[0]), req_id
    n: int | None = None
    columns: dict[str, list] = {}
    for inp in inputs:
        name = inp.name
        if name in columns:
            raise BadRequest(f"input {name!r} given twice", field=name)
        n_rows = _input_rows(inp)
        data = _flat(inp.data, name)
        if len(data) != n_rows:
            raise BadRequest(f"input {name!r}: shape says {n_rows} rows but data has {len(data)}", field=name)
        if n is None:
            n = n_rows
        elif n_rows != n:
            raise BadRequest(f"input {name!r} has {n_rows} rows, other inputs have {n}", field=name)
        columns[name] = _v2_column(name, inp.datatype, data)
    if not n:
        raise BadRequest("inputs hold zero rows: send at least one", field="inputs")
    names = list(columns)
    cols = [columns[c] for c in names]
    records = [dict(zip(names, vals)) for vals in zip(*cols)]
    return records, req_id


def _v2_instances(inp: Any) -> list[dict]:
    """The records of the one `instances` BYTES input: each row a JSON object (or already a dict)."""
    if inp.datatype != "BYTES":
        raise BadRequest(f"input {RECORDS_INPUT!r} must be BYTES (JSON objects), got {inp.datatype}", field=RECORDS_INPUT)
    rows = _flat(inp.data, RECORDS_INPUT)
    if not rows:
        raise BadRequest(f"input {RECORDS_INPUT!r} is empty", field=RECORDS_INPUT)
    records = []
    for i, raw in enumerate(rows):
        rec = raw if isinstance(raw, dict) else None
        if rec is None:
            try:
                rec = parse_json_body(_bytes_value(raw)) if isinstance(raw, (str, bytes, bytearray)) else raw
            except BadRequest as exc:
                raise BadRequest(
                    f"input {RECORDS_INPUT!r} row {i} is not a JSON object: {exc}", field=RECORDS_INPUT, index=i
                ) from exc
        if not isinstance(rec, dict):
            raise BadRequest(f"input {RECORDS_INPUT!r} row {i} is not a JSON object", field=RECORDS_INPUT, index=i)
        records.append(rec)
    return records


def _v2_column(name: str, dt: str, data: list) -> list:
    """One feature's values by its V2 datatype: BYTES decoded, numbers checked, BOOL and the rest refused."""
    if dt == "BYTES":
        return [_bytes_value(v) for v in data]
    if dt == "BOOL":
        raise BadRequest(f"input {name!r}: BOOL is not a feature type; use a numeric type or BYTES", field=name)
    if dt not in NUMERIC_V2:
        raise BadRequest(f"input {name!r}: unsupported datatype {dt}", field=name)
    return _check_numeric(name, dt, data)


INT_RANGES = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
FLOAT_MAX = {"FP16": 65504.0, "FP32": 3.4028234663852886e38, "FP64": float("inf")}
NON_FINITE = {
    "nan": math.nan,
    "inf": math.inf,
    "+inf": math.inf,
    "-inf": -math.inf,
    "infinity": math.inf,
    "+infinity": math.inf,
    "-infinity": -math.inf,
}


def _check_numeric(name: str, dt: str, data: list) -> list:
    """Each value must be what its declared V2 datatype can hold: INT64 with 1.5 or UINT8 with
    300 is a 400 naming the input, not a silently different number."""
    ints = INT_RANGES.get(dt)
    out = data
    for i, v in enumerate(data):
        if isinstance(v, str) and ints is None:  # JSON cannot carry NaN: allow the usual spellings
            f = NON_FINITE.get(v.strip().lower())
            if f is None:
                raise BadRequest(f"input {name!r} row {i}: {v!r} is not a number ({dt})", field=name, index=i)
            if out is data:
                out = list(data)
            out[i] = f
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BadRequest(f"input {name!r} row {i}: {_short(v)} is not a number ({dt})", field=name, index=i)
        if ints is not None:
            if not isinstance(v, int):
                raise BadRequest(f"input {name!r} row {i}: {v!r} is not an integer ({dt})", field=name, index=i)
            if not ints[0] <= v <= ints[1]:
                raise BadRequest(f"input {name!r} row {i}: {_short(v)} is out of range for {dt}", field=name, index=i)
        elif (isinstance(v, int) and abs(v) > 2**63) or (math.isfinite(v) and abs(v) > FLOAT_MAX[dt]):
            raise BadRequest(f"input {name!r} row {i}: {_short(v)} overflows {dt}", field=name, index=i)
    return out


def check_records_text(records: list[dict]) -> None:
    """Every string a client sent must be valid Unicode text, and no value nested absurdly deep.

    JSON may carry a lone UTF-16 surrogate ("\\ud800"): Python's json accepts it (orjson does
    not, so such a body arrives through the fallback parser, a CloudEvent or FastAPI's V2 body),
    but no UTF-8 writer can encode it: it broke the customer id's hash (a 500) and made a whole
    prediction-log flush unencodable. A value nested ~1,000 deep passes orjson's 1,024 limit and
    broke later on recursion. One C-speed pass (orjson.dumps) clears the common case; only a
    request it refuses is walked, iteratively, to name the field and the instance."""
    import orjson

    try:
        orjson.dumps(records)
        return
    except (orjson.JSONEncodeError, TypeError):
        pass
    for i, rec in enumerate(records):
        for key, value in rec.items():
            if isinstance(key, str) and not _encodable(key):
                raise BadRequest(
                    f"instance {i}: a field name is not valid Unicode text (lone surrogate)", field=_printable(key), index=i
                )
            stack = [(value, 0)]
            while stack:
                v, depth = stack.pop()
                if isinstance(v, str):
                    if not _encodable(v):
                        raise BadRequest(
                            f"{key!s:.100}: instance {i} holds text that is not valid Unicode "
                            "(a lone UTF-16 surrogate such as \\ud800)",
                            field=_printable(key),
                            index=i,
                        )
                elif isinstance(v, (list, tuple, dict)):
                    if depth >= MAX_JSON_DEPTH:
                        raise BadRequest(
                            f"{key!s:.100}: instance {i} holds a value nested more than {MAX_JSON_DEPTH} levels deep",
                            field=_printable(key),
                            index=i,
                        )
                    items = v.values() if isinstance(v, dict) else v
                    stack.extend((x, depth + 1) for x in items)


def check_text(value: Any, field: str) -> None:
    """A per-request string (the V2 `id`) must be valid Unicode text: a 400 naming `field`."""
    if isinstance(value, str) and not _encodable(value):
        raise BadRequest(f"{field!r} is not valid Unicode text (a lone UTF-16 surrogate such as \\ud800)", field=field)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")[:200]


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:30] + f"...({len(s)} chars)"


def requested_outputs(request: Any, known: tuple[str, ...]) -> list[str] | None:
    """Names in the request's `outputs`, checked against what the model produces (None = all)."""
    outs = getattr(request, "request_outputs", None)
    if not outs:
        return None
    names = []
    for o in outs:
        n = getattr(o, "name", None)
        if n not in known:
            raise BadRequest(f"unknown output {n!r}; this model produces: {', '.join(known)}", field="outputs")
        if n not in names:
            names.append(n)
    return names


def is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
