"""kfct.runtime.retry: transient errors are retried with half-jittered exponential backoff (tenacity runs the
loop), permanent ones end the step at once, exhaustion is one TransientFailure naming the step."""

from __future__ import annotations

import logging
import sys

import pytest

from kfct.runtime.retry import TransientFailure, retry_call
from kfct.runtime.settings import Settings

S = Settings(retry_attempts=4, retry_backoff_seconds=1.0, retry_max_backoff_seconds=3.0)


class Http503(Exception):
    status_code = 503


class Http404(Exception):
    status_code = 404


def test_transient_errors_are_retried_with_capped_jittered_backoff(caplog):
    calls, sleeps, before = [], [], []

    def fn():
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionRefusedError("refused")
        return "ok"

    with caplog.at_level(logging.WARNING, logger="kfct.runtime.retry"):
        assert retry_call(fn, "read x", S, sleep=sleeps.append, before_retry=lambda: before.append(len(calls))) == "ok"
    assert len(calls) == 4 and before == [1, 2, 3]  # before each repeat, after the wait
    # base 1 s doubling, capped at 3 s, each times a factor in [0.5, 1)
    for wait, full in zip(sleeps, (1.0, 2.0, 3.0)):
        assert 0.5 * full <= wait < full
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == [
        f"read x: transient failure (ConnectionRefusedError: refused), try {i} of 4" for i in (2, 3, 4)
    ]
    assert "tenacity" in sys.modules


def test_a_permanent_error_ends_the_step_at_once_unchanged():
    calls = []

    def fn():
        calls.append(1)
        raise Http404("no such model")

    with pytest.raises(Http404, match="no such model"):
        retry_call(fn, "read x", S, sleep=lambda _s: None)
    assert calls == [1]


def test_exhaustion_is_one_transient_failure_naming_the_step():
    def fn():
        raise Http503("busy")

    with pytest.raises(TransientFailure, match=r"^set alias: still failing after 3 tries over .* s: Http503: busy$") as e:
        retry_call(fn, "set alias", S, attempts=3, sleep=lambda _s: None)
    assert isinstance(e.value.__cause__, Http503)
