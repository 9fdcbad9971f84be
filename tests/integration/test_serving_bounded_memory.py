"""Issue 22, item 2: no request inflates the server. One 1.57 MB request (a 1.1 MB x-request-id,
800 rows) once added ~1.3 GB RSS: headers were unbounded and the log copied the request id into
every row. Now the head of a request is bounded (431 past 16 KiB, `kfct.serving.http_limits`)
and per-request values are stored once per request (dictionary-encoded in the log's batch).

A real `python -m kfct.serving` (prediction log on) gets 2 requests with 1.1 MB headers and then
8 concurrent requests with the largest head and body it accepts; its peak RSS (VmHWM) may grow
by at most RSS_BOUND_MB over what it reached when warmed up."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import pytest

from tests.servingkit import MODEL_NAME, Client, records, server_process, serving_env, serving_registry  # noqa: F401

pytestmark = pytest.mark.slow

RSS_BOUND_MB = 250


def _hwm_mb(pid: int) -> float:
    """Peak RSS of the server and its children (the prediction log's encoder process) together."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            total += int(line.split()[1]) / 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += _hwm_mb(int(child))
    return total


def _max_body_records(limit: int) -> list[dict]:
    recs = records(4000, seed=3)
    lo, hi = 1, len(recs)
    while lo < hi:  # the most rows that fit the body limit
        mid = (lo + hi + 1) // 2
        if len(json.dumps({"instances": recs[:mid]}).encode()) <= limit - 100:
            lo = mid
        else:
            hi = mid - 1
    return recs[:lo]


def test_maximal_headers_and_bodies_keep_rss_bounded(serving_env):
    from kfct.runtime.settings import get_settings
    from kfct.serving.http_limits import MAX_HEAD_BYTES

    body_recs = _max_body_records(get_settings().max_request_bytes)
    with server_process(["kfct.serving", "--host", "127.0.0.1"], serving_env.home, "server up") as srv:
        pid = srv.proc.pid
        c = srv.client
        for _ in range(3):  # warm: every code path once, a flush included
            assert c.predict(MODEL_NAME, body_recs[:800], headers={"x-request-id": "w" * 1000})[0] == 200
        time.sleep(6.5)
        base = _hwm_mb(pid)

        statuses: list[int] = []

        def send(rid: str, recs: list[dict]) -> None:
            cl = Client(f"http://{c.host}:{c.port}", timeout=60)
            try:
                statuses.append(cl.predict(MODEL_NAME, recs, headers={"x-request-id": rid})[0])
            except OSError:
                statuses.append(-1)  # the server closed the connection on a refused head
            finally:
                cl.close()

        huge = [threading.Thread(target=send, args=("h" * 1_100_000, body_recs[:800])) for _ in range(2)]
        for t in huge:
            t.start()
        for t in huge:
            t.join()
        assert all(s in (431, -1) for s in statuses), statuses
        statuses.clear()
        biggest_rid = "m" * (MAX_HEAD_BYTES - 1024)  # the largest head the server accepts, with the others
        full = [threading.Thread(target=send, args=(biggest_rid, body_recs)) for _ in range(8)]
        for t in full:
            t.start()
        for t in full:
            t.join()
        assert statuses == [200] * 8, statuses
        time.sleep(6.5)  # a flush of the log (5 s) encodes them all
        grew = _hwm_mb(pid) - base
        print(f"\npeak RSS (server + encoder child) grew {grew:.0f} MB over {base:.0f} MB; bound {RSS_BOUND_MB} MB")
        assert grew < RSS_BOUND_MB, f"peak RSS grew {grew:.0f} MB (bound {RSS_BOUND_MB} MB, {len(body_recs)} rows/request)"
