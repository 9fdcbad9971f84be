"""On a cluster the InferenceService follows the aliases too (issue 9 #13), through the kserve
SDK's KServeClient against a loopback Kubernetes API."""

from __future__ import annotations

import pytest

from tests.servingkit import MODEL_NAME, serving_env, serving_registry  # noqa: F401
from tests.servingkit.fakes import FakeKubeApi, client_for, restore_kube_default_config, s3_artifacts  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("s3_artifacts", "restore_kube_default_config")]


def test_stale_inference_service_converges_on_the_champion_alias(serving_env):
    from kfct.components.deploy import build_inference_service, converge_serving
    from kfct.governance import audit, registry

    v_a, v_b = serving_env.versions["good_a"], serving_env.versions["good_b"]
    with FakeKubeApi() as kube:
        client = client_for(kube)
        client.create(build_inference_service(MODEL_NAME, v_a, namespace="kfct"), namespace="kfct")
        # Crash after the alias moved, before the deploy patched the InferenceService.
        registry.client().set_registered_model_alias(MODEL_NAME, "champion", v_b)
        out = converge_serving(MODEL_NAME, "cluster", client=client, namespace="kfct", reason="test")
        assert out["changes"] == {"champion_version": v_b}
        live = kube.objects[("kfct", MODEL_NAME)]
        env = {e["name"]: e["value"] for e in live["spec"]["predictor"]["model"]["env"]}
        assert env["KFCT_MODEL_VERSION"] == v_b and live["metadata"]["annotations"]["kfct/model-version"] == v_b
        n = len(kube.requests)
        assert converge_serving(MODEL_NAME, "cluster", client=client, namespace="kfct")["changes"] == {}
        assert not [r for r in kube.requests[n:] if r["method"] != "GET"]  # agreeing: nothing written
        assert [e for e in audit.read() if e["event"] == "serving_converged"][-1]["target"] == "cluster"


def test_hanging_kubernetes_api_times_out_from_settings(serving_env, monkeypatch):
    """Issue 12 #6: the kserve SDK's requests carry the Settings timeout instead of none."""
    import time

    from kfct.components.deploy import DeployError, converge_serving, kserve_client
    from kfct.runtime.settings import reset_settings
    from tests.faultkit.proxy import FaultProxy

    monkeypatch.setenv("KFCT_NET_TIMEOUT_SECONDS", "1.5")
    reset_settings()
    with FakeKubeApi() as kube, FaultProxy("127.0.0.1", int(kube.url.rsplit(":", 1)[1])) as proxy:
        cfg = kube.kubeconfig()
        cfg["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{proxy.port}"
        client = kserve_client(config_dict=cfg)
        proxy.mode = "hang"
        t0 = time.monotonic()
        with pytest.raises(DeployError, match="cannot read InferenceService"):
            converge_serving(MODEL_NAME, "cluster", client=client, namespace="kfct")
        assert time.monotonic() - t0 < 15  # kubernetes' own urllib3 retries (3) x 1.5 s, not forever
    reset_settings()
