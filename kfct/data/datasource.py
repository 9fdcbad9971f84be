"""Where a dataset comes from: a local file, an S3 URI, or the generator.

URIs:
- `generate://100000?seed=42&drift=0&bias=0`: the synthetic telecom generator;
- `path/to/file.parquet|.csv` (or `file://...`);
- `s3://bucket/key.parquet|.csv`: read through the minio client; when the key is
  content-addressed (`datasets/<sha256>.parquet`) the hash is verified;
- `dataset://<tag>` (or `s3://bucket/datasets/tags/<tag>`): a moving pointer written by
  `kfct data push FILE --tag <tag>`, resolved when the data is read (kfct.data.datatags).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

from kfct.errors import DataSourceError

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_URI = "generate://100000?seed=42"


def _read_local(path: Path, suffix: str | None = None) -> pd.DataFrame:
    """Read a .parquet/.csv file; `suffix` names the format when the file's own name has none
    (a KFP artifact path such as /s3/<root>/.../dataset)."""
    import pandas as pd

    if not path.exists():
        raise DataSourceError(f"dataset not found: {path}")
    if path.is_dir():
        raise DataSourceError(f"dataset path is a directory, expected a .parquet or .csv file: {path}")
    suffix = (suffix or path.suffix).lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path)
    except Exception as exc:
        raise DataSourceError(f"cannot parse {path}: {type(exc).__name__}: {str(exc)[:200]}") from exc
    raise DataSourceError(f"unsupported dataset format {suffix!r} for {path}: use .parquet or .csv")


def parse_generate(uri: str) -> dict:
    u = urlparse(uri)
    try:
        rows = int(u.netloc or "100000")
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        return {
            "rows": rows,
            "seed": int(q.get("seed", 42)),
            "drift": float(q.get("drift", 0.0)),
            "bias": float(q.get("bias", 0.0)),
        }
    except ValueError as exc:
        raise DataSourceError(f"bad generator URI {uri!r}: {exc}") from exc


def _fetch_s3(uri: str, dest: Path) -> Path:
    """Download an S3 object to `dest`; verify it when its key is content-addressed."""
    from kfct.data import s3

    _, key = s3.parse_uri(uri)
    s3.download(uri, dest)
    expected = Path(key).stem
    if key.startswith("datasets/") and len(expected) == 64:
        from kfct.governance.lineage import sha256_file

        actual = sha256_file(dest)
        if actual != expected:
            raise DataSourceError(f"hash mismatch for {uri}: content sha256 is {actual}, the key says {expected}")
    return dest


def _local_path(uri: str) -> Path:
    scheme = urlparse(uri).scheme
    return Path(urlparse(uri).path if scheme == "file" else uri).expanduser()


def read_dataset(uri: str) -> pd.DataFrame:
    """Load a dataset as a DataFrame; one clear DataSourceError for anything unreadable."""
    from kfct.data.datatags import resolve

    uri, _ = resolve((uri or "").strip() or DEFAULT_URI)
    scheme = urlparse(uri).scheme
    if scheme == "generate":
        from kfct.data.datagen import generate

        return generate(**parse_generate(uri))
    if scheme == "s3":
        from kfct.data import s3

        _, key = s3.parse_uri(uri)
        with tempfile.TemporaryDirectory() as tmp:
            return _read_local(_fetch_s3(uri, Path(tmp) / Path(key).name))
    if scheme in ("", "file"):
        return _read_local(_local_path(uri))
    raise DataSourceError(
        f"unsupported dataset URI scheme {scheme!r} in {uri!r}: use a path, s3://, dataset://<tag> or generate://"
    )


def read_dataset_bounded(uri: str, max_rows: int, mode: str = "tail", seed: int = 0) -> tuple[pd.DataFrame, int]:
    """At most `max_rows` rows of a dataset, never the whole of a large one: (frame, rows in the dataset).

    `mode` "tail": the last rows (the newest, for a batch in time order); "sample": a uniform
    random sample (kfct.data.parts.bounded_sample). Parquet files and datasets in parts (local or
    S3) are read a part / row group / batch at a time; `generate://` makes what it is asked
    for; CSV is streamed through pyarrow's reader.
    """
    from kfct.data import parts
    from kfct.data.datatags import resolve

    if mode not in ("tail", "sample"):
        raise ValueError(f"mode must be 'tail' or 'sample', got {mode!r}")
    uri, _ = resolve((uri or "").strip() or DEFAULT_URI)
    scheme = urlparse(uri).scheme

    def bounded(loc: str) -> tuple[pd.DataFrame, int]:
        if mode == "tail":
            return parts.tail_rows(loc, max_rows)
        return parts.sample_location(loc, max_rows, seed)

    if scheme == "generate":
        return _bounded_frame(read_dataset(uri), max_rows, mode, seed)
    if parts.is_parts(uri) or (scheme in ("", "file") and parts.is_parts(_local_path(uri))):
        return bounded(uri if scheme == "s3" else str(_local_path(uri)))
    with tempfile.TemporaryDirectory(prefix="kfct-bounded-") as tmp:
        path = _single_file(uri, scheme, Path(tmp))
        if path.suffix.lower() == ".csv":
            return _bounded_csv(path, max_rows, mode, seed)
        try:
            return bounded(str(path))
        except DataSourceError:
            raise
        except Exception as exc:
            raise DataSourceError(f"cannot parse {path}: {type(exc).__name__}: {str(exc)[:200]}") from exc


def _bounded_frame(df: pd.DataFrame, max_rows: int, mode: str, seed: int) -> tuple[pd.DataFrame, int]:
    """A frame already in memory (`generate://`), bounded the way `read_dataset_bounded` bounds a file."""
    from kfct.data import parts

    if len(df) <= max_rows:
        return df, len(df)
    if mode == "tail":
        return df.tail(max_rows).reset_index(drop=True), len(df)
    return parts.bounded_sample([df], max_rows, seed)


def _single_file(uri: str, scheme: str, tmp: Path) -> Path:
    """The local path of a one-file dataset: the file itself, or its copy from S3 under `tmp`."""
    if scheme == "s3":
        from kfct.data import s3

        _, key = s3.parse_uri(uri)
        return _fetch_s3(uri, tmp / Path(key).name)
    if scheme in ("", "file"):
        path = _local_path(uri)
        if not path.is_file():
            raise DataSourceError(f"dataset not found: {path}")
        return path
    raise DataSourceError(f"unsupported dataset URI scheme {scheme!r} in {uri!r}")


def _bounded_csv(path: Path, max_rows: int, mode: str, seed: int) -> tuple[pd.DataFrame, int]:
    """A CSV has no row groups: stream it, keeping only the last rows' batches (or a sample of them)."""
    import pyarrow.csv as pcsv

    from kfct.data import parts

    batches = pcsv.open_csv(path)
    if mode != "tail":
        return parts.bounded_sample(batches, max_rows, seed)
    from collections import deque

    import pyarrow as pa

    keep: deque = deque()
    have = total = 0
    for b in batches:
        keep.append(b)
        have += b.num_rows
        total += b.num_rows
        while have - keep[0].num_rows >= max_rows:
            have -= keep.popleft().num_rows
    t = pa.Table.from_batches(list(keep)) if keep else pa.table({})
    return t.slice(max(0, t.num_rows - max_rows)).to_pandas(), total


def snapshot_dataset(uri: str, dest: str | Path) -> pd.DataFrame:
    """Materialise the dataset as a parquet snapshot at `dest`; return the DataFrame.

    Parquet sources are kept byte for byte, everything else is written the way
    `kfct data push` normalises it, so the snapshot's file sha256 is the same data
    version as the content-addressed key `s3://<bucket>/datasets/<sha256>.parquet`.
    """
    import shutil

    from kfct.data.datatags import resolve

    uri, _ = resolve((uri or "").strip() or DEFAULT_URI)  # a pointer: the snapshot it names now
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    scheme = urlparse(uri).scheme
    is_parquet = Path(urlparse(uri).path if scheme else uri).suffix.lower() in (".parquet", ".pq")
    if scheme == "s3" and is_parquet:
        return _read_local(_fetch_s3(uri, dest), suffix=".parquet")
    if scheme in ("", "file") and is_parquet:
        df = _read_local(_local_path(uri))
        shutil.copyfile(_local_path(uri), dest)
        return df
    if _is_csv(uri):  # streamed into parquet as `kfct data push` converts it: the same bytes, the same version
        _csv_snapshot(uri, dest)
        return _read_local(dest, suffix=".parquet")
    df = read_dataset(uri)
    write_snapshot(df, dest)
    return df


def _is_csv(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("s3", "", "file") and Path(urlparse(uri).path if scheme else uri).suffix.lower() == ".csv"


def _csv_snapshot(uri: str, dest: Path) -> None:
    """A CSV (local or s3://) written to `dest` by `kfct.data.datastore.csv_to_parquet`, block by block."""
    from kfct.data.datastore import csv_to_parquet

    if urlparse(uri).scheme == "s3":
        with tempfile.TemporaryDirectory() as tmp:
            csv_to_parquet(_fetch_s3(uri, Path(tmp) / "source.csv"), dest)
        return
    src = _local_path(uri)
    if not src.is_file():
        _read_local(src)  # the standard "not found" / "is a directory" message
    csv_to_parquet(src, dest)


def snapshot_file(uri: str, dest: str | Path) -> dict:
    """`snapshot_dataset` without holding the table when the source is parquet or CSV: a parquet file is
    copied or downloaded byte for byte, a CSV streamed into parquet as `kfct data push` converts it
    (`kfct.data.datastore.csv_to_parquet`), and the snapshot described from its footer. Returns {rows,
    columns, column_names}.

    Why: ingest only needs the snapshot and its shape; reading a 2 M-row parquet file into pandas
    to count its rows took more memory than the rest of the stage.
    """
    import shutil

    import pyarrow.parquet as pq

    from kfct.data.datatags import resolve

    uri, _ = resolve((uri or "").strip() or DEFAULT_URI)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    scheme = urlparse(uri).scheme
    is_parquet = Path(urlparse(uri).path if scheme else uri).suffix.lower() in (".parquet", ".pq")
    if _is_csv(uri):
        _csv_snapshot(uri, dest)
    elif is_parquet and scheme in ("s3", "", "file"):
        if scheme == "s3":
            _fetch_s3(uri, dest)
        else:
            src = _local_path(uri)
            if not src.exists():
                raise DataSourceError(f"dataset not found: {src}")
            if src.is_dir():
                raise DataSourceError(f"dataset path is a directory, expected a .parquet or .csv file: {src}")
            shutil.copyfile(src, dest)
    if _is_csv(uri) or (is_parquet and scheme in ("s3", "", "file")):
        try:
            schema = pq.read_schema(dest)
            rows = pq.read_metadata(dest).num_rows
        except Exception as exc:
            raise DataSourceError(f"cannot parse {uri}: {type(exc).__name__}: {str(exc)[:200]}") from exc
        index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
        names = [n for n in schema.names if n not in index]  # as pandas would show the columns
        return {"rows": int(rows), "columns": len(names), "column_names": names}
    df = snapshot_dataset(uri, dest)
    return {"rows": len(df), "columns": int(df.shape[1]), "column_names": list(map(str, df.columns))}


def write_snapshot(df: pd.DataFrame, dest: str | Path) -> Path:
    """How kfct writes a dataset snapshot held as a DataFrame (generated data); a CSV is streamed instead
    (`kfct.data.datastore.csv_to_parquet`, shared with `kfct data push`)."""
    df.to_parquet(dest, index=False, compression="snappy")
    return Path(dest)
