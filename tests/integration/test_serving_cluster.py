"""Cluster paths without a cluster: the kserve SDK's KServeClient against a loopback
Kubernetes API, and the rollout's Prometheus queries against a loopback Prometheus.

These pin KServe's Serverless mode (canaryTrafficPercent); Standard mode (spec.canary)
and the mode detection are in test_canary_modes.py."""

from __future__ import annotations

import pytest

from tests.servingkit import MODEL_NAME, serving_env, serving_registry  # noqa: F401
from tests.servingkit.fakes import (  # noqa: F401
    FAST_ROLLOUT,
    FakeKubeApi,
    FakePrometheus,
    client_for,
    restore_kube_default_config,
    s3_artifacts,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("s3_artifacts", "restore_kube_default_config")]


@pytest.fixture(autouse=True)
def _serverless(monkeypatch):
    from kfct.runtime.settings import reset_settings

    monkeypatch.setenv("KFCT_KSERVE_DEPLOYMENT_MODE", "Serverless")
    reset_settings()
    yield
    reset_settings()


def isvc_requests(kube, method):
    return [r for r in kube.requests if r["method"] == method and "inferenceservices" in r["path"]]


def test_deploy_creates_champion_then_patches_in_the_canary(serving_env):
    from kfct.components.deploy import deploy_version
    from kfct.config import load_config
    from kfct.governance import registry

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    with FakeKubeApi() as kube:
        out = deploy_version(MODEL_NAME, v_b, load_config(), target="cluster", client=client_for(kube), namespace="kfct")
        assert out["alias"] == "challenger" and out["canary_percent"] == 10  # first default rollout step
        posts, patches = isvc_requests(kube, "POST"), isvc_requests(kube, "PATCH")
        assert len(posts) == 1 and len(patches) == 1
        assert all(r["auth"] == "Bearer test-token" for r in kube.requests)
        created = posts[0]["body"]
        assert created["apiVersion"] == "serving.kserve.io/v1beta1" and created["kind"] == "InferenceService"
        model = created["spec"]["predictor"]["model"]
        env = {e["name"]: e["value"] for e in model["env"]}
        assert env["KFCT_MODEL_VERSION"] == v_a and model["runtime"] == "kfct-predictor"
        assert "canaryTrafficPercent" not in created["spec"]["predictor"]
        from kfct.cluster import kserve_isvc

        assert model["storageUri"] == kserve_isvc.model_storage_uri(MODEL_NAME, v_a) and model["storageUri"].startswith("s3://")
        assert env["KFCT_MODEL_SHA256"] == registry.client().get_model_version(MODEL_NAME, v_a).tags["model_sha256"]
        assert patches[0]["content_type"] == "application/merge-patch+json"
        patched = kube.objects[("kfct", MODEL_NAME)]["spec"]["predictor"]
        assert patched["canaryTrafficPercent"] == 10
        assert {e["name"]: e["value"] for e in patched["model"]["env"]}["KFCT_MODEL_VERSION"] == v_b
        assert registry.alias_version(MODEL_NAME, "challenger") == v_b
        assert registry.alias_version(MODEL_NAME, "champion") == v_a


def _deploy_and_roll(serving_env, role, figures):
    from kfct.components.deploy import deploy_version
    from kfct.components.rollout import ClusterBackend, rollout_version
    from kfct.config import load_config

    cfg = load_config(overrides=FAST_ROLLOUT)
    v = serving_env.versions[role]
    with FakeKubeApi(controller=True) as kube, FakePrometheus(figures) as prom:
        client = client_for(kube)
        deploy_version(MODEL_NAME, v, cfg, target="cluster", client=client, namespace="kfct")
        backend = ClusterBackend(
            MODEL_NAME,
            isvc_name=MODEL_NAME,
            namespace="kfct",
            prometheus_url=prom.url,
            kserve_client=client,
            ready_timeout=5,
            ready_poll=0.05,
        )
        res = rollout_version(MODEL_NAME, cfg, backend)
        return res, kube, prom


def test_cluster_rollout_promotes_a_good_canary(serving_env):
    from kfct.governance import registry

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    figures = {
        v_a: {"ok": 1000, "instances": 1000, "positives": 250, "p99": 0.004},
        v_b: {"ok": 400, "instances": 400, "positives": 104, "p99": 0.0045},
    }
    res, kube, prom = _deploy_and_roll(serving_env, "good_b", figures)
    assert res.outcome == "promoted", res
    percents = [r["body"]["spec"]["predictor"].get("canaryTrafficPercent") for r in isvc_requests(kube, "PATCH")]
    assert percents == [20, 20, 50, 100, 100]  # deploy (first step), three steps, promote
    assert registry.alias_version(MODEL_NAME, "champion") == v_b
    queries = [r["query"] for r in prom.requests]
    assert any(q.startswith("histogram_quantile(0.99") and f'model_version="{v_b}"' in q for q in queries)
    assert all(f'model_name="{MODEL_NAME}"' in q for q in queries)
    assert prom.seen_ranges  # windows are bounded to the step


def test_cluster_rollout_rolls_back_a_flipping_canary(serving_env):
    from kfct.governance import registry

    v_a, v_f = serving_env.versions["good_a"], serving_env.versions["flipped"]
    figures = {
        v_a: {"ok": 1000, "instances": 1000, "positives": 250, "p99": 0.004},
        v_f: {"ok": 400, "instances": 400, "positives": 370, "p99": 0.004, "label_shift": 0.6},
    }
    res, kube, _ = _deploy_and_roll(serving_env, "flipped", figures)
    assert res.outcome == "rolled_back" and "churn rate" in res.reasons[0]
    patches = isvc_requests(kube, "PATCH")
    assert patches[-2]["body"]["spec"]["predictor"]["canaryTrafficPercent"] == 0  # traffic back at once
    final = kube.objects[("kfct", MODEL_NAME)]["spec"]["predictor"]
    assert {e["name"]: e["value"] for e in final["model"]["env"]}["KFCT_MODEL_VERSION"] == v_a
    assert registry.alias_version(MODEL_NAME, "champion") == v_a
    assert registry.client().get_model_version(MODEL_NAME, v_f).tags["rejected"] == "true"


def test_cluster_api_errors_are_one_clear_line(serving_env):
    from kfct.components.deploy import DeployError, patch_traffic

    with FakeKubeApi() as kube, pytest.raises(DeployError, match="canaryTrafficPercent=50 on kfct/missing"):
        patch_traffic(client_for(kube), "missing", "kfct", 50)
