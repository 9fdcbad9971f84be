"""The e2e's stand-ins for KServe's admission and for Kubeflow answer as the upstream code does.

Each test names the upstream behaviour it holds (file and version in tests/e2e/kserve_admission.py
and tests/e2e/kubeflow.py; the table in docs/conformance.md).
"""

from __future__ import annotations

import pytest

from tests.e2e import kserve_admission as KA
from tests.e2e import kubeflow as KF


def _isvc(mode=None, canary=None, pred_name=None, uri="s3://b/models/1"):
    meta = {"name": "churn", "annotations": {KA.ANNOTATION: mode} if mode else {}}
    spec = {"predictor": {"model": {"storageUri": uri}, **({"name": pred_name} if pred_name else {})}}
    if canary is not None:
        spec["canary"] = canary
    return {"metadata": meta, "spec": spec}


# ---- KServe 0.20.0 (aaac4e29) inference_service_defaults.go / inference_service_validation.go
@pytest.mark.parametrize(
    "given,stored", [("Serverless", "Knative"), ("RawDeployment", "Standard"), ("Standard", "Standard"), ("Knative", "Knative")]
)
def test_defaulter_rewrites_legacy_modes(given, stored):
    assert KA.admit(None, _isvc(given))["metadata"]["annotations"][KA.ANNOTATION] == stored


def test_defaulter_writes_only_a_standard_default():
    assert KA.ANNOTATION not in KA.admit(None, _isvc(), default_mode="Knative")["metadata"]["annotations"]
    assert KA.admit(None, _isvc(), default_mode="Standard")["metadata"]["annotations"][KA.ANNOTATION] == "Standard"


def test_canary_only_in_standard_mode_and_well_formed():
    ok = [{"predictor": {"name": "v2", "model": {"storageUri": "s3://b/2"}}, "trafficPercent": 10}]
    KA.admit(None, _isvc("RawDeployment", ok))  # rewritten to Standard first, then valid
    with pytest.raises(KA.Denied, match="only supported in Standard"):
        KA.admit(None, _isvc("Serverless", ok))
    with pytest.raises(KA.Denied, match=r"predictor\.name is required"):
        KA.admit(None, _isvc("Standard", [{"predictor": {}, "trafficPercent": 5}]))
    with pytest.raises(KA.Denied, match="conflicts with stable"):
        KA.admit(None, _isvc("Standard", ok, pred_name="v2"))
    with pytest.raises(KA.Denied, match="must be <= 100"):
        KA.admit(
            None,
            _isvc(
                "Standard",
                [{"predictor": {"name": "a"}, "trafficPercent": 60}, {"predictor": {"name": "b"}, "trafficPercent": 50}],
            ),
        )


def test_update_may_not_change_the_mode_or_rename_the_predictor_without_a_new_model():
    old = {**_isvc("Standard"), "status": {"deploymentMode": "RawDeployment"}}
    KA.admit(old, _isvc("Standard"))
    with pytest.raises(KA.Denied, match="cannot be changed from 'Standard' to 'Knative'"):
        KA.admit(old, _isvc("Serverless"))
    with pytest.raises(KA.Denied, match=r"predictor\.name change requires a model change"):
        KA.admit(_isvc("Standard", pred_name="v1"), _isvc("Standard", pred_name="v2"))
    KA.admit(_isvc("Standard", pred_name="v1"), _isvc("Standard", pred_name="v2", uri="s3://b/models/2"))


def test_the_fake_api_applies_admission_and_answers_403():
    import requests

    from tests.servingkit.fakes import FakeKubeApi

    class Admitted(FakeKubeApi):
        def admit(self, old, obj):
            return KA.admit(old, obj)

    with Admitted() as api:
        base = f"{api.url}/apis/serving.kserve.io/v1beta1/namespaces/ns/inferenceservices"
        r = requests.post(base, json=_isvc("Serverless"), timeout=10)
        assert r.status_code == 201 and r.json()["metadata"]["annotations"][KA.ANNOTATION] == "Knative"
        patch = {"spec": {"canary": [{"predictor": {"name": "v2"}, "trafficPercent": 10}]}}
        r = requests.patch(f"{base}/churn", json=patch, headers={"Content-Type": "application/merge-patch+json"}, timeout=10)
        assert r.status_code == 403 and "only supported in Standard" in r.json()["message"]
        assert "canary" not in api.objects[("ns", "churn")]["spec"]  # nothing stored


# ---- Kubeflow: profile controller, KFP's profile sync hook, the PodDefault webhook
def test_only_a_profile_namespace_gets_the_launcher_secret_and_config():
    plain = KF.profile_namespace("team", is_profile=False)
    assert KF.kfp_profile_sync(plain, "mlpipeline", "a", "s") == []
    with pytest.raises(LookupError, match=r"mlpipeline-minio-artifact.*not found in namespace 'team'"):
        KF.launcher_credentials([], "team")
    prof = KF.profile_namespace("team", is_profile=True)
    objs = KF.kfp_profile_sync(prof, "mlpipeline", "a", "s")
    assert {(o["kind"], o["metadata"]["name"]) for o in objs} == {
        ("Secret", "mlpipeline-minio-artifact"),
        ("ConfigMap", "kfp-launcher"),
    }
    assert KF.launcher_credentials(objs, "team") == {"access_key": "a", "secret_key": "s"}
    cm = next(o for o in objs if o["kind"] == "ConfigMap")
    assert cm["data"]["defaultPipelineRoot"] == "minio://mlpipeline/private-artifacts/team/v2/artifacts"


def test_poddefault_needs_a_profile_namespace_and_the_pod_label():
    import yaml

    from tests.e2e.cluster import ROOT

    pds = [
        d
        for d in yaml.safe_load_all((ROOT / "manifests/overlays/prod/kfp-access.yaml").read_text())
        if d and d["kind"] == "PodDefault"
    ]
    prof, plain = KF.profile_namespace("kfct", True), KF.profile_namespace("kfct", False)
    assert KF.pod_defaults_for(prof, pds, {"access-ml-pipeline": "true"}) == pds
    assert KF.pod_defaults_for(prof, pds, {}) == []
    assert KF.pod_defaults_for(plain, pds, {"access-ml-pipeline": "true"}) == []  # webhook not called there


def test_label_selector_semantics():
    sel = {
        "matchLabels": {"a": "1"},
        "matchExpressions": [{"key": "b", "operator": "In", "values": ["x", "y"]}, {"key": "c", "operator": "DoesNotExist"}],
    }
    assert KF.selector_matches(sel, {"a": "1", "b": "x"})
    assert not KF.selector_matches(sel, {"a": "1", "b": "z"})
    assert not KF.selector_matches(sel, {"a": "1", "b": "x", "c": ""})
    assert KF.selector_matches({}, {"anything": "goes"})
