"""validate: the data-validation gate, a Great Expectations 1.x suite built from the schema config.

Why a suite built from config rather than a hand-written one: the dataset schema
(columns, dtypes, nullability, ranges, categories, label values, row and balance
bounds) is versioned in `kfct/config/default.yaml` (`schema_version`), so a user
with another dataset changes YAML, not code, and every report names the schema
version it was checked against.

Pure core (no kfp here; the pipeline wraps these):
- `build_suite(cfg)` -> `great_expectations.ExpectationSuite`
- `validate_frame(df, cfg)` -> plain JSON-able result dict (ephemeral GX context,
  pandas datasource, dataframe batch; nothing is written to disk)
- `write_report(result, out_dir)` -> `validation.json`, `validation.md`, `validation.html`
- `summary_line(result)` -> one line for the CLI / pipeline summary

Great Expectations is imported inside functions only: importing it costs seconds.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, get_type_hints

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output

from kfct.config import ConfigError

# Dtype names GX compares against (numpy names, pandas extension dtype class names,
# and "int"/"float"/"str" which GX maps to the Python types for object columns).
NUMERIC_TYPES = [
    "int", "float",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
    "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype",
    "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype",
    "Float32Dtype", "Float64Dtype",
]
STRING_TYPES = ["str", "StringDtype"]
DTYPE_FAMILY = {"int": "numeric", "float": "numeric", "string": "string", "category": "string"}
FAMILY_TYPES = {"numeric": NUMERIC_TYPES, "string": STRING_TYPES}

# Two passes keep GX fast: every check first runs BOOLEAN_ONLY (no unexpected-value
# lists, so no extra whole-frame row selection per check), then the failed checks and
# the few cheap headline aggregates run again with BASIC, whose partial_unexpected_list
# gives the sample of bad values. (SUMMARY would add value counts and index lists.)
FIRST_PASS_FORMAT = {"result_format": "BOOLEAN_ONLY"}
DETAIL_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 20}
HEADLINE_CHECKS = frozenset({"min_rows", "column_set", "label_balance", "label_balance_min", "label_balance_max"})
SAMPLE_SIZE = 5


def _quiet_gx() -> None:
    """No analytics calls from GX (also never reachable here)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def suite_name(cfg: dict) -> str:
    ds = cfg["dataset"]
    return f"{ds.get('name', 'dataset')}.v{int(cfg.get('schema_version', 1))}"


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _check_config(cfg: dict) -> dict:
    """Reject a schema config GX would silently drop or misread; say which key is wrong."""
    if "dataset" not in cfg or not isinstance(cfg["dataset"], dict):
        raise ConfigError("config has no 'dataset' section")
    ds = cfg["dataset"]
    cols = ds.get("columns")
    if not isinstance(cols, dict) or not cols:
        raise ConfigError("config dataset.columns must be a non-empty mapping of column -> spec")
    for name, spec in cols.items():
        where = f"dataset.columns.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a mapping")
        dtype = spec.get("dtype")
        if dtype not in DTYPE_FAMILY:
            raise ConfigError(f"{where}.dtype is {dtype!r}; use one of {', '.join(DTYPE_FAMILY)}")
        lo, hi = spec.get("min"), spec.get("max")
        for key, val in (("min", lo), ("max", hi)):
            if val is not None and (isinstance(val, bool) or not isinstance(val, (int, float))):
                raise ConfigError(f"{where}.{key} must be a number, got {val!r}")
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"{where}: min {lo} is greater than max {hi}")
        if (lo is not None or hi is not None) and DTYPE_FAMILY[dtype] != "numeric":
            raise ConfigError(f"{where}: min/max need a numeric dtype, not {dtype}")
        for key in ("categories", "values"):
            if key in spec and (not isinstance(spec[key], list) or not spec[key]):
                raise ConfigError(f"{where}.{key} must be a non-empty list")
    for key in ("id_column", "label"):
        if ds.get(key) is not None and ds[key] not in cols:
            raise ConfigError(f"dataset.{key} {ds[key]!r} is not one of dataset.columns")
    bal = ds.get("label_balance")
    if bal is not None:
        if not (isinstance(bal, (list, tuple)) and len(bal) == 2 and 0 <= bal[0] <= bal[1] <= 1):
            raise ConfigError(f"dataset.label_balance must be [low, high] with 0 <= low <= high <= 1, got {bal!r}")
        if ds.get("label") is None:
            raise ConfigError("dataset.label_balance is set but dataset.label is not")
    share = ds.get("max_duplicate_share")
    if share is not None and not (0 <= share < 1):
        raise ConfigError(f"dataset.max_duplicate_share must be in [0, 1), got {share!r}")
    mr = ds.get("min_rows")
    if mr is not None and (not isinstance(mr, int) or mr < 0):
        raise ConfigError(f"dataset.min_rows must be a non-negative integer, got {mr!r}")
    return ds


def _planned(cfg: dict, present_columns: Iterable[str] | None = None) -> list[tuple[str, dict, dict]]:
    """(expectation class name, kwargs, meta) for every check the schema asks for.

    `meta` carries a short check name and a human sentence of what is expected, so
    results and reports stay readable without knowing GX's kwargs.
    """
    ds = _check_config(cfg)
    cols: dict = ds["columns"]
    label = ds.get("label")
    plan: list[tuple[str, dict, dict]] = []

    def add(kind: str, kwargs: dict, check: str, expected: str, column: str | None = None) -> None:
        meta = {"order": len(plan), "check": check, "expected": expected, "column": column}
        plan.append((kind, kwargs, meta))

    for col, spec in cols.items():
        family = DTYPE_FAMILY[spec["dtype"]]
        add("ExpectColumnToExist", {"column": col}, "exists", "column is present", col)
        add(
            "ExpectColumnValuesToBeInTypeList",
            {"column": col, "type_list": FAMILY_TYPES[family]},
            "dtype",
            f"{family} values (schema dtype {spec['dtype']})",
            col,
        )
        if not spec.get("nullable", True):
            add("ExpectColumnValuesToNotBeNull", {"column": col}, "not_null", "no missing values", col)
        lo, hi = spec.get("min"), spec.get("max")
        if lo is not None or hi is not None:
            if lo is not None and hi is not None:
                text = f"values between {_fmt(lo)} and {_fmt(hi)}"
            elif lo is not None:
                text = f"values >= {_fmt(lo)}"
            else:
                text = f"values <= {_fmt(hi)}"
            add("ExpectColumnValuesToBeBetween", {"column": col, "min_value": lo, "max_value": hi}, "range", text, col)
        if "categories" in spec:
            add(
                "ExpectColumnValuesToBeInSet",
                {"column": col, "value_set": list(spec["categories"])},
                "categories",
                "values in {" + ", ".join(map(str, spec["categories"])) + "}",
                col,
            )
        if "values" in spec:
            add(
                "ExpectColumnValuesToBeInSet",
                {"column": col, "value_set": list(spec["values"])},
                "label_values" if col == label else "values",
                "values in {" + ", ".join(map(str, spec["values"])) + "}",
                col,
            )
        if spec.get("unique"):
            add("ExpectColumnValuesToBeUnique", {"column": col}, "unique", "no repeated values", col)

    # Table level.
    min_rows, max_rows = ds.get("min_rows"), ds.get("max_rows")
    if min_rows is not None or max_rows is not None:
        text = " and ".join(
            t for t in (f">= {min_rows}" if min_rows is not None else "", f"<= {max_rows}" if max_rows is not None else "") if t
        )
        add("ExpectTableRowCountToBeBetween", {"min_value": min_rows, "max_value": max_rows}, "min_rows", f"row count {text}")
    exact = not ds.get("allow_extra_columns", False)
    add(
        "ExpectTableColumnsToMatchSet",
        {"column_set": list(cols), "exact_match": exact},
        "column_set",
        f"{'exactly' if exact else 'at least'} the {len(cols)} schema columns",
    )
    share = ds.get("max_duplicate_share")
    if share is not None:
        present = set(present_columns) if present_columns is not None else None
        dup_cols = [c for c in cols if present is None or c in present]
        if dup_cols:
            # GX counts every copy of a duplicated row as unexpected (pandas keep=False),
            # so this bounds the share of rows that take part in any duplicate group.
            add(
                "ExpectCompoundColumnsToBeUnique",
                {"column_list": dup_cols, "mostly": 1.0 - float(share), "ignore_row_if": "never"},
                "duplicate_share",
                f"share of fully duplicated rows <= {float(share):.2%}",
            )
    bal = ds.get("label_balance")
    if bal is not None:
        lo, hi = float(bal[0]), float(bal[1])
        pos = ds.get("positive_label", 1)
        values = cols[label].get("values")
        text = f"positive share ({label} == {pos!r}) between {lo:.2%} and {hi:.2%}"
        if values is not None and sorted(values) == [0, 1] and pos == 1:
            # 0/1 label: the mean is the positive share, observed directly.
            add("ExpectColumnMeanToBeBetween", {"column": label, "min_value": lo, "max_value": hi}, "label_balance", text, label)
        else:
            # Any other label coding: two 'mostly' bounds on membership of the positive value.
            add(
                "ExpectColumnValuesToBeInSet",
                {"column": label, "value_set": [pos], "mostly": lo},
                "label_balance_min",
                f"positive share ({label} == {pos!r}) >= {lo:.2%}",
                label,
            )
            add(
                "ExpectColumnValuesToNotBeInSet",
                {"column": label, "value_set": [pos], "mostly": 1.0 - hi},
                "label_balance_max",
                f"positive share ({label} == {pos!r}) <= {hi:.2%}",
                label,
            )
    return plan


def build_suite(cfg: dict, present_columns: Iterable[str] | None = None):
    """The GX ExpectationSuite for `cfg["dataset"]`, named `<dataset>.v<schema_version>`.

    `present_columns` only narrows the table-wide duplicate-row check to columns the
    frame actually has, so a missing column is reported by its own checks rather than
    breaking the duplicate check too.
    """
    return _suite_from_plan(cfg, _planned(cfg, present_columns))


def _suite_from_plan(cfg: dict, plan: list[tuple[str, dict, dict]], name: str | None = None):
    _quiet_gx()
    import great_expectations as gx

    expectations = []
    for kind, kwargs, meta in plan:
        cls = getattr(gx.expectations, kind)
        try:
            expectations.append(cls(**kwargs, meta=meta))
        except Exception as exc:  # pydantic validation of kwargs
            col = meta.get("column")
            raise ConfigError(f"invalid schema config for {col or 'table'} ({meta['check']}): {exc}") from exc
    suite = gx.ExpectationSuite(
        name=name or suite_name(cfg),
        expectations=expectations,
        meta={
            "schema_version": int(cfg.get("schema_version", 1)),
            "dataset": cfg["dataset"].get("name"),
            "built_by": "kfct kfct.components.validate.build_suite",
        },
    )
    if len(suite.expectations) != len(plan):  # GX logs and drops invalid configurations
        raise ConfigError(f"schema config produced {len(plan)} checks but GX accepted {len(suite.expectations)}")
    return suite


def _ephemeral_context():
    """In-memory GX context: no stores, no data docs, no progress bars, no analytics."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _jsonable(v: Any) -> Any:
    """GX results hold numpy scalars, NaN, tuples and sets: make them strict-JSON values."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v) if math.isfinite(v) else None
    if np is not None:
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.floating):
            f = float(v)
            return f if math.isfinite(f) else None
        if isinstance(v, np.ndarray):
            return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (set, frozenset)):
        return sorted((_jsonable(x) for x in v), key=str)
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return None
        if isinstance(v, pd.Timestamp):
            return v.isoformat()
    except ImportError:  # pragma: no cover
        pass
    return str(v)


def _sample(values: list, n: int = SAMPLE_SIZE) -> list:
    """Up to n distinct bad values, in the order GX found them."""
    out: list = []
    seen: set[str] = set()
    for v in values or []:
        key = json.dumps(_jsonable(v), sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(_jsonable(v))
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


def _record(res, df_columns: set, dtypes: dict) -> dict:
    """One short, JSON-able record for one GX ExpectationValidationResult."""
    conf = res.expectation_config
    kind = conf.type
    kwargs = {k: v for k, v in dict(conf.kwargs).items() if k != "batch_id"}
    meta = dict(conf.meta or {})
    column = meta.get("column") or kwargs.get("column")
    r = dict(res.result or {})
    exc = res.exception_info or {}
    if exc and "raised_exception" not in exc:  # GX keys metric errors by metric id
        inner = [x for x in exc.values() if isinstance(x, dict) and x.get("raised_exception")]
        exc = inner[0] if inner else {}
    raised = bool(exc.get("raised_exception"))
    unexpected = r.get("unexpected_count")
    samples = _sample(r.get("partial_unexpected_list") or [])
    if raised:
        if column is not None and column not in df_columns:
            observed: Any = f"not evaluated: column {column!r} is missing"
        else:
            lines = str(exc.get("exception_message") or "").strip().splitlines() or ["unknown error"]
            observed = "error: " + _short(lines[0], 200)
    elif "observed_value" in r:
        observed = _jsonable(r["observed_value"])
        if kind == "expect_column_values_to_be_in_type_list" and column in dtypes:
            observed = f"dtype {dtypes[column]}"
    elif unexpected is not None:
        pct = r.get("unexpected_percent")
        noun = _UNEXPECTED_NOUN.get(meta.get("check", ""), "unexpected")
        observed = f"{unexpected} of {r.get('element_count')} {noun}" + (
            f" ({pct:.3g}%)" if isinstance(pct, (int, float)) and math.isfinite(pct) else ""
        )
        if kind == "expect_column_values_to_be_in_type_list" and column in dtypes:
            observed = f"dtype {dtypes[column]}; " + observed
        if meta.get("check") in ("label_balance_min", "label_balance_max") and isinstance(pct, (int, float)):
            # in-set(positive) misses are the negatives; not-in-set(positive) misses are the positives
            share = 1 - pct / 100 if meta["check"] == "label_balance_min" else pct / 100
            observed = f"positive share {share:.2%}"
            unexpected = None
    else:
        observed = None
    if observed is None and kind == "expect_column_values_to_be_in_type_list" and column in dtypes:
        observed = f"dtype {dtypes[column]}"
    if kind == "expect_column_to_exist" and not raised:
        observed = "present" if res.success else "missing"
    if kind == "expect_table_columns_to_match_set" and not raised:
        mism = (r.get("details") or {}).get("mismatched") or {}
        missing, extra = list(mism.get("missing") or []), list(mism.get("unexpected") or [])
        samples = [f"missing: {c}" for c in missing] + [f"unexpected: {c}" for c in extra]
        observed = f"{len(r.get('observed_value') or [])} columns" + (
            f"; missing {missing}" if missing else ""
        ) + (f"; unexpected {extra}" if extra else "")
        unexpected = len(samples) if samples else None
    rec = {
        "expectation": kind,
        "check": meta.get("check", kind),
        "column": column,
        "success": bool(res.success),
        "expected": meta.get("expected", ""),
        "observed": observed,
        "kwargs": _jsonable(kwargs),
        "unexpected_count": _jsonable(unexpected) if unexpected is not None else None,
        "unexpected_percent": _jsonable(r.get("unexpected_percent")),
        "sample_bad_values": samples if not res.success else [],
    }
    if raised:
        rec["error"] = str(exc.get("exception_message") or "")[:500]
    return rec


def _plain_storage(frame):
    """Same values, storage GX's dtype comparison understands (in place on a copy).

    GX matches a column's dtype against names, which misses pyarrow-backed and
    categorical columns (`string[pyarrow]`, pandas 3 `str`, `category`,
    `int64[pyarrow]`). Their values are moved to object / numpy storage, where GX
    still checks every value's type, so a wrong value is still caught and named.
    """
    import pandas as pd

    for col in frame.columns:
        dt = frame[col].dtype
        if isinstance(dt, pd.CategoricalDtype) or (isinstance(dt, pd.StringDtype) and dt != pd.StringDtype("python")):
            frame[col] = frame[col].astype(object)
        elif isinstance(dt, pd.ArrowDtype):
            import pyarrow as pa

            t = dt.pyarrow_dtype
            has_nulls = bool(frame[col].isna().any())
            if pa.types.is_integer(t):
                frame[col] = frame[col].astype("Int64" if has_nulls else dt.numpy_dtype)
            elif pa.types.is_floating(t):
                frame[col] = frame[col].astype("float64")
            else:
                frame[col] = frame[col].astype(object)
    return frame


def validate_frame(df, cfg: dict) -> dict:
    """Run the schema suite on `df` with an ephemeral GX context; plain JSON-able result.

    Result keys: passed, suite, schema_version, n_expectations, n_failed, rows,
    failures (failed records with column, kwargs, observed, unexpected_count,
    sample_bad_values), results (one record per expectation, passing ones too).
    A missing column or a wrong dtype is a named failure, never an exception.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validate_frame needs a pandas DataFrame, got {type(df).__name__}")
    dup_names = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if dup_names:
        raise ValueError(f"dataset has duplicated column names: {', '.join(dup_names)}")
    # GX selects rows per check by boolean indexing the whole frame; a fresh copy has
    # consolidated blocks, which makes each of those selections about twice as cheap.
    frame = _plain_storage(df.copy())
    frame.columns = [str(c) for c in frame.columns]
    present = list(frame.columns)
    dtypes = {str(c): str(t) for c, t in df.dtypes.items()}  # as the user gave them
    plan = _planned(cfg, present_columns=present)
    suite = _suite_from_plan(cfg, plan)

    import logging

    ctx = _ephemeral_context()
    ds = ctx.data_sources.add_pandas("kfct")
    asset = ds.add_dataframe_asset("dataset")
    batch_def = asset.add_batch_definition_whole_dataframe("whole")
    # One validator for both passes: the batch is loaded (and fingerprinted by GX, a
    # full-frame hash) once, and metrics of pass 1 are reused from its cache in pass 2.
    # `Batch.validate` builds exactly this validator, but a new one on every call.
    from great_expectations.validator.v1_validator import Validator

    validator = Validator(
        batch_definition=batch_def,
        batch_parameters={"dataframe": frame},
        result_format=dict(FIRST_PASS_FORMAT),
    )
    gx_logger = logging.getLogger("great_expectations")
    level = gx_logger.level
    gx_logger.setLevel(logging.CRITICAL)  # missing-column errors are reported by us, named
    try:
        first = validator.validate_expectation_suite(suite)
        by_order = {_order(r): r for r in first.results}
        if len(by_order) != len(plan):
            raise RuntimeError(f"GX returned {len(first.results)} results for {len(plan)} expectations")
        again = [p for p in plan if not by_order[p[2]["order"]].success or p[2]["check"] in HEADLINE_CHECKS]
        if again:
            validator.result_format = dict(DETAIL_FORMAT)
            detail = validator.validate_expectation_suite(_suite_from_plan(cfg, again, name=suite.name + ".detail"))
            by_order.update({_order(r): r for r in detail.results})
    finally:
        gx_logger.setLevel(level)

    # GX resolves checks in its own order; report them in suite (schema) order.
    records = [_record(by_order[i], set(present), dtypes) for i in sorted(by_order)]
    failures = [
        {k: rec[k] for k in ("expectation", "check", "column", "expected", "kwargs", "observed",
                             "unexpected_count", "unexpected_percent", "sample_bad_values")}
        | ({"error": rec["error"]} if "error" in rec else {})
        for rec in records
        if not rec["success"]
    ]
    results = [
        {k: rec[k] for k in ("expectation", "check", "column", "success", "expected", "observed", "unexpected_count")}
        for rec in records
    ]
    return {
        "passed": not failures,
        "suite": suite.name,
        "schema_version": int(cfg.get("schema_version", 1)),
        "n_expectations": len(records),
        "n_failed": len(failures),
        "rows": int(len(frame)),
        "columns": len(present),
        "gx_version": _gx_version(),
        "failures": failures,
        "results": results,
    }


def _order(res) -> int:
    return int((res.expectation_config.meta or {})["order"])


def _gx_version() -> str:
    import great_expectations as gx

    return str(gx.__version__)


# ---------------------------------------------------------------- reporting


def _where(rec: dict) -> str:
    return rec.get("column") or "(table)"


def summary_line(result: dict, max_listed: int = 5) -> str:
    """`validation: 95 expectations, 0 failed (passed)`, or the failed checks named."""
    n, k = result["n_expectations"], result["n_failed"]
    line = f"validation: {n} expectations, {k} failed ({'passed' if result['passed'] else 'FAILED'})"
    fails = result.get("failures") or []
    if fails and max_listed > 0:
        parts = []
        for f in fails[:max_listed]:
            part = f"{_where(f)}: {f['check']}"
            if f.get("unexpected_count"):
                part += f" ({f['unexpected_count']} bad)"
            parts.append(part)
        more = f"; +{len(fails) - max_listed} more" if len(fails) > max_listed else ""
        line += " - " + "; ".join(parts) + more
    return line


def _short(v: Any, limit: int = 160) -> str:
    if v is None:
        return ""
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _samples_text(values: list, limit: int = 400) -> str:
    """`"lifetime", 7.5` style: JSON per value, so strings and numbers stay distinguishable."""
    return _short(", ".join(json.dumps(v, default=str) for v in values or []), limit)


def _md_cell(v: Any, limit: int = 160) -> str:
    return _short(v, limit).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(result: dict) -> str:
    lines = [
        f"# Data validation: {result['suite']}",
        "",
        f"**{summary_line(result, max_listed=0)}** on {result['rows']} rows, schema version {result['schema_version']}.",
        "",
    ]
    if result["failures"]:
        lines += [
            "## Failed expectations",
            "",
            "| # | column | check | expected | observed | unexpected | sample bad values |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, f in enumerate(result["failures"], 1):
            lines.append(
                f"| {i} | {_md_cell(_where(f))} | {_md_cell(f['check'])} `{f['expectation']}` | {_md_cell(f['expected'])} "
                f"| {_md_cell(f['observed'])} | {_md_cell(f.get('unexpected_count'))} "
                f"| {_md_cell(_samples_text(f['sample_bad_values'], 240), 240)} |"
            )
        lines.append("")
    else:
        lines += ["All expectations passed.", ""]
    lines += [
        "## All expectations",
        "",
        "| # | result | column | check | expected | observed |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(result["results"], 1):
        lines.append(
            f"| {i} | {'pass' if r['success'] else '**FAIL**'} | {_md_cell(_where(r))} | {_md_cell(r['check'])} "
            f"| {_md_cell(r['expected'])} | {_md_cell(r['observed'])} |"
        )
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
.summary{padding:.6em 1em;border-radius:4px;font-weight:600}
.ok{background:#e6f4ea;color:#1e6b34}.bad{background:#fce8e6;color:#a50e0e}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4}tr.fail td{background:#fff4f4}code{font-size:.95em}
"""


def render_html(result: dict) -> str:
    """Self-contained HTML (inline CSS, no scripts, every value escaped)."""
    e = html.escape
    ok = result["passed"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Data validation: {e(result['suite'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Data validation: {e(result['suite'])}</h1>",
        f'<p class="summary {"ok" if ok else "bad"}">{e(summary_line(result, max_listed=0))}</p>',
        f"<p>{result['rows']} rows, schema version {e(str(result['schema_version']))}, "
        f"Great Expectations {e(str(result.get('gx_version', '')))}.</p>",
    ]
    if result["failures"]:
        parts += [
            "<h2>Failed expectations</h2>",
            "<table><thead><tr><th>#</th><th>column</th><th>check</th><th>expected</th><th>observed</th>"
            "<th>unexpected</th><th>sample bad values</th></tr></thead><tbody>",
        ]
        for i, f in enumerate(result["failures"], 1):
            parts.append(
                f'<tr class="fail"><td>{i}</td><td>{e(_where(f))}</td>'
                f'<td>{e(f["check"])}<br><code>{e(f["expectation"])}</code></td>'
                f"<td>{e(f['expected'])}</td><td>{e(_short(f['observed'], 400))}</td>"
                f"<td>{e(_short(f.get('unexpected_count')))}</td>"
                f"<td>{e(_samples_text(f['sample_bad_values']))}</td></tr>"
            )
        parts.append("</tbody></table>")
    else:
        parts.append("<p>All expectations passed.</p>")
    parts += [
        "<h2>All expectations</h2>",
        "<table><thead><tr><th>#</th><th>result</th><th>column</th><th>check</th><th>expected</th>"
        "<th>observed</th></tr></thead><tbody>",
    ]
    for i, r in enumerate(result["results"], 1):
        cls = "" if r["success"] else ' class="fail"'
        parts.append(
            f"<tr{cls}><td>{i}</td><td>{'pass' if r['success'] else '<b>FAIL</b>'}</td><td>{e(_where(r))}</td>"
            f"<td>{e(r['check'])}</td><td>{e(r['expected'])}</td><td>{e(_short(r['observed'], 400))}</td></tr>"
        )
    parts.append("</tbody></table></body></html>")
    return "\n".join(parts) + "\n"


def write_report(result: dict, out_dir) -> dict[str, Path]:
    """Write validation.json / .md / .html under out_dir; return their paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "validation.json",
        "markdown": out / "validation.md",
        "html": out / "validation.html",
    }
    paths["json"].write_text(json.dumps(result, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(result), encoding="utf-8")
    paths["html"].write_text(render_html(result), encoding="utf-8")
    return paths


# --- kfp component (thin adapter; written by the pipeline owner) -------------------------------
def validate_data(
    dataset: Input[Dataset],
    config_json: str,
    model_name: str,
    pipeline_run: str,
    report: Output[HTML],
    report_json: Output[Artifact],
    report_md: Output[Markdown],
) -> bool:
    """Validate the snapshot with the Great Expectations suite built from the schema config; returns passed."""
    import shutil
    import tempfile

    import pandas as pd

    from kfct.components.validate import validate_frame, write_report
    from kfct import audit
    from kfct.config import config_from_json

    cfg = config_from_json(config_json)
    result = validate_frame(pd.read_parquet(dataset.path), cfg)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_report(result, tmp)
        shutil.copyfile(paths["html"], report.path)
        shutil.copyfile(paths["markdown"], report_md.path)
        shutil.copyfile(paths["json"], report_json.path)
    for art in (report, report_json, report_md):
        art.metadata.update({"passed": result["passed"], "n_expectations": result["n_expectations"],
                             "n_failed": result["n_failed"]})
    audit.record("validation", model_name=model_name, pipeline_run=pipeline_run, passed=result["passed"],
                 dataset_sha256=dataset.metadata.get("sha256", ""), n_expectations=result["n_expectations"],
                 n_failed=result["n_failed"],
                 failed=[f"{f.get('expectation')}[{f.get('column') or ''}]" for f in result["failures"]][:50])
    from kfct.logs import stage_logger

    stage_logger("kfct.components.validate").info(
        "validation %s: %d of %d expectations failed%s", "passed" if result["passed"] else "FAILED", result["n_failed"],
        result["n_expectations"], "".join(f"; {f.get('expectation')}[{f.get('column') or ''}]"
                                         for f in result["failures"][:5]))
    return bool(result["passed"])


# This module uses postponed annotations; kfp reads the signature, so give it the real types.
validate_data.__annotations__ = get_type_hints(validate_data, include_extras=True)
