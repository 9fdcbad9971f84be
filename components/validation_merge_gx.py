"""The merged (map -> reduce) verdict as one Great Expectations suite validation result.

Why: GX users read a validation in GX's Data Docs, which render GX's own
ExpectationSuiteValidationResult. Each part's `validate_frame` keeps its GX result
(`gx_result`); the reduce (`validation_merge.merge_results`) decides each expectation from
all parts. This module writes that decision back into GX's JSON shape, expectation by
expectation, so `validation_datadocs.build_site` renders the merged run exactly as it renders
a single pass:

- per-row checks: the expectation's configuration is the first part's (the suite is the
  same in every part); success and counts are the merged record's; `element_count` and
  `missing_count` add up over the parts; the sampled values are the first parts' samples;
  `exception_info` (a check that raised: missing column) is the first failing part's;
- global checks, from the merged statistics (not any one part): the row count
  (`expect_table_row_count_to_be_between` observes the total rows), the label mean
  (`expect_column_mean_to_be_between` observes summed positives / non-null labels), unique
  columns and duplicated rows (the hash merge's counts and confirmed samples), the label
  share bounds (counts summed over parts).

A part that passed a check in GX's first pass (BOOLEAN_ONLY, see `validation_run`) kept no
counts for it; where such a part takes part in a failed per-row check, the unexpected share
is given of all rows (`unexpected_percent_total`, as kfct's own record gives it), not of the
non-missing ones. Pure: JSON dicts in, a JSON dict out.
"""

from __future__ import annotations

from typing import Any

# Per-row map results carry these; the shares are recomputed from the summed counts.
_COUNTS = ("element_count", "missing_count", "unexpected_count")
_PARTIAL_LIMIT = 20  # validation_run.DETAIL_FORMAT's partial_unexpected_count


def merged_gx_result(
    part_gx: list[dict], merged: list[dict], part_rows: list[int], global_counts: dict[int, tuple[int, int]], parts: int
) -> dict:
    """GX's suite validation result (JSON) for the merged verdict.

    `part_gx`: each part's `gx_result`, in part order; `merged`: the merged per-expectation
    records in suite order (`validation_merge`); `part_rows`: rows per part;
    `global_counts`: {suite order: (rows checked, unexpected)} for the unique and duplicate checks.
    """
    n = len(merged)
    for i, g in enumerate(part_gx):
        if len(g.get("results") or []) != n:
            raise ValueError(f"part {i}'s GX result has {len(g.get('results') or [])} expectations, the merged verdict {n}")
    total = sum(part_rows)
    results = []
    for order, rec in enumerate(merged):
        evrs = [g["results"][order] for g in part_gx]
        _same_expectation(evrs, order)
        results.append(_merged_evr(evrs, rec, total, global_counts.get(order)))
    ok = sum(1 for r in results if r["success"])
    first = part_gx[0]
    meta = {k: v for k, v in (first.get("meta") or {}).items() if k not in ("batch_markers", "run_id", "validation_time")}
    meta["batch_spec"] = {"batch_data": f"PandasDataFrame, {parts} parts merged by kfct ({total} rows)"}
    return {
        **first,
        "success": ok == n,
        "results": results,
        "meta": meta,
        "statistics": {
            "evaluated_expectations": n,
            "successful_expectations": ok,
            "unsuccessful_expectations": n - ok,
            "success_percent": ok / n * 100 if n else None,
        },
    }


def _same_expectation(evrs: list[dict], order: int) -> None:
    kinds = {e["expectation_config"]["type"] for e in evrs}
    if len(kinds) != 1:
        raise ValueError(f"expectation {order} differs between parts: {sorted(kinds)}")


def _merged_evr(evrs: list[dict], rec: dict, total: int, counted: tuple[int, int] | None) -> dict:
    """One expectation's result: the merged record's verdict in the GX result of the part that shows it."""
    success = bool(rec["success"])
    failing = [e for e in evrs if not e["success"]]
    shown = failing[0] if failing else evrs[0]
    kind = shown["expectation_config"]["type"]
    check = rec.get("check")
    if "error" in rec or (shown.get("exception_info") or {}).get("raised_exception"):
        result = shown.get("result") or {}  # a check that raised: GX's exception is the result
    elif kind == "expect_table_row_count_to_be_between" and check == "min_rows":
        result = {"observed_value": total}
    elif check == "label_balance":
        result = {"observed_value": rec.get("observed")}
    elif counted is not None:
        checked, unexpected = counted
        result = _map_result(total, total - checked, unexpected, list(rec.get("sample_bad_values") or [])[:_PARTIAL_LIMIT])
    else:
        result = _summed(evrs, rec, total, shown)
    return {**shown, "success": success, "result": result}


def _summed(evrs: list[dict], rec: dict, total: int, shown: dict) -> dict:
    """A per-row check's counts over the parts; a result without counts is the shown part's own."""
    reported = [e.get("result") or {} for e in evrs]
    if not any("unexpected_count" in r for r in reported):
        return shown.get("result") or {}
    samples: list[Any] = []
    for r in reported:
        samples.extend(r.get("partial_unexpected_list") or [])
    samples = samples[:_PARTIAL_LIMIT]
    unexpected = rec.get("unexpected_count")
    if unexpected is None:
        unexpected = sum(int(r.get("unexpected_count") or 0) for r in reported)
    if all(all(r.get(k) is not None for k in _COUNTS) for r in reported):
        missing = sum(int(r["missing_count"]) for r in reported)
        return _map_result(sum(int(r["element_count"]) for r in reported), missing, int(unexpected), samples)
    # a part that passed kept no counts (BOOLEAN_ONLY): the share of all rows
    pct = 100.0 * int(unexpected) / total if total else None
    return {
        "element_count": total,
        "unexpected_count": int(unexpected),
        "unexpected_percent": pct,
        "unexpected_percent_total": pct,
        "partial_unexpected_list": samples,
    }


def _map_result(element_count: int, missing: int, unexpected: int, samples: list) -> dict:
    """GX's BASIC map result (great_expectations/expectations/expectation.py `_format_map_output`, GX 1.24)."""
    nonnull = element_count - missing
    total_pct = 100.0 * unexpected / element_count if element_count else None
    nonmissing_pct = 100.0 * unexpected / nonnull if nonnull else None
    return {
        "element_count": element_count,
        "unexpected_count": unexpected,
        "unexpected_percent": nonmissing_pct,
        "partial_unexpected_list": samples,
        "missing_count": missing,
        "missing_percent": 100.0 * missing / element_count if element_count else None,
        "unexpected_percent_total": total_pct,
        "unexpected_percent_nonmissing": nonmissing_pct,
    }
