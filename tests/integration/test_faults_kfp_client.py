"""KFP API calls with a hanging API server (issue 12, item 6 for `kfp.Client`).

The real `kfp.Client` talks to the loopback KFP fake (tests/fakes/kfp_server.py) through a
`FaultProxy`. The health probe passes; then the proxy hangs (accepts, never answers), as an
API server stuck behind a wedged ingress would. Every call kfct makes through kfp.Client
(submit, schedule, trigger_run) must end within the Settings timeouts with one KfpError
line; before the fix kfp_server_api passed `timeout=None` to urllib3 and waited forever.
"""

# no `from __future__ import annotations`: kfp reads the component annotations as types.
import threading
import time

import pytest
from fakes.kfp_server import FakeKfpServer, point_kfct_at  # tests/ is on sys.path (tests/conftest.py)

from tests.faultkit.proxy import FaultProxy

TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def echo(data_uri: str) -> str:
        return data_uri

    @dsl.pipeline(name="kfct-ct")
    def pipe(data_uri: str = "generate://2000"):
        echo(data_uri=data_uri)

    out = tmp_path_factory.mktemp("build") / "ct_pipeline.yaml"
    compiler.Compiler().compile(pipe, str(out))
    return out


@pytest.fixture
def hanging_kfp(monkeypatch, tmp_path):
    """(proxy, server): settings point at the proxy; the proxy hangs right after the health probe."""
    from kfct.pipelines import kfp_client
    from kfct.runtime.settings import get_settings, reset_settings

    with FakeKfpServer() as server:
        host, port = server.url.removeprefix("http://").split(":")
        with FaultProxy(host, int(port)) as proxy:
            monkeypatch.setenv("KFCT_HOME", str(tmp_path / "home"))
            monkeypatch.setenv("KFCT_NET_TIMEOUT_SECONDS", str(TIMEOUT_S))
            monkeypatch.setenv("KFCT_NET_CONNECT_TIMEOUT_SECONDS", str(TIMEOUT_S))
            point_kfct_at(monkeypatch, f"http://{proxy.address}", None, tmp_path)
            probe = kfp_client._probe

            def probe_then_hang(*a, **k):
                answer = probe(*a, **k)
                proxy.mode = "hang"
                return answer

            monkeypatch.setattr(kfp_client, "_probe", probe_then_hang)
            yield get_settings()
            proxy.mode = "pass"  # let held connections go so the server can stop
    reset_settings()


def _bounded(fn, limit: float):
    """Run fn in a thread; (exception or result, seconds) — fails the test if it outlives `limit`."""
    out: dict = {}

    def target():
        t0 = time.monotonic()
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out["result"] = exc
        out["took"] = time.monotonic() - t0

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"still waiting on a hanging KFP API after {limit} s (no request timeout)"
    return out["result"], out["took"]


@pytest.mark.parametrize("call", ["submit", "schedule", "trigger_run"])
def test_kfp_calls_fail_in_bounded_time_when_the_api_hangs(hanging_kfp, package, call):
    from kfct.pipelines import kfp_client
    from kfct.pipelines.kfp_client import KfpError

    fns = {
        "submit": lambda: kfp_client.submit(package, run_name="r"),
        "schedule": lambda: kfp_client.schedule(package),
        "trigger_run": lambda: kfp_client.trigger_run("kfct-ct"),
    }
    result, took = _bounded(fns[call], limit=6 * TIMEOUT_S + 10)
    assert isinstance(result, KfpError), f"{call} returned {result!r} against a hanging API"
    line = str(result)
    assert "\n" not in line and "unreachable" in line and "Timeout" in line, line
    assert took < 3 * TIMEOUT_S + 3, f"{call} took {took:.1f} s with a {TIMEOUT_S} s timeout"
