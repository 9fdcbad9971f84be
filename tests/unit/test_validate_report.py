"""Pure parts of the validate stage: the suite built from config, config errors,
the summary line and the human-readable reports (no dataset run here)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from kfct.config import ConfigError


def _result(failures=(), n=4):
    results = [
        {
            "expectation": "expect_column_to_exist",
            "check": "exists",
            "column": f"c{i}",
            "success": True,
            "expected": "column is present",
            "observed": "present",
            "unexpected_count": None,
        }
        for i in range(n - len(failures))
    ]
    results += [
        {k: f[k] for k in ("expectation", "check", "column", "expected", "observed", "unexpected_count")} | {"success": False}
        for f in failures
    ]
    return {
        "passed": not failures,
        "suite": "telecom-churn.v1",
        "schema_version": 1,
        "n_expectations": n,
        "n_failed": len(failures),
        "rows": 1234,
        "columns": 3,
        "gx_version": "1.24.1",
        "failures": list(failures),
        "results": results,
    }


RANGE_FAIL = {
    "expectation": "expect_column_values_to_be_between",
    "check": "range",
    "column": "frustration_index",
    "expected": "values between 0 and 1",
    "kwargs": {"column": "frustration_index", "min_value": 0, "max_value": 1},
    "observed": "20 of 1234 values out of range (1.62%)",
    "unexpected_count": 20,
    "unexpected_percent": 1.62,
    "sample_bad_values": [7.5, 9.25],
}
ROWS_FAIL = {
    "expectation": "expect_table_row_count_to_be_between",
    "check": "min_rows",
    "column": None,
    "expected": "row count >= 1000",
    "kwargs": {"min_value": 1000, "max_value": None},
    "observed": 50,
    "unexpected_count": None,
    "unexpected_percent": None,
    "sample_bad_values": [],
}


def test_suite_is_built_from_the_schema_config(cfg):
    from kfct.components.validate import build_suite

    suite = build_suite(cfg)
    ds = cfg.dataset
    cols = ds.columns
    assert suite.name == f"{ds.name}.v{cfg.schema_version}"
    assert suite.meta["schema_version"] == cfg.schema_version
    kinds = Counter(type(e).__name__ for e in suite.expectations)
    assert kinds["ExpectColumnToExist"] == len(cols)
    assert kinds["ExpectColumnValuesToBeInTypeList"] == len(cols)
    assert kinds["ExpectColumnValuesToNotBeNull"] == sum(not s.nullable for s in cols.values())
    assert kinds["ExpectColumnValuesToBeBetween"] == sum(s.min is not None or s.max is not None for s in cols.values())
    assert kinds["ExpectColumnValuesToBeInSet"] == sum(bool(s.categories) + bool(s.values) for s in cols.values())
    assert kinds["ExpectColumnValuesToBeUnique"] == sum(s.unique for s in cols.values())
    assert kinds["ExpectTableRowCountToBeBetween"] == 1
    assert kinds["ExpectTableColumnsToMatchSet"] == 1
    assert kinds["ExpectCompoundColumnsToBeUnique"] == 1
    assert kinds["ExpectColumnMeanToBeBetween"] == 1  # 0/1 label: positive share is the mean

    by_type = {}
    for e in suite.expectations:
        by_type.setdefault(type(e).__name__, []).append(e)
    rows = by_type["ExpectTableRowCountToBeBetween"][0]
    assert rows.min_value == ds.min_rows
    dup = by_type["ExpectCompoundColumnsToBeUnique"][0]
    assert dup.mostly == pytest.approx(1 - ds.max_duplicate_share)
    balance = by_type["ExpectColumnMeanToBeBetween"][0]
    assert (balance.column, balance.min_value, balance.max_value) == (ds.label, *ds.label_balance)
    rng = {e.column: (e.min_value, e.max_value) for e in by_type["ExpectColumnValuesToBeBetween"]}
    assert rng["frustration_index"] == (cols["frustration_index"].min, cols["frustration_index"].max)
    families = {e.column: e.type_list for e in by_type["ExpectColumnValuesToBeInTypeList"]}
    assert "str" in families[ds.id_column] and "float64" in families["frustration_index"]


@pytest.mark.parametrize(
    "patch,needle",
    [
        ({"columns": {"tenure_days": {"dtype": "integer"}}}, "dataset.columns.tenure_days.dtype"),
        ({"columns": {"tenure_days": {"dtype": "int", "min": 10, "max": 1}}}, "tenure_days: min 10 is greater than max 1"),
        ({"columns": {"region": {"dtype": "category", "min": 0}}}, "region: min/max need a numeric dtype"),
        ({"label": "target"}, "dataset.label 'target'"),
        ({"label_balance": [0.5, 0.1]}, "dataset.label_balance"),
        ({"max_duplicate_share": 2}, "dataset.max_duplicate_share"),
    ],
)
def test_bad_schema_config_is_named(cfg, patch, needle):
    from kfct.components.validate import build_suite
    from kfct.config import config_dict

    bad = config_dict(cfg)  # a raw mapping, as a file would give it
    for key, value in patch.items():
        if key == "columns":
            for col, spec in value.items():
                bad["dataset"]["columns"][col] = spec
        else:
            bad["dataset"][key] = value
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace(".", r"\.")):
        build_suite(bad)


def test_validate_frame_rejects_non_frames_and_duplicate_names(cfg):
    import pandas as pd

    from kfct.components.validate import validate_frame

    with pytest.raises(TypeError, match="pandas DataFrame"):
        validate_frame([{"a": 1}], cfg)
    with pytest.raises(ValueError, match="duplicated column names: a"):
        validate_frame(pd.DataFrame([[1, 2]], columns=["a", "a"]), cfg)


def test_summary_line_passed_and_failed():
    from kfct.components.validate import summary_line

    assert summary_line(_result()) == "validation: 4 expectations, 0 failed (passed)"
    line = summary_line(_result([RANGE_FAIL, ROWS_FAIL], n=10))
    assert line.startswith("validation: 10 expectations, 2 failed (FAILED)")
    assert "frustration_index: range (20 bad)" in line and "(table): min_rows" in line
    assert summary_line(_result([RANGE_FAIL], n=10), max_listed=0) == "validation: 10 expectations, 1 failed (FAILED)"
    many = summary_line(_result([RANGE_FAIL] * 7, n=10), max_listed=5)
    assert many.endswith("… and 2 more")


def test_markdown_and_html_reports(tmp_path):
    from kfct.components.validate import write_report

    hostile = dict(RANGE_FAIL, column="a|b<i>", sample_bad_values=["<b>x</b>", "p|q"])
    result = _result([hostile, ROWS_FAIL], n=6)
    paths = write_report(result, tmp_path / "deep" / "dir")
    assert json.loads(paths["json"].read_text()) == result
    md = paths["markdown"].read_text()
    assert md.splitlines()[0] == "# Data validation: telecom-churn.v1"
    assert "## Failed expectations" in md and md.index("## Failed expectations") < md.index("## All expectations")
    assert "a\\|b<i>" in md and "p\\|q" in md
    assert "row count >= 1000" in md and "| 50 |" in md
    table_rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "**FAIL**" in ln]
    assert len(table_rows) == 2
    html = paths["html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "http" not in html
    assert "a|b&lt;i&gt;" in html and "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert html.count('class="fail"') == 4  # 2 in the failures table, 2 in the full list


def test_passed_report_says_so(tmp_path):
    from kfct.components.validate import write_report

    paths = write_report(_result(), tmp_path)
    assert "All expectations passed." in paths["markdown"].read_text()
    assert "0 failed (passed)" in paths["html"].read_text()
