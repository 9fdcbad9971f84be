"""Content-addressed dataset snapshots in S3 / MinIO: kfct's data versioning.

`push_dataset(path)` stores a dataset under `s3://<bucket>/datasets/<sha256>.parquet`
where the sha256 is that of the stored parquet bytes. The URI *is* the version: a
pipeline run that ingests it pins exactly those bytes, and `kfct.datasource.read_dataset`
re-hashes what it downloads, so a tampered or truncated object is refused. This plays
the role DVC plays in the case study, without a second tool.

CSV input is normalised to parquet first (so every snapshot has typed columns); a
parquet file is stored byte for byte after checking it can be read, so its hash is the
hash of the user's file. Pushing the same content twice is a no-op that returns the
same URI.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from kfct.errors import DataSourceError

if TYPE_CHECKING:
    from kfct.settings import Settings

PREFIX = "datasets"


def dataset_uri(bucket: str, sha256: str) -> str:
    return f"s3://{bucket}/{PREFIX}/{sha256}.parquet"


def normalise_to_parquet(path: str | Path, workdir: str | Path) -> Path:
    """A parquet file with the dataset's content: the file itself, or CSV converted.

    Raises DataSourceError naming the file for anything unreadable or empty.
    """
    from kfct.datasource import _read_local

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
    df = _read_local(path)  # CSV (or an unsupported suffix -> clear error)
    if len(df) == 0:
        raise DataSourceError(f"dataset {path} has no rows")
    from kfct.datasource import write_snapshot

    return write_snapshot(df, Path(workdir) / "dataset.parquet")


def push_dataset(path: str | Path, settings: Settings | None = None, create_bucket: bool = False) -> str:
    """Upload a dataset content-addressed and return its `s3://` URI (skip if already there).

    The bucket is `settings.s3_bucket`; a missing bucket is a clear error unless
    `create_bucket` is set.
    """
    from kfct import s3
    from kfct.lineage import sha256_file
    from kfct.settings import get_settings

    s = settings or get_settings()
    with tempfile.TemporaryDirectory(prefix="kfct-push-") as tmp:
        parquet = normalise_to_parquet(path, tmp)
        digest = sha256_file(parquet)
        uri = dataset_uri(s.s3_bucket, digest)
        s3.ensure_bucket(s.s3_bucket, settings=s, create=create_bucket)
        existing = s3.stat(uri, settings=s)
        if (existing is not None and existing["size"] == parquet.stat().st_size
                and existing["metadata"].get("sha256") == digest):
            return uri  # already stored by a push (an object put there by hand is re-uploaded)
        s3.upload(parquet, uri, settings=s,
                  metadata={"sha256": digest,
                            "source-name": Path(path).name.encode("ascii", "replace").decode()[:200]})
    return uri
