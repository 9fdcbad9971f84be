"""The V2 binary tensor extension, parsed strictly: every malformed part is a 400.

A binary V2 request is a JSON header (its length in the `inference-header-content-length`
HTTP header) followed by raw tensors; each input without `data` says how many bytes
of the tail are its own in `parameters.binary_data_size`. KServe's own parser trusts
all of that (a length past the body, a size that is not a whole number of elements,
a garbage BYTES length prefix, a size of "12" or 1.5 raise inside numpy or struct and
become 500s). This one checks each before it reads, and returns the JSON form of the
request (`{"id", "inputs": [{name, shape, datatype, data}], "outputs", "parameters"}`)
so the rest of the server handles one request shape.

Pure (numpy, orjson); `BadRequest` names the part that is wrong.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from kfct.serving.schemas import BadRequest

HEADER = "inference-header-content-length"
DTYPES = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def _int(value: Any, what: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{what} must be a non-negative integer, got {value!r:.40}", field=field)
    if value < 0:
        raise BadRequest(f"{what} must be a non-negative integer, got {value}", field=field)
    return value


def parse_binary_request(body: bytes, header_length: Any) -> dict:
    """Raw body + the header's value -> the request as JSON-form dict (data decoded to lists)."""
    req, offset = _json_header(body, header_length)
    inputs = []
    for k, inp in enumerate(req["inputs"]):
        out, offset = _binary_input(k, inp, body, offset)
        inputs.append(out)
    if offset != len(body):
        raise BadRequest(f"binary request: {len(body) - offset} bytes after the last tensor", field="body")
    result = {"inputs": inputs}
    for key in ("id", "outputs", "parameters"):
        if key in req:
            result[key] = req[key]
    return result


def _json_header(body: bytes, header_length: Any) -> tuple[dict, int]:
    """The request's JSON part (an object with an 'inputs' list) and its length in bytes."""
    if header_length is None:
        raise BadRequest(f"binary request without the {HEADER!r} header", field=HEADER)
    try:
        json_len = int(str(header_length).strip())
    except ValueError:
        raise BadRequest(f"{HEADER} {str(header_length)[:40]!r} is not an integer", field=HEADER) from None
    if not 0 < json_len <= len(body):
        raise BadRequest(f"{HEADER} {json_len} must be within 1..{len(body)} (the body size)", field=HEADER)
    try:
        req = orjson.loads(body[:json_len])
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"binary request: the JSON header is not valid JSON: {exc}", field="body") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise BadRequest("binary request: the JSON header must be an object with an 'inputs' list", field="inputs")
    return req, json_len


def _binary_input(k: int, inp: Any, body: bytes, offset: int) -> tuple[dict, int]:
    """Input k in JSON form (its binary data, read from `offset`, decoded), and the offset after it."""
    if not isinstance(inp, dict):
        raise BadRequest(f"inputs[{k}] must be an object", field="inputs")
    name = str(inp.get("name", f"inputs[{k}]"))[:200]
    shape = inp.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise BadRequest(f"input {name!r}: shape {shape!r:.60} must be a list of non-negative integers", field=name)
    params = inp.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"input {name!r}: parameters must be an object", field=name)
    out = {k2: v for k2, v in inp.items() if k2 != "parameters"}
    rest = {k2: v for k2, v in params.items() if k2 != "binary_data_size"}
    if rest:
        out["parameters"] = rest
    if "data" in inp:
        return out, offset
    if "binary_data_size" not in params:
        raise BadRequest(f"input {name!r}: neither 'data' nor parameters.binary_data_size", field=name)
    size = _int(params["binary_data_size"], f"input {name!r}: binary_data_size", name)
    if offset + size > len(body):
        raise BadRequest(
            f"input {name!r}: binary_data_size {size} runs past the end of the body ({len(body) - offset} bytes left)", field=name
        )
    count = int(np.prod(shape, dtype=np.int64)) if shape else 0
    out["data"] = _decode(name, inp.get("datatype"), body[offset : offset + size], count)
    return out, offset + size


def _decode_bytes(name: str, raw: bytes, count: int) -> list[str]:
    """BYTES elements: each a little-endian uint32 length, then that many UTF-8 bytes."""
    items: list[str] = []
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise BadRequest(f"input {name!r}: BYTES element {len(items)} has a truncated length prefix", field=name)
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise BadRequest(f"input {name!r}: BYTES element {len(items)} claims {n} bytes, {len(raw) - pos} left", field=name)
        try:
            items.append(raw[pos : pos + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"input {name!r}: BYTES element {len(items)} is not UTF-8", field=name) from None
        pos += n
    if len(items) != count:
        raise BadRequest(f"input {name!r}: {len(items)} BYTES elements, shape says {count}", field=name)
    return items


def _decode(name: str, dt: Any, raw: bytes, count: int) -> list:
    if dt == "BYTES":
        return _decode_bytes(name, raw, count)
    np_dt = DTYPES.get(dt) if isinstance(dt, str) else None
    if np_dt is None:
        raise BadRequest(f"input {name!r}: unsupported datatype {dt!r:.40}", field=name)
    item = np.dtype(np_dt).itemsize
    if len(raw) % item:
        raise BadRequest(
            f"input {name!r}: binary_data_size {len(raw)} is not a multiple of the {dt} element size ({item} bytes)", field=name
        )
    if len(raw) // item != count:
        raise BadRequest(f"input {name!r}: {len(raw) // item} {dt} elements, shape says {count}", field=name)
    arr = np.frombuffer(raw, dtype=np.dtype(np_dt).newbyteorder("<"))
    if dt in ("FP16", "FP32"):
        return arr.astype(np.float64).tolist()
    return arr.tolist()
