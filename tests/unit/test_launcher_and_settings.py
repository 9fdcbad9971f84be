"""Retraining through the launcher interface; one reading of the environment (Settings);
one check of the canary arguments; one way to build a rollout backend."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import ClassVar

import pytest

DRIFT = {"retrain": True, "reason": "drift share 0.667 > 0.2", "severity": "critical", "has_labels": True}


class Recorder:
    """A launcher picked by name from settings (KFCT_RETRAIN_LAUNCHER)."""

    launched: ClassVar[list] = []

    def __init__(self, settings=None, where: str = "local"):
        self.where = where

    def launch(self, request):
        Recorder.launched.append(request)
        if self.where == "cluster":
            return {"run_id": "r-1", "run_name": "kfct-ct retrain", "url": "http://kfp/runs/r-1"}
        return {
            "run_name": "ct-local",
            "validation": {"passed": True},
            "decision": {"deploy": False, "reasons": ["x"]},
            "registered": None,
            "total_seconds": 1.0,
        }


@pytest.fixture
def env(kfct_home, monkeypatch):
    from kfct.runtime.settings import reset_settings

    for var in ("KUBERNETES_SERVICE_HOST", "KFCT_KFP_HOST", "KFCT_RETRAIN_LAUNCHER", "KFCT_PROMETHEUS_URL"):
        monkeypatch.delenv(var, raising=False)
    Recorder.launched = []
    reset_settings()
    yield monkeypatch
    reset_settings()


def _settings(env, **values):
    from kfct.runtime.settings import get_settings, reset_settings

    for k, v in values.items():
        env.setenv(k, v)
    reset_settings()
    return get_settings()


def test_in_cluster_and_auto_target_come_from_settings(env):
    s = _settings(env)
    assert not s.in_cluster and s.target("auto") == "local" and s.target("cluster") == "cluster"
    s = _settings(env, KUBERNETES_SERVICE_HOST="10.0.0.1")
    assert s.in_cluster and s.target("auto") == "cluster" and s.target("local") == "local"
    with pytest.raises(ValueError, match="target must be auto, local or cluster, got 'moon'"):
        s.target("moon")


def test_trigger_core_starts_the_run_through_the_injected_launcher(env, cfg):
    from kfct.components.retrain_policy import run_trigger
    from kfct.governance import audit

    now = datetime(2025, 3, 3, 4, 0, tzinfo=UTC)
    out = run_trigger(DRIFT, cfg, "churn-classifier", current_uri="batch.parquet", now=now, launcher=Recorder(where="local"))
    assert out["triggered"] and out["mode"] == "local" and out["ct"]["run_name"] == "ct-local"
    (req,) = Recorder.launched
    assert req.model_name == "churn-classifier" and req.data_uri == "batch.parquet" and req.requested_at == now
    assert req.run_reason == "drift (critical): drift share 0.667 > 0.2" and req.severity == "critical"
    assert [e["event"] for e in audit.read()] == ["retrain_triggered", "retrain_finished"]


def test_the_launcher_is_picked_by_settings_and_a_bad_name_is_one_line(env, cfg):
    from kfct.components.retrain_policy import run_trigger
    from kfct.contracts.launcher import LauncherError, pick_launcher
    from kfct.governance import audit

    _settings(env, KFCT_RETRAIN_LAUNCHER=f"{__name__}:Recorder", KFCT_KFP_HOST="http://kfp.example")
    out = run_trigger(DRIFT, cfg, "churn-classifier")  # auto: a KFP host is configured -> cluster
    assert out["mode"] == "cluster" and out["run"]["run_id"] == "r-1" and len(Recorder.launched) == 1
    assert list(audit.read())[-1]["run_id"] == "r-1"

    s = _settings(env, KFCT_RETRAIN_LAUNCHER="kfct.nowhere:Nothing")
    with pytest.raises(LauncherError, match=r"retrain launcher 'kfct.nowhere:Nothing' .* cannot be loaded"):
        pick_launcher("local", s)


def test_the_default_launchers_live_in_the_pipelines_layer(env):
    from kfct.contracts.launcher import pick_launcher
    from kfct.pipelines.launchers import KfpLauncher, LocalLauncher

    assert isinstance(pick_launcher("local", _settings(env)), LocalLauncher)
    assert isinstance(pick_launcher("auto", _settings(env, KUBERNETES_SERVICE_HOST="10.0.0.1")), KfpLauncher)


def _serve_args(**kw):
    base = dict(
        model_name=None,
        alias="champion",
        version=None,
        model_dir=None,
        model_sha256=None,
        host=None,
        port=None,
        canary_version=None,
        canary_percent=None,
        shadow=False,
        watch=True,
        log_predictions=True,
        access_log=False,
    )
    return argparse.Namespace(**{**base, **kw})


def test_canary_arguments_are_checked_once_for_both_entry_points(env):
    from kfct.errors import KfctError
    from kfct.serving.server import main, options_from_args

    with pytest.raises(KfctError, match=r"--canary-percent must be within 0\.\.100, got 150"):
        options_from_args(_serve_args(canary_percent=150.0, canary_version="2"))
    # `python -m kfct.serving --shadow` without a canary version used to start serving anyway
    with pytest.raises(KfctError, match="--canary-percent and --shadow need --canary-version"):
        options_from_args(_serve_args(shadow=True))
    assert main(["--shadow"]) == 2 and main(["--canary-percent", "150", "--canary-version", "2"]) == 2
    opts = options_from_args(_serve_args(canary_percent=10.0, canary_version="2"))
    assert opts.canary_percent == 10.0 and opts.canary_version == "2"


def test_the_cluster_predictor_reads_its_version_and_hash_through_settings(env):
    from kfct.serving.server import options_from_args

    _settings(env, KFCT_MODEL_VERSION="7", KFCT_MODEL_SHA256="ab" * 32)
    opts = options_from_args(_serve_args(model_dir="/mnt/models"))
    assert opts.version == "7" and opts.model_sha256 == "ab" * 32


def test_rollout_backends_are_built_in_one_place_with_the_same_prometheus_default(env, cfg):
    from kfct.components.rollout import ClusterBackend, LocalRouterBackend, RolloutError, make_backend

    s = _settings(env, KFCT_PROMETHEUS_URL="http://prom.example:9090", KFCT_KFP_NAMESPACE="ml")
    b = make_backend("m", "cluster", s, cfg)
    assert isinstance(b, ClusterBackend) and b.metrics.url == "http://prom.example:9090" and b.namespace == "ml"
    assert make_backend("m", "cluster", s, cfg, prometheus_url="http://p2:9090/").metrics.url == "http://p2:9090"
    local = make_backend("m", "local", s, cfg)
    assert isinstance(local, LocalRouterBackend) and local.url == f"http://{s.serving_host}:{s.serving_port}"
    with pytest.raises(RolloutError, match="rollout target must be 'local' or 'cluster', got 'auto'"):
        make_backend("m", "auto", s, cfg)


def test_the_deploy_plan_is_decided_from_plain_values(cfg):
    from kfct.components.deploy import DeployError, plan_deploy

    assert plan_deploy("m", "1", None, False, cfg, "local") == {"direct": True, "percent": 10.0, "champion": None}
    assert plan_deploy("m", "3", "3", False, cfg, "cluster")["direct"]
    canary = plan_deploy("m", "4", "3", False, cfg, "local", canary_percent=25)
    assert not canary["direct"] and canary["percent"] == 25.0
    assert plan_deploy("m", "4", "3", False, cfg, "local", shadow=True)["percent"] == 0.0
    for args, msg in (
        ((False, cfg, "moon"), "deploy target must be 'local' or 'cluster', got 'moon'"),
        ((True, cfg, "local"), "v4 was rejected by an earlier rollout"),
        ((False, cfg, "local", 120), "canary percent must be within 0..100, got 120"),
    ):
        with pytest.raises(DeployError, match=msg):
            plan_deploy("m", "4", "3", *args)
