"""Content-addressed dataset snapshots in S3 / MinIO: kfct's data versioning.

`push_dataset(path)` stores a dataset under `s3://<bucket>/datasets/<sha256>.parquet`
where the sha256 is that of the stored parquet bytes. The URI *is* the version: a
pipeline run that ingests it pins exactly those bytes, and `kfct.data.datasource.read_dataset`
re-hashes what it downloads, so a tampered or truncated object is refused. This plays
the role DVC plays in the case study, without a second tool.

CSV input is normalised to parquet first (so every snapshot has typed columns), streamed
block by block (`csv_to_parquet`: memory is one block and one row group, whatever the
file's size); a parquet file is stored byte for byte after checking it can be read, so
its hash is the hash of the user's file. Pushing the same content twice is a no-op that
returns the same URI.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfct.errors import DataSourceError

if TYPE_CHECKING:
    from kfct.runtime.settings import Settings

PREFIX = "datasets"


def dataset_uri(bucket: str, sha256: str) -> str:
    return f"s3://{bucket}/{PREFIX}/{sha256}.parquet"


def parts_uri(bucket: str, version: str) -> str:
    """A dataset in parts lives under a prefix named by its manifest's sha256 (kfct.data.parts)."""
    return f"s3://{bucket}/{PREFIX}/{version}/"


# `kfct data push` splits a parquet file with more rows than this into parts (kfct.data.parts).
SPLIT_ABOVE_ROWS = 1_000_000
# pyarrow.csv reads this much text at a time, on one thread: measured flat peak memory (40 MiB of Arrow buffers
# at 0.6M and 1.2M rows); 4 MiB blocks grew with the file (91 -> 157 MiB)
CSV_BLOCK_BYTES = 1 << 20
CSV_ROW_GROUP_ROWS = 65_536  # rows buffered before a parquet row group is written


def _open_csv(path: Path, column_types: dict) -> Any:
    """A pyarrow.csv stream that reads a CSV as `pandas.read_csv` does: empty fields are missing in
    string columns too, dates stay text (pandas parses no dates unless asked)."""
    import pyarrow.csv as pcsv

    return pcsv.open_csv(
        path,
        read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
        convert_options=pcsv.ConvertOptions(strings_can_be_null=True, timestamp_parsers=[], column_types=column_types),
    )


def _first_block_types(schema: Any) -> dict:
    """Types to fix before the stream goes on: pyarrow infers types from the first block only, so a
    column empty there (null) is read as float64, as pandas reads an all-empty column; dates,
    times and timestamps as text, as pandas reads them."""
    import pyarrow as pa

    out = {}
    for f in schema:
        if pa.types.is_null(f.type):
            out[f.name] = pa.float64()
        elif pa.types.is_temporal(f.type):
            out[f.name] = pa.string()
    return out


def _widened(exc: Exception, schema: Any) -> tuple[str, object] | None:
    """(column, wider type) when a later block holds a value that does not fit the type the first
    block gave its column: int -> float64 -> string, anything else -> string (as pandas widens);
    None when the error names no column or the column is text already."""
    import re

    import pyarrow as pa

    m = re.search(r"CSV column #(\d+)", str(exc))
    if not m or int(m.group(1)) >= len(schema):
        return None
    f = schema.field(int(m.group(1)))
    if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
        return None
    return f.name, pa.float64() if pa.types.is_integer(f.type) else pa.string()


def _stream_csv(path: Path, dest: Path, column_types: dict) -> int | tuple[str, object]:
    """One pass, CSV blocks -> parquet row groups at `dest`: its row count, or the (column, type) to
    widen and start again with. Raises pyarrow's error when nothing can be widened."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _open_csv(path, column_types) as reader:
        schema = reader.schema
        fix = {k: v for k, v in _first_block_types(schema).items() if k not in column_types}
        if fix:  # only the first block was read: start again with those columns typed
            return next(iter(fix.items()))
        rows, buf, buffered = 0, [], 0
        with pq.ParquetWriter(dest, schema, compression="snappy") as writer:
            try:
                for batch in reader:
                    buf.append(batch)
                    buffered += batch.num_rows
                    if buffered >= CSV_ROW_GROUP_ROWS:
                        writer.write_table(pa.Table.from_batches(buf, schema))
                        rows, buf, buffered = rows + buffered, [], 0
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                wider = _widened(exc, schema)
                if wider is None:
                    raise
                return wider
            if buf:
                writer.write_table(pa.Table.from_batches(buf, schema))
                rows += buffered
    return rows


def csv_to_parquet(path: str | Path, dest: str | Path) -> int:
    """Stream a CSV into one parquet file, block by block (never the whole table); its row count.

    Why: `kfct data push big.csv` must not need the memory of the whole table. pyarrow infers
    each column's type from the first block; when a later block holds a value that does not fit
    (an integer column with a decimal further down), the pass starts again with that column
    widened — each column widens at most twice, so this ends. The result reads back as
    `pandas.read_csv` would have read the file. DataSourceError naming the file otherwise."""
    import pyarrow as pa

    path, dest = Path(path), Path(dest)
    types: dict = {}
    while True:
        try:
            out = _stream_csv(path, dest, types)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
            raise DataSourceError(f"cannot parse {path}: {type(exc).__name__}: {str(exc)[:200]}") from exc
        if isinstance(out, int):
            return out
        types[out[0]] = out[1]


def normalise_to_parquet(path: str | Path, workdir: str | Path) -> Path:
    """A parquet file with the dataset's content: the file itself, or CSV converted.

    Raises DataSourceError naming the file for anything unreadable or empty.
    """
    from kfct.data.datasource import _read_local

    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        if not path.is_file():
            _read_local(path)  # raises the standard "not found"/"is a directory" message
        try:
            import pyarrow.parquet as pq

            meta = pq.read_metadata(path)
        except Exception as exc:
            raise DataSourceError(f"cannot parse {path}: {type(exc).__name__}: {str(exc)[:200]}") from exc
        if meta.num_rows == 0:
            raise DataSourceError(f"dataset {path} has no rows")
        return path
    if suffix != ".csv" or not path.is_file():
        _read_local(path)  # the standard "not found" / "is a directory" / "unsupported format" message
    dest = Path(workdir) / "dataset.parquet"
    if csv_to_parquet(path, dest) == 0:
        raise DataSourceError(f"dataset {path} has no rows")
    return dest


def push_dataset(
    path: str | Path,
    settings: Settings | None = None,
    create_bucket: bool = False,
    tag: str | None = None,
    part_rows: int | None = None,
) -> str:
    """Upload a dataset content-addressed and return its `s3://` URI (skip if already there).

    The bucket is `settings.s3_bucket`; a missing bucket is a clear error unless
    `create_bucket` is set. With `tag`, the moving pointer `dataset://<tag>` is moved to
    this snapshot afterwards (kfct.data.datatags), so scheduled runs pick it up. A parts directory,
    a `part_rows`, or a parquet file of more than SPLIT_ABOVE_ROWS rows is pushed in parts
    (`push_parts`).
    """
    if tag is not None:
        from kfct.data.datatags import check_tag

        check_tag(tag)  # before any upload: a bad tag changes nothing
    from kfct.data import s3
    from kfct.governance.lineage import sha256_file
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    from kfct.data import parts

    if parts.is_parts(path) or part_rows is not None:
        return push_parts(path, settings=s, create_bucket=create_bucket, tag=tag, part_rows=part_rows or parts.DEFAULT_PART_ROWS)
    with tempfile.TemporaryDirectory(prefix="kfct-push-") as tmp:
        parquet = normalise_to_parquet(path, tmp)  # a CSV streamed into a parquet file under tmp
        import pyarrow.parquet as pq

        if pq.read_metadata(parquet).num_rows > SPLIT_ABOVE_ROWS:
            return push_parts(parquet, settings=s, create_bucket=create_bucket, tag=tag, part_rows=parts.DEFAULT_PART_ROWS)
        digest = sha256_file(parquet)
        uri = dataset_uri(s.s3_bucket, digest)
        s3.ensure_bucket(s.s3_bucket, settings=s, create=create_bucket)
        existing = s3.stat(uri, settings=s)
        if not (
            existing is not None and existing["size"] == parquet.stat().st_size and existing["metadata"].get("sha256") == digest
        ):  # else already stored by a push
            s3.upload(
                parquet,
                uri,
                settings=s,
                metadata={"sha256": digest, "source-name": Path(path).name.encode("ascii", "replace").decode()[:200]},
            )
        if tag is not None:
            import pyarrow.parquet as pq

            from kfct.data.datatags import write_tag

            write_tag(tag, uri, digest, pq.read_metadata(parquet).num_rows, settings=s)
    return uri


def push_parts(
    path: str | Path,
    settings: Settings | None = None,
    create_bucket: bool = False,
    tag: str | None = None,
    part_rows: int | None = None,
) -> str:
    """Upload a dataset in parts under `s3://<bucket>/datasets/<manifest sha256>/`; return that prefix.

    `path` is a parts directory (`kfct data generate --part-rows`) or one parquet file, split
    here batch by batch into parts of `part_rows` rows (never read whole). Each part is stored
    as `<sha256>.parquet`, the canonical manifest last, so a prefix with a manifest is complete.
    Parts already stored with their sha256 are not uploaded again.
    """
    from kfct.data import parts, s3
    from kfct.runtime.settings import get_settings

    if tag is not None:
        from kfct.data.datatags import check_tag

        check_tag(tag)
    s = settings or get_settings()
    src = Path(path).expanduser()
    with tempfile.TemporaryDirectory(prefix="kfct-push-") as tmp:
        if parts.is_parts(src):
            manifest = parts.load_manifest(src)
            loc = src
        else:
            if src.suffix.lower() not in (".parquet", ".pq", ".csv"):
                raise DataSourceError(f"only a parquet or CSV file can be pushed in parts, got {src}")
            if not src.is_file():
                raise DataSourceError(f"dataset not found: {src}")
            if src.suffix.lower() == ".csv":  # streamed to one parquet file first, then split batch by batch
                src = normalise_to_parquet(src, tmp)
            loc = Path(tmp) / "parts"
            manifest = parts.split_parquet(src, loc, part_rows or parts.DEFAULT_PART_ROWS)
        version = manifest["version"]
        prefix = parts_uri(s.s3_bucket, version)
        s3.ensure_bucket(s.s3_bucket, settings=s, create=create_bucket)
        for p, uri in zip(manifest["parts"], parts.part_uris(manifest, loc)):
            dest = f"{prefix}{p['sha256']}.parquet"
            existing = s3.stat(dest, settings=s)
            if existing is None or existing["metadata"].get("sha256") != p["sha256"]:
                s3.upload(uri, dest, settings=s, metadata={"sha256": p["sha256"]})
        s3.put_bytes(parts.canonical_bytes(manifest), f"{prefix}{parts.MANIFEST}", settings=s)
        if tag is not None:
            from kfct.data.datatags import write_tag

            write_tag(tag, prefix, version, manifest["rows"], settings=s)
    return prefix
