"""The loopback Kubernetes API (tests/servingkit/fakes.py) admits InferenceServices as KServe v0.20's
webhooks do (kserve/kserve aaac4e294: pkg/apis/serving/v1beta1/inference_service_defaults.go and
inference_service_validation.go), so a deploy, rollout or promotion that a real cluster would refuse
fails against it too. Each case below is one the upstream validator rejects (or the defaulter rewrites)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.servingkit.fakes import FakeKubeApi

PATH = "/apis/serving.kserve.io/v1beta1/namespaces/kfct/inferenceservices"


def call(kube, method, path, body):
    req = urllib.request.Request(
        kube.url + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def isvc(mode="Standard", name=None, uri="s3://b/1", canary=None):
    pred = {"model": {"modelFormat": {"name": "kfct-churn"}, "storageUri": uri}, **({"name": name} if name else {})}
    spec = {"predictor": pred, **({"canary": canary} if canary is not None else {})}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "churn", "annotations": {"serving.kserve.io/deploymentMode": mode}},
        "spec": spec,
    }


def canary(name="v2", pct=10, **extra):
    return {"predictor": {"name": name, "model": {"storageUri": f"s3://b/{name}"}, **extra}, "trafficPercent": pct}


def test_the_defaulter_rewrites_legacy_mode_names():
    with FakeKubeApi(controller=True) as kube:
        code, obj = call(kube, "POST", PATH, isvc(mode="RawDeployment"))
        assert code == 201 and obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"


@pytest.mark.parametrize(
    "body, why",
    [
        (isvc(mode="Knative", canary=[canary()]), "canary is only supported in Standard deployment mode"),
        (isvc(canary=[canary(name="")]), "canary[0] predictor.name is required"),
        (isvc(canary=[canary(), canary()]), 'canary predictor.name "v2" is duplicated'),
        (isvc(name="v2", canary=[canary()]), "conflicts with stable predictor name"),
        (isvc(canary=[canary(pct=101)]), "trafficPercent must be between 0 and 100"),
        (isvc(canary=[canary("v2", 60), canary("v3", 50)]), "sum of canary trafficPercent values (110)"),
        (isvc(canary=[canary(maxReplicas=3)]), "must not set maxReplicas"),
        (isvc(canary=[canary(minReplicas=2)]), "must not exceed stable predictor minReplicas"),
    ],
)
def test_the_validator_refuses_bad_canaries(body, why):
    with FakeKubeApi(controller=True) as kube:
        code, status = call(kube, "POST", PATH, body)
        assert code == 403 and why in status["message"] and "denied the request" in status["message"]
        assert not kube.objects


def test_updates_may_not_change_the_mode_or_rename_the_predictor_without_a_new_model():
    with FakeKubeApi(controller=True) as kube:
        assert call(kube, "POST", PATH, isvc())[0] == 201
        code, status = call(
            kube, "PATCH", f"{PATH}/churn", {"metadata": {"annotations": {"serving.kserve.io/deploymentMode": "Knative"}}}
        )
        assert code == 403 and "deploymentMode cannot be changed from 'Standard' to 'Knative'" in status["message"]
        code, status = call(kube, "PATCH", f"{PATH}/churn", {"spec": {"predictor": {"name": "v9"}}})
        assert code == 403 and "predictor.name change requires a model change" in status["message"]
        code, _ = call(
            kube, "PATCH", f"{PATH}/churn", {"spec": {"predictor": {"name": "v9", "model": {"storageUri": "s3://b/9"}}}}
        )
        assert code == 200  # what a promotion does: new name and new model
        code, _ = call(
            kube, "PATCH", f"{PATH}/churn", {"metadata": {"annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"}}}
        )
        assert code == 200  # rewritten to Standard first, so no change of mode
