"""Run the schema suite on a DataFrame: an ephemeral GX context, two passes, plain JSON-able results.

Two passes keep GX fast: every check first runs BOOLEAN_ONLY (no unexpected-value
lists, so no extra whole-frame row selection per check), then the failed checks and
the few cheap headline aggregates run again with BASIC, whose partial_unexpected_list
gives the sample of bad values. (SUMMARY would add value counts and index lists.)
The two passes are joined back into one GX suite validation result (`gx_result`, GX's
own JSON), from which the report renders GX's Data Docs page. Nothing is written to disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kfct.components.validation_plan import plan_checks, quiet_gx, suite_from_plan
from kfct.components.validation_records import record
from kfct.config import validate_config

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.data_context import AbstractDataContext

    from kfct.components.validation_plan import Plan
    from kfct.config import RunConfig

FIRST_PASS_FORMAT = {"result_format": "BOOLEAN_ONLY"}
DETAIL_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 20}
HEADLINE_CHECKS = frozenset({"min_rows", "column_set", "label_balance", "label_balance_min", "label_balance_max"})
FAILURE_KEYS = (
    "expectation",
    "check",
    "column",
    "expected",
    "limit",
    "kwargs",
    "observed",
    "unexpected_count",
    "unexpected_percent",
    "sample_bad_values",
)
RESULT_KEYS = ("expectation", "check", "column", "success", "expected", "limit", "observed", "unexpected_count")


def validate_frame(df: pd.DataFrame, cfg: RunConfig) -> dict[str, Any]:
    """Run the schema suite on `df` with an ephemeral GX context; plain JSON-able result.

    Result keys: passed, suite, schema_version, n_expectations, n_failed, rows, columns,
    failures (failed records with column, expected, limit, kwargs, observed,
    unexpected_count, sample_bad_values), results (one record per expectation, passing
    ones too), hints (likely causes, e.g. a CSV read with the wrong delimiter), gx_result
    (GX's ExpectationSuiteValidationResult as its JSON dict, for GX's Data Docs).
    A missing column or a wrong dtype is a named failure, never an exception.
    """
    cfg = validate_config(cfg, "config")
    frame = _prepared(df)
    present = list(frame.columns)
    dtypes = {str(c): str(t) for c, t in df.dtypes.items()}  # as the user gave them
    label = cfg.dataset.label
    plan = plan_checks(cfg, present_columns=present, label_data=frame[label] if label in frame.columns else None)
    by_order, suite_name, gx_result = _run_two_passes(frame, cfg, plan)
    # GX resolves checks in its own order; report them in suite (schema) order.
    records = [record(by_order[i], set(present), dtypes) for i in sorted(by_order)]
    failures = [
        {k: rec[k] for k in FAILURE_KEYS} | ({"error": rec["error"]} if "error" in rec else {})
        for rec in records
        if not rec["success"]
    ]
    return {
        "passed": not failures,
        "suite": suite_name,
        "schema_version": int(cfg.schema_version),
        "n_expectations": len(records),
        "n_failed": len(failures),
        "rows": len(frame),
        "columns": len(present),
        "gx_version": _gx_version(),
        "failures": failures,
        "results": [{k: rec[k] for k in RESULT_KEYS} for rec in records],
        "hints": delimiter_hints(df, cfg),
        "gx_result": gx_result,
    }


def _prepared(df: pd.DataFrame) -> pd.DataFrame:
    """A copy GX can check: string column names, plain storage; clear errors for what GX cannot."""
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
    return frame


def _run_two_passes(
    frame: pd.DataFrame, cfg: RunConfig, plan: Plan
) -> tuple[dict[int, ExpectationValidationResult], str, dict[str, Any]]:
    """{plan order: GX result}, the suite name and both passes joined as one GX suite result (JSON dict).

    Pass 1 runs every check, pass 2 (with samples) the failures and headlines.
    """
    import logging

    from great_expectations.validator.v1_validator import Validator

    suite = suite_from_plan(cfg, plan)
    ctx = _ephemeral_context()
    asset = ctx.data_sources.add_pandas("kfct").add_dataframe_asset("dataset")
    batch_def = asset.add_batch_definition_whole_dataframe("whole")
    # One validator for both passes: the batch is loaded (and fingerprinted by GX, a
    # full-frame hash) once, and metrics of pass 1 are reused from its cache in pass 2.
    # `Batch.validate` builds exactly this validator, but a new one on every call.
    validator = Validator(
        batch_definition=batch_def, batch_parameters={"dataframe": frame}, result_format=dict(FIRST_PASS_FORMAT)
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
            detail = validator.validate_expectation_suite(suite_from_plan(cfg, again, name=suite.name + ".detail"))
            by_order.update({_order(r): r for r in detail.results})
    finally:
        gx_logger.setLevel(level)
    return by_order, suite.name, _joined(first, by_order)


def _joined(first: ExpectationSuiteValidationResult, by_order: dict[int, ExpectationValidationResult]) -> dict[str, Any]:
    """Pass 1's suite result with pass 2's detailed results in place, as GX's JSON (what Data Docs render)."""
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    first.results = [by_order[i] for i in sorted(by_order)]
    stats = calc_validation_statistics(first.results)
    first.success = stats.success
    first.statistics = {
        "evaluated_expectations": stats.evaluated_expectations,
        "successful_expectations": stats.successful_expectations,
        "unsuccessful_expectations": stats.unsuccessful_expectations,
        "success_percent": stats.success_percent,
    }
    doc: dict[str, Any] = first.to_json_dict()
    return doc


DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def delimiter_hints(df: pd.DataFrame, cfg: RunConfig) -> list[str]:
    """A CSV read with the wrong delimiter arrives as one column whose name holds the real ones."""
    if len(df.columns) != 1 or len(cfg.dataset.columns) <= 1:
        return []
    name = str(df.columns[0])
    found = [f"{word} ({sep!r})" for sep, word in DELIMITERS.items() if sep in name]
    if not found:
        return []
    return [
        f"the data has one column {name[:60]!r}, which contains {', '.join(found)}: "
        f"the file is probably delimited by {found[0].split()[0]}s, not commas; "
        f"save it comma-separated (or as parquet) and run again"
    ]


def _order(res: ExpectationValidationResult) -> int:
    conf = res.expectation_config
    return int(((conf.meta if conf else None) or {})["order"])


def _gx_version() -> str:
    import great_expectations as gx

    return str(gx.__version__)


def _ephemeral_context() -> AbstractDataContext:
    """In-memory GX context: no stores, no data docs, no progress bars, no analytics."""
    quiet_gx()
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


def _plain_storage(frame: pd.DataFrame) -> pd.DataFrame:
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
