"""Validation as map -> reduce gives the verdict a single pass gives, on defects that only cross parts.

Each case builds a dataset whose parts are each fine (or each faulty) while the whole is the
opposite, validates it once as one frame (`validate_frame`) and once part by part
(`validate_part` + `merge_results`), and asserts the two verdicts agree, check by check.
"""

import pandas as pd
import pytest

from kfct.components.validation_merge import merge_results, validate_part
from kfct.components.validation_run import validate_frame
from kfct.config import RunConfig, load_config, with_overrides
from kfct.data.datagen import generate

# Each case runs GX four times (each of three parts, then the whole frame): 2-4 s of CPU in
# the test process per case; make test, not make test-fast (tests/data/test_validation.py is there).
pytestmark = pytest.mark.slow


def _verdict(result: dict) -> tuple:
    failed = {(f["check"], f["column"]): f["unexpected_count"] for f in result["failures"]}
    return result["passed"], result["n_expectations"], result["rows"], failed


def _both(frames: list[pd.DataFrame], cfg: RunConfig, tmp_path, buckets: int | None = None) -> tuple[dict, dict]:
    parts = []
    for i, df in enumerate(frames):
        d = tmp_path / f"part{i}"
        uri = tmp_path / f"part{i}.parquet"
        df.to_parquet(uri, index=False)
        out = validate_part(df.reset_index(drop=True), cfg, d)
        parts.append({**out, "dir": str(d), "part_uri": str(uri)})
    merged = merge_results(parts, cfg, buckets=buckets)
    single = validate_frame(pd.concat(frames, ignore_index=True), cfg)
    return single, merged


@pytest.fixture(scope="module")
def base():
    return generate(6000, seed=5)


def _split(df, k=3):
    n = len(df) // k
    return [df.iloc[i * n : (i + 1) * n].copy() for i in range(k)]


def test_clean_data_passes_both_ways(base, tmp_path):
    single, merged = _both(_split(base), load_config(), tmp_path)
    assert single["passed"] and merged["passed"]
    assert _verdict(single) == _verdict(merged)
    assert merged["parts"] == 3


def test_duplicate_id_in_two_parts_fails_both_ways(base, tmp_path):
    frames = _split(base)
    frames[2].iloc[7, frames[2].columns.get_loc("customer_id")] = frames[0]["customer_id"].iloc[3]
    # each part on its own is clean
    for f in frames:
        assert f["customer_id"].is_unique
    single, merged = _both(frames, load_config(), tmp_path, buckets=4)
    assert not single["passed"]
    assert _verdict(single) == _verdict(merged)
    unique = next(f for f in merged["failures"] if f["check"] == "unique")
    assert unique["unexpected_count"] == 2
    assert unique["sample_bad_values"] == [frames[0]["customer_id"].iloc[3]]


def test_duplicated_rows_across_parts_over_the_share(base, tmp_path):
    frames = _split(base)
    k = 90  # 1.5 % of 6000 rows take part in duplicate groups (limit 1 %): 45 rows copied once
    frames[1].iloc[:45] = frames[0].iloc[:45].to_numpy()
    single, merged = _both(frames, load_config(), tmp_path, buckets=2)
    assert _verdict(single) == _verdict(merged)
    failed = {f["check"] for f in merged["failures"]}
    assert {"unique", "duplicate_share"} <= failed
    assert next(f for f in merged["failures"] if f["check"] == "duplicate_share")["unexpected_count"] == k


def test_label_share_out_of_range_only_in_one_part_passes_both_ways(base, tmp_path):
    frames = _split(base)
    frames[2]["churned"] = 1  # this part alone: 100 % positives (limit 60 %); the whole: ~45 %
    single, merged = _both(frames, load_config(), tmp_path)
    assert single["passed"], single["failures"]
    assert _verdict(single) == _verdict(merged)


def test_label_mean_shifted_in_aggregate_fails_both_ways(base, tmp_path):
    cfg = with_overrides(load_config(), {"dataset": {"label_balance": [0.03, 0.40]}})
    frames = _split(base)
    frames[1]["churned"] = (frames[1].index % 10 < 6).astype("int64")  # 60 % in this part
    frames[2]["churned"] = (frames[2].index % 10 < 6).astype("int64")  # the mean of all: ~46 % > 40 %
    single, merged = _both(frames, cfg, tmp_path)
    assert not single["passed"]
    assert _verdict(single) == _verdict(merged)
    bal = next(r for r in merged["results"] if r["check"] == "label_balance")
    assert bal["observed"] == pytest.approx(pd.concat(frames)["churned"].mean())


def test_row_count_is_global(base, tmp_path):
    cfg = with_overrides(load_config(), {"dataset": {"min_rows": 5000}})  # every 2000-row part is under it, the whole is not
    single, merged = _both(_split(base), cfg, tmp_path)
    assert single["passed"] and merged["passed"]
    cfg = with_overrides(cfg, {"dataset": {"min_rows": 7000}})
    single, merged = _both(_split(base), cfg, tmp_path)
    assert _verdict(single) == _verdict(merged)
    assert not merged["passed"]


def test_per_row_defects_add_up(base, tmp_path):
    frames = _split(base)
    frames[0].loc[frames[0].index[:3], "contract_type"] = "lifetime"
    frames[2].loc[frames[2].index[:4], "contract_type"] = "forever"
    frames[1].loc[frames[1].index[:2], "recency_days"] = -1.0
    single, merged = _both(frames, load_config(), tmp_path)
    assert _verdict(single) == _verdict(merged)
    cats = next(f for f in merged["failures"] if f["check"] == "categories")
    assert cats["unexpected_count"] == 7 and set(cats["sample_bad_values"]) == {"lifetime", "forever"}


def _gx_view(result: dict) -> tuple:
    """What GX's Data Docs show of a result: statistics, then per expectation its type, column, verdict and the
    merged-comparable values (observed value, unexpected count)."""
    g = result["gx_result"]
    rows = [
        (
            r["expectation_config"]["type"],
            r["expectation_config"]["kwargs"].get("column"),
            r["success"],
            r["result"].get("observed_value"),
            r["result"].get("unexpected_count") if not r["success"] else None,
        )
        for r in g["results"]
    ]
    return g["success"], g["statistics"], rows


@pytest.mark.parametrize("defect", ["none", "duplicate_id", "out_of_range", "label_share"])
def test_merged_gx_result_shows_what_a_single_pass_shows(base, tmp_path, defect):
    """The parts pipeline's Data Docs render the merged GX result: it must read as the single pass's GX result,
    global expectations (row count, label mean, unique) included, computed from the merged statistics."""
    frames = _split(base)
    if defect == "duplicate_id":
        frames[2].iloc[7, frames[2].columns.get_loc("customer_id")] = frames[0]["customer_id"].iloc[3]
    elif defect == "out_of_range":
        frames[1].iloc[3, frames[1].columns.get_loc("recency_days")] = -5
        frames[2].iloc[4, frames[2].columns.get_loc("recency_days")] = -6
    elif defect == "label_share":
        for f in frames:
            f["churned"] = 1
    single, merged = _both(frames, load_config(), tmp_path, buckets=2)
    assert _gx_view(merged) == _gx_view(single)
    assert merged["gx_result"]["results"][0]["expectation_config"]["meta"]["order"] == 0
    by_type = {r["expectation_config"]["type"]: r for r in merged["gx_result"]["results"]}
    # the row count is the whole dataset's, not the first part's
    assert by_type["expect_table_row_count_to_be_between"]["result"]["observed_value"] == len(base)
    assert "batch_markers" not in merged["gx_result"]["meta"]  # no one part's fingerprint on the merged result
