"""The outcome loop on the embedded default, through the CLI, against a real server on loopback.

Serve A (champion) and B (A/B test), send traffic, draw what really happened from the
generator's ground truth (`kfct data outcomes`), push it (`kfct outcomes push`), report
(`kfct ab report`), promote B by compare-and-set; then blue-green and a one-step
rollback, and a shadow judged on outcomes.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest

from tests.servingkit import MODEL_NAME, Client, records, serving_env, serving_registry, wait_for  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def fresh_logs(serving_env):
    """Each test starts with no prediction log, no outcomes and no A/B test of an earlier one."""
    import shutil

    from mlflow.exceptions import MlflowException

    from kfct.components.ab_test import write_state

    for sub in ("predictions", "outcomes"):
        shutil.rmtree(serving_env.home / sub, ignore_errors=True)
    with contextlib.suppress(MlflowException):  # no tag yet
        write_state(MODEL_NAME, None)
    yield


def kfct(*argv, capsys=None) -> str:
    from kfct.cli import main

    rc = main([str(a) for a in argv])
    out = capsys.readouterr().out if capsys else ""
    assert rc == 0, f"kfct {' '.join(map(str, argv))} exited {rc}: {out}"
    return out


def start_server():
    from kfct.serving.server import start_in_thread

    return start_in_thread(port=0, poll_seconds=0.05, log_flush_seconds=0.2)


def send(url: str, n: int, seed: int, prefix: str) -> dict:
    c = Client(url)
    versions: dict[str, int] = {}
    for i, rec in enumerate(records(n, seed=seed)):
        rec["customer_id"] = f"{prefix}-{i:05d}"
        status, body, _ = c.predict(MODEL_NAME, [rec])
        assert status == 200, body
        v = body["predictions"][0]["model_version"]
        versions[v] = versions.get(v, 0) + 1
    c.close()
    return versions


def canary(srv):
    r = srv.router.route
    return r.canary.loaded_version if r.canary is not None else None


def champion(srv):
    return srv.router.route.champion.loaded_version


def test_ab_test_from_traffic_to_promotion_by_compare_and_set(serving_env, tmp_path, capsys):
    from kfct.components.ab_test import ABTestError, read_state
    from kfct.governance import audit, registry

    a, b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    srv = start_server()
    try:
        kfct("ab", "start", "--version", b, "--percent", 50, capsys=capsys)
        st = read_state(MODEL_NAME)
        assert st["arm_a"] == a and st["arm_b"] == b and st["status"] == "running"
        wait_for(lambda: canary(srv) == b, timeout=20, what="canary B loaded")
        seen = send(srv.url, 600, seed=61, prefix="AB")
        assert set(seen) == {a, b} and min(seen.values()) > 200, seen
        srv.prediction_log.flush()
    finally:
        srv.stop()
    out_file = tmp_path / "outcomes.parquet"
    kfct("data", "outcomes", "--out", out_file, "--seed", 3, capsys=capsys)
    pushed = kfct("outcomes", "push", out_file, capsys=capsys)
    assert "600 outcomes" in pushed
    rep = json.loads(kfct("ab", "report", "--json", capsys=capsys))
    assert rep["arms"]["A"]["n"] + rep["arms"]["B"]["n"] == 600
    for key in ("z_test", "welch", "auc", "sample_size", "sequential", "decision"):
        assert key in rep, key
    assert rep["sequential"]["looks"] == 1 and "mSPRT" in rep["sequential_method"]
    text = kfct("ab", "report", capsys=capsys)
    assert "always-valid p=" in text and "decision:" in text and "look 2" in text

    # compare-and-set: a champion that moved since the test started blocks the promotion
    registry.set_alias(MODEL_NAME, "champion", serving_env.versions["flipped"], reason="test: someone else promoted")
    with pytest.raises(ABTestError, match="champion moved"):
        from kfct.components.ab_test import ab_stop
        from kfct.config import load_config

        ab_stop(MODEL_NAME, "B", load_config())
    assert registry.alias_version(MODEL_NAME, "champion") == serving_env.versions["flipped"]
    registry.set_alias(MODEL_NAME, "champion", a, reason="test: back")

    kfct("ab", "stop", "--promote", "B", capsys=capsys)
    assert registry.alias_version(MODEL_NAME, "champion") == b
    assert registry.alias_version(MODEL_NAME, "challenger") is None
    assert read_state(MODEL_NAME)["status"] == "promoted"
    events = [e["event"] for e in audit.read()]
    assert {"ab_started", "outcomes_pushed", "ab_reported", "ab_stopped"} <= set(events)

    report = kfct("outcomes", "report", "--out", tmp_path / "realized", capsys=capsys)
    assert "champion decay" in report
    html = (tmp_path / "realized" / "realized_performance.html").read_text()
    assert "data:image/png;base64," in html and f"v{a}" in html
    prom = (tmp_path / "realized" / "kfct_realized.prom").read_text()
    assert f'kfct_realized_metric{{metric="roc_auc",model="{MODEL_NAME}",role="champion",version="{a}"}}' in prom


def test_bad_outcomes_are_refused_and_audited(serving_env, tmp_path, capsys):
    import pandas as pd

    from kfct.cli import main
    from kfct.governance import audit

    bad = tmp_path / "bad.csv"
    pd.DataFrame({"customer_id": ["x"], "churned": [5], "observed_at": ["2026-01-01"]}).to_csv(bad, index=False)
    assert main(["outcomes", "push", str(bad)]) == 3
    assert "churned: 1 value(s) outside" in capsys.readouterr().err
    assert [e for e in audit.read() if e["event"] == "outcomes_rejected"]


def test_blue_green_switch_and_one_step_rollback(serving_env, capsys):
    from kfct.governance import registry

    a, b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    srv = start_server()
    try:
        kfct("deploy", "--version", b, "--percent", 100, "--target", "local", capsys=capsys)
        wait_for(lambda: canary(srv) == b, timeout=20, what="green loaded")
        assert set(send(srv.url, 40, seed=5, prefix="BG")) == {b}
        assert champion(srv) == a  # blue stays loaded and warm
        t0 = time.perf_counter()
        out = kfct("rollback", "--target", "local", capsys=capsys)
        wait_for(lambda: canary(srv) is None, timeout=5, interval=0.005, what="rollback applied")
        switched = time.perf_counter() - t0
        assert set(send(srv.url, 40, seed=6, prefix="BG2")) == {a}
        print(f"blue-green rollback applied in {switched * 1000:.0f} ms")
        assert f"v{b} rolled back" in out
        assert registry.alias_version(MODEL_NAME, "champion") == a
        assert registry.alias_version(MODEL_NAME, "challenger") is None
    finally:
        srv.stop()


def test_shadow_judged_on_outcomes_and_promoted_by_the_articles_rule(serving_env, tmp_path, capsys):
    from kfct.governance import registry

    a, flipped = serving_env.versions["good_a"], serving_env.versions["flipped"]
    srv = start_server()
    try:
        kfct("deploy", "--version", flipped, "--shadow", "--target", "local", capsys=capsys)
        wait_for(lambda: canary(srv) == flipped, timeout=20, what="shadow loaded")
        send(srv.url, 300, seed=71, prefix="SH")
        srv.router.drain_shadow(10.0)
        srv.prediction_log.flush()
    finally:
        srv.stop()
    kfct("data", "outcomes", "--out", tmp_path / "o.parquet", "--seed", 4, capsys=capsys)
    kfct("outcomes", "push", tmp_path / "o.parquet", capsys=capsys)
    rep = json.loads(kfct("shadow", "report", "--promote", "--json", capsys=capsys))
    assert rep["pairs"] == 300
    assert rep["accuracy"]["shadow"] < rep["accuracy"]["champion"]  # a flipped model is worse on what happened
    assert rep["decision"]["action"] == "keep_champion" and not rep.get("promoted")
    assert registry.alias_version(MODEL_NAME, "champion") == a


def test_monitoring_pipeline_outcome_steps_run_as_kfp_tasks(serving_env, tmp_path, capsys):
    """The two monitoring-pipeline steps, executed by kfp's local runner as the cluster runs them."""
    from kfp import dsl, local

    from kfct.components.outcomes_report import decide_ab_test, report_realized_performance
    from kfct.config import config_to_json, load_config

    b = serving_env.versions["good_b"]
    srv = start_server()
    try:
        kfct("ab", "start", "--version", b, "--percent", 50, capsys=capsys)
        wait_for(lambda: canary(srv) == b, timeout=20, what="canary B loaded")
        send(srv.url, 300, seed=81, prefix="KFP")
        srv.prediction_log.flush()
    finally:
        srv.stop()
    kfct("data", "outcomes", "--out", tmp_path / "o.parquet", capsys=capsys)
    kfct("outcomes", "push", tmp_path / "o.parquet", capsys=capsys)

    from kfct.governance import registry

    a = serving_env.versions["good_a"]
    registry.set_version_tag(MODEL_NAME, a, "test_roc_auc", "0.99")  # as registration records it; far above reality
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    cfg_json = config_to_json(load_config())
    comp = lambda fn: dsl.component(fn, install_kfp_package=False)  # noqa: E731
    real = comp(report_realized_performance)(config_json=cfg_json, model_name=MODEL_NAME, since="", retrain=False)
    registry.client().delete_model_version_tag(MODEL_NAME, a, "test_roc_auc")
    out = json.loads(real.outputs["Output"])
    assert out["decay"]["assessed"] and out["decay"]["retrain"] is True, out  # decay seen ...
    assert out["retrain"] is None  # ... acted on only when asked
    assert "Realized performance" in Path(real.outputs["report_md"].path).read_text()
    ab = json.loads(comp(decide_ab_test)(config_json=cfg_json, model_name=MODEL_NAME, act=False).outputs["Output"])
    assert ab["action"] in ("continue", "promote_b", "stop_b") and ab["stop"] is None
