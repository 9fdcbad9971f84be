"""Where a dataset comes from: a local file, an S3 URI, or the generator.

URIs:
- `generate://100000?seed=42&drift=0&bias=0`: the synthetic telecom generator;
- `path/to/file.parquet|.csv` (or `file://...`);
- `s3://bucket/key.parquet|.csv`: read through the minio client; when the key is
  content-addressed (`datasets/<sha256>.parquet`) the hash is verified;
- `dataset://<tag>` (or `s3://bucket/datasets/tags/<tag>`): a moving pointer written by
  `kfct data push FILE --tag <tag>`, resolved when the data is read (kfct.datatags).
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
    from kfct import s3

    _, key = s3.parse_uri(uri)
    s3.download(uri, dest)
    expected = Path(key).stem
    if key.startswith("datasets/") and len(expected) == 64:
        from kfct.lineage import sha256_file

        actual = sha256_file(dest)
        if actual != expected:
            raise DataSourceError(f"hash mismatch for {uri}: content sha256 is {actual}, the key says {expected}")
    return dest


def _local_path(uri: str) -> Path:
    scheme = urlparse(uri).scheme
    return Path(urlparse(uri).path if scheme == "file" else uri).expanduser()


def read_dataset(uri: str) -> pd.DataFrame:
    """Load a dataset as a DataFrame; one clear DataSourceError for anything unreadable."""
    from kfct.datatags import resolve

    uri, _ = resolve((uri or "").strip() or DEFAULT_URI)
    scheme = urlparse(uri).scheme
    if scheme == "generate":
        from kfct.datagen import generate

        return generate(**parse_generate(uri))
    if scheme == "s3":
        from kfct import s3

        _, key = s3.parse_uri(uri)
        with tempfile.TemporaryDirectory() as tmp:
            return _read_local(_fetch_s3(uri, Path(tmp) / Path(key).name))
    if scheme in ("", "file"):
        return _read_local(_local_path(uri))
    raise DataSourceError(f"unsupported dataset URI scheme {scheme!r} in {uri!r}: use a path, s3://, dataset://<tag> "
                          f"or generate://")


def snapshot_dataset(uri: str, dest: str | Path) -> pd.DataFrame:
    """Materialise the dataset as a parquet snapshot at `dest`; return the DataFrame.

    Parquet sources are kept byte for byte, everything else is written the way
    `kfct data push` normalises it, so the snapshot's file sha256 is the same data
    version as the content-addressed key `s3://<bucket>/datasets/<sha256>.parquet`.
    """
    import shutil

    from kfct.datatags import resolve

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
    df = read_dataset(uri)
    write_snapshot(df, dest)
    return df


def write_snapshot(df: pd.DataFrame, dest: str | Path) -> Path:
    """The one way kfct writes a dataset snapshot (shared with `kfct data push`)."""
    df.to_parquet(dest, index=False, compression="snappy")
    return Path(dest)
