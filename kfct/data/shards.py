"""Which rows of a dataset in parquet parts one of N workers reads, and reading only those.

A dataset travels as an ordered list of parquet parts (local paths or s3:// URIs: what a
parts manifest resolves to; one file is a list of one). Worker `rank` of `world`:

- with at least as many parts as workers, takes whole parts rank, rank + world, ... (a part
  is the unit the data was written in, so nothing is read twice and no part is split);
- with fewer parts than workers (the usual single split file), takes the contiguous row range
  [rank * T / world, (rank + 1) * T / world) of the parts' T rows, reading only the row groups
  that overlap it.

Either way a worker's memory is its shard (plus at most one row group), never the dataset.
`shard_plan` decides from row counts alone (pure); `read_shard` reads. S3 goes through
pyarrow's own S3 filesystem with the endpoint passed explicitly from kfct's settings:
pyarrow does not read `AWS_ENDPOINT_URL_S3` (nor MinIO's host:port from anywhere else).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from kfct.errors import DataSourceError

if TYPE_CHECKING:
    import pyarrow as pa

    from kfct.runtime.settings import Settings


MANIFEST = "_manifest.json"  # a dataset in parts (kfct-parts/1): <dir>/_manifest.json + <dir>/<sha256>.parquet


def parts_of(uri: str, local_path: str | None = None) -> list[str]:
    """The parquet parts an artifact names: itself when it is one file; for a dataset in parts (a
    directory holding a kfct-parts/1 `_manifest.json`), each part's own `uri` or `<uri>/<sha256>.parquet`
    in manifest order. `local_path` is where the manifest can be read when `uri` is remote (a kfp
    artifact's `.path` beside its `.uri`); the parts keep `uri`'s scheme so a worker reads them there."""
    import json
    from pathlib import Path

    where = Path(local_path or uri.removeprefix("file://"))
    if not (where.is_dir() and (where / MANIFEST).is_file()):
        return [uri]
    try:
        parts = json.loads((where / MANIFEST).read_text())["parts"]
        return [p.get("uri") or f"{uri.rstrip('/')}/{p['sha256']}.parquet" for p in parts]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataSourceError(f"bad parts manifest {where / MANIFEST}: {exc}") from exc


def shard_plan(part_rows: Sequence[int], rank: int, world: int) -> list[tuple[int, int, int]]:
    """(part index, first row, stop row) of each slice worker `rank` of `world` reads."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"worker rank {rank} is outside 0..{world - 1}")
    if len(part_rows) >= world:
        return [(i, 0, int(part_rows[i])) for i in range(rank, len(part_rows), world) if part_rows[i] > 0]
    total = sum(int(n) for n in part_rows)
    lo, hi = rank * total // world, (rank + 1) * total // world
    out, offset = [], 0
    for i, n in enumerate(part_rows):
        start, stop = max(lo - offset, 0), min(hi - offset, int(n))
        if start < stop:
            out.append((i, start, stop))
        offset += int(n)
    return out


def s3_filesystem(settings: Settings | None = None) -> Any:
    """pyarrow's S3FileSystem on kfct's S3 endpoint and keys (passed explicitly, see the module doc)."""
    from pyarrow import fs

    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    if not s.s3_endpoint:
        raise DataSourceError("S3 endpoint not configured: set KFCT_S3_ENDPOINT (host:port) to read s3:// parts")
    secure = s.s3_secure or s.s3_endpoint.startswith("https://")
    host = s.s3_endpoint.split("://", 1)[-1].rstrip("/")
    return fs.S3FileSystem(
        endpoint_override=host,
        scheme="https" if secure else "http",
        access_key=s.s3_access_key.get_secret_value() if s.s3_access_key else None,
        secret_key=s.s3_secret_key.get_secret_value() if s.s3_secret_key else None,
        region=s.s3_region or "us-east-1",
        connect_timeout=s.net_connect_timeout_seconds,
        request_timeout=s.net_timeout_seconds,
    )


def open_parquet(uri: str, filesystem: Any = None) -> Any:
    """A `pyarrow.parquet.ParquetFile` for a local path or an s3:// URI; a clear error naming it."""
    import pyarrow.parquet as pq

    try:
        if uri.startswith("s3://"):
            return pq.ParquetFile(uri[len("s3://") :], filesystem=filesystem or s3_filesystem())
        return pq.ParquetFile(uri.removeprefix("file://"))
    except (OSError, ValueError) as exc:
        raise DataSourceError(f"cannot read parquet part {uri}: {exc}") from exc


def read_shard(uris: Sequence[str], rank: int, world: int, filesystem: Any = None) -> pa.Table:
    """The rows of `uris` that worker `rank` of `world` owns (see `shard_plan`), as one Arrow table."""
    import pyarrow as pa

    slices, empty = [], None
    for table in iter_shard(uris, rank, world, filesystem):
        empty = table if empty is None else empty
        if table.num_rows:
            slices.append(table)
    if not slices:
        return empty
    return pa.concat_tables(slices, promote_options="default") if len(slices) > 1 else slices[0]


def iter_shard(uris: Sequence[str], rank: int, world: int, filesystem: Any = None) -> Iterator[pa.Table]:
    """The same rows as `read_shard`, one slice (at most one part) at a time: a caller that turns each
    slice into something smaller (encoded features) never holds its whole shard as Arrow or pandas.
    Yields one empty table (the parts' schema) when the worker owns no rows."""
    if not uris:
        raise DataSourceError("no parquet parts given")
    fs = filesystem if filesystem is not None or not any(u.startswith("s3://") for u in uris) else s3_filesystem()
    files = [open_parquet(u, fs) for u in uris]
    plan = shard_plan([f.metadata.num_rows for f in files], rank, world)
    if not plan:
        yield files[0].schema_arrow.empty_table()
    for i, start, stop in plan:
        yield _read_rows(files[i], start, stop)


def _read_rows(f: Any, start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of one parquet file, reading only the row groups that hold them."""
    groups, offset, first = [], 0, None
    for g in range(f.metadata.num_row_groups):
        n = f.metadata.row_group(g).num_rows
        if offset + n > start and offset < stop:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    table = f.read_row_groups(groups)
    return table.slice(start - (first or 0), stop - start)


def read_head(uris: Sequence[str], rows: int, filesystem: Any = None) -> pa.Table:
    """The first `rows` rows of the parts, reading only the row groups that hold them."""
    fs = filesystem if filesystem is not None or not any(u.startswith("s3://") for u in uris) else s3_filesystem()
    slices, left = [], int(rows)
    for u in uris:
        if left <= 0:
            break
        f = open_parquet(u, fs)
        take = min(left, f.metadata.num_rows)
        slices.append(_read_rows(f, 0, take))
        left -= take
    import pyarrow as pa

    return pa.concat_tables(slices, promote_options="default") if len(slices) > 1 else slices[0]


def read_all(uris: Sequence[str], filesystem: Any = None) -> pa.Table:
    """Every row of the parts, in order (a worker's view when it is the only one)."""
    return read_shard(uris, 0, 1, filesystem)


def read_bytes(uri: str, settings: Settings | None = None) -> bytes:
    """A small object (a fitted encoder, a spec) from a local path or s3://."""
    if uri.startswith("s3://"):
        import tempfile
        from pathlib import Path

        from kfct.data import s3

        with tempfile.TemporaryDirectory() as tmp:
            return s3.download(uri, Path(tmp) / "obj", settings).read_bytes()
    from pathlib import Path

    path = Path(uri.removeprefix("file://"))
    if not path.is_file():
        raise DataSourceError(f"not found: {uri}")
    return path.read_bytes()


def write_bytes(data: bytes, uri: str, settings: Settings | None = None) -> str:
    """Write a small object to a local path (atomically) or s3://; returns the URI."""
    if uri.startswith("s3://"):
        from kfct.data import s3

        s3.put_bytes(data, uri, settings)
        return uri
    import os
    from pathlib import Path

    path = Path(uri.removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return uri
