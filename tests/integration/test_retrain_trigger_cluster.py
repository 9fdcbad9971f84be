"""Drift-triggered retraining on a cluster: a new run of the uploaded CT pipeline through the KFP API
(loopback server speaking v2beta1, real kfp.Client), reason in its name and parameters; cooldown holds."""

from datetime import UTC, datetime, timedelta

import pytest
from fakes.kfp_server import FakeKfpServer, point_kfct_at  # tests/ is on sys.path (tests/conftest.py)

from tests.homekit import off_the_stack

TOKEN = "t0k3n"
DRIFT = {"retrain": True, "severity": "critical", "reason": "drift share 0.667 > 0.2", "has_labels": True}


@pytest.fixture
def cluster(kfct_home, monkeypatch, tmp_path):
    from kfct.runtime.settings import get_settings, reset_settings

    with FakeKfpServer(token=TOKEN) as server:
        point_kfct_at(monkeypatch, server.url, TOKEN, tmp_path)
        from kfct.pipelines import kfp_client
        from kfct.pipelines.compile import compile_ct

        kfp_client.submit(off_the_stack(compile_ct, tmp_path / "build"))  # the CT pipeline is on the cluster
        yield server, get_settings()
    reset_settings()


def test_drift_submits_a_ct_run_with_the_reason_and_cooldown_holds(cluster, cfg):
    from kfct.components.retrain_policy import run_trigger
    from kfct.contracts.launcher import uses_cluster
    from kfct.governance import audit

    server, settings = cluster
    assert uses_cluster(settings)
    now = datetime(2025, 3, 3, 4, 0, tzinfo=UTC)
    out = run_trigger(DRIFT, cfg, "churn-classifier", current_uri="s3://kfct/batches/w10.parquet", now=now)
    assert out["action"] == "retrain" and out["triggered"] and out["mode"] == "cluster"
    run = server.state.runs[out["run"]["run_id"]]
    assert run["display_name"].startswith("kfct-ct retrain drift-critical 20250303-040000")
    params = run["runtime_config"]["parameters"]
    assert params["data_uri"] == "s3://kfct/batches/w10.parquet"
    assert params["run_reason"] == "drift (critical): drift share 0.667 > 0.2"
    assert params["model_name"] == "churn-classifier"
    trig = [e for e in audit.read() if e["event"] == "retrain_triggered"]
    assert trig[0]["run_id"] == out["run"]["run_id"] and trig[0]["mode"] == "cluster"

    # One hour later the monitor fires again: held back, nothing submitted.
    n_runs = len(server.state.runs)
    again = run_trigger(DRIFT, cfg, "churn-classifier", now=datetime.now(UTC) + timedelta(hours=1))
    assert again["action"] == "cooldown" and not again["triggered"]
    assert len(server.state.runs) == n_runs
    assert [e["event"] for e in audit.read()][-1] == "retrain_held"


def test_unlabelled_window_leaves_the_data_to_the_pipeline_default(cluster, cfg):
    from kfct.components.retrain_policy import run_trigger

    server, _ = cluster
    out = run_trigger({**DRIFT, "has_labels": False}, cfg, "churn-classifier", current_uri="")
    params = server.state.runs[out["run"]["run_id"]]["runtime_config"]["parameters"]
    assert "data_uri" not in params and out["data_uri"] == "(CT pipeline default)"
