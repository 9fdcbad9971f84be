"""Canaries in both KServe deployment modes (issue 14, finding 10), against the loopback
Kubernetes API (with a stand-in for KServe's controller writing status) and a loopback Prometheus.

Standard (RawDeployment, KServe's default) ignores `canaryTrafficPercent`: there the
canary must be a `spec.canary` entry. Serverless (Knative) keeps `canaryTrafficPercent`.
Each test checks the objects deploy / rollout / rollback write, that each step waits for
the canary's own readiness, and that the Prometheus queries select each version's pods
by the label the mode gives them.
"""

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


def GOOD(a, b):
    return {
        a: {"ok": 1000, "instances": 1000, "positives": 250, "p99": 0.004},
        b: {"ok": 400, "instances": 400, "positives": 104, "p99": 0.0045},
    }


def patches(kube):
    return [r["body"] for r in kube.requests if r["method"] == "PATCH" and "inferenceservices" in r["path"]]


def env_of(predictor: dict) -> dict:
    return {e["name"]: e["value"] for e in predictor["model"]["env"]}


def deploy(serving_env, kube, role, mode, monkeypatch, cfg=None):
    from kfct.components.deploy import deploy_version
    from kfct.config import load_config
    from kfct.runtime.settings import reset_settings

    monkeypatch.setenv("KFCT_KSERVE_DEPLOYMENT_MODE", mode)
    reset_settings()
    return deploy_version(
        MODEL_NAME,
        serving_env.versions[role],
        cfg or load_config(),
        target="cluster",
        client=client_for(kube),
        namespace="kfct",
        ready_timeout=2.0,
        ready_poll=0.05,
    )


def test_standard_mode_deploy_writes_spec_canary_not_canary_traffic_percent(serving_env, monkeypatch):
    from kfct.governance import registry
    from kfct.runtime.settings import get_settings

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    with FakeKubeApi(controller=True) as kube:
        out = deploy(serving_env, kube, "good_b", "Standard", monkeypatch)
        assert out["deployment_mode"] == "Standard" and out["canary_percent"] == 10
        obj = kube.objects[("kfct", MODEL_NAME)]
        assert obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        pred = obj["spec"]["predictor"]
        assert "canaryTrafficPercent" not in pred, "Standard mode ignores it: the canary would take everything"
        assert env_of(pred)["KFCT_MODEL_VERSION"] == v_a  # the champion stays the stable predictor
        (canary,) = obj["spec"]["canary"]
        assert canary["trafficPercent"] == 10 and canary["predictor"]["name"] == f"v{v_b}"
        assert env_of(canary["predictor"])["KFCT_MODEL_VERSION"] == v_b
        assert canary["predictor"]["model"]["image"] == get_settings().serving_image  # new serving code rolls too
        assert "minReplicas" not in canary["predictor"]
        assert registry.alias_version(MODEL_NAME, "challenger") == v_b
        assert registry.alias_version(MODEL_NAME, "champion") == v_a


def test_serverless_mode_deploy_keeps_canary_traffic_percent(serving_env, monkeypatch):
    v_b = serving_env.versions["good_b"]
    with FakeKubeApi(controller=True) as kube:
        out = deploy(serving_env, kube, "good_b", "Serverless", monkeypatch)
        assert out["deployment_mode"] == "Knative"  # KServe >= 0.17's name; the webhook keeps no other
        obj = kube.objects[("kfct", MODEL_NAME)]
        assert obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
        assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 10 and "canary" not in obj["spec"]
        assert env_of(obj["spec"]["predictor"])["KFCT_MODEL_VERSION"] == v_b
        assert obj["status"]["components"]["predictor"]["previousRolledoutRevision"]  # v_a's revision stays


def test_an_existing_services_mode_wins_over_the_default(serving_env, monkeypatch):
    """A Serverless InferenceService (annotation or status) stays Serverless whatever the default says."""
    from kfct.components.deploy import build_inference_service

    v_a = serving_env.versions["good_a"]
    with FakeKubeApi(controller=True) as kube:
        existing = build_inference_service(MODEL_NAME, v_a, namespace="kfct", mode="Serverless")
        existing.metadata.annotations.pop("serving.kserve.io/deploymentMode")  # only the status tells
        # created under an earlier Knative default: KServe's defaulter (tests/e2e/kserve_admission.py `default`)
        # writes the default into a missing annotation only when that default is Standard or ModelMesh
        kube.controller = False
        client_for(kube).create(existing, namespace="kfct")
        kube.controller = True
        kube.objects[("kfct", MODEL_NAME)]["status"] = {"deploymentMode": "Knative"}  # as the controller writes it
        out = deploy(serving_env, kube, "good_b", "Standard", monkeypatch)
        assert out["deployment_mode"] == "Knative"
        assert kube.objects[("kfct", MODEL_NAME)]["spec"]["predictor"]["canaryTrafficPercent"] == 10


def _roll(serving_env, role, mode, figures, monkeypatch, ready=True, gateway_api=True):
    from kfct.components.rollout import ClusterBackend, rollout_version
    from kfct.config import load_config

    cfg = load_config(overrides=FAST_ROLLOUT)
    # A Standard-mode deploy waits until the canary serves (ready, carried by the route): there
    # the canary stops being ready (or the route loses its weight) afterwards; a Knative revision is never ready.
    with FakeKubeApi(controller=True, ready=ready or mode == "Standard") as kube, FakePrometheus(figures) as prom:
        deploy(serving_env, kube, role, mode, monkeypatch, cfg)
        kube.ready, kube.gateway_api = ready, gateway_api
        backend = ClusterBackend(
            MODEL_NAME,
            isvc_name=MODEL_NAME,
            namespace="kfct",
            prometheus_url=prom.url,
            kserve_client=client_for(kube),
            ready_timeout=0.3,
            ready_poll=0.05,
        )
        res = rollout_version(MODEL_NAME, cfg, backend)
        return res, kube, prom


def test_standard_rollout_steps_spec_canary_and_promotes_without_a_canary_left(serving_env, monkeypatch):
    from kfct.governance import registry

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    res, kube, prom = _roll(serving_env, "good_b", "Standard", GOOD(v_a, v_b), monkeypatch)
    assert res.outcome == "promoted", res
    steps = [b["spec"]["canary"][0]["trafficPercent"] for b in patches(kube) if (b.get("spec") or {}).get("canary")]
    assert steps == [20, 20, 50, 100]  # deploy opened the first step, then the three steps
    assert all("canaryTrafficPercent" not in (b.get("spec") or {}).get("predictor", {}) for b in patches(kube))
    final = kube.objects[("kfct", MODEL_NAME)]
    assert "canary" not in final["spec"]
    assert final["spec"]["predictor"]["name"] == f"v{v_b}"  # KServe retargets the stable name: no restart
    assert env_of(final["spec"]["predictor"])["KFCT_MODEL_VERSION"] == v_b
    assert registry.alias_version(MODEL_NAME, "champion") == v_b
    assert kube.denials == []  # KServe's validator admits the canary steps and the promotion
    queries = [r["query"] for r in prom.requests]
    assert any(f'service="{MODEL_NAME}-predictor"' in q and f'model_version="{v_a}"' in q for q in queries)
    assert any(f'service="{MODEL_NAME}-v{v_b}-predictor"' in q and f'model_version="{v_b}"' in q for q in queries)


def test_serverless_rollout_queries_by_revision_and_promotes(serving_env, monkeypatch):
    from kfct.governance import registry

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    res, kube, prom = _roll(serving_env, "good_b", "Serverless", GOOD(v_a, v_b), monkeypatch)
    assert res.outcome == "promoted", res
    percents = [b["spec"]["predictor"].get("canaryTrafficPercent") for b in patches(kube)]
    assert percents == [20, 20, 50, 100, 100]
    status = kube.objects[("kfct", MODEL_NAME)]["status"]["components"]["predictor"]
    queries = [r["query"] for r in prom.requests]
    assert any(f'revision="{status["latestCreatedRevision"]}"' in q and f'model_version="{v_b}"' in q for q in queries)
    assert any(f'revision="{status["previousRolledoutRevision"]}"' in q and f'model_version="{v_a}"' in q for q in queries)
    assert registry.alias_version(MODEL_NAME, "champion") == v_b


@pytest.mark.parametrize("mode", ["Standard", "Serverless"])
def test_rollback_puts_all_traffic_on_the_champion(serving_env, monkeypatch, mode):
    from kfct.governance import registry

    v_a, v_f = serving_env.versions["good_a"], serving_env.versions["flipped"]
    figures = {
        v_a: {"ok": 1000, "instances": 1000, "positives": 250, "p99": 0.004},
        v_f: {"ok": 400, "instances": 400, "positives": 370, "p99": 0.004, "label_shift": 0.6},
    }
    res, kube, _ = _roll(serving_env, "flipped", mode, figures, monkeypatch)
    assert res.outcome == "rolled_back" and "churn rate" in res.reasons[0]
    final = kube.objects[("kfct", MODEL_NAME)]
    if mode == "Standard":
        assert "canary" not in final["spec"] and patches(kube)[-1] == {"spec": {"canary": None}}
    else:
        assert patches(kube)[-2]["spec"]["predictor"]["canaryTrafficPercent"] == 0  # traffic back at once
    assert env_of(final["spec"]["predictor"])["KFCT_MODEL_VERSION"] == v_a
    assert registry.alias_version(MODEL_NAME, "champion") == v_a
    assert registry.client().get_model_version(MODEL_NAME, v_f).tags["rejected"] == "true"


@pytest.mark.parametrize("mode", ["Standard", "Serverless"])
def test_a_canary_that_never_gets_ready_is_rolled_back_not_baked(serving_env, monkeypatch, mode):
    from kfct.governance import registry

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    res, _kube, prom = _roll(serving_env, "good_b", mode, GOOD(v_a, v_b), monkeypatch, ready=False)
    assert res.outcome == "aborted" and "not ready" in res.reasons[0], res.reasons
    assert prom.requests == []  # never judged on metrics of pods that were not serving
    assert registry.alias_version(MODEL_NAME, "champion") == v_a
    # The infrastructure failed, not the model: not rejected, still the challenger (see plan_abort).
    assert registry.alias_version(MODEL_NAME, "challenger") == v_b
    assert "rejected" not in registry.client().get_model_version(MODEL_NAME, v_b).tags


def test_a_route_that_loses_the_canary_s_weight_aborts_without_rejecting_the_model(serving_env, monkeypatch):
    """Sibling of issue 20, item 2: Gateway API goes away (or the HTTPRoute no longer carries the
    canary's backendRef weight) during a Standard-mode rollout. Traffic goes back to the champion,
    but the model is fine and the infrastructure is not: before the fix the version was tagged
    `rejected`; now it keeps `challenger` and the audit trail says `rollout_aborted` and why."""
    from kfct.governance import audit, registry

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    res, kube, prom = _roll(serving_env, "good_b", "Standard", GOOD(v_a, v_b), monkeypatch, gateway_api=False)
    assert res.outcome == "aborted" and "gets no traffic" in res.reasons[0], res.reasons
    assert prom.requests == []
    final = kube.objects[("kfct", MODEL_NAME)]
    assert "canary" not in final["spec"] and env_of(final["spec"]["predictor"])["KFCT_MODEL_VERSION"] == v_a
    assert registry.aliases(MODEL_NAME) == {"champion": v_a, "challenger": v_b}
    tags = registry.client().get_model_version(MODEL_NAME, v_b).tags
    assert "rejected" not in tags and tags["rollout_status"] == "aborted"
    ev = [e for e in audit.read() if e["event"].startswith("rollout_")][-1]
    assert ev["event"] == "rollout_aborted" and ev["cause"] == "infrastructure" and "gets no traffic" in ev["reason"]


def test_unknown_mode_is_one_clear_line(serving_env, monkeypatch):
    from kfct.components.deploy import DeployError

    with FakeKubeApi(controller=True) as kube, pytest.raises(DeployError, match="unknown KServe deployment mode 'Kubeless'"):
        deploy(serving_env, kube, "good_b", "Kubeless", monkeypatch)
    assert not kube.objects


def test_a_service_the_webhook_rewrote_to_knative_deploys_and_rolls_out(serving_env, monkeypatch):
    """Issue 20, item 1: the prod overlay asks for `Serverless`; KServe stores `Knative` (annotation and
    status). Before the fix deploy raised `unknown KServe deployment mode 'Knative'`."""
    from kfct.components.rollout import ClusterBackend

    with FakeKubeApi(controller=True) as kube:
        deploy(serving_env, kube, "good_a", "Serverless", monkeypatch)
        stored = kube.objects[("kfct", MODEL_NAME)]
        assert stored["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
        assert stored["status"]["deploymentMode"] == "Knative"
        out = deploy(serving_env, kube, "good_b", "Standard", monkeypatch)  # the live service's mode wins
        assert out["deployment_mode"] == "Knative"
        assert kube.objects[("kfct", MODEL_NAME)]["spec"]["predictor"]["canaryTrafficPercent"] == 10
        backend = ClusterBackend(MODEL_NAME, MODEL_NAME, "kfct", "http://127.0.0.1:9", kserve_client=client_for(kube))
        assert backend.mode() == "Knative"


@pytest.mark.parametrize("mode", ["Standard", "Serverless"])
def test_ab_test_and_one_step_rollback_write_the_mode_s_objects(serving_env, monkeypatch, mode):
    """`kfct ab start` opens arm B the way the mode splits traffic; `kfct rollback` sends all
    traffic back to the champion in one step (Standard: the canary entry goes; Serverless: 0%
    to the latest revision, i.e. the previous ready one serves)."""
    from kfct.components.ab_test import ab_start, ab_stop, roll_back_traffic
    from kfct.config import load_config
    from kfct.governance import registry
    from kfct.runtime.settings import reset_settings

    monkeypatch.setenv("KFCT_KSERVE_DEPLOYMENT_MODE", mode)
    reset_settings()
    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    cfg = load_config()
    with FakeKubeApi(controller=True) as kube:
        client = client_for(kube)
        ab_start(MODEL_NAME, v_b, cfg, percent=50, target="cluster", namespace="kfct", client=client)
        obj = kube.objects[("kfct", MODEL_NAME)]
        if mode == "Standard":
            (canary,) = obj["spec"]["canary"]
            assert canary["trafficPercent"] == 50 and env_of(canary["predictor"])["KFCT_MODEL_VERSION"] == v_b
            assert env_of(obj["spec"]["predictor"])["KFCT_MODEL_VERSION"] == v_a
        else:
            assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 50
            assert env_of(obj["spec"]["predictor"])["KFCT_MODEL_VERSION"] == v_b
        assert registry.alias_version(MODEL_NAME, "challenger") == v_b
        ab_stop(MODEL_NAME, "A", cfg, namespace="kfct", client=client)  # keep A: B's traffic goes in one step
        obj = kube.objects[("kfct", MODEL_NAME)]
        if mode == "Standard":
            assert not obj["spec"].get("canary")
        assert env_of(obj["spec"]["predictor"])["KFCT_MODEL_VERSION"] == v_a
        assert registry.alias_version(MODEL_NAME, "champion") == v_a

        # blue-green: all traffic to B, then one-step rollback
        deploy_out = deploy(
            serving_env, kube, "good_b", mode, monkeypatch, cfg=load_config(overrides={"rollout": {"steps": [100]}})
        )
        assert deploy_out["canary_percent"] == 100
        out = roll_back_traffic(MODEL_NAME, target="cluster", namespace="kfct", client=client)
        assert out["rolled_back"] == v_b and out["mode"] == {"Serverless": "Knative"}.get(mode, mode)
        obj = kube.objects[("kfct", MODEL_NAME)]
        if mode == "Standard":
            assert not obj["spec"].get("canary")
        else:
            assert env_of(obj["spec"]["predictor"])["KFCT_MODEL_VERSION"] == v_a
        assert registry.alias_version(MODEL_NAME, "challenger") is None
