"""deploy against a Kubernetes API that applies KServe 0.20's admission webhooks (issue 20, "the fakes answer
to upstream"): the mode rewrite (Serverless -> Knative, RawDeployment -> Standard) and the canary checks
of tests/e2e/kserve_admission.py (kserve/kserve @ aaac4e29, pkg/apis/serving/v1beta1/
inference_service_defaults.go, inference_service_validation.go).
"""

from __future__ import annotations

import pytest

from tests.e2e import kserve_admission as KA
from tests.servingkit import MODEL_NAME, serving_env, serving_registry  # noqa: F401
from tests.servingkit.fakes import FakeKubeApi, client_for, restore_kube_default_config, s3_artifacts  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("s3_artifacts", "restore_kube_default_config")]


class AdmittedKubeApi(FakeKubeApi):
    def admit(self, old, obj):
        return KA.admit(old, obj, default_mode="Knative")


def deploy(serving_env, kube, role, mode, monkeypatch):
    from kfct.components.deploy import deploy_version
    from kfct.config import load_config
    from kfct.runtime.settings import reset_settings

    monkeypatch.setenv("KFCT_KSERVE_DEPLOYMENT_MODE", mode)
    reset_settings()
    return deploy_version(
        MODEL_NAME, serving_env.versions[role], load_config(), target="cluster", client=client_for(kube), namespace="kfct"
    )


@pytest.mark.parametrize("mode", ["Standard", "RawDeployment"])
def test_a_standard_mode_canary_passes_kserve_admission(serving_env, monkeypatch, mode):
    with AdmittedKubeApi(controller=True) as kube:
        out = deploy(serving_env, kube, "good_b", mode, monkeypatch)
        obj = kube.objects[("kfct", MODEL_NAME)]
        assert obj["metadata"]["annotations"][KA.ANNOTATION] == "Standard"  # RawDeployment rewritten
        (canary,) = obj["spec"]["canary"]
        assert canary["trafficPercent"] == out["canary_percent"] == 10  # admitted: a denial raises in deploy


def test_a_serverless_canary_survives_the_mode_rewrite(serving_env, monkeypatch):
    with AdmittedKubeApi(controller=True) as kube:
        deploy(serving_env, kube, "good_a", "Serverless", monkeypatch)
        assert kube.objects[("kfct", MODEL_NAME)]["metadata"]["annotations"][KA.ANNOTATION] == "Knative"
        out = deploy(serving_env, kube, "good_b", "Serverless", monkeypatch)  # reads back the stored object
        obj = kube.objects[("kfct", MODEL_NAME)]
        assert obj["spec"]["predictor"]["canaryTrafficPercent"] == out["canary_percent"]
