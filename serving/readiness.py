"""Why the server is not ready (or why the last reload failed), in words and as a gauge.

A pod that is not ready is only useful to an operator if it says why: the registry
(MLflow) is unreachable, the model store (MinIO / S3) is unreachable, no version carries
the alias yet, the artifact failed its hash check, or something else went wrong loading
it. `reason_of` maps the loader's last error to one of those codes (a small, fixed label
set for Prometheus); the readiness endpoints answer 503 with "<code>: <error>" and
`kfct_model_ready` / `kfct_model_load_failing{reason}` carry the same on /metrics.
"""

from __future__ import annotations

import re

REASONS = ("registry_unreachable", "store_unreachable", "no_model", "integrity", "load_failed")

_STORE = re.compile(
    r"EndpointConnectionError|Could not connect to the endpoint|botocore|S3 endpoint .* unreachable|"
    r"minio|s3://|ReadTimeoutError on endpoint|ConnectTimeoutError",
    re.I,
)
_NET = re.compile(
    r"Max retries exceeded|Connection refused|Connection reset|ConnectionError|timed out|"
    r"RemoteDisconnected|Connection aborted|status code 50[234]|NewConnectionError|"
    r"API request to .* failed",
    re.I,
)
_MISSING = re.compile(r"RESOURCE_DOES_NOT_EXIST|not found|does not exist|no champion configured", re.I)


def reason_of(error: str | None) -> str:
    """Classify a loader error message (as `ChurnPredictor.last_error` keeps it)."""
    text = error or ""
    if "ModelIntegrityError" in text or "does not match" in text:
        return "integrity"
    if _STORE.search(text) and (_NET.search(text) or "unreachable" in text or "EndpointConnection" in text):
        return "store_unreachable"
    if _NET.search(text):
        return "registry_unreachable"
    if _MISSING.search(text):
        return "no_model"
    return "load_failed"


def describe(error: str | None, retry_in: float | None = None) -> str:
    """One line for the readiness body: the code, the error, when the next try is."""
    code = reason_of(error)
    line = f"{code}: {(error or 'no model version loaded yet')[:300]}"
    if retry_in is not None:
        line += f" (retrying in {retry_in:.0f} s)"
    return line


def publish(model_name: str, ready: bool, failing_error: str | None) -> None:
    """Set the gauges: ready 1/0, and 1 on the reason the last load failed (all 0 after a success)."""
    try:
        from kfct.serving.metrics import prometheus

        m = prometheus()
        m.model_ready.labels(model_name).set(1 if ready else 0)
        current = reason_of(failing_error) if failing_error else None
        for r in REASONS:
            m.model_load_failing.labels(model_name, r).set(1 if r == current else 0)
    except Exception:  # noqa: BLE001  # pragma: no cover - metrics never break serving
        pass
