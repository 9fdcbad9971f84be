"""The prediction log's layout and its reader: what serving writes and monitoring reads.

A contract between the layers: the model server's writer
(`kfct.serving.prediction_log.PredictionLogger`) produces these files, drift
monitoring (`kfct.components.drift`) reads them back, and neither imports the other.

Layout (local folder `<KFCT_HOME>/predictions/`, or the same keys under
`s3://<bucket>/predictions/` when `KFCT_S3_ENDPOINT` is set)::

    predictions/date=2025-01-31/part-<first_ms>-<last_ms>-<pid>-<seq>.parquet

Columns: ts (UTC timestamp), request_id, model_name, model_version, role
(champion | canary | shadow), customer_id, probability, label, threshold, then one
column per input feature. File names carry their time range, so `read_prediction_log`
skips old files without opening them.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pandas as pd

    from kfct.runtime.settings import Settings

PREFIX = "predictions"
META_COLUMNS = ["ts", "request_id", "model_name", "model_version", "role", "customer_id", "probability", "label", "threshold"]
_PART = re.compile(r"part-(\d+)-(\d+)-")


def default_root(settings: Settings | None = None) -> Path:
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    return Path(s.home) / PREFIX


def use_s3(settings: Settings | None = None) -> bool:
    from kfct.runtime.settings import get_settings

    return bool((settings or get_settings()).s3_endpoint)


def _part_range(name: str) -> tuple[int, int] | None:
    m = _PART.search(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _since_seconds(since: Any) -> float | None:
    if since is None:
        return None
    if isinstance(since, (int, float)):
        return float(since)
    import pandas as pd

    ts = pd.Timestamp(since)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return float(ts.timestamp())


def read_prediction_log(
    since: Any = None,
    root: str | Path | None = None,
    s3: bool | None = None,
    settings: Settings | None = None,
    model_name: str | None = None,
    max_rows: int | None = None,
) -> pd.DataFrame:
    """All logged predictions with `ts >= since` (epoch seconds, datetime or ISO string) as a DataFrame.

    With `max_rows`, only the newest `max_rows` of them: files are read newest first and
    reading stops once that many rows are had, so memory stays bounded however long the log
    (`df.attrs["rows_total"]` then counts the matching rows of the files read, at least).

    Reads the local folder, or the S3 prefix when `KFCT_S3_ENDPOINT` is set (or `s3=True`).
    An empty log gives an empty DataFrame with the metadata columns.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    from_s3 = use_s3(s) if s3 is None else s3
    since_s = _since_seconds(since)
    since_ms = None if since_s is None else int(since_s * 1000)
    frames = []
    tmpdir = None
    try:
        paths, tmpdir = _log_paths(s, from_s3, root, since_ms)
        if max_rows is None:
            for p in paths:
                frames.append(_plain(pq.read_table(p)).to_pandas())
        else:
            frames, total = _newest(paths, since_s, model_name, max_rows)
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in META_COLUMNS})
    df = pd.concat(frames, ignore_index=True, sort=False)
    if since_s is not None:
        df = df[df["ts"] >= pd.Timestamp(since_s, unit="s", tz="UTC")]
    if model_name is not None:
        df = df[df["model_name"] == model_name]
    df = df.sort_values("ts", kind="stable").reset_index(drop=True)
    if max_rows is not None:
        df = df.tail(max_rows).reset_index(drop=True)
        df.attrs["rows_total"] = max(total, len(df))
    return df


def _newest(paths: list[Any], since_s: float | None, model_name: str | None, max_rows: int) -> tuple[list[Any], int]:
    """Matching rows of the newest files, read newest first until `max_rows` are had (plus the count).

    File names carry their time range (`_part_range`), so the newest are the last by end time.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    ordered = sorted(paths, key=lambda p: ((_part_range(Path(p).name) or (0, 0))[1], str(p)))
    frames: list[Any] = []
    have = total = 0
    for p in reversed(ordered):
        df = _plain(pq.read_table(p)).to_pandas()
        if since_s is not None:
            df = df[df["ts"] >= pd.Timestamp(since_s, unit="s", tz="UTC")]
        if model_name is not None:
            df = df[df["model_name"] == model_name]
        frames.insert(0, df)
        have += len(df)
        total += len(df)
        if have >= max_rows:
            break
    return frames, total


def _log_paths(s: Settings, from_s3: bool, root: str | Path | None, since_ms: int | None) -> tuple[list[Path], str | None]:
    """The log files that may hold rows at or after `since_ms` (and the temp dir S3 files were fetched to)."""
    if from_s3:
        return _s3_fetch(s, since_ms)
    base = Path(root) if root is not None else default_root(s)
    paths = sorted(base.glob("date=*/part-*.parquet")) if base.exists() else []
    if since_ms is not None:
        paths = [p for p in paths if (_part_range(p.name) or (0, 1 << 62))[1] >= since_ms]
    return paths, None


def customer_keys(ids: Any) -> Any:
    """A fixed 64-bit hash per customer id (pandas' hash_array with its default key): the sample order."""
    import numpy as np
    import pandas as pd

    return pd.util.hash_array(np.asarray(ids, dtype=object).astype(str))


def sample_prediction_log(
    n: int,
    since: Any = None,
    model_name: str | None = None,
    root: str | Path | None = None,
    s3: bool | None = None,
    settings: Settings | None = None,
) -> tuple[pd.DataFrame, int]:
    """At most `n` logged predictions (metadata columns only) with `ts >= since`, and how many there were.

    Why: the outcomes, A/B and shadow reports must not load an unbounded log. The sample is by
    customer: rows are kept in the order of a fixed hash of their customer id (`customer_keys`),
    so a sampled customer keeps every prediction (both arms of a shadow pair, every arm of an
    A/B test) up to the one row where the bound cuts, and the same customers are sampled at
    every look. Files are read batch by batch, metadata columns only; memory is at most 2·n rows
    plus one batch. With no more than `n` rows, all of them are returned (a plain read). Rows
    without a customer id cannot be judged and are not sampled (they are counted).
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from kfct.runtime.settings import get_settings

    if n <= 0:
        raise ValueError(f"sample size must be positive, got {n}")
    s = settings or get_settings()
    since_s = _since_seconds(since)
    paths, tmpdir = _log_paths(s, use_s3(s) if s3 is None else s3, root, None if since_s is None else int(since_s * 1000))
    tables: list[Any] = []  # Arrow, not pandas: compact strings, and freed memory goes back
    keys, order, total = np.empty(0, np.uint64), np.empty(0, np.int64), 0
    try:
        for t in _meta_batches(paths, since_s, model_name):
            total += t.num_rows
            t = t.filter(pc.is_valid(t.column("customer_id")))
            tables.append(t)
            keys = np.concatenate([keys, customer_keys(t.column("customer_id").to_numpy(zero_copy_only=False))])
            order = np.concatenate([order, np.arange(total - t.num_rows, total)])
            if len(keys) > 2 * n:  # prune once 2n rows are held: amortised, each row sorted O(log n) times
                kept, keys, order = _smallest(pa.concat_tables(tables, promote_options="default"), keys, order, n)
                tables = [kept]
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in META_COLUMNS}), total
    kept, _, _ = _smallest(pa.concat_tables(tables, promote_options="default"), keys, order, n)
    return kept.to_pandas().sort_values("ts", kind="stable").reset_index(drop=True), total


def _meta_batches(paths: list[Path], since_s: float | None, model_name: str | None) -> Iterator[Any]:
    """The metadata columns of every log file as Arrow tables, batch by batch, filtered by time and model."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    since = None if since_s is None else pd.Timestamp(since_s, unit="s", tz="UTC")
    for p in paths:
        f = pq.ParquetFile(p)
        cols = [c for c in META_COLUMNS if c in f.schema_arrow.names]
        for batch in f.iter_batches(columns=cols, batch_size=65_536):
            t = _plain(pa.Table.from_batches([batch]))
            if since is not None:
                t = t.filter(pc.greater_equal(t.column("ts"), pa.scalar(since).cast(t.schema.field("ts").type)))
            if model_name is not None:
                t = t.filter(pc.equal(t.column("model_name"), model_name))
            yield t


def _smallest(table: Any, keys: Any, order: Any, n: int) -> tuple[Any, Any, Any]:
    """The `n` rows with the smallest (customer key, arrival order), kept in arrival order."""
    import numpy as np

    if table.num_rows <= n:
        return table, keys, order
    pick = np.sort(np.lexsort((order, keys))[:n])
    return table.take(pick).combine_chunks(), keys[pick], order[pick]


def _plain(table: Any) -> Any:
    """Per-request columns are stored once per request (dictionary-encoded); readers get plain values."""
    import pyarrow as pa

    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(f.type.value_type))
    return table


def _s3_fetch(s: Settings, since_ms: int | None) -> tuple[list[Path], str]:
    from kfct.data import s3
    from kfct.errors import DataSourceError

    tmp = tempfile.mkdtemp(prefix="kfct-predlog-")
    paths = []
    try:
        names = s3.list_names(s.s3_bucket, f"{PREFIX}/", settings=s)  # retried on transient errors
        for object_name in names:
            name = object_name.rsplit("/", 1)[-1]
            rng = _part_range(name)
            if not name.endswith(".parquet") or (since_ms is not None and rng and rng[1] < since_ms):
                continue
            dest = Path(tmp) / object_name.replace("/", "_")
            s3.download(f"s3://{s.s3_bucket}/{object_name}", dest, settings=s)
            paths.append(dest)
    except DataSourceError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(paths), tmp
