"""Moving dataset pointers: `dataset://<tag>` names whatever was last pushed under that tag.

Content-addressed snapshots (`s3://<bucket>/datasets/<sha256>.parquet`, kfct.data.datastore)
never change, which is what makes them a data version. But a recurring run's parameters
are frozen when the schedule is created, and a drift-triggered run is started by a pod
that does not know which batch is newest: both need a name that moves. A tag is that
name: a small JSON manifest next to the snapshots,

    s3://<bucket>/datasets/tags/<tag>.json  ->  {"tag", "sha256", "uri", "rows", "pushed_at"}

written by `kfct data push FILE --tag latest`. Ingest resolves the pointer when the
run executes (not when it is scheduled), downloads the snapshot it names, checks its
sha256, and records that sha256 as the run's data version. A pointer can be written as
`dataset://latest` (bucket from KFCT_S3_BUCKET) or as the manifest's own URI
(`s3://kfct/datasets/tags/latest`, `.json` optional).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from kfct.errors import DataSourceError

if TYPE_CHECKING:
    from kfct.runtime.settings import Settings

SCHEME = "dataset"
LATEST_URI = "dataset://latest"  # the cluster's default data_uri (CT pipeline, recurring runs)
TAGS_PREFIX = "datasets/tags"
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA = re.compile(r"[0-9a-f]{64}")


def check_tag(tag: str) -> str:
    if not isinstance(tag, str) or not _TAG.fullmatch(tag) or tag.endswith(".json"):
        raise DataSourceError(f"bad dataset tag {tag!r}: use 1-64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
    return tag


def tag_manifest_uri(bucket: str, tag: str) -> str:
    return f"s3://{bucket}/{TAGS_PREFIX}/{check_tag(tag)}.json"


def pointer_manifest_uri(uri: str, settings: Settings | None = None) -> str | None:
    """The manifest URI a pointer names, or None when `uri` is not a pointer."""
    u = urlparse((uri or "").strip())
    if u.scheme == SCHEME:
        from kfct.runtime.settings import get_settings

        tag = (u.netloc + u.path).strip("/")
        if not tag:
            raise DataSourceError(f"dataset pointer {uri!r} names no tag: use dataset://<tag>, e.g. dataset://latest")
        return tag_manifest_uri((settings or get_settings()).s3_bucket, tag)
    if u.scheme == "s3" and u.path.lstrip("/").startswith(TAGS_PREFIX + "/"):
        tag = u.path.lstrip("/")[len(TAGS_PREFIX) + 1 :].removesuffix(".json")
        return tag_manifest_uri(u.netloc, tag)
    return None


def is_pointer(uri: str) -> bool:
    u = urlparse((uri or "").strip())
    return u.scheme == SCHEME or (u.scheme == "s3" and u.path.lstrip("/").startswith(TAGS_PREFIX + "/"))


def parse_manifest(text: str, where: str) -> dict:
    """Check a tag manifest; one line naming the field that is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DataSourceError(f"dataset tag manifest {where} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DataSourceError(f"dataset tag manifest {where} must be a JSON object")
    sha = data.get("sha256")
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise DataSourceError(f"dataset tag manifest {where}: field 'sha256' must be 64 hex digits, got {sha!r}")
    uri = data.get("uri")
    # a single file (`.../<sha256>.parquet`) or a dataset in parts (the prefix `.../<sha256>/`, kfct.data.parts)
    if not isinstance(uri, str) or urlparse(uri).scheme != "s3" or not uri.endswith((f"/{sha}.parquet", f"/{sha}/")):
        raise DataSourceError(
            f"dataset tag manifest {where}: field 'uri' must be the s3:// snapshot "
            f".../{sha}.parquet (or parts prefix .../{sha}/), got {uri!r}"
        )
    return data


def resolve(uri: str, settings: Settings | None = None) -> tuple[str, dict | None]:
    """(content-addressed URI, manifest) for a pointer; (uri, None) for anything else."""
    manifest_uri = pointer_manifest_uri(uri, settings)
    if manifest_uri is None:
        return uri, None
    import tempfile
    from pathlib import Path

    from kfct.data import s3

    if s3.stat(manifest_uri, settings=settings) is None:
        raise DataSourceError(
            f"dataset pointer {uri!r}: no tag manifest at {manifest_uri} "
            f"(push data first: kfct data push FILE --tag {manifest_uri.rsplit('/', 1)[-1][:-5]})"
        )
    with tempfile.TemporaryDirectory(prefix="kfct-tag-") as tmp:
        local = s3.download(manifest_uri, Path(tmp) / "tag.json", settings=settings)
        data = parse_manifest(local.read_text(), manifest_uri)
    return data["uri"], {**data, "pointer": uri, "manifest_uri": manifest_uri}


def write_tag(tag: str, uri: str, sha256: str, rows: int, settings: Settings | None = None) -> str:
    """Move `tag` to the snapshot `uri`; returns the manifest URI."""
    import tempfile
    from pathlib import Path

    from kfct.data import s3
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    bucket, _ = s3.parse_uri(uri)
    manifest_uri = tag_manifest_uri(bucket, tag)
    body = {
        "tag": tag,
        "sha256": sha256,
        "uri": uri,
        "rows": int(rows),
        "pushed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    parse_manifest(json.dumps(body), manifest_uri)
    with tempfile.TemporaryDirectory(prefix="kfct-tag-") as tmp:
        path = Path(tmp) / "tag.json"
        path.write_text(json.dumps(body, indent=1) + "\n")
        s3.upload(path, manifest_uri, settings=s, metadata={"sha256": sha256})
    return manifest_uri
