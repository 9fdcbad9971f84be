"""KServe's deployment modes as the admission webhook stores them (issue 20, item 1).

Upstream, kserve/kserve v0.20 (commit aaac4e294, v0.20.0-rc0-104):
- pkg/constants/constants.go: `Knative` and `Standard` are the modes; `Serverless` and
  `RawDeployment` are the deprecated spellings (`LegacyServerless`, `LegacyRawDeployment`);
  `ModelMesh` is a third mode kfct does not serve.
- pkg/apis/serving/v1beta1/inference_service_defaults.go, `DefaultInferenceService`: on CREATE
  and UPDATE the mutating webhook rewrites the annotation `serving.kserve.io/deploymentMode`
  Serverless -> Knative and RawDeployment -> Standard; the controller writes
  `status.deploymentMode` with the same names.
The dicts below are InferenceServices as the API returns them after that webhook.
"""

from __future__ import annotations

import pytest


def isvc(annotation: str | None = None, status_mode: str | None = None) -> dict:
    """An InferenceService as `GET .../inferenceservices/churn` returns it on KServe 0.20."""
    meta = {
        "name": "churn",
        "namespace": "kfct",
        "generation": 2,
        "annotations": {"serving.kserve.io/enable-prometheus-scraping": "true"},
    }
    if annotation is not None:
        meta["annotations"]["serving.kserve.io/deploymentMode"] = annotation
    obj = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "kfct-churn"},
                    "runtime": "kfct-predictor",
                    "storageUri": "s3://kfct/mlflow/1/a/artifacts",
                }
            }
        },
    }
    if status_mode is not None:
        obj["status"] = {"deploymentMode": status_mode, "observedGeneration": 2}
    return obj


@pytest.mark.parametrize(
    "stored, expected",
    [
        ("Knative", "Knative"),
        ("Serverless", "Knative"),
        ("knative", "Knative"),
        ("SERVERLESS", "Knative"),
        ("Standard", "Standard"),
        ("RawDeployment", "Standard"),
        ("rawdeployment", "Standard"),
        (" standard ", "Standard"),
    ],
)
def test_the_annotation_as_the_webhook_stores_it_is_understood(stored, expected):
    from kfct.components.deploy import detect_mode

    assert detect_mode(isvc(annotation=stored), "Standard") == expected
    assert (
        detect_mode(isvc(annotation=stored, status_mode="Knative" if expected == "Knative" else "Standard"), "Standard")
        == expected
    )


@pytest.mark.parametrize(
    "status_mode, expected",
    [("Knative", "Knative"), ("Standard", "Standard"), ("Serverless", "Knative"), ("RawDeployment", "Standard")],
)
def test_status_deployment_mode_is_understood_when_no_annotation(status_mode, expected):
    from kfct.components.deploy import detect_mode

    assert detect_mode(isvc(status_mode=status_mode), "Standard") == expected


def test_no_service_takes_the_settings_default_in_either_spelling():
    from kfct.components.deploy import KNATIVE, SERVERLESS, STANDARD, detect_mode

    assert SERVERLESS == KNATIVE == "Knative" and STANDARD == "Standard"
    assert detect_mode(None, "Serverless") == detect_mode(None, "Knative") == KNATIVE
    assert detect_mode(None, "RawDeployment") == STANDARD


def test_modelmesh_and_unknown_modes_are_one_clear_line():
    from kfct.components.deploy import DeployError, detect_mode

    with pytest.raises(DeployError, match=r"ModelMesh.*not supported"):
        detect_mode(isvc(annotation="ModelMesh"), "Standard")
    with pytest.raises(DeployError, match=r"unknown KServe deployment mode 'Kubeless'.*Standard.*Knative"):
        detect_mode(isvc(annotation="Kubeless"), "Standard")


def test_built_services_carry_the_mode_name_the_webhook_keeps():
    """What deploy writes is already the canonical spelling: a later UPDATE's defaulter has nothing to rewrite."""
    from kfct.components.deploy import build_inference_service

    for asked, stored in (("Serverless", "Knative"), ("Knative", "Knative"), ("RawDeployment", "Standard")):
        obj = build_inference_service("churn", "3", namespace="kfct", mode=asked, storage_uri="s3://b/m", sha256="ab" * 32)
        assert obj.metadata.annotations["serving.kserve.io/deploymentMode"] == stored


def test_rollout_reads_the_mode_the_same_way():
    from kfct.components.rollout import ClusterBackend

    backend = ClusterBackend("churn", "churn", "kfct", "http://127.0.0.1:9")
    assert backend.mode(isvc(annotation="Knative", status_mode="Knative")) == "Knative"
    assert backend.mode(isvc(status_mode="Standard")) == "Standard"
