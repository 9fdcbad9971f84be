"""Where a dataset comes from: a local file, an S3 URI, or the generator.

URIs:
- `generate://100000?seed=42&drift=0&bias=0`: the synthetic telecom generator;
- `path/to/file.parquet|.csv` (or `file://...`);
- `s3://bucket/key.parquet|.csv`: read through the minio client; when the key is
  content-addressed (`datasets/<sha256>.parquet`) the hash is verified.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from kfct.errors import DataSourceError

DEFAULT_URI = "generate://100000?seed=42"


def _read_local(path: Path):
    import pandas as pd

    if not path.exists():
        raise DataSourceError(f"dataset not found: {path}")
    if path.is_dir():
        raise DataSourceError(f"dataset path is a directory, expected a .parquet or .csv file: {path}")
    suffix = path.suffix.lower()
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


def read_dataset(uri: str):
    """Load a dataset as a DataFrame; one clear DataSourceError for anything unreadable."""
    uri = (uri or "").strip() or DEFAULT_URI
    scheme = urlparse(uri).scheme
    if scheme == "generate":
        from kfct.datagen import generate

        return generate(**parse_generate(uri))
    if scheme == "s3":
        from kfct import s3

        _, key = s3.parse_uri(uri)
        with tempfile.TemporaryDirectory() as tmp:
            local = s3.download(uri, Path(tmp) / Path(key).name)
            df = _read_local(local)
            expected = Path(key).stem
            if key.startswith("datasets/") and len(expected) == 64:
                from kfct.lineage import sha256_file

                actual = sha256_file(local)
                if actual != expected:
                    raise DataSourceError(
                        f"hash mismatch for {uri}: content sha256 is {actual}, the key says {expected}"
                    )
            return df
    if scheme in ("", "file"):
        path = Path(urlparse(uri).path if scheme == "file" else uri).expanduser()
        return _read_local(path)
    raise DataSourceError(f"unsupported dataset URI scheme {scheme!r} in {uri!r}: use a path, s3:// or generate://")
