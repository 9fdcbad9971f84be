"""Which checks a schema config asks for, and the Great Expectations suite built from them.

Why a suite built from config rather than a hand-written one: the dataset schema
(columns, dtypes, nullability, ranges, categories, label values, row and balance
bounds) is versioned in the run config (`schema_version`), so a user with another
dataset changes YAML, not code, and every report names the schema version it was
checked against.

A plan is a list of `(expectation class name, kwargs, meta)`; `meta` carries a short
check name, a sentence of what is expected and the limit itself (`limit`), so results
and reports stay readable without knowing GX's kwargs. Great Expectations is imported
only by `suite_from_plan`: importing it costs seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kfct.config import ConfigError, validate_config
from kfct.data.record_schema import numeric_rule

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core.expectation_suite import ExpectationSuite

    from kfct.config import ColumnSpec, DatasetConfig, RunConfig

# Dtype names GX compares against (numpy names, pandas extension dtype class names,
# and "int"/"float"/"str" which GX maps to the Python types for object columns).
NUMERIC_TYPES = [
    "int",
    "float",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "Int8Dtype",
    "Int16Dtype",
    "Int32Dtype",
    "Int64Dtype",
    "UInt8Dtype",
    "UInt16Dtype",
    "UInt32Dtype",
    "UInt64Dtype",
    "Float32Dtype",
    "Float64Dtype",
]
STRING_TYPES = ["str", "StringDtype"]
BOOL_TYPES = ["bool", "BooleanDtype"]
# A date: datetime64 in parquet, a string in CSV (the timestamp check parses it).
DATETIME_TYPES = [
    "datetime64",
    "datetime64[ns]",
    "datetime64[us]",
    "datetime64[ms]",
    "datetime64[s]",
    "DatetimeTZDtype",
    "Timestamp",
    *STRING_TYPES,
]
DTYPE_FAMILY = {
    "int": "numeric",
    "float": "numeric",
    "string": "string",
    "category": "string",
    "bool": "bool",
    "datetime": "datetime",
}
FAMILY_TYPES = {"numeric": NUMERIC_TYPES, "string": STRING_TYPES, "bool": BOOL_TYPES, "datetime": DATETIME_TYPES}

Plan = list[tuple[str, dict[str, Any], dict[str, Any]]]
WHOLE_NUMBERS = "ExpectColumnValuesToBeWholeNumbers"  # kfct's own expectation (GX has no integer-value check)
TIMESTAMPS = "ExpectColumnValuesToBeTimestampsNotAfter"  # kfct's own: parseable dates, none in the future
DEFAULT_FUTURE_DAYS = 1.0
_CUSTOM: dict[str, type] = {}


def suite_name(cfg: RunConfig) -> str:
    return f"{cfg.dataset.name}.v{int(cfg.schema_version)}"


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _range_text(lo: float | None, hi: float | None, what: str = "values") -> str:
    if lo is not None and hi is not None:
        return f"{what} between {_fmt(lo)} and {_fmt(hi)}"
    return f"{what} >= {_fmt(lo)}" if lo is not None else f"{what} <= {_fmt(hi)}"


class _Plan:
    """Collects checks in schema order; `order` keys results back to the plan."""

    def __init__(self) -> None:
        self.items: Plan = []

    def add(
        self, kind: str, kwargs: dict[str, Any], check: str, expected: str, column: str | None = None, limit: Any = None
    ) -> None:
        meta = {"order": len(self.items), "check": check, "expected": expected, "column": column, "limit": limit}
        self.items.append((kind, kwargs, meta))


def _column_checks(p: _Plan, col: str, spec: ColumnSpec, label: str, now: float) -> None:
    family = DTYPE_FAMILY[spec.dtype]
    p.add("ExpectColumnToExist", {"column": col}, "exists", "column is present", col)
    p.add(
        "ExpectColumnValuesToBeInTypeList",
        {"column": col, "type_list": FAMILY_TYPES[family]},
        "dtype",
        f"{family} values (schema dtype {spec.dtype})",
        col,
        limit=spec.dtype,
    )
    if not spec.nullable:
        p.add("ExpectColumnValuesToNotBeNull", {"column": col}, "not_null", "no missing values", col)
    rule = numeric_rule(col, spec)  # the rule the model server and `kfct score` apply too
    if rule is not None and rule.integer:
        p.add(WHOLE_NUMBERS, {"column": col}, "integer", "whole numbers (schema dtype int)", col, limit="int")
    lo, hi = (rule.min, rule.max) if rule is not None else (spec.min, spec.max)
    if lo is not None or hi is not None:
        p.add(
            "ExpectColumnValuesToBeBetween",
            {"column": col, "min_value": lo, "max_value": hi},
            "range",
            _range_text(lo, hi),
            col,
            limit=[lo, hi],
        )
    for key, check in (("categories", "categories"), ("values", "label_values" if col == label else "values")):
        allowed = getattr(spec, key)
        if allowed:
            p.add(
                "ExpectColumnValuesToBeInSet",
                {"column": col, "value_set": list(allowed)},
                check,
                "values in {" + ", ".join(map(str, allowed)) + "}",
                col,
                limit=list(allowed),
            )
    if spec.unique:
        p.add("ExpectColumnValuesToBeUnique", {"column": col}, "unique", "no repeated values", col)
    if spec.dtype == "datetime":
        import datetime as dt

        days = DEFAULT_FUTURE_DAYS if spec.max_future_days is None else float(spec.max_future_days)
        latest = (dt.datetime.fromtimestamp(now, dt.UTC) + dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        p.add(
            TIMESTAMPS,
            {"column": col, "max_value": latest},
            "timestamp",
            f"dates, none later than {latest} (now + {days:g} day(s))",
            col,
            limit=latest,
        )


def _table_checks(p: _Plan, ds: DatasetConfig, present_columns: Iterable[str] | None) -> None:
    cols = ds.columns
    min_rows, max_rows = ds.min_rows, ds.max_rows
    if min_rows is not None or max_rows is not None:
        p.add(
            "ExpectTableRowCountToBeBetween",
            {"min_value": min_rows, "max_value": max_rows},
            "min_rows",
            _range_text(min_rows, max_rows, "row count"),
            limit=[min_rows, max_rows],
        )
    exact = not ds.allow_extra_columns
    p.add(
        "ExpectTableColumnsToMatchSet",
        {"column_set": list(cols), "exact_match": exact},
        "column_set",
        f"{'exactly' if exact else 'at least'} the {len(cols)} schema columns",
    )
    share = ds.max_duplicate_share
    present = set(present_columns) if present_columns is not None else None
    dup_cols = [c for c in cols if present is None or c in present]
    if share is not None and dup_cols:
        # GX counts every copy of a duplicated row as unexpected (pandas keep=False),
        # so this bounds the share of rows that take part in any duplicate group.
        p.add(
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": dup_cols, "mostly": 1.0 - float(share), "ignore_row_if": "never"},
            "duplicate_share",
            f"share of fully duplicated rows <= {float(share):.2%}",
            limit=float(share),
        )


def _label_balance_checks(p: _Plan, ds: DatasetConfig, positives: list[Any]) -> None:
    bal, label, pos = ds.label_balance, ds.label, ds.positive_label
    if bal is None:
        return
    lo, hi = float(bal[0]), float(bal[1])
    values = ds.columns[label].values
    text = f"positive share ({label} == {pos!r}) between {lo:.2%} and {hi:.2%}"
    zero_one = values is not None and all(type(v) is int for v in values) and set(values) == {0, 1}
    if zero_one and pos == 1 and type(pos) is int:
        # 0/1 label: the mean is the positive share, observed directly.
        p.add(
            "ExpectColumnMeanToBeBetween",
            {"column": label, "min_value": lo, "max_value": hi},
            "label_balance",
            text,
            label,
            limit=[lo, hi],
        )
        return
    # Any other label coding: two 'mostly' bounds on membership of the positive value.
    p.add(
        "ExpectColumnValuesToBeInSet",
        {"column": label, "value_set": positives, "mostly": lo},
        "label_balance_min",
        f"positive share ({label} == {pos!r}) >= {lo:.2%}",
        label,
        limit=lo,
    )
    p.add(
        "ExpectColumnValuesToNotBeInSet",
        {"column": label, "value_set": positives, "mostly": 1.0 - hi},
        "label_balance_max",
        f"positive share ({label} == {pos!r}) <= {hi:.2%}",
        label,
        limit=hi,
    )


def plan_checks(
    cfg: RunConfig, present_columns: Iterable[str] | None = None, label_data: pd.Series | None = None, now: float | None = None
) -> Plan:
    """Every check the schema asks for, in schema order: columns, then table, then label balance.

    `cfg` is validated (and its defaults filled) first, so a bad schema is a ConfigError
    naming the key, never a check GX silently drops. `label_data` (the label column,
    when the frame has it) lets the label's allowed and positive values match the
    data's own spelling (YAML's unquoted `yes` is a boolean; the CSV says "yes").
    """
    ds = validate_config(cfg, "config").dataset
    label = ds.label
    positives: list[Any] = [ds.positive_label]
    if label_data is not None:
        from kfct.data.labels import aligned_values

        positives = aligned_values(label_data, positives)
        spec = ds.columns[label]
        if spec.values:  # a copy: the caller's config keeps its own spelling
            spec = spec.model_copy(update={"values": aligned_values(label_data, spec.values)})
            ds = ds.model_copy(update={"columns": {**ds.columns, label: spec}})
    p = _Plan()
    if now is None:
        import time

        now = time.time()  # dates are checked against the time of the check
    for col, spec in ds.columns.items():
        _column_checks(p, col, spec, label, now)
    _table_checks(p, ds, present_columns)
    _label_balance_checks(p, ds, positives)
    return p.items


def build_suite(cfg: RunConfig, present_columns: Iterable[str] | None = None) -> ExpectationSuite:
    """The GX ExpectationSuite for `cfg.dataset`, named `<dataset>.v<schema_version>`.

    `present_columns` only narrows the table-wide duplicate-row check to columns the
    frame actually has, so a missing column is reported by its own checks rather than
    breaking the duplicate check too.
    """
    cfg = validate_config(cfg, "config")
    return suite_from_plan(cfg, plan_checks(cfg, present_columns))


def quiet_gx() -> None:
    """No analytics calls from GX (also never reachable here)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def suite_from_plan(cfg: RunConfig, plan: Plan, name: str | None = None) -> ExpectationSuite:
    quiet_gx()
    import great_expectations as gx

    expectations = []
    custom = custom_expectations()
    for kind, kwargs, meta in plan:
        cls = custom.get(kind) or getattr(gx.expectations, kind)
        try:
            expectations.append(cls(**kwargs, meta=meta))
        except Exception as exc:  # pydantic validation of kwargs
            col = meta.get("column")
            raise ConfigError(f"invalid schema config for {col or 'table'} ({meta['check']}): {exc}") from exc
    suite = gx.ExpectationSuite(
        name=name or suite_name(cfg),
        expectations=expectations,
        meta={
            "schema_version": int(cfg.schema_version),
            "dataset": cfg.dataset.name,
            "built_by": "kfct kfct.components.validation_plan.build_suite",
        },
    )
    if len(suite.expectations) != len(plan):  # GX logs and drops invalid configurations
        raise ConfigError(f"schema config produced {len(plan)} checks but GX accepted {len(suite.expectations)}")
    return suite


def custom_expectations() -> dict[str, type]:
    """kfct's own GX expectations, defined (and so registered with GX) on first use.

    `ExpectColumnValuesToBeWholeNumbers`: an int column read from CSV with a null is float64,
    so a dtype check cannot tell 10.0 from 10.5; the scorer and the server refuse 10.5 in an
    int column (`kfct.data.record_schema`), so the suite must too. Nulls are GX's business (the
    not_null check), as for every map expectation, and non-numbers the dtype check's."""
    if _CUSTOM:
        return _CUSTOM
    quiet_gx()
    from great_expectations.execution_engine import PandasExecutionEngine
    from great_expectations.expectations.expectation import ColumnMapExpectation
    from great_expectations.expectations.metrics import ColumnMapMetricProvider, column_condition_partial

    class ColumnValuesWholeNumbers(ColumnMapMetricProvider):
        condition_metric_name = "column_values.kfct_whole_number"

        @column_condition_partial(engine=PandasExecutionEngine)
        def _pandas(cls, column: pd.Series, **kwargs: object) -> pd.Series:
            import pandas as pd

            v = pd.to_numeric(column, errors="coerce")
            return v.isna() | (v % 1 == 0)  # a non-number is the dtype check's finding, not this one's

    class ExpectColumnValuesToBeWholeNumbers(ColumnMapExpectation):
        """Expect each non-null value to be a whole number (schema dtype int)."""

        map_metric = "column_values.kfct_whole_number"
        success_keys = ("mostly",)

    class ColumnValuesTimestampsNotAfter(ColumnMapMetricProvider):
        condition_metric_name = "column_values.kfct_timestamp_not_after"
        condition_value_keys = ("max_value",)

        @column_condition_partial(engine=PandasExecutionEngine)
        def _pandas(cls, column: pd.Series, max_value: str, **kwargs: object) -> pd.Series:
            import warnings

            import pandas as pd

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if pd.api.types.is_datetime64_any_dtype(column):
                    t = column.dt.tz_localize("UTC") if column.dt.tz is None else column.dt.tz_convert("UTC")
                else:
                    t = pd.to_datetime(column.astype(str), errors="coerce", utc=True, format="mixed")
            return t.notna() & (t <= pd.Timestamp(max_value))

    class ExpectColumnValuesToBeTimestampsNotAfter(ColumnMapExpectation):
        """Expect each non-null value to be a date (a timestamp, or a string that parses as one) not after max_value."""

        max_value: str
        map_metric = "column_values.kfct_timestamp_not_after"
        success_keys = ("mostly", "max_value")

    _CUSTOM[WHOLE_NUMBERS] = ExpectColumnValuesToBeWholeNumbers
    _CUSTOM[TIMESTAMPS] = ExpectColumnValuesToBeTimestampsNotAfter
    _CUSTOM["_metric_ts"] = ColumnValuesTimestampsNotAfter
    _CUSTOM["_metric"] = ColumnValuesWholeNumbers
    return _CUSTOM
