"""One short, JSON-able record per Great Expectations result: what was expected, the limit, what was seen.

GX results hold numpy scalars, NaN, sets and whole rows; reports, the audit trail and
the CLI need plain values, a sample kept short and the limit that was broken, so
every failure reads "expectation, observed, expected" without opening GX's JSON.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult

SAMPLE_SIZE = 5  # distinct bad values kept per failure
SAMPLE_CHARS = 80  # a sampled string is cut to this
SAMPLE_ROW_COLUMNS = 3  # a sampled row (duplicate check) keeps this many columns


def jsonable(v: Any) -> Any:
    """GX results hold numpy scalars, NaN, tuples and sets: make them strict-JSON values."""
    import numpy as np

    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, float, np.bool_, np.integer, np.floating)):
        return _number(v)
    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (set, frozenset)):
        return sorted((jsonable(x) for x in v), key=str)
    return _other(v)


def _number(v: Any) -> bool | int | float | None:
    """A Python or numpy bool, integer or float as its JSON value (NaN and infinities: null)."""
    import numpy as np

    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    f = float(v)
    return f if math.isfinite(f) else None


def _other(v: Any) -> str | None:
    """pandas' missing values as null, a Timestamp in ISO form, anything else as its str()."""
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return None
        if isinstance(v, pd.Timestamp):
            return str(v.isoformat())
    except ImportError:  # pragma: no cover
        pass
    return str(v)


def _sample(values: list[Any], n: int = SAMPLE_SIZE) -> list[Any]:
    """Up to n distinct bad values, in the order GX found them."""
    out: list[Any] = []
    seen: set[str] = set()
    for v in values or []:
        key = json.dumps(jsonable(v), sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(_clip(jsonable(v)))
        if len(out) >= n:
            break
    return out


_UNEXPECTED_NOUN = {
    "dtype": "values of another type",
    "not_null": "values missing",
    "range": "values out of range",
    "categories": "values not in the allowed set",
    "values": "values not in the allowed set",
    "label_values": "values not in the allowed set",
    "unique": "values repeated",
    "duplicate_share": "rows in duplicated groups",
}


def record(res: ExpectationValidationResult, df_columns: set[Any], dtypes: dict[str, Any]) -> dict[str, Any]:
    """One short, JSON-able record for one GX ExpectationValidationResult."""
    conf = res.expectation_config
    if conf is None:  # GX sets it on every result of a suite run
        raise ValueError("GX validation result without its expectation configuration")
    kind = conf.type
    kwargs = {k: v for k, v in dict(conf.kwargs).items() if k != "batch_id"}
    meta = dict(conf.meta or {})
    column = meta.get("column") or kwargs.get("column")
    r = dict(res.result or {})
    exc = _exception(res)
    samples: list[Any]
    if exc:
        observed, unexpected, samples = _raised(exc, column, df_columns), r.get("unexpected_count"), []
    elif kind == "expect_table_columns_to_match_set":
        observed, unexpected, samples = _column_set(r)
    else:
        observed, unexpected = _observed(kind, meta, column, r, dtypes)
        samples = _sample(r.get("partial_unexpected_list") or [])
        if kind == "expect_column_to_exist":
            observed = "present" if res.success else "missing"
    rec = {
        "expectation": kind,
        "check": meta.get("check", kind),
        "column": column,
        "success": bool(res.success),
        "expected": meta.get("expected", ""),
        "limit": jsonable(meta.get("limit")),
        "observed": observed,
        "kwargs": jsonable(kwargs),
        "unexpected_count": jsonable(unexpected) if unexpected is not None else None,
        "unexpected_percent": jsonable(r.get("unexpected_percent")),
        "sample_bad_values": samples if not res.success else [],
    }
    if exc:
        rec["error"] = str(exc.get("exception_message") or "")[:500]
    return rec


def _exception(res: ExpectationValidationResult) -> dict[str, Any]:
    """GX's exception info for a check that raised (keyed by metric id for metric errors), else {}."""
    exc = res.exception_info or {}
    if exc and "raised_exception" not in exc:
        inner = [x for x in exc.values() if isinstance(x, dict) and x.get("raised_exception")]
        exc = inner[0] if inner else {}
    return exc if exc.get("raised_exception") else {}


def _raised(exc: dict[str, Any], column: str | None, df_columns: set[Any]) -> str:
    if column is not None and column not in df_columns:
        return f"not evaluated: column {column!r} is missing"
    lines = str(exc.get("exception_message") or "").strip().splitlines() or ["unknown error"]
    return "error: " + short(lines[0], 200)


def _column_set(r: dict[str, Any]) -> tuple[str, int | None, list[Any]]:
    mism = (r.get("details") or {}).get("mismatched") or {}
    missing, extra = list(mism.get("missing") or []), list(mism.get("unexpected") or [])
    samples = [f"missing: {c}" for c in missing] + [f"unexpected: {c}" for c in extra]
    observed = (
        f"{len(r.get('observed_value') or [])} columns"
        + (f"; missing {missing}" if missing else "")
        + (f"; unexpected {extra}" if extra else "")
    )
    return observed, (len(samples) if samples else None), samples


def _observed(kind: str, meta: dict[str, Any], column: str | None, r: dict[str, Any], dtypes: dict[str, Any]) -> tuple[Any, Any]:
    """(observed, unexpected count) in words: the value, "k of n <noun> (p%)", a dtype or a share."""
    unexpected = r.get("unexpected_count")
    dtype = f"dtype {dtypes[column]}" if kind == "expect_column_values_to_be_in_type_list" and column in dtypes else None
    if "observed_value" in r:
        return dtype or jsonable(r["observed_value"]), unexpected
    if unexpected is None:
        return dtype, unexpected
    pct = r.get("unexpected_percent")
    check = meta.get("check", "")
    if check in ("label_balance_min", "label_balance_max") and isinstance(pct, (int, float)):
        # in-set(positive) misses are the negatives; not-in-set(positive) misses are the positives
        share = 1 - pct / 100 if check == "label_balance_min" else pct / 100
        return f"positive share {share:.2%}", None
    observed = f"{unexpected} of {r.get('element_count')} {_UNEXPECTED_NOUN.get(check, 'unexpected')}" + (
        f" ({pct:.3g}%)" if isinstance(pct, (int, float)) and math.isfinite(pct) else ""
    )
    return (f"{dtype}; {observed}" if dtype else observed), unexpected


def _clip(v: Any) -> Any:
    """A sampled value short enough for one line: a whole row keeps its first columns, long strings are cut."""
    if isinstance(v, dict) and len(v) > SAMPLE_ROW_COLUMNS:
        keys = list(v)[:SAMPLE_ROW_COLUMNS]
        return {k: _clip(v[k]) for k in keys} | {"\u2026": f"{len(v) - SAMPLE_ROW_COLUMNS} more columns"}
    if isinstance(v, str) and len(v) > SAMPLE_CHARS:
        return v[: SAMPLE_CHARS - 3] + "..."
    return v


def short(v: Any, limit: int = 160) -> str:
    if v is None:
        return ""
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= limit else s[: limit - 3] + "..."
