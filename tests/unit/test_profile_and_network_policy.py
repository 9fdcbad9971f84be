"""The prod overlay makes a Kubeflow Profile (issue 20, item 4) and both overlays fence MinIO and
MLflow with NetworkPolicies (item 7), checked on what `kubectl kustomize` really renders.

Upstream sources the objects and labels follow:
- Profile: kubeflow/kubeflow 41ee8e7cb (the last commit with components/profile-controller, v1.5.0-rc.0-445)
  components/profile-controller/api/v1/profile_types.go (`ProfileSpec`: owner rbacv1.Subject, plugins,
  resourceQuotaSpec; cluster-scoped, the namespace is the Profile's name) and
  config/base/namespace-labels.yaml (the namespace gets `pipelines.kubeflow.org/enabled: "true"`, which
  selects it for KFP's profile controller, kubeflow/pipelines 7b70c7b95
  manifests/kustomize/base/installs/multi-user/pipelines-profile-controller/sync.py: the `kfp-launcher`
  ConfigMap and `mlpipeline-minio-artifact` Secret).
- KFP task pods: kubeflow/pipelines 7b70c7b95 backend/src/v2/compiler/argocompiler/argo.go puts
  `pipelines.kubeflow.org/v2_component: "true"` in the Workflow's podMetadata labels (every driver and
  executor pod of a v2 run).
- KServe predictor pods (the storage-initializer is their init container): kserve/kserve aaac4e294
  pkg/constants/constants.go `InferenceServicePodLabelKey` = `serving.kserve.io/inferenceservice`.
NetworkPolicy semantics (https://kubernetes.io/docs/concepts/services-networking/network-policies/):
a pod selected by an Ingress policy accepts only what some `from` peer matches; a `podSelector` peer
without `namespaceSelector` means pods of the policy's own namespace.
"""

from __future__ import annotations

import pytest

from tests.unit.test_cluster_wiring import OVERLAYS, copy_manifests, render


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    manifests = copy_manifests(tmp_path_factory.mktemp("np") / "manifests")
    return {o: render(manifests, o) for o in OVERLAYS}


def find(objs, kind, name=None):
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def selects(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions In/NotIn/Exists/DoesNotExist) against labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if (
            (op == "In" and labels.get(k) not in vals)
            or (op == "NotIn" and labels.get(k) in vals)
            or (op == "Exists" and k not in labels)
            or (op == "DoesNotExist" and k in labels)
        ):
            return False
    return True


def admitted(policies: list[dict], target: dict, source: dict, same_namespace: bool, port: int) -> bool:
    """Would `source` reach `target` on `port` (both pod label dicts) under these Ingress policies?"""
    mine = [
        p
        for p in policies
        if selects(p["spec"]["podSelector"], target) and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
    ]
    if not mine:
        return True  # not isolated
    for p in mine:
        for rule in p["spec"].get("ingress") or []:
            ports = [x.get("port") for x in rule.get("ports") or []]
            if ports and port not in ports:
                continue
            if not rule.get("from"):
                return True  # a rule without `from` admits every source
            for peer in rule["from"]:
                if "ipBlock" in peer:
                    continue
                # any namespaceSelector may match other namespaces: counted as admitting them
                ns_ok = same_namespace if "namespaceSelector" not in peer else True
                if ns_ok and selects(peer.get("podSelector") or {}, source):
                    return True
    return False


KFP_POD = {"pipelines.kubeflow.org/v2_component": "true", "workflows.argoproj.io/workflow": "ct-abc"}
PREDICTOR_POD = {"serving.kserve.io/inferenceservice": "churn-classifier", "component": "predictor"}


def pod_labels(objs, name) -> dict:
    (obj,) = [o for o in objs if o["kind"] in ("Deployment", "Job") and o["metadata"]["name"] == name]
    return obj["spec"]["template"]["metadata"].get("labels") or {}


def test_prod_ships_a_kubeflow_profile_not_a_plain_namespace(rendered):
    objs = rendered["prod"]
    assert find(objs, "Namespace") == [], "a plain Namespace gets no kfp-launcher, no minio secret, no PodDefault"
    (profile,) = find(objs, "Profile")
    assert profile["apiVersion"] == "kubeflow.org/v1" and profile["metadata"]["name"] == "kfct"
    owner = profile["spec"]["owner"]
    assert owner["kind"] == "User" and owner["apiGroup"] == "rbac.authorization.k8s.io" and "@" in owner["name"]
    assert set(profile["spec"]) <= {"owner", "plugins", "resourceQuotaSpec"}  # ProfileSpec's fields


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_minio_and_mlflow_admit_only_this_namespaces_pipeline_and_predictor_pods(rendered, overlay):
    objs = rendered[overlay]
    policies = find(objs, "NetworkPolicy")
    minio, mlflow = pod_labels(objs, "kfct-minio"), pod_labels(objs, "kfct-mlflow")
    job = pod_labels(objs, "kfct-minio-setup")
    for target, port in ((minio, 9000), (mlflow, 5000)):
        assert admitted(policies, target, KFP_POD, True, port)
        assert admitted(policies, target, PREDICTOR_POD, True, port)
        assert not admitted(policies, target, {"app": "someone-else"}, True, port)
        assert not admitted(policies, target, KFP_POD, False, port), "another namespace's pipeline pods"
        assert not admitted(policies, target, PREDICTOR_POD, False, port), "another namespace's predictors"
        assert not admitted(policies, target, {}, True, port)
    assert admitted(policies, minio, mlflow, True, 9000), "MLflow serves its artifacts from MinIO"
    assert admitted(policies, minio, job, True, 9000), "the bucket Job creates the bucket and user"
    assert not admitted(policies, mlflow, job, True, 5000)
    assert not admitted(policies, minio, KFP_POD, True, 9001), "the MinIO console stays closed"


def test_the_policy_checker_is_not_vacuous():
    open_policy = [
        {
            "kind": "NetworkPolicy",
            "spec": {"podSelector": {"matchLabels": {"a": "1"}}, "policyTypes": ["Ingress"], "ingress": [{}]},
        }
    ]
    assert admitted(open_policy, {"a": "1"}, KFP_POD, False, 9000)  # a rule without `from` admits everyone
    assert admitted([], {"a": "1"}, {}, False, 9000)  # no policy selects the pod: not isolated
    fenced = [
        {
            "kind": "NetworkPolicy",
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": KFP_POD}}]}],
            },
        }
    ]
    assert admitted(fenced, {"a": "1"}, KFP_POD, True, 9000)
    assert not admitted(fenced, {"a": "1"}, KFP_POD, False, 9000)
    assert not admitted(fenced, {"a": "1"}, PREDICTOR_POD, True, 9000)


def test_readme_says_what_fronts_mlflow_with_auth():
    from tests.unit.test_cluster_wiring import ROOT

    text = (ROOT / "manifests" / "README.md").read_text()
    assert "NetworkPolicy" in text and "oauth2-proxy" in text and "basic-auth" in text
