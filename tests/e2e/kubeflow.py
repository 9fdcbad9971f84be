"""What multi-user Kubeflow does to a namespace and its pods, as the upstream code does it.

Each function names the upstream file and version it follows; tests/e2e/test_kubeflow_emulation.py
holds each behaviour, and docs/conformance.md lists them.

- Profile namespace labels: the profile controller labels a Profile's namespace
  (kubeflow/dashboard @ d8424648, components/profile-controller/manifests/kustomize/overlays/
  kubeflow/namespace-labels-kubeflow.yaml): `app.kubernetes.io/part-of: kubeflow-profile`,
  `pipelines.kubeflow.org/enabled: "true"`. A plain Namespace has neither.
- KFP's profile sync hook (kubeflow/pipelines 2.17.0 @ 7b70c7b9, manifests/kustomize/base/installs/
  multi-user/pipelines-profile-controller/sync.py `sync`): only for a namespace labelled
  `pipelines.kubeflow.org/enabled=true`, it provisions the ConfigMap `kfp-launcher`
  (defaultPipelineRoot `minio://<bucket>/private-artifacts/<ns>/v2/artifacts`) and the Secret
  `mlpipeline-minio-artifact` (`accesskey`, `secretkey`: an IAM key of its own for the namespace).
- The launcher's artifact credentials (kubeflow/pipelines 2.17.0, backend/src/v2/config/env.go):
  the Secret `mlpipeline-minio-artifact` of the pod's namespace, keys `accesskey` / `secretkey`;
  the `kfp-launcher` ConfigMap is optional (defaults when absent).
- The PodDefault webhook (kubeflow/dashboard @ d8424648, components/poddefaults-webhooks/
  manifests/kustomize/base/mutating-webhook-configuration.yaml: namespaceSelector
  `app.kubernetes.io/part-of: kubeflow-profile`, pods on CREATE; main.go `filterPodDefaults`:
  a PodDefault applies when its `spec.selector` matches the pod's labels and it lives in the
  pod's namespace).
"""

from __future__ import annotations

import base64

PROFILE_LABELS = {"app.kubernetes.io/part-of": "kubeflow-profile", "pipelines.kubeflow.org/enabled": "true"}
WEBHOOK_NAMESPACE_SELECTOR = {"matchLabels": {"app.kubernetes.io/part-of": "kubeflow-profile"}}
LAUNCHER_SECRET = "mlpipeline-minio-artifact"


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """metav1.LabelSelectorAsSelector(...).Matches: matchLabels AND every matchExpression.

    As in apimachinery, an empty selector matches everything (a nil one is refused upstream)."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        present = key in labels
        ok = {
            "In": present and labels[key] in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }
        if op not in ok:
            raise ValueError(f"unsupported label selector operator {op!r}")
        if not ok[op]:
            return False
    return True


def profile_namespace(name: str, is_profile: bool) -> dict:
    """The Namespace as the profile controller leaves it (or a plain one)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": dict(PROFILE_LABELS) if is_profile else {}},
    }


def kfp_profile_sync(namespace: dict, bucket: str, access_key: str, secret_key: str) -> list[dict]:
    """sync.py's attachments for a namespace (the two objects kfct's pods depend on)."""
    ns = namespace["metadata"]["name"]
    if (namespace["metadata"].get("labels") or {}).get("pipelines.kubeflow.org/enabled") != "true":
        return []
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": LAUNCHER_SECRET, "namespace": ns},
            "data": {
                "accesskey": base64.b64encode(access_key.encode()).decode(),
                "secretkey": base64.b64encode(secret_key.encode()).decode(),
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kfp-launcher", "namespace": ns},
            "data": {
                "defaultPipelineRoot": f"minio://{bucket}/private-artifacts/{ns}/v2/artifacts",
                "clusterDomain": "cluster.local",
            },
        },
    ]


def launcher_credentials(objects: list[dict], namespace: str) -> dict:
    """env.go: the launcher's keys from `mlpipeline-minio-artifact` in the pod's namespace, or why not."""
    for o in objects:
        if o["kind"] == "Secret" and o["metadata"]["name"] == LAUNCHER_SECRET and o["metadata"].get("namespace") == namespace:
            d = o["data"]
            return {
                "access_key": base64.b64decode(d["accesskey"]).decode(),
                "secret_key": base64.b64decode(d["secretkey"]).decode(),
            }
    raise LookupError(
        f"launcher: secret {LAUNCHER_SECRET!r} not found in namespace {namespace!r} "
        "(provisioned by KFP's profile controller for Profile namespaces only)"
    )


def pod_defaults_for(namespace: dict, pod_defaults: list[dict], pod_labels: dict) -> list[dict]:
    """The PodDefaults the webhook applies to a pod created in `namespace` with `pod_labels`."""
    if not selector_matches(WEBHOOK_NAMESPACE_SELECTOR, namespace["metadata"].get("labels") or {}):
        return []  # the webhook is not even called for this namespace
    ns = namespace["metadata"]["name"]
    return [
        pd
        for pd in pod_defaults
        if pd["metadata"].get("namespace", ns) == ns and selector_matches(pd["spec"].get("selector"), pod_labels)
    ]
