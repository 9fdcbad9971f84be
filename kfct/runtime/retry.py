"""Retry idempotent steps on transient network errors; fail at once on permanent ones.

A dependency that is restarting (MinIO, the MLflow server) refuses connections, times
out or answers 5xx for a while and then comes back: a step that is safe to repeat (a
read, setting a tag or alias to a fixed value, a registration that first looks up what
it already made) is tried again with exponential backoff. A 4xx answer (403, 404, a
missing bucket, bad credentials) will not change by waiting, so it ends the step at
once. Attempts and backoff come from `Settings` (`retry_*`). Non-idempotent calls are
never wrapped here. The loop itself is tenacity's (`tenacity.Retrying`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from kfct.errors import KfctError

if TYPE_CHECKING:
    from kfct.runtime.settings import Settings

T = TypeVar("T")
log = logging.getLogger("kfct.runtime.retry")

_PERMANENT_S3_CODES = {
    "NoSuchBucket",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NoSuchKey",
    "InvalidBucketName",
    "AllAccessDisabled",
}


class TransientFailure(KfctError):
    """A dependency stayed unreachable (or kept failing with 5xx) through every retry."""


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, if any (MLflow, requests, httpx, minio, kubernetes)."""
    for attr in ("status_code", "status", "code"):
        v = getattr(exc, attr, None)
        if isinstance(v, int) and 100 <= v <= 599:
            return v
    resp = getattr(exc, "response", None)
    for attr in ("status_code", "status"):
        v = getattr(resp, attr, None)
        if isinstance(v, int) and 100 <= v <= 599:
            return v
    getter = getattr(exc, "get_http_status_code", None)  # MlflowException
    if callable(getter):
        try:
            return int(getter())
        except (TypeError, ValueError):
            return None
    return None


def is_transient(exc: BaseException) -> bool:
    """True when waiting may help: connection refused/reset, timeouts, 429 and 5xx."""
    name = type(exc).__name__
    module = type(exc).__module__ or ""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code in _PERMANENT_S3_CODES:  # minio S3Error
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if module.startswith("urllib3") or name in (
        "ConnectTimeout",
        "ReadTimeout",
        "ConnectError",
        "ReadError",
        "RemoteProtocolError",
        "ChunkedEncodingError",
        "ProtocolError",
    ):
        return True
    if module.startswith("mlflow"):
        msg = str(exc)
        if "failed with exception" in msg or "Max retries exceeded" in msg or "timed out" in msg.lower():
            return True  # the MLflow client's wording for an unreachable or hanging server
    status = http_status(exc)
    if status is not None:
        return status == 429 or status >= 500
    # requests' ConnectionError and socket errors are OSErrors
    return isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError))


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}"


def retry_call(
    fn: Callable[[], T],
    what: str,
    settings: Settings | None = None,
    attempts: int | None = None,
    before_retry: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn`; on a transient error wait and try again, up to `attempts` tries (tenacity).

    A permanent error is re-raised unchanged at once (callers keep their own handling of,
    say, MLflow's RESOURCE_DOES_NOT_EXIST). When every try failed transiently the result is a
    `TransientFailure` with one line naming `what`. `before_retry` runs before each repeat
    (registration uses it to look up what the failed try may already have made).

    The policy is kfct's (what is transient, the half-jittered exponential backoff, the one-line
    warning per retry, the error naming `what`); tenacity runs the loop. It is imported here, not
    at module import: most processes never retry.
    """
    import tenacity

    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    n = int(attempts or s.retry_attempts)
    delay, cap = float(s.retry_backoff_seconds), float(s.retry_max_backoff_seconds)
    t0 = time.monotonic()

    def wait(state: tenacity.RetryCallState) -> float:
        return min(delay * (2 ** (state.attempt_number - 1)), cap) * (0.5 + random.random() / 2)

    def warn(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s: transient failure (%s), try %d of %d in %.1f s",
            what,
            one_line(exc, 120) if exc else "?",
            state.attempt_number + 1,
            n,
            state.next_action.sleep if state.next_action else 0.0,
        )

    def before(state: tenacity.RetryCallState) -> None:
        if before_retry is not None and state.attempt_number > 1:
            before_retry()

    try:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_attempt(n),
            wait=wait,
            sleep=sleep,
            retry=tenacity.retry_if_exception(is_transient),
            before=before,
            before_sleep=warn,
            reraise=False,
        ):
            with attempt:
                result = fn()
    except tenacity.RetryError as err:
        exc = err.last_attempt.exception()
        assert exc is not None
        raise TransientFailure(
            f"{what}: still failing after {n} tries over {time.monotonic() - t0:.1f} s: {one_line(exc)}"
        ) from exc
    return result
