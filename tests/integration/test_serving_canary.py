"""Canary, shadow and the self-driving rollout, against a real server on loopback.

Bad canaries are built on purpose (see tests/servingkit): one that errors, one that is
slow, one that flips predictions. Each must be rolled back by the rollout without a
person; a good one must be promoted.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import pytest

from tests.servingkit import MODEL_NAME, Client, Traffic, records, serving_env, serving_registry, wait_for  # noqa: F401

pytestmark = pytest.mark.slow


def start(tmp_path, **kw):
    from kfct.serving.server import start_in_thread

    kw.setdefault("state_path", str(tmp_path / "split.json"))
    kw.setdefault("prediction_log_dir", str(tmp_path / "predictions"))
    kw.setdefault("log_flush_seconds", 0.2)
    kw.setdefault("poll_seconds", 0.1)
    return start_in_thread(port=0, **kw)


def binomial_ok(k: int, n: int, p: float, sds: float = 4.5) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return abs(k - n * p) <= sds * sd


def test_sticky_split_counts_within_binomial_bounds(serving_env, tmp_path):
    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    srv = start(tmp_path, canary_version=v_b, canary_percent=30, log_predictions=False)
    try:
        c = Client(srv.url)
        base = records(50, seed=21)
        rng = random.Random(1)
        n, seen = 2000, {}
        for i in range(n):
            rec = dict(base[i % 50], customer_id=f"S-{rng.getrandbits(40):010x}")
            status, body, headers = c.predict(MODEL_NAME, [rec])
            assert status == 200
            v = body["predictions"][0]["model_version"]
            assert headers["x-kfct-model-version"] == v == body["model_version"]
            seen[rec["customer_id"]] = v
        k = sum(1 for v in seen.values() if v == v_b)
        assert set(seen.values()) == {v_a, v_b}
        assert binomial_ok(k, n, 0.30), f"{k} of {n} on the canary at 30%"
        # the split is the documented hash, so anyone can predict it
        from kfct.serving.router import to_canary

        salt = srv.router.route.salt
        assert all((v == v_b) == to_canary(cid, 30, salt) for cid, v in seen.items())
    finally:
        srv.stop()


def test_requests_without_ids_split_at_random(serving_env, tmp_path):
    v_b = serving_env.versions["good_b"]
    srv = start(tmp_path, canary_version=v_b, canary_percent=20, log_predictions=False)
    try:
        c = Client(srv.url)
        rec = records(1, seed=22)[0]
        del rec["customer_id"]
        n = 1500
        k = sum(c.predict(MODEL_NAME, [rec])[1]["model_version"] == v_b for _ in range(n))
        assert binomial_ok(k, n, 0.20), f"{k} of {n} on the canary at 20%"
    finally:
        srv.stop()


def test_stickiness_across_requests_batches_and_a_growing_percent(serving_env, tmp_path):
    from kfct.contracts.split_state import update_state

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    # the split file (what `kfct deploy` writes), not a command-line pin: the percent changes later
    update_state(MODEL_NAME, tmp_path / "split.json", canary_version=v_b, canary_percent=25)
    srv = start(tmp_path, log_predictions=False)
    try:
        c = Client(srv.url)
        recs = records(120, seed=23)
        first = {r["customer_id"]: c.predict(MODEL_NAME, [r])[1]["model_version"] for r in recs}
        assert set(first.values()) == {v_a, v_b}
        for _ in range(2):  # the same customer always gets the same version
            assert all(c.predict(MODEL_NAME, [r])[1]["model_version"] == first[r["customer_id"]] for r in recs)
        # a batch mixing customers is split per instance, each prediction names its version
        status, body, headers = c.predict(MODEL_NAME, recs)
        assert status == 200 and body["model_version"] == "mixed" == headers["x-kfct-model-version"]
        assert [p["model_version"] for p in body["predictions"]] == [first[r["customer_id"]] for r in recs]
        # raising the percent keeps every canary customer on the canary
        st = update_state(MODEL_NAME, srv.state_path, canary_percent=60)
        wait_for(lambda: srv.router.applied_generation >= st.generation, what="split update")
        later = {r["customer_id"]: c.predict(MODEL_NAME, [r])[1]["model_version"] for r in recs}
        assert all(later[cid] == v_b for cid, v in first.items() if v == v_b)
        assert sum(v == v_b for v in later.values()) > sum(v == v_b for v in first.values())
    finally:
        srv.stop()


def test_shadow_mode_champion_answers_both_are_logged(serving_env, tmp_path):
    from kfct.contracts.prediction_log import read_prediction_log

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    srv = start(tmp_path, canary_version=v_b, shadow=True)
    try:
        c = Client(srv.url)
        recs = records(20, seed=24)
        for i, r in enumerate(recs):
            status, body, _ = c.predict(MODEL_NAME, [r], headers={"x-request-id": f"shadow-{i}"})
            assert status == 200 and body["model_version"] == v_a
        assert srv.router.drain_shadow(10)
        assert srv.prediction_log.flush(10)
        df = read_prediction_log(root=tmp_path / "predictions")
        champ = df[df["role"] == "champion"].set_index("request_id")
        shadow = df[df["role"] == "shadow"].set_index("request_id")
        assert len(champ) == 20 and len(shadow) == 20
        assert set(champ["model_version"]) == {v_a} and set(shadow["model_version"]) == {v_b}
        assert (champ.loc[shadow.index, "customer_id"] == shadow["customer_id"]).all()
        assert (champ["probability"] != shadow.loc[champ.index, "probability"]).any()
        stats = Client(srv.url).request("GET", "/kfct/stats")[1]
        assert stats["mode"] == "shadow" and stats["versions"][v_b]["requests"] == 20
    finally:
        srv.stop()


ROLLOUT_CFG = {
    "rollout": {
        "steps": [20, 50, 100],
        "bake_seconds": 1.0,
        "poll_seconds": 0.25,
        "min_requests": 40,
        "max_error_rate_increase": 0.02,
        "max_p99_latency_ratio": 1.5,
        "min_p99_latency_delta_ms": 20,
        "max_churn_rate_shift": 0.10,
    }
}


def _rollout(srv, serving_env, role):
    """deploy (challenger + first step) then roll out, under live traffic."""
    from kfct.components.deploy import deploy_version
    from kfct.components.rollout import LocalRouterBackend, rollout_version
    from kfct.config import load_config

    cfg = load_config(overrides=ROLLOUT_CFG)
    version = serving_env.versions[role]
    out = deploy_version(MODEL_NAME, version, cfg, target="local", state_path=srv.state_path)
    assert out["alias"] == "challenger" and out["canary_percent"] == 20
    wait_for(
        lambda: srv.router.route.canary is not None and srv.router.route.canary.loaded_version == version, what="canary loaded"
    )
    backend = LocalRouterBackend(MODEL_NAME, srv.url, state_path=srv.state_path)
    # two clients: a slow canary blocks a sequential client ~60 ms per canary request, and on a
    # loaded machine one client alone barely reaches min_requests within 3 x the bake time
    with Traffic(srv.url) as traffic, Traffic(srv.url, seed=6):
        res = rollout_version(MODEL_NAME, cfg, backend)
    return res, traffic, version


@pytest.mark.parametrize("role,why", [("faulty", "error rate"), ("slow", "p99 latency"), ("flipped", "predicted churn rate")])
def test_bad_canary_is_rolled_back_by_itself(serving_env, tmp_path, role, why):
    from kfct.governance import audit, registry

    v_a = serving_env.versions["good_a"]
    srv = start(tmp_path, log_predictions=False)
    try:
        seq0 = sum(1 for _ in audit.read())
        res, traffic, version = _rollout(srv, serving_env, role)
        assert res.outcome == "rolled_back", res
        assert any(why in r for r in res.reasons), res.reasons
        assert res.steps[0]["percent"] == 20 and len(res.steps) == 1  # caught at the first step
        # registry: champion untouched, canary tagged rejected, challenger gone
        assert registry.alias_version(MODEL_NAME, "champion") == v_a
        assert registry.alias_version(MODEL_NAME, "challenger") is None
        tags = registry.client().get_model_version(MODEL_NAME, version).tags
        assert tags["rejected"] == "true" and why in tags["rejected_reason"]
        # traffic: back on the champion only
        assert srv.router.route.canary is None
        assert Client(srv.url).predict(MODEL_NAME, records(1))[1]["model_version"] == v_a
        assert traffic.by_version.get(version, 0) > 0  # the canary really served users meanwhile
        # audited
        events = [e for e in list(audit.read())[seq0:] if e.get("version") == version]
        kinds = [e["event"] for e in events]
        assert {"model_deployed", "rollout_started", "rollout_step", "rollout_rolled_back"} <= set(kinds)
        assert audit.verify().ok
    finally:
        srv.stop()


def test_good_canary_is_promoted_by_itself(serving_env, tmp_path):
    from kfct.contracts.split_state import read_state
    from kfct.governance import audit, registry

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    srv = start(tmp_path, log_predictions=False)
    try:
        res, traffic, _version = _rollout(srv, serving_env, "good_b")
        assert res.outcome == "promoted", res
        assert [s["percent"] for s in res.steps] == [20, 50, 100]
        assert all(s["verdict"] == "pass" for s in res.steps)
        assert registry.alias_version(MODEL_NAME, "champion") == v_b
        assert registry.alias_version(MODEL_NAME, "challenger") is None
        assert registry.client().get_model_version(MODEL_NAME, v_b).tags["rollout_status"] == "promoted"
        st = read_state(srv.state_path)
        assert st.champion_version == v_b and st.canary_version is None and st.canary_percent == 0
        assert srv.router.route.champion.loaded_version == v_b and srv.router.route.canary is None
        assert Client(srv.url).predict(MODEL_NAME, records(1))[1]["model_version"] == v_b
        assert traffic.by_version.get(v_a, 0) > 0 and traffic.by_version.get(v_b, 0) > 0
        moved = [
            e for e in audit.read() if e["event"] == "alias_moved" and e.get("alias") == "champion" and e.get("version") == v_b
        ]
        assert moved and moved[-1]["previous"] == v_a and "rollout" in moved[-1]["reason"]
        assert any(e["event"] == "rollout_promoted" and e["version"] == v_b for e in audit.read())
    finally:
        srv.stop()


def test_rollout_refuses_without_a_challenger_and_changes_nothing(serving_env):
    from kfct.components.rollout import LocalRouterBackend, RolloutError, rollout_version
    from kfct.config import load_config
    from kfct.governance import registry

    backend = LocalRouterBackend(MODEL_NAME, "http://127.0.0.1:9")  # never contacted
    with pytest.raises(RolloutError, match="challenger"):
        rollout_version(MODEL_NAME, load_config(overrides=ROLLOUT_CFG), backend)
    assert registry.alias_version(MODEL_NAME, "champion") == serving_env.versions["good_a"]


def test_deploy_local_first_model_becomes_champion(serving_env, tmp_path):
    from kfct.components.deploy import deploy_version
    from kfct.config import load_config
    from kfct.contracts.split_state import read_state
    from kfct.governance import registry

    registry.delete_alias(MODEL_NAME, "champion", reason="first-model test")
    path = tmp_path / "split.json"
    out = deploy_version(MODEL_NAME, serving_env.versions["good_a"], load_config(), target="local", state_path=path)
    assert out["alias"] == "champion" and out["canary_percent"] == 100
    assert registry.alias_version(MODEL_NAME, "champion") == serving_env.versions["good_a"]
    st = read_state(path)
    assert st.champion_version == serving_env.versions["good_a"] and st.canary_version is None


def test_deploy_refuses_rejected_and_unknown_versions(serving_env, tmp_path):
    from kfct.components.deploy import DeployError, deploy_version
    from kfct.config import load_config
    from kfct.governance import registry

    path = tmp_path / "split.json"
    with pytest.raises(DeployError, match="not registered"):
        deploy_version(MODEL_NAME, "999", load_config(), target="local", state_path=path)
    registry.set_version_tag(MODEL_NAME, serving_env.versions["flipped"], "rejected", "true")
    with pytest.raises(DeployError, match="rejected"):
        deploy_version(MODEL_NAME, serving_env.versions["flipped"], load_config(), target="local", state_path=path)
    assert not path.exists()
    assert registry.alias_version(MODEL_NAME, "challenger") is None


def test_served_canary_state_survives_a_restart(serving_env, tmp_path):
    """The split file is the source of truth: a restarted server picks the canary up again.
    A command-line pin (`kfct serve --canary-version`) is this server's alone: it writes nothing."""
    from kfct.contracts.split_state import update_state

    v_b = serving_env.versions["good_b"]
    pinned = start(tmp_path, canary_version=v_b, canary_percent=40, log_predictions=False)
    assert pinned.router.route.canary is not None and pinned.router.route.percent == 40
    pinned.stop()
    assert not (tmp_path / "split.json").exists()
    update_state(MODEL_NAME, tmp_path / "split.json", canary_version=v_b, canary_percent=40)
    srv = start(tmp_path, log_predictions=False)
    srv.stop()
    time.sleep(0.1)
    srv2 = start(tmp_path, log_predictions=False)
    try:
        r = srv2.router.route
        assert r.canary is not None and r.canary.loaded_version == v_b and r.percent == 40
    finally:
        srv2.stop()


def test_deploy_stage_runs_as_a_kfp_local_component(serving_env, tmp_path, monkeypatch):
    """The undecorated component function, wrapped like pipelines/ct.py does, run by kfp.local."""
    import json

    from kfp import dsl, local

    from kfct.components.deploy import deploy_model
    from kfct.config import config_to_json, load_config
    from kfct.contracts.split_state import read_state, state_path
    from kfct.governance import registry

    monkeypatch.chdir(tmp_path)  # kfp.local writes its outputs relative to the working dir
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    comp = dsl.component(deploy_model, base_image="unused", install_kfp_package=False)
    v_b = serving_env.versions["good_b"]
    task = comp(config_json=config_to_json(load_config()), model_name=MODEL_NAME, version=v_b, target="local", namespace="")
    out = json.loads(task.output)
    assert out["alias"] == "challenger" and out["canary_percent"] == 10
    assert registry.alias_version(MODEL_NAME, "challenger") == v_b
    st = read_state(state_path(MODEL_NAME))
    assert st.canary_version == v_b and st.canary_percent == 10


def test_deploy_of_the_champion_switches_a_running_server(serving_env, tmp_path):
    """Rollout disabled: register sets `champion` directly; deploy makes the server follow."""
    from kfct.components.deploy import deploy_version
    from kfct.config import load_config
    from kfct.governance import registry

    v_b = serving_env.versions["good_b"]
    srv = start(tmp_path, log_predictions=False)
    try:
        registry.set_alias(MODEL_NAME, "champion", v_b, reason="registered without rollout")
        out = deploy_version(MODEL_NAME, v_b, load_config(), target="local", state_path=srv.state_path)
        assert out["alias"] == "champion" and out["mode"] == "direct"
        wait_for(lambda: srv.router.route.champion.loaded_version == v_b, what="champion switch")
        assert Client(srv.url).predict(MODEL_NAME, records(1))[1]["model_version"] == v_b
        assert registry.alias_version(MODEL_NAME, "challenger") is None
    finally:
        srv.stop()


def test_rollout_stage_skips_a_champion_and_defers_without_live_traffic(serving_env, tmp_path):
    import json

    from kfct.components.deploy import deploy_version
    from kfct.components.rollout import rollout_model
    from kfct.config import config_to_json, load_config
    from kfct.governance import registry
    from tests.servingkit import free_port

    cfg_json = config_to_json(load_config())
    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    out = json.loads(rollout_model(cfg_json, MODEL_NAME, v_a, target="local"))
    assert out["outcome"] == "skipped"
    deploy_version(MODEL_NAME, v_b, load_config(), target="local", state_path=tmp_path / "split.json")
    out = json.loads(rollout_model(cfg_json, MODEL_NAME, v_b, target="local", server_url=f"http://127.0.0.1:{free_port()}"))
    assert out["outcome"] == "deferred"
    assert registry.alias_version(MODEL_NAME, "challenger") == v_b  # left for `kfct rollout`
    assert registry.alias_version(MODEL_NAME, "champion") == v_a
