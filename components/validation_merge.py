"""Validation as map -> reduce: the same GX suite per part, global checks from merged statistics.

Why: one process validating the whole table holds it in memory (2.7 GiB RSS at 2.1 M rows).
Here each map task holds one part: it runs the unchanged suite (`validate_frame`) on it and
keeps the few statistics that global checks need. The reduce merges them into one result of
the same shape as `validate_frame`'s, so the verdict is the one a single pass would give:

- per-row checks (exists, dtype, not-null, range, in-set): a check fails when it fails in
  any part; unexpected counts add up; samples are the first parts' samples;
- row count (`min_rows`): the sum of part row counts against the bounds;
- label balance: the positive share from summed positives / non-null labels per part
  (for a 0/1 label the mean = sum / count, exactly what GX's column mean computes);
- unique columns and the duplicate-row share: from 64-bit hashes of each part's values
  (`pandas.util.hash_array` / `hash_pandas_object`, the same on every host), sorted per part
  and merged bucket by bucket (hash-partitioned by the top bits), so the reduce holds one
  bucket (`rows / buckets` hashes), not the data. A duplicate is counted with every copy
  (pandas `keep=False`, as GX counts). Error: two different values share a 64-bit hash
  with probability <= n^2 / 2^65 (1.1e-5 at 20 M rows), which could only add a false
  duplicate; sampled duplicate values are read back from their parts and confirmed.

The current schema has no quantile expectations; a column mean would merge as sum / count,
like the label's. (The featurizer's medians are exact order statistics: see
`kfct.components.featurize_merge`.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from kfct.config import RunConfig

GLOBAL_CHECKS = frozenset({"min_rows", "unique", "duplicate_share", "label_balance", "label_balance_min", "label_balance_max"})
HASH_FILE = "hashes-{}.npy"


# -- map ------------------------------------------------------------------------------------------


def _hash_values(series: pd.Series) -> np.ndarray:
    """uint64 hashes of a column's non-null values (stable across processes and hosts)."""
    import numpy as np
    import pandas as pd

    values = series[series.notna()]
    return np.sort(pd.util.hash_pandas_object(values, index=False).to_numpy(dtype=np.uint64))


def part_statistics(df: pd.DataFrame, cfg: RunConfig, out_dir: str | Path) -> dict[str, Any]:
    """What the reduce needs from one part besides its GX result: rows, label counts, value hashes.

    Hash arrays are written as sorted `.npy` files under `out_dir` (one per unique column,
    one for whole rows); the returned dict names them.
    """
    import numpy as np
    import pandas as pd

    from kfct.components.validation_plan import plan_checks

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = cfg.dataset
    label = ds.label
    present = [str(c) for c in df.columns]
    plan = plan_checks(cfg, present_columns=present, label_data=df[label] if label in df.columns else None)
    stats: dict[str, Any] = {"rows": len(df), "hashes": {}}
    for _kind, kwargs, meta in plan:
        check, col = meta["check"], meta.get("column")
        if check == "unique" and col in df.columns:
            name = HASH_FILE.format(f"unique-{len(stats['hashes'])}")
            np.save(out / name, _hash_values(df[col]))
            stats["hashes"][f"unique:{col}"] = name
        elif check == "duplicate_share":
            cols = [c for c in kwargs["column_list"] if c in df.columns]
            name = HASH_FILE.format("rows")
            np.save(out / name, np.sort(pd.util.hash_pandas_object(df[cols], index=False).to_numpy(dtype=np.uint64)))
            stats["hashes"]["duplicate_share"] = name
        elif check in ("label_balance_min", "label_balance_max") and label in df.columns:
            lab = df[label]
            stats["label_nonnull"] = int(lab.notna().sum())
            stats["label_positive"] = int(lab.isin(kwargs["value_set"]).sum())
        elif check == "label_balance" and label in df.columns:
            lab = pd.to_numeric(df[label], errors="coerce")
            stats["label_nonnull"] = int(lab.notna().sum())
            stats["label_sum"] = float(lab.sum()) if stats["label_nonnull"] else 0.0
    return stats


def validate_part(df: pd.DataFrame, cfg: RunConfig, out_dir: str | Path) -> dict[str, Any]:
    """Map: the unchanged GX suite on one part, plus its statistics (`part_statistics`)."""
    from kfct.components.validation_run import validate_frame
    from kfct.config import validate_config

    cfg = validate_config(cfg, "config")
    return {"result": validate_frame(df, cfg), "stats": part_statistics(df, cfg, out_dir)}


# -- reduce ---------------------------------------------------------------------------------------


def _read_range(path: Path, start: int, stop: int) -> Any:
    """Elements [start, stop) of a 1-d `.npy` file, read with a seek: memory is the range, not the file."""
    import numpy as np

    with path.open("rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _shape, _fortran, dtype = read_header(fh)
        fh.seek(fh.tell() + start * dtype.itemsize)
        return np.fromfile(fh, dtype=dtype, count=stop - start)


def _duplicates(paths: list[Path], buckets: int) -> tuple[int, list[int]]:
    """(rows taking part in a duplicate group, up to 5 duplicated hashes) over sorted uint64 `.npy` files.

    Bucket b holds the hashes whose top bits are b. Each file is sorted: one pass finds where
    each bucket starts in it (one file in memory at a time), then each bucket is read from every
    file by a seek, so only one bucket (about rows / buckets hashes) is in memory at a time.
    """
    import numpy as np

    bits = max(1, (buckets - 1).bit_length())
    shift = np.uint64(64 - bits)
    n_buckets = 1 << bits
    bounds = np.arange(1, n_buckets, dtype=np.uint64) << shift
    offsets = []
    for p in paths:
        h = np.load(p)
        offsets.append(np.concatenate([[0], np.searchsorted(h, bounds, "left"), [len(h)]]).astype(np.int64))
        del h
    count: int = 0
    sample: list[int] = []
    for b in range(n_buckets):
        chunks = [_read_range(p, int(o[b]), int(o[b + 1])) for p, o in zip(paths, offsets) if o[b + 1] > o[b]]
        if not chunks:
            continue
        h = np.sort(np.concatenate(chunks))
        if len(h) < 2:
            continue
        same = h[1:] == h[:-1]
        dup = np.zeros(len(h), dtype=bool)
        dup[1:] |= same
        dup[:-1] |= same
        count += int(dup.sum())
        if len(sample) < 5 and same.any():
            sample.extend(int(x) for x in np.unique(h[1:][same])[: 5 - len(sample)])
    return count, sample


def _count_hashes(paths: list[Path]) -> int:
    import numpy as np

    return sum(int(np.load(p, mmap_mode="r").shape[0]) for p in paths)  # header only


def _hash_sources(parts: list[dict[str, Any]], key: str) -> list[Path]:
    return [Path(p["dir"]) / p["stats"]["hashes"][key] for p in parts if key in p["stats"]["hashes"]]


def _sample_values(parts: list[dict[str, Any]], column: str, wanted: list[int]) -> list[Any]:
    """The values behind duplicated hashes, read back from the parts that hold them (confirms them)."""
    import numpy as np
    import pandas as pd

    from kfct.data import parts as parts_api

    found: dict[int, Any] = {}
    for p in parts:
        if len(found) == len(wanted) or not p.get("part_uri"):
            continue
        h = np.load(Path(p["dir"]) / p["stats"]["hashes"][f"unique:{column}"])  # one part's hashes
        todo = [
            w
            for w in wanted
            if w not in found
            and np.searchsorted(h, np.uint64(w)) < len(h)
            and h[np.searchsorted(h, np.uint64(w))] == np.uint64(w)
        ]
        if not todo:
            continue
        col = parts_api.read_part(p["part_uri"], columns=[column]).column(0).to_pandas()
        col = col[col.notna()]
        hashes = pd.util.hash_pandas_object(col, index=False).to_numpy(dtype=np.uint64)
        for w in todo:
            hit = np.flatnonzero(hashes == np.uint64(w))
            if len(hit):
                found[w] = col.iloc[int(hit[0])]
    from kfct.components.validation_records import jsonable

    return [jsonable(found[w]) for w in wanted if w in found]


def _full_records(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-expectation records in suite order with the failure fields (results + failures merged)."""
    fails = iter(result["failures"])
    out = []
    for r in result["results"]:
        if r["success"]:
            out.append({**r, "kwargs": {}, "unexpected_percent": None, "sample_bad_values": []})
        else:
            out.append({**next(fails), "success": False})
    return out


def _count_text(k: int, n: int, noun: str) -> str:
    pct = 100.0 * k / n if n else math.nan
    return f"{k} of {n} {noun}" + (f" ({pct:.3g}%)" if math.isfinite(pct) else "")


def _merge_row_check(recs: list[dict[str, Any]], total_rows: int) -> dict[str, Any]:
    """A per-row check over all parts: fails if it failed anywhere; counts add up; samples concatenate."""
    from kfct.components.validation_records import _UNEXPECTED_NOUN, SAMPLE_SIZE

    failed = [r for r in recs if not r["success"]]
    if not failed:
        return dict(recs[0])
    base = dict(failed[0])
    if "error" in base or base["unexpected_count"] is None or any(r["unexpected_count"] is None for r in failed):
        return base  # a check that could not run (missing column) or has no count (dtype, column set)
    k = sum(int(r["unexpected_count"]) for r in failed)
    samples: list[Any] = []
    for r in failed:
        for v in r.get("sample_bad_values") or []:
            if v not in samples and len(samples) < SAMPLE_SIZE:
                samples.append(v)
    base.update(unexpected_count=k, unexpected_percent=100.0 * k / total_rows if total_rows else None, sample_bad_values=samples)
    if isinstance(base.get("observed"), str) and " of " in base["observed"]:
        prefix = base["observed"].split("; ")[0] + "; " if base["observed"].startswith("dtype ") else ""
        base["observed"] = prefix + _count_text(k, total_rows, _UNEXPECTED_NOUN.get(base["check"], "unexpected"))
    return base


def _merge_global(rec: dict[str, Any], parts: list[dict[str, Any]], total_rows: int, buckets: int) -> dict[str, Any]:
    """A global check recomputed from the merged statistics (see the module docstring)."""
    out = {**rec, "sample_bad_values": [], "unexpected_percent": None}
    out.pop("error", None)
    check, limit = rec["check"], rec["limit"]
    stats = [p["stats"] for p in parts]
    if check == "min_rows":
        lo, hi = limit
        out.update(
            success=(lo is None or total_rows >= lo) and (hi is None or total_rows <= hi),
            observed=total_rows,
            unexpected_count=None,
        )
    elif check in ("unique", "duplicate_share"):
        key = f"unique:{rec['column']}" if check == "unique" else "duplicate_share"
        sources = _hash_sources(parts, key)
        if len(sources) != len(parts):
            return rec  # the column is missing in a part: its own check says so
        k, sample = _duplicates(sources, buckets)
        n = _count_hashes(sources)
        if check == "unique":
            ok = k == 0
            out["sample_bad_values"] = _sample_values(parts, rec["column"], sample) if k else []
        else:
            ok = n == 0 or (n - k) / n >= 1.0 - float(limit)
        out.update(
            success=ok,
            unexpected_count=k,
            unexpected_percent=100.0 * k / n if n else None,
            observed=_count_text(k, n, "values repeated" if check == "unique" else "rows in duplicated groups"),
            _counted=(n, k),
        )  # (values checked, unexpected) for GX's result; merge_results takes it out
    elif check == "label_balance":
        if "error" in rec or any("label_sum" not in s for s in stats):
            return rec
        n = sum(s["label_nonnull"] for s in stats)
        mean = sum(s["label_sum"] for s in stats) / n if n else None
        lo, hi = limit
        out.update(success=mean is not None and lo <= mean <= hi, observed=mean, unexpected_count=None)
    elif check in ("label_balance_min", "label_balance_max"):
        if "error" in rec or any("label_positive" not in s for s in stats):
            return rec
        n = sum(s["label_nonnull"] for s in stats)
        pos = sum(s["label_positive"] for s in stats)
        share = pos / n if n else 0.0
        ok = share >= float(limit) if check == "label_balance_min" else (n == 0 or (n - pos) / n >= 1.0 - float(limit))
        out.update(success=ok, observed=f"positive share {share:.2%}", unexpected_count=None)
    return out


def merge_results(parts: list[dict[str, Any]], cfg: RunConfig, buckets: int | None = None) -> dict[str, Any]:
    """Reduce: one result of `validate_frame`'s shape from the per-part results and statistics.

    `parts`: [{"result": validate_frame result, "stats": part_statistics, "dir": where its hash
    files are, "part_uri": the part (to read back sampled duplicates)}], in part order.
    `buckets` (default: one per part) sets how many hash buckets the duplicate merge holds in turn.
    """
    from kfct.components.validation_merge_gx import merged_gx_result
    from kfct.components.validation_run import FAILURE_KEYS, RESULT_KEYS

    if not parts:
        raise ValueError("no part results to merge")
    results = [p["result"] for p in parts]
    n = {r["n_expectations"] for r in results}
    if len(n) != 1:
        raise ValueError(f"parts were validated with different suites ({sorted(n)} expectations)")
    total_rows = sum(p["stats"]["rows"] for p in parts)
    per_part = [_full_records(r) for r in results]
    merged = []
    for i in range(n.pop()):
        recs = [records[i] for records in per_part]
        if recs[0]["check"] in GLOBAL_CHECKS:
            merged.append(_merge_global(recs[0], parts, total_rows, buckets or len(parts)))
        else:
            merged.append(_merge_row_check(recs, total_rows))
    counted = {i: rec.pop("_counted") for i, rec in enumerate(merged) if "_counted" in rec}
    failures = [
        {k: rec.get(k) for k in FAILURE_KEYS} | ({"error": rec["error"]} if "error" in rec else {})
        for rec in merged
        if not rec["success"]
    ]
    first = results[0]
    gx_results = [r.get("gx_result") for r in results]
    return {
        "passed": not failures,
        "suite": first["suite"],
        "schema_version": first["schema_version"],
        "n_expectations": len(merged),
        "n_failed": len(failures),
        "rows": total_rows,
        "columns": first["columns"],
        "gx_version": first["gx_version"],
        "failures": failures,
        "results": [{k: rec.get(k) for k in RESULT_KEYS} for rec in merged],
        "hints": first["hints"],
        "parts": len(parts),
    } | (
        {"gx_result": merged_gx_result(gx_results, merged, [p["stats"]["rows"] for p in parts], counted, len(parts))}
        if all(gx_results)
        else {}
    )
