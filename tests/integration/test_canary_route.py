"""A Standard-mode canary is deployed only where KServe's Gateway API route carries its weight
(issue 20, item 2), against the loopback Kubernetes API whose KServe stand-in writes the HTTPRoutes
as KServe v0.20 does (tests/servingkit/fakes.py `kserve_http_routes`, after kserve/kserve aaac4e294
pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/httproute_reconciler.go).

On a default KServe install (`enableGatewayApi: false`) the canary is created and served nothing:
before this check a "10 % canary" silently served 0 %. Each broken state fails the deploy with one
line naming the missing prerequisite, and leaves the aliases and traffic as they were.
"""

from __future__ import annotations

import pytest

from tests.servingkit import MODEL_NAME, serving_env, serving_registry  # noqa: F401
from tests.servingkit.fakes import FakeKubeApi, client_for, restore_kube_default_config, s3_artifacts  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("s3_artifacts", "restore_kube_default_config")]


def deploy(serving_env, kube, role, monkeypatch, timeout=1.0):
    from kfct.components.deploy import deploy_version
    from kfct.config import load_config
    from kfct.runtime.settings import reset_settings

    monkeypatch.setenv("KFCT_KSERVE_DEPLOYMENT_MODE", "Standard")
    reset_settings()
    return deploy_version(
        MODEL_NAME,
        serving_env.versions[role],
        load_config(),
        target="cluster",
        client=client_for(kube),
        namespace="kfct",
        ready_timeout=timeout,
        ready_poll=0.05,
    )


def changes(kube) -> list[dict]:
    return [r for r in kube.requests if r["method"] in ("POST", "PATCH", "PUT", "DELETE")]


def champion_served(serving_env, kube, monkeypatch) -> None:
    """The champion (good_a) serves alone: the deploy of the first model."""
    deploy(serving_env, kube, "good_a", monkeypatch)
    kube.requests.clear()


def test_with_gateway_api_the_route_carries_the_canary_weight(serving_env, monkeypatch):
    from kfct.governance import registry

    v_b = serving_env.versions["good_b"]
    with FakeKubeApi(controller=True) as kube:
        champion_served(serving_env, kube, monkeypatch)
        out = deploy(serving_env, kube, "good_b", monkeypatch)
        assert out["canary_percent"] == 10
        (route,) = [r for r in kube.http_routes("kfct").values() if r["metadata"]["name"] == MODEL_NAME]
        refs = {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
        assert refs == {f"{MODEL_NAME}-predictor": 90, f"{MODEL_NAME}-v{v_b}-predictor": 10}
        assert registry.alias_version(MODEL_NAME, "challenger") == v_b


def test_gateway_api_disabled_fails_in_one_line_touching_nothing(serving_env, monkeypatch):
    """KServe's default: the Ingress reconciler, no HTTPRoute. Before the fix the deploy succeeded."""
    from kfct.components.deploy import DeployError
    from kfct.governance import registry

    v_a = serving_env.versions["good_a"]
    with FakeKubeApi(controller=True, gateway_api=False) as kube:
        champion_served(serving_env, kube, monkeypatch)
        before = kube.objects[("kfct", MODEL_NAME)]
        with pytest.raises(DeployError) as info:
            deploy(serving_env, kube, "good_b", monkeypatch)
        msg = str(info.value)
        assert "\n" not in msg and f"no HTTPRoute kfct/{MODEL_NAME}" in msg and '"enableGatewayApi": true' in msg
        assert changes(kube) == [] and kube.objects[("kfct", MODEL_NAME)] == before
        assert registry.alias_version(MODEL_NAME, "challenger") is None
        assert registry.alias_version(MODEL_NAME, "champion") == v_a


def test_no_gateway_api_crds_fails_before_creating_anything(serving_env, monkeypatch):
    """Without a champion served yet, deploy would create the service and then the canary: a cluster
    that serves no httproutes at all is refused before the first write."""
    from kfct.components.deploy import DeployError

    with FakeKubeApi(controller=True, gateway_api=False, httproute_crd=False) as kube:
        from kfct.governance import registry

        registry.set_alias(MODEL_NAME, "champion", serving_env.versions["good_a"], reason="test: a champion")
        with pytest.raises(DeployError, match=r"^Gateway API missing: the cluster serves no httproutes"):
            deploy(serving_env, kube, "good_b", monkeypatch)
        assert changes(kube) == [] and not kube.objects
        assert registry.alias_version(MODEL_NAME, "challenger") is None


def test_kserve_without_spec_canary_is_named_and_nothing_stays(serving_env, monkeypatch):
    """KServe < 0.20: its CRD's structural schema prunes spec.canary; the patch 'succeeds' and nothing
    would split. The deploy says which prerequisite is missing."""
    from kfct.components.deploy import DeployError
    from kfct.governance import registry

    with FakeKubeApi(controller=True, canary_field=False) as kube:
        champion_served(serving_env, kube, monkeypatch)
        with pytest.raises(DeployError, match=r"CRD dropped spec.canary.*KServe to >= 0.20"):
            deploy(serving_env, kube, "good_b", monkeypatch)
        assert "canary" not in kube.objects[("kfct", MODEL_NAME)]["spec"]
        assert registry.alias_version(MODEL_NAME, "challenger") is None


def test_route_without_the_canary_weight_removes_the_canary_just_created(serving_env, monkeypatch):
    """The route exists but never carries the canary (here: the canary never gets ready, so KServe's
    applyCanaryWeights leaves it out): the canary just created is removed again, aliases unmoved."""
    from kfct.components.deploy import DeployError
    from kfct.governance import registry

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    with FakeKubeApi(controller=True) as kube:
        champion_served(serving_env, kube, monkeypatch)
        kube.ready = False
        with pytest.raises(DeployError) as info:
            deploy(serving_env, kube, "good_b", monkeypatch, timeout=0.3)
        msg = str(info.value)
        assert "\n" not in msg and f"canary v{v_b}" in msg and "removed again, aliases and traffic unchanged" in msg
        final = kube.objects[("kfct", MODEL_NAME)]
        assert "canary" not in final["spec"]
        assert [b["spec"]["canary"] for b in (r["body"] for r in changes(kube))][-1] is None
        route = kube.http_routes("kfct")[MODEL_NAME]
        assert [b["name"] for b in route["spec"]["rules"][0]["backendRefs"]] == [f"{MODEL_NAME}-predictor"]
        assert registry.alias_version(MODEL_NAME, "challenger") is None
        assert registry.alias_version(MODEL_NAME, "champion") == v_a


def test_stable_address_survives_a_promotion(serving_env, monkeypatch):
    """Clients use status.url (the top-level HTTPRoute's host, through the gateway): it stays the same
    when the promotion renames the stable predictor Service to `<isvc>-v<N>-predictor`."""
    from kfct.cluster.kserve_isvc import promote_canary, stable_address

    v_b = serving_env.versions["good_b"]
    with FakeKubeApi(controller=True) as kube:
        champion_served(serving_env, kube, monkeypatch)
        deploy(serving_env, kube, "good_b", monkeypatch)
        before = stable_address(kube.objects[("kfct", MODEL_NAME)])
        promote_canary(client_for(kube), MODEL_NAME, "kfct", v_b)
        after_obj = kube.objects[("kfct", MODEL_NAME)]
        assert stable_address(after_obj) == before == f"http://{MODEL_NAME}-kfct.example.com"
        route = kube.http_routes("kfct")[MODEL_NAME]
        assert route["spec"]["hostnames"] == [f"{MODEL_NAME}-kfct.example.com"]
        assert [b["name"] for b in route["spec"]["rules"][0]["backendRefs"]] == [f"{MODEL_NAME}-v{v_b}-predictor"]
        assert kube.denials == []  # KServe's validator admitted every write (tests/servingkit/fakes.py admit)
