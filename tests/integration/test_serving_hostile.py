"""Issue 9, serving half: what a client, a second `kfct serve` or a signal could do to serving.

Each test names the item it covers; each failed on the code before the fix."""

from __future__ import annotations

import json
import statistics
import threading
import time

import pytest

from tests.servingkit import (  # noqa: F401
    MODEL_NAME,
    Client,
    Traffic,
    free_port,
    records,
    server_process,
    serving_env,
    serving_registry,
    v2_body,
    wait_for,
)

pytestmark = pytest.mark.slow


def start(tmp_path, **kw):
    from kfct.serving.server import start_in_thread

    kw.setdefault("state_path", str(tmp_path / "split.json"))
    kw.setdefault("log_predictions", False)
    kw.setdefault("poll_seconds", 0.1)
    return start_in_thread(port=0, **kw)


# -- 1. model repository ------------------------------------------------------------------------------


def test_1_repository_endpoints_are_off_and_unload_never_takes_the_model(serving_env, tmp_path, monkeypatch):
    from kfct.runtime.settings import reset_settings

    srv = start(tmp_path)
    try:
        c = Client(srv.url)
        for verb in ("unload", "load"):
            status, _, _ = c.request("POST", f"/v2/repository/models/{MODEL_NAME}/{verb}", {})
            assert status == 404, verb
        assert c.request("GET", "/v2/health/ready")[0] == 200
        assert c.predict(MODEL_NAME, records(1))[0] == 200
    finally:
        srv.stop()

    monkeypatch.setenv("KFCT_MODEL_REPOSITORY_TOKEN", "s3cret")
    reset_settings()
    srv = start(tmp_path)
    try:
        c = Client(srv.url)
        path = f"/v2/repository/models/{MODEL_NAME}"
        assert c.request("POST", f"{path}/unload", {})[0] == 401
        assert c.request("POST", f"{path}/load", {}, headers={"Authorization": "Bearer wrong"})[0] == 401
        auth = {"Authorization": "Bearer s3cret"}
        status, body, _ = c.request("POST", f"{path}/unload", {}, headers=auth)
        assert status == 409 and "cannot be unloaded" in body["error"]
        assert c.predict(MODEL_NAME, records(1))[1]["model_version"] == serving_env.versions["good_a"]
        from kfct.governance import registry

        registry.set_alias(MODEL_NAME, "champion", serving_env.versions["good_b"], reason="repository load test")
        assert c.request("POST", f"{path}/load", {}, headers=auth)[0] == 200  # re-fetches the alias
        assert c.request("GET", "/v2/health/ready")[0] == 200
        assert c.predict(MODEL_NAME, records(1))[1]["model_version"] == serving_env.versions["good_b"]
    finally:
        srv.stop()


# -- 2. an explicit version serves alone --------------------------------------------------------------


def test_2_serve_version_writes_no_shared_state_and_leaves_the_fleet_alone(serving_env, tmp_path):
    from kfct.contracts.split_state import read_state, update_state

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    split = tmp_path / "split.json"
    update_state(MODEL_NAME, split, champion_version=v_a, reason="the fleet's split")
    before = split.read_bytes()
    prod = start(tmp_path, state_path=str(split))
    pinned = start(
        tmp_path, state_path=str(split), version=v_b, canary_version=serving_env.versions["flipped"], canary_percent=50
    )
    try:
        time.sleep(0.5)  # several watcher polls of the production server
        assert split.read_bytes() == before and read_state(split).champion_version == v_a
        assert Client(prod.url).predict(MODEL_NAME, records(1))[1]["model_version"] == v_a
        assert prod.router.route.canary is None
        assert pinned.router.route.champion.loaded_version == v_b
        assert pinned.watcher is None and pinned.state_path is None
        # a later change of the fleet's split does not reach the pinned server
        update_state(MODEL_NAME, split, champion_version=serving_env.versions["good_a"], canary_version=v_b, canary_percent=100)
        wait_for(lambda: prod.router.route.canary is not None, what="production follows the split file")
        assert pinned.router.route.champion.loaded_version == v_b
    finally:
        pinned.stop()
        prod.stop()


# -- 3. the rollout judges server failures, per customer ---------------------------------------------


def test_3_window_counts_server_failures_once_per_customer():
    from kfct.components.rollout import FAIL, PASS, Thresholds, evaluate_step
    from kfct.serving.metrics import CLIENT_ERROR, SERVER_ERROR, VersionStats

    thr = Thresholds(min_requests=200)
    champ, can = VersionStats("1"), VersionStats("2")
    for i in range(1000):
        champ.ok(1000.0 + i, 0.001, 1, i % 4 == 0, 0.3, customer=i)
        can.ok(1000.0 + i, 0.001, 1, i % 4 == 0, 0.3, customer=10_000 + i)
        can.paired(1000.0 + i, 10_000 + i, 1, 0.0, 0.0, 1e-4, 1e-4)  # judged on the same requests (issue 22)
    for _ in range(300):  # one client: malformed requests (4xx) pinned to the canary
        can.error(1500.0, CLIENT_ERROR, 0.001, customer=42)
    assert evaluate_step(champ.window(), can.window(), thr)[0] == PASS
    for _ in range(300):  # one customer whose every request crashes the canary: counted once
        can.error(1500.0, SERVER_ERROR, 0.001, customer=42)
    w = can.window()
    assert (w.server_errors, w.error_customers) == (300, 1)
    assert evaluate_step(champ.window(), w, thr)[0] == PASS
    for i in range(100):  # many customers failing: a real fault
        can.error(1600.0, SERVER_ERROR, 0.001, customer=20_000 + i)
    v, why = evaluate_step(champ.window(), can.window(), thr)
    assert v == FAIL and "server error rate" in why[0]


def test_3_one_client_sending_bad_requests_cannot_roll_back_a_good_canary(serving_env, tmp_path):
    from kfct.components.deploy import deploy_version
    from kfct.components.rollout import LocalRouterBackend, rollout_version
    from kfct.config import load_config
    from kfct.serving.router import to_canary
    from tests.integration.test_serving_canary import ROLLOUT_CFG

    srv = start(tmp_path)
    cfg = load_config(overrides=ROLLOUT_CFG)
    v_b = serving_env.versions["good_b"]
    try:
        deploy_version(MODEL_NAME, v_b, cfg, target="local", state_path=srv.state_path)
        wait_for(lambda: srv.router.route.canary is not None, what="canary loaded")
        salt = srv.router.route.salt
        cid = next(f"evil-{i}" for i in range(10_000) if to_canary(f"evil-{i}", 20, salt))
        bad = dict(records(1, seed=3)[0], customer_id=cid, contract_type="lifetime")  # 400 on any version
        stop = threading.Event()
        sent = []

        def attacker():
            c = Client(srv.url)
            while not stop.is_set():
                sent.append(c.predict(MODEL_NAME, [bad])[0])
                time.sleep(0.02)

        t = threading.Thread(target=attacker, daemon=True)
        with Traffic(srv.url):
            t.start()
            res = rollout_version(MODEL_NAME, cfg, LocalRouterBackend(MODEL_NAME, srv.url, state_path=srv.state_path))
            stop.set()
            t.join(5)
        assert sent and set(sent) == {400}
        assert res.outcome == "promoted", res.reasons
    finally:
        srv.stop()


# -- 4/5. specific cases outside the corpus ------------------------------------------------------------


def test_4_5_overflow_recursion_and_schema_are_400s_never_model_failures(serving_env, tmp_path):
    srv = start(tmp_path)
    try:
        c = Client(srv.url)
        rec = records(1, seed=4)[0]
        raw = json.dumps({"instances": [rec]}).replace(f'"tenure_days": {rec["tenure_days"]}', f'"tenure_days": {10**400}')
        status, body, _ = c.request("POST", f"/v1/models/{MODEL_NAME}:predict", raw=raw.encode())
        assert status == 400 and body["field"] == "tenure_days"
        deep = ('{"instances": ' + "[" * 10_000 + "]" * 10_000 + "}").encode()
        assert c.request("POST", f"/v1/models/{MODEL_NAME}:predict", raw=deep)[0] == 400
        for field, value in [
            ("plan_monthly_eur", 1e39),
            ("plan_monthly_eur", 1e308),
            ("tenure_days", -3),
            ("support_tickets_90d", 2.5),
            ("customer_id", {"a": 1}),
            ("customer_id", "C" * 200_000),
        ]:
            status, body, _ = c.predict(MODEL_NAME, [dict(rec, **{field: value})])
            assert status == 400 and body["field"] == field, (field, value, body)
        for name, dt, value in [("tenure_days", "INT64", 1.5), ("tenure_days", "UINT8", 300)]:
            b = v2_body([rec])
            for i in b["inputs"]:
                if i["name"] == name:
                    i.update(datatype=dt, data=[value])
            status, body, _ = c.request("POST", f"/v2/models/{MODEL_NAME}/infer", b)
            assert status == 400 and body["field"] == name, body
        status, body, _ = c.request("POST", f"/v2/models/{MODEL_NAME}/infer", {**v2_body([rec]), "outputs": [{"name": "nope"}]})
        assert status == 400 and body["field"] == "outputs"
        status, body, _ = c.request("POST", f"/v2/models/{MODEL_NAME}/infer", {**v2_body([rec]), "outputs": [{"name": "label"}]})
        assert status == 200 and [o["name"] for o in body["outputs"]] == ["label"]
        assert all(v["server_errors"] == 0 for v in srv.router.stats()["versions"].values())
    finally:
        srv.stop()


def test_5_batch_scoring_refuses_what_the_server_refuses(serving_env, tmp_path):
    import numpy as np

    from kfct.components.score import ScoringError, score_registered
    from kfct.data.datagen import generate

    df = generate(300, seed=9).drop(columns=["churned"])
    for col, value in [
        ("frustration_index", np.nan),
        ("tenure_days", -4),
        ("plan_monthly_eur", 1e39),
        ("frustration_index", np.inf),
    ]:
        bad = df.copy()
        bad[col] = bad[col].astype("float64")
        bad.loc[bad.index[7], col] = value
        src = tmp_path / f"bad-{col}.parquet"
        bad.to_parquet(src)
        with pytest.raises(ScoringError, match=col):
            score_registered(src, tmp_path / "out.parquet", MODEL_NAME)
        assert not (tmp_path / "out.parquet").exists()


# -- 6. a slow canary slows only itself ------------------------------------------------------------------


def test_6_slow_canary_does_not_delay_the_champion_and_latency_is_client_seen(serving_env, tmp_path):
    from kfct.contracts.split_state import update_state
    from kfct.serving.router import to_canary

    v_slow = serving_env.versions["slow"]
    srv = start(tmp_path)
    try:
        update_state(MODEL_NAME, srv.state_path, canary_version=v_slow, canary_percent=50)
        wait_for(lambda: srv.router.route.canary is not None, what="slow canary loaded")
        salt = srv.router.route.salt
        rec = records(1, seed=5)[0]
        slow_id = next(f"s-{i}" for i in range(1000) if to_canary(f"s-{i}", 50, salt))
        fast_id = next(f"f-{i}" for i in range(1000) if not to_canary(f"f-{i}", 50, salt))
        stop = threading.Event()

        def slow_client():
            c = Client(srv.url)
            while not stop.is_set():
                c.predict(MODEL_NAME, [dict(rec, customer_id=slow_id)])

        threads = [threading.Thread(target=slow_client, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        c = Client(srv.url)

        def champion_latencies(n: int = 40) -> list[float]:
            lat = []
            for _ in range(n):
                t0 = time.perf_counter()
                status, body, _ = c.predict(MODEL_NAME, [dict(rec, customer_id=fast_id)])
                lat.append(time.perf_counter() - t0)
                assert status == 200 and body["model_version"] == serving_env.versions["good_a"]
            return lat

        lat = champion_latencies()
        # the fast champion earns the event loop for its small requests (inline_scoring: 50 calls in
        # a row within 2 ms each; a loaded machine may make it start over a few times) ...
        route = srv.router.route
        champion = route.champion.current.inline
        for _ in range(2000):
            if champion.inline(1):
                break
            c.predict(MODEL_NAME, [dict(rec, customer_id=fast_id)])
        assert champion.inline(1), champion
        lat_inline = champion_latencies()
        stop.set()
        for t in threads:
            t.join(5)
        # the slow canary sleeps 60 ms per call; champion clients must not queue behind it, on the
        # loop or off it ...
        assert statistics.median(lat) < 0.03, statistics.median(lat)
        assert statistics.median(lat_inline) < 0.03, statistics.median(lat_inline)
        stats = srv.router.stats()["versions"]
        assert stats[v_slow]["p50_latency_s"] >= 0.06  # as its clients saw it (queueing included)
        # ... and the slow canary never held the loop
        canary = route.canary.current.inline
        assert not canary.inline(1) and canary.fast_calls == 0 and canary.demotions == 0, canary
    finally:
        srv.stop()


# -- 8. signals, log lines, 405 --------------------------------------------------------------------------


def test_8_no_watch_sigterm_exits_0_flushes_the_log_ignores_the_split_and_logs_one_line(serving_env, tmp_path):
    from kfct.contracts.prediction_log import read_prediction_log
    from kfct.contracts.split_state import state_path, update_state

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    update_state(
        MODEL_NAME, state_path(MODEL_NAME, serving_env.home), champion_version=v_b, reason="must be ignored by --no-watch"
    )
    with server_process(["kfct", "serve", "--no-watch"], serving_env.home, "kfct serve to come up") as srv:
        c = srv.client
        status, body, _ = c.predict(MODEL_NAME, records(3, seed=12))
        assert status == 200 and body["model_version"] == v_a
        assert c.predict("no-such-model", records(1))[0] == 404
        assert c.request("GET", f"/v1/models/{MODEL_NAME}:predict")[0] == 405
    text = srv.output.decode(errors="replace")
    assert srv.proc.returncode == 0, text[-2000:]
    assert "cannot join thread" not in text and "Traceback" not in text, text[-2000:]
    assert " ERROR " not in text, text[-2000:]
    log = read_prediction_log(root=serving_env.home / "predictions")
    assert len(log[log["model_version"] == v_a]) >= 3  # queued rows flushed at exit


# -- 9. a deferred rollout has an owner --------------------------------------------------------------


def test_9_deferred_canary_stops_at_its_deadline_and_is_rolled_back(serving_env, tmp_path):
    from kfct.components.deploy import deploy_version
    from kfct.components.rollout import expire_deferred, rollout_model
    from kfct.config import config_to_json, load_config
    from kfct.contracts.split_state import read_state, state_path
    from kfct.governance import audit, registry

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    split = state_path(MODEL_NAME, serving_env.home)
    cfg = load_config(overrides={"rollout": {"deferred_deadline_seconds": 1.5}})
    deploy_version(MODEL_NAME, v_b, cfg, target="local", state_path=split)
    out = json.loads(
        rollout_model(config_to_json(cfg), MODEL_NAME, v_b, target="local", server_url=f"http://127.0.0.1:{free_port()}")
    )
    assert out["outcome"] == "deferred" and out["deadline"] > time.time()
    assert read_state(split).canary_deadline == pytest.approx(out["deadline"])
    srv = start(tmp_path, state_path=str(split))
    try:
        assert srv.router.route.canary is not None and srv.router.route.canary.loaded_version == v_b
        # the server itself stops routing to the canary at the deadline, with nobody else around
        wait_for(lambda: srv.router.route.canary is None, timeout=10, what="canary dropped at the deadline")
        assert expire_deferred(MODEL_NAME, split, now=time.time() - 3600) is None  # not before its time
        done = expire_deferred(MODEL_NAME, split)
        assert done["outcome"] == "rolled_back" and done["version"] == v_b
        st = read_state(split)
        assert st.canary_version is None and st.canary_percent == 0 and st.canary_deadline is None
        assert registry.alias_version(MODEL_NAME, "challenger") is None
        assert registry.alias_version(MODEL_NAME, "champion") == v_a
        assert registry.client().get_model_version(MODEL_NAME, v_b).tags["rejected"] == "true"
        assert any(
            e["event"] == "rollout_rolled_back" and e.get("version") == v_b and "deadline" in e["reason"] for e in audit.read()
        )
        assert expire_deferred(MODEL_NAME, split) is None  # once
    finally:
        srv.stop()
