"""Issue 22, item 5: `kfct rollout` sees every local replica, as Prometheus sees every pod.

Two servers on one home both took traffic while the rollout read one `--url`: it judged half
the evidence (or none). Now the backend takes several URLs (`kfct rollout --url A --url B`), or
discovers every live `kfct serve` registered under the home (`kfct.contracts.replicas`); a split counts as
applied once every replica applied it, and a step's window merges the replicas' windows."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.servingkit import MODEL_NAME, Traffic, serving_env, serving_registry, wait_for  # noqa: F401

pytestmark = pytest.mark.slow

CFG = {
    "rollout": {
        "steps": [50, 100],
        "bake_seconds": 1.0,
        "poll_seconds": 0.25,
        "min_requests": 40,
        "min_customers": 20,
        "max_error_rate_increase": 0.02,
        "max_p99_latency_ratio": 1.5,
        "min_p99_latency_delta_ms": 20,
        "max_churn_rate_shift": 0.10,
    }
}


def test_a_rollout_judges_the_traffic_of_every_replica(serving_env, tmp_path):
    from kfct.components.deploy import deploy_version
    from kfct.components.rollout import LocalRouterBackend, rollout_version
    from kfct.config import load_config
    from kfct.governance import registry
    from kfct.serving.server import start_in_thread

    split = tmp_path / "split.json"
    a = start_in_thread(port=0, state_path=str(split), log_predictions=False, poll_seconds=0.1)
    b = start_in_thread(port=0, state_path=str(split), log_predictions=False, poll_seconds=0.1)
    try:
        cfg = load_config(overrides=CFG)
        good, flipped = serving_env.versions["good_b"], serving_env.versions["flipped"]
        deploy_version(MODEL_NAME, flipped, cfg, target="local", state_path=str(split))
        for srv in (a, b):
            wait_for(lambda srv=srv: srv.router.route.canary is not None, what="canary loaded")
        with Traffic(b.url), Traffic(b.url, seed=6):  # all traffic reaches replica b
            res = rollout_version(MODEL_NAME, cfg, LocalRouterBackend(MODEL_NAME, [a.url, b.url], state_path=split))
        assert res.outcome == "rolled_back" and "predicted churn rate shift" in res.reasons[0], res.reasons
        assert all(srv.router.route.canary is None for srv in (a, b))  # both replicas rolled back

        deploy_version(MODEL_NAME, good, cfg, target="local", state_path=str(split))
        with Traffic(b.url), Traffic(b.url, seed=6):
            res = rollout_version(MODEL_NAME, cfg, LocalRouterBackend(MODEL_NAME, [a.url, b.url], state_path=split))
        assert res.outcome == "promoted", res.reasons
        assert registry.alias_version(MODEL_NAME, "champion") == good
        assert all(srv.router.route.champion.loaded_version == good for srv in (a, b))
    finally:
        a.stop()
        b.stop()


def test_replicas_are_discovered_through_the_home_and_dead_ones_forgotten(tmp_path):
    from kfct.contracts import replicas

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = replicas.register("m", "http://127.0.0.1:9001", tmp_path)
    gone = replicas.register("m", "http://127.0.0.1:9002", tmp_path, pid=dead.pid)
    assert replicas.discover("m", tmp_path) == ["http://127.0.0.1:9001"]
    assert not gone.exists() and live.exists()
    replicas.unregister(live)
    assert replicas.discover("m", tmp_path) == []
    from kfct.components.rollout import make_backend
    from kfct.runtime.settings import get_settings

    replicas.register("m", "http://127.0.0.1:9003", tmp_path, pid=os.getpid())
    replicas.register("m", "http://127.0.0.1:9004", tmp_path, pid=os.getppid())
    s = get_settings().model_copy(update={"home": tmp_path})
    assert make_backend("m", "local", s).urls == ["http://127.0.0.1:9003", "http://127.0.0.1:9004"]
    assert make_backend("m", "local", s, server_url=["http://x:1", "http://y:2"]).urls == ["http://x:1", "http://y:2"]
