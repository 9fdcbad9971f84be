"""S3 / MinIO access through the `minio` client (same code against MinIO, AWS or moto).

Endpoint and keys come from settings (env), never from pipeline parameters.
Datasets are stored content-addressed: s3://<bucket>/datasets/<sha256>.parquet.

Every failure leaves this module as one `DataSourceError` line naming the URI, the
endpoint and the cause (unreachable, credentials rejected, bucket missing, object
missing), because the user running `kfct data push` or a pipeline's ingest step
needs to know which of those to fix, not a urllib3 traceback.

Every call here is idempotent (a GET, a stat, a list, a PUT of a fixed key and body), so
a transient failure (refused, reset, timed out, 5xx: MinIO restarting) is retried with
backoff through `kfct.runtime.retry` (`KFCT_RETRY_*`); a permanent one (403, missing bucket or
object) ends the call at once. Callers that must stay quick whatever the store does
(the audit mirror, a request path) pass `retry=False` and a `quick_client`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from kfct.errors import DataSourceError

if TYPE_CHECKING:
    import urllib3
    from minio import Minio

    from kfct.runtime.settings import Settings

T = TypeVar("T")

# Fail fast on a dead endpoint: minio's default is 5 retries and a 5-minute connect timeout.
# Timeouts come from Settings (net_connect_timeout_seconds, net_timeout_seconds).
RETRIES = 2

_CREDENTIAL_CODES = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "InvalidSecurity",
    "AuthorizationHeaderMalformed",
)


def parse_uri(uri: str) -> tuple[str, str]:
    u = urlparse(uri)
    if u.scheme != "s3" or not u.netloc or not u.path.strip("/"):
        raise DataSourceError(f"not an s3://bucket/key URI: {uri!r}")
    return u.netloc, u.path.lstrip("/")


def _http_client(
    secure: bool, ca_file: str | None = None, settings: Settings | None = None, retries: int = RETRIES
) -> urllib3.PoolManager:
    import certifi
    import urllib3

    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=s.net_connect_timeout_seconds, read=s.net_timeout_seconds),
        maxsize=10,
        cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
        ca_certs=ca_file or certifi.where(),
        retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]) if retries else False,
    )


def quick_client(settings: Settings | None = None) -> Minio:
    """A minio client that tries each request once: a call takes at most one Settings timeout."""
    return client(settings, retries=0)


def client(settings: Settings | None = None, retries: int = RETRIES) -> Minio:
    """A minio client for the configured endpoint; a clear error when not configured."""
    from minio import Minio

    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    if not s.s3_endpoint:
        raise DataSourceError("S3 endpoint not configured: set KFCT_S3_ENDPOINT (host:port)")
    endpoint = s.s3_endpoint.split("://", 1)[-1].rstrip("/")
    if not endpoint or "/" in endpoint:
        raise DataSourceError(f"bad KFCT_S3_ENDPOINT {s.s3_endpoint!r}: expected host:port (optionally with http(s)://)")
    secure = s.s3_secure or s.s3_endpoint.startswith("https://")
    access = s.s3_access_key.get_secret_value() if s.s3_access_key else None
    secret = s.s3_secret_key.get_secret_value() if s.s3_secret_key else None
    if bool(access) != bool(secret):
        raise DataSourceError("S3 credentials incomplete: set both KFCT_S3_ACCESS_KEY and KFCT_S3_SECRET_KEY")
    try:
        return Minio(
            endpoint,
            access_key=access,
            secret_key=secret,
            secure=secure,
            region=s.s3_region,
            http_client=_http_client(secure, s.ssl_cert_file, s, retries),
        )
    except ValueError as exc:
        raise DataSourceError(f"bad S3 settings for endpoint {s.s3_endpoint!r}: {exc}") from exc


def _explain(exc: Exception, what: str, settings: Settings | None = None, bucket: str | None = None) -> DataSourceError:
    """Turn minio/urllib3 errors into one line naming the endpoint and the cause."""
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    endpoint = s.s3_endpoint
    code = getattr(exc, "code", None)
    if code == "NoSuchBucket":
        bucket = getattr(exc, "bucket_name", None) or bucket
        return DataSourceError(
            f"{what}: bucket {bucket!r} does not exist on {endpoint}"
            if bucket
            else f"{what}: bucket does not exist on {endpoint}"
        )
    if code in ("NoSuchKey", "ResourceNotFound"):
        return DataSourceError(f"{what}: object not found")
    if code in _CREDENTIAL_CODES:
        hint = "" if s.s3_access_key else " (no keys configured: set KFCT_S3_ACCESS_KEY / KFCT_S3_SECRET_KEY)"
        return DataSourceError(f"{what}: S3 credentials rejected by {endpoint} ({code}){hint}")
    if code:
        return DataSourceError(f"{what}: S3 error {code}: {getattr(exc, 'message', exc)}")
    name = type(exc).__name__
    if name in ("InvalidResponseError", "ServerError"):
        first = str(exc).splitlines()[0][:160] if str(exc) else name
        return DataSourceError(f"{what}: {endpoint} did not answer as an S3 server ({name}: {first})")
    first = str(exc).splitlines()[0][:160] if str(exc) else ""
    return DataSourceError(f"{what}: S3 endpoint {endpoint} unreachable ({name}: {first})")


def _call(
    what: str, settings: Settings | None, bucket: str | None, fn: Callable[..., T], *args: Any, retry: bool = True, **kwargs: Any
) -> T:
    """fn(*args, **kwargs), retried on transient errors (when `retry`); failures as one line."""
    from kfct.runtime.retry import TransientFailure, retry_call

    try:
        if not retry:
            return fn(*args, **kwargs)
        return retry_call(lambda: fn(*args, **kwargs), what, settings)
    except DataSourceError:
        raise
    except TransientFailure as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
        err = _explain(cause, what, settings, bucket)
        raise DataSourceError(f"{err} (after {str(exc).split(': still failing after ', 1)[-1].split(':', 1)[0]})") from exc
    except Exception as exc:  # minio.error.S3Error, urllib3 MaxRetryError, ...
        raise _explain(exc, what, settings, bucket) from exc


def download(uri: str, dest: str | Path, settings: Settings | None = None) -> Path:
    bucket, key = parse_uri(uri)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    c = client(settings)
    _call(f"cannot read {uri}", settings, bucket, c.fget_object, bucket, key, str(dest))
    return dest


def upload(path: str | Path, uri: str, settings: Settings | None = None, metadata: dict | None = None) -> str:
    bucket, key = parse_uri(uri)
    c = client(settings)
    _call(f"cannot write {uri}", settings, bucket, c.fput_object, bucket, key, str(path), metadata=metadata)
    return uri


def put_bytes(data: bytes, uri: str, settings: Settings | None = None, client_: Minio | None = None, retry: bool = True) -> str:
    """Write one object from memory (a PUT of the same key again overwrites: idempotent)."""
    import io

    bucket, key = parse_uri(uri)
    c = client_ or client(settings)
    # a fresh stream per try: a retried PUT must send the whole body again
    _call(f"cannot write {uri}", settings, bucket, lambda: c.put_object(bucket, key, io.BytesIO(data), len(data)), retry=retry)
    return uri


def list_names(bucket: str, prefix: str, settings: Settings | None = None) -> list[str]:
    """Object names under `prefix` (recursive), the listing retried as a whole on transient errors."""
    c = client(settings)
    return _call(
        f"cannot list s3://{bucket}/{prefix}",
        settings,
        bucket,
        lambda: [o.object_name for o in c.list_objects(bucket, prefix=prefix, recursive=True)],
    )


def stat(uri: str, settings: Settings | None = None) -> dict | None:
    """Size, etag and user metadata of an object, or None when it does not exist.

    A missing bucket is an error (not "absent"): writing into it would fail anyway.
    """
    bucket, key = parse_uri(uri)
    c = client(settings)
    try:
        st = _call(f"cannot stat {uri}", settings, bucket, c.stat_object, bucket, key)
    except DataSourceError as exc:
        if getattr(exc.__cause__, "code", None) in ("NoSuchKey", "ResourceNotFound"):
            return None
        raise
    meta = {
        k.lower().removeprefix("x-amz-meta-"): v for k, v in (st.metadata or {}).items() if k.lower().startswith("x-amz-meta-")
    }
    return {"size": st.size, "etag": st.etag, "metadata": meta}


def exists(uri: str, settings: Settings | None = None) -> bool:
    return stat(uri, settings) is not None


def ensure_bucket(bucket: str, settings: Settings | None = None, create: bool = False) -> bool:
    """Check the bucket exists; create it when `create` (returns True if it was created).

    Without `create` a missing bucket is a clear error: silently creating buckets on a
    shared MinIO is an operator decision (the manifests create `kfct` at install).
    """
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    c = client(s)
    if _call(f"cannot check bucket {bucket!r}", s, bucket, c.bucket_exists, bucket):
        return False
    if not create:
        raise DataSourceError(
            f"bucket {bucket!r} does not exist on {s.s3_endpoint}: create it (MinIO console or "
            f"`mc mb`; manifests/base/minio creates 'kfct') or set KFCT_S3_BUCKET"
        )
    _call(
        f"cannot create bucket {bucket!r}", s, bucket, c.make_bucket, bucket, s.s3_region or "us-east-1", retry=False
    )  # a retried create would fail on the bucket the first try made
    return True
