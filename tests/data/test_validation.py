"""The Great Expectations suite built from the schema config: accepts clean generated
data, rejects every `kfct.data.datagen.CORRUPTIONS` kind naming the column and the check,
and reports the failure with sample bad values (JSON, Markdown, HTML)."""

from __future__ import annotations

import copy
import json

import pytest

from kfct.data.datagen import CORRUPTIONS, corrupt, generate, write_frame

# For every corruption kind: the exact set of (check, column) that must fail (None =
# table-level), and per failing check a value that must appear among its sample bad values.
EXPECTED_FAILURES = {
    "label_nulls": ({("not_null", "churned")}, {("not_null", "churned"): None}),
    "unknown_category": ({("categories", "contract_type")}, {("categories", "contract_type"): "lifetime"}),
    "out_of_range": (
        {("range", "frustration_index"), ("range", "recency_days")},
        {("range", "frustration_index"): 7.5, ("range", "recency_days"): -3.0},
    ),
    "missing_column": (
        {
            ("exists", "frustration_index"),
            ("dtype", "frustration_index"),
            ("not_null", "frustration_index"),
            ("range", "frustration_index"),
            ("column_set", None),
        },
        {("column_set", None): "missing: frustration_index"},
    ),
    "duplicated_rows": ({("unique", "customer_id"), ("duplicate_share", None)}, {}),
    "too_few_rows": ({("min_rows", None)}, {}),
    "wrong_dtype": ({("dtype", "tenure_days"), ("range", "tenure_days")}, {}),
}


@pytest.fixture(scope="module")
def clean():
    return generate(5000, seed=7)


@pytest.fixture(scope="module")
def validate():
    from kfct.components.validate import validate_frame

    return validate_frame


@pytest.fixture(scope="module")
def validated(validate, cfg, clean):
    """`validated(kind)`: the validation of `corrupt(clean, kind)`, for the tests that only read it.

    Each kind is validated once per module (a few GX passes over 5,000 rows each; validate_frame is
    deterministic: the same frame and config give the same result), and every test gets a copy of its own.
    A test about what validating does (no files written) calls `validate` itself."""
    done: dict = {}

    def get(kind: str) -> dict:
        if kind not in done:
            done[kind] = validate(corrupt(clean, kind), cfg)
        return copy.deepcopy(done[kind])

    return get


def _failed(result) -> set:
    return {(f["check"], f["column"]) for f in result["failures"]}


def test_every_corruption_kind_has_a_case():
    assert set(EXPECTED_FAILURES) == set(CORRUPTIONS)


@pytest.mark.parametrize("rows,seed", [(2000, 1), (5000, 7), (5000, 42), (20000, 1)])
def test_clean_generated_data_passes(validate, cfg, rows, seed):
    result = validate(generate(rows, seed=seed), cfg)
    assert result["failures"] == [], result["failures"]
    assert result["passed"] is True
    assert result["rows"] == rows
    assert result["n_failed"] == 0
    assert result["n_expectations"] == len(result["results"]) > len(cfg.dataset.columns) * 2
    assert all(r["success"] for r in result["results"])
    json.dumps(result, allow_nan=False)  # plain JSON, no NaN/numpy leftovers


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_each_corruption_is_rejected_and_named(validated, kind):
    must_fail, samples = EXPECTED_FAILURES[kind]
    result = validated(kind)
    assert result["passed"] is False
    assert _failed(result) == must_fail
    assert result["n_failed"] == len(result["failures"]) == len(must_fail)
    by_key = {(f["check"], f["column"]): f for f in result["failures"]}
    for key, value in samples.items():
        assert value in by_key[key]["sample_bad_values"], by_key[key]
    for f in result["failures"]:
        assert f["expectation"].startswith("expect_")
        assert len(f["sample_bad_values"]) <= 5
        assert f["observed"] is not None
    json.dumps(result, allow_nan=False)


def test_failure_records_carry_counts_kwargs_and_observed(validated, clean):
    result = validated("out_of_range")
    f = next(x for x in result["failures"] if x["column"] == "frustration_index")
    assert f["expectation"] == "expect_column_values_to_be_between"
    assert f["kwargs"] == {"column": "frustration_index", "min_value": 0, "max_value": 1}
    assert f["unexpected_count"] == len(clean) // 50  # corrupt() breaks n // 50 rows
    assert "out of range" in f["observed"]
    assert f["sample_bad_values"] == [7.5]


def test_wrong_dtype_names_the_column_and_shows_the_strings(validated, clean):
    result = validated("wrong_dtype")
    f = next(x for x in result["failures"] if x["check"] == "dtype")
    assert f["column"] == "tenure_days"
    assert f["expectation"] == "expect_column_values_to_be_in_type_list"
    assert f["observed"].startswith("dtype object")
    assert f["unexpected_count"] == len(clean)
    assert all(isinstance(v, str) and v.endswith(" days") for v in f["sample_bad_values"])


def test_duplicates_and_too_few_rows_report_observations(validated, clean):
    dup = validated("duplicated_rows")
    share = next(x for x in dup["failures"] if x["check"] == "duplicate_share")
    assert share["expectation"] == "expect_compound_columns_to_be_unique"
    # corrupt() appends n // 10 copies; GX counts both the original and the copy
    assert share["unexpected_count"] == 2 * (len(clean) // 10)
    assert share["sample_bad_values"] and isinstance(share["sample_bad_values"][0], dict)
    few = validated("too_few_rows")
    (row_check,) = few["failures"]
    assert row_check["expectation"] == "expect_table_row_count_to_be_between"
    assert row_check["observed"] == 50


def test_label_balance_out_of_bounds_fails(validate, cfg, clean):
    skewed = clean.copy()
    skewed["churned"] = 0
    skewed.loc[skewed.index[:10], "churned"] = 1  # 0.2% positives, below the configured floor
    result = validate(skewed, cfg)
    assert _failed(result) == {("label_balance", "churned")}
    f = result["failures"][0]
    assert f["observed"] == pytest.approx(10 / len(clean))


def test_extra_column_and_empty_frame_fail_without_crashing(validate, cfg, clean):
    extra = clean.copy()
    extra["surprise"] = 1
    result = validate(extra, cfg)
    assert _failed(result) == {("column_set", None)}
    assert "unexpected: surprise" in result["failures"][0]["sample_bad_values"]
    empty = validate(clean.head(0), cfg)
    assert empty["passed"] is False and empty["rows"] == 0
    assert ("min_rows", None) in _failed(empty)
    json.dumps(empty, allow_nan=False)


def test_other_label_coding_uses_membership_bounds(validate, cfg, clean):
    from kfct.config import ColumnSpec

    c = copy.deepcopy(cfg)
    c.dataset.columns["churned"] = ColumnSpec(dtype="category", nullable=False, values=["no", "yes"])
    c.dataset.positive_label = "yes"
    coded = clean.copy()
    coded["churned"] = coded["churned"].map({0: "no", 1: "yes"})
    ok = validate(coded, c)
    assert ok["passed"], ok["failures"]
    assert {"label_balance_min", "label_balance_max"} <= {r["check"] for r in ok["results"]}
    coded.loc[coded.index[: int(len(coded) * 0.9)], "churned"] = "yes"
    bad = validate(coded, c)
    assert _failed(bad) == {("label_balance_max", "churned")}
    # and the 0/1 schema rejects the string coding, naming the label (yes/no are spellings of 1/0,
    # kfct.data.labels, so it is the dtype check that fails)
    assert ("dtype", "churned") in _failed(validate(coded, cfg))


def test_csv_round_trip_validates_like_parquet(validate, cfg, clean, tmp_path):
    from kfct.data.datasource import read_dataset

    for frame, name in ((clean, "clean"), (corrupt(clean, "unknown_category"), "bad")):
        via_csv = validate(read_dataset(str(write_frame(frame, tmp_path / f"{name}.csv"))), cfg)
        via_parquet = validate(read_dataset(str(write_frame(frame, tmp_path / f"{name}.parquet"))), cfg)
        assert via_csv["passed"] == via_parquet["passed"] == (name == "clean")
        assert via_csv["n_expectations"] == via_parquet["n_expectations"]
        assert via_csv["failures"] == via_parquet["failures"]


def test_report_files_contain_the_failure_and_samples(validated, tmp_path):
    from kfct.components.validate import write_report

    result = validated("unknown_category")
    paths = write_report(result, tmp_path / "report")
    assert [paths[k].name for k in ("json", "markdown", "html")] == ["validation.json", "validation.md", "validation.html"]
    assert paths["data_docs"].name == "index.html" and paths["data_docs_page"].name == "dataset.html"  # GX's site
    loaded = json.loads(paths["json"].read_text())
    assert loaded == {k: v for k, v in result.items() if k != "gx_result"}  # GX's own JSON: rendered in the site
    md = paths["markdown"].read_text()
    html = paths["html"].read_text()
    assert "validation: " in md and "1 failed (FAILED)" in md
    for text in (md, html):
        assert "contract_type" in text and "lifetime" in text
        assert "expect_column_values_to_be_in_set" in text
    # the failed-expectations table comes before the full list
    assert md.index("lifetime") < md.index("## All expectations")


def test_report_escapes_hostile_values(validate, cfg, clean, tmp_path):
    from kfct.components.validate import write_report

    hostile = clean.copy()
    hostile.loc[hostile.index[:3], "region"] = "<script>alert(1)</script>|x"
    result = validate(hostile, cfg)
    assert _failed(result) == {("categories", "region")}
    html = write_report(result, tmp_path)["html"].read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    md = (tmp_path / "validation.md").read_text()
    assert "</script>\\|x" in md  # pipe escaped so the table stays a table


def test_no_files_written_by_validation(validate, cfg, clean, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    validate(corrupt(clean, "too_few_rows"), cfg)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("storage", ["string[pyarrow]", "category", "pyarrow-backend"])
def test_storage_backends_validate_like_numpy(validate, cfg, clean, storage, tmp_path):
    import pandas as pd

    if storage == "pyarrow-backend":
        frame = pd.read_parquet(write_frame(clean, tmp_path / "d.parquet"), dtype_backend="pyarrow")
    else:
        frame = clean.astype({c: storage for c in ("customer_id", "contract_type", "region")})
    assert validate(frame, cfg)["passed"]
    broken = corrupt(clean, "wrong_dtype")
    broken["tenure_days"] = broken["tenure_days"].astype("string[pyarrow]" if storage != "category" else "category")
    result = validate(broken, cfg)
    assert _failed(result) == {("dtype", "tenure_days"), ("range", "tenure_days")}
    dtype_fail = next(f for f in result["failures"] if f["check"] == "dtype")
    assert dtype_fail["sample_bad_values"] and dtype_fail["sample_bad_values"][0].endswith(" days")
