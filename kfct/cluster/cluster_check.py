"""`kfct cluster check`: what a cluster lacks for kfct, read from the live API before a first deploy.

One row per prerequisite, each `ok`, `missing` or `wrong` with the fix (or `info`: reported, not
required). The checks are pure functions of what `read(path)` returns (the decoded JSON of a GET on
the Kubernetes API, None for a 404); `kube_reader` is the thin adapter over the kubernetes client
(kubeconfig or in-cluster). The minimum versions are the ones docs/cluster.md states:

- KServe >= 0.20: `spec.canary` (Standard-mode canaries) exists from 0.20 on; its weights reach the
  traffic only through the Gateway API reconciler (`"enableGatewayApi": true` in the `ingress` entry
  of the `inferenceservice-config` ConfigMap; kserve/kserve pkg/apis/serving/v1beta1/configmap.go).
- Kubeflow Pipelines backend >= 2.14: the compiled IR uses `dsl.Collected` artifacts and retries
  inside `dsl.If` sub-DAGs. The version is healthz's `tag_name` (kubeflow/pipelines
  backend/src/apiserver/main.go `healthzResponse`, served at /apis/v2beta1/healthz).
- Kubeflow Trainer >= 2.2 with the `xgboost-distributed` ClusterTrainingRuntime, for train.workers > 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from kfct.errors import KfctError

MIN_KSERVE, MIN_KFP, MIN_TRAINER = (0, 20, 0), (2, 14, 0), (2, 2, 0)
KSERVE_NAMESPACES = ("kserve", "kubeflow")  # a KServe install, or KServe inside a Kubeflow install
KFP_NAMESPACE, KFP_SERVICE = "kubeflow", "ml-pipeline:8888"
TRAINER_NAMESPACE = "kubeflow-system"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
GATEWAY_FIX = (
    'set "enableGatewayApi": true in the ingress entry of the inferenceservice-config ConfigMap '
    "(and install the Gateway API CRDs and a Gateway)"
)
APPLY_FIX = "kubectl apply -k manifests/overlays/<dev|prod>"


class ClusterReadError(KfctError):
    """A GET on the cluster's API failed other than with 404 (forbidden, unreachable, 5xx)."""


Read = Callable[[str], "dict | None"]


@dataclass(frozen=True)
class Row:
    item: str
    status: str  # ok | missing | wrong | info
    detail: str
    fix: str = ""

    @property
    def passed(self) -> bool:
        return self.status in ("ok", "info")


def version_of(text: str | None) -> tuple[int, int, int] | None:
    """(major, minor, patch) from an image tag or a release name ('v0.20.1', '2.14.0', 'x:v2.2.0-rc.1')."""
    m = re.search(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def _v(t: tuple[int, int, int]) -> str:
    return ".".join(map(str, t))


def _image_tag(deployment: dict | None, container: str | None = None) -> str | None:
    pod = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    for c in pod.get("containers") or []:
        if container is None or c.get("name") == container:
            image = c.get("image") or ""
            return image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else image
    return None


def _first(read: Read, paths) -> tuple[str | None, dict | None]:
    for p in paths:
        obj = read(p)
        if obj is not None:
            return p, obj
    return None, None


def _config_entry(cm: dict | None, key: str) -> dict | None:
    raw = ((cm or {}).get("data") or {}).get(key)
    if raw is None:
        return None
    try:
        val = json.loads(raw)
    except ValueError:
        return {"__invalid__": raw[:80]}
    return val if isinstance(val, dict) else {"__invalid__": str(raw)[:80]}


# -- KServe ---------------------------------------------------------------------------------------------


def check_kserve_version(read: Read) -> Row:
    item = f"KServe >= {_v(MIN_KSERVE)}"
    _path, dep = _first(
        read, [f"/apis/apps/v1/namespaces/{ns}/deployments/kserve-controller-manager" for ns in KSERVE_NAMESPACES]
    )
    if dep is None:
        return Row(
            item,
            "missing",
            f"no kserve-controller-manager Deployment in {' or '.join(KSERVE_NAMESPACES)}",
            f"install KServe >= {_v(MIN_KSERVE)}",
        )
    tag = _image_tag(dep, "manager")
    found = version_of(tag)
    if found is None:
        return Row(item, "info", f"controller image tag {tag!r} names no version (the CRD row tells)")
    if found < MIN_KSERVE:
        return Row(
            item,
            "wrong",
            f"KServe {_v(found)}: no Standard-mode canaries (spec.canary)",
            f"upgrade KServe to >= {_v(MIN_KSERVE)} (or use Knative mode)",
        )
    return Row(item, "ok", f"KServe {_v(found)}")


def check_kserve_crd(read: Read) -> Row:
    item = "InferenceService CRD has spec.canary"
    crd = read(f"{CRDS}/inferenceservices.serving.kserve.io")
    if crd is None:
        return Row(item, "missing", "no inferenceservices.serving.kserve.io CRD", f"install KServe >= {_v(MIN_KSERVE)}")
    for v in (crd.get("spec") or {}).get("versions") or []:
        if v.get("name") == "v1beta1":
            spec = ((((v.get("schema") or {}).get("openAPIV3Schema") or {}).get("properties") or {}).get("spec") or {}).get(
                "properties"
            ) or {}
            if "canary" in spec:
                return Row(item, "ok", "v1beta1 spec.canary served")
            return Row(
                item,
                "wrong",
                "v1beta1 has no spec.canary: the API would drop every Standard-mode canary",
                f"upgrade KServe to >= {_v(MIN_KSERVE)}",
            )
    return Row(item, "wrong", "the CRD serves no v1beta1", f"upgrade KServe to >= {_v(MIN_KSERVE)}")


def _isvc_config(read: Read) -> dict | None:
    return _first(read, [f"/api/v1/namespaces/{ns}/configmaps/inferenceservice-config" for ns in KSERVE_NAMESPACES])[1]


def check_deployment_mode(read: Read, wanted: str) -> Row:
    """KServe's default mode (an InferenceService without the annotation gets it) against the mode kfct
    writes; Knative mode needs Knative Serving installed."""
    from kfct.cluster.kserve_isvc import DeployError, normalise_mode

    item = "KServe deployment mode"
    cm = _isvc_config(read)
    if cm is None:
        return Row(item, "missing", "no inferenceservice-config ConfigMap", f"install KServe >= {_v(MIN_KSERVE)}")
    deploy = _config_entry(cm, "deploy") or {}
    if "__invalid__" in deploy:
        return Row(item, "wrong", f"its `deploy` entry is not JSON: {deploy['__invalid__']!r}", "fix the ConfigMap")
    try:
        default = normalise_mode(deploy.get("defaultDeploymentMode") or "Standard")
        mine = normalise_mode(wanted)
    except DeployError as exc:
        return Row(item, "wrong", str(exc), "use Standard or Knative")
    if mine == "Knative" and read(f"{CRDS}/services.serving.knative.dev") is None:
        return Row(
            item,
            "wrong",
            "kfct writes Knative mode but Knative Serving is not installed",
            "install Knative Serving, or KFCT_KSERVE_DEPLOYMENT_MODE=Standard (drop components/serverless)",
        )
    return Row(item, "ok", f"KServe default {default}; kfct writes {mine} (the annotation wins)")


def check_gateway_api(read: Read, wanted: str) -> Row:
    from kfct.cluster.kserve_isvc import DeployError, normalise_mode

    item = "Gateway API enabled (Standard canaries)"
    try:
        standard = normalise_mode(wanted) == "Standard"
    except DeployError:
        standard = True
    cm = _isvc_config(read)
    ingress = _config_entry(cm, "ingress") or {}
    enabled = ingress.get("enableGatewayApi") is True
    crd = read(f"{CRDS}/httproutes.gateway.networking.k8s.io")
    status = "wrong" if standard else "info"
    if cm is None:
        return Row(
            item, "missing" if standard else "info", "no inferenceservice-config ConfigMap", f"install KServe >= {_v(MIN_KSERVE)}"
        )
    if not enabled:
        return Row(item, status, "enableGatewayApi is off: a Standard-mode canary would get no traffic", GATEWAY_FIX)
    if crd is None:
        return Row(
            item,
            "missing" if standard else "info",
            "enableGatewayApi is on but no HTTPRoute CRD",
            "install the Gateway API CRDs (gateway.networking.k8s.io)",
        )
    return Row(item, "ok", f"HTTPRoutes via gateway {ingress.get('kserveIngressGateway', 'kserve/kserve-ingress-gateway')}")


def check_serving_runtime(read: Read, ns: str) -> Row:
    from kfct.cluster.kserve_isvc import MODEL_FORMAT, RUNTIME_NAME

    item = f"ServingRuntime {RUNTIME_NAME}"
    rt = read(f"/apis/serving.kserve.io/v1alpha1/namespaces/{ns}/servingruntimes/{RUNTIME_NAME}")
    if rt is None:
        return Row(item, "missing", f"not in namespace {ns}", APPLY_FIX)
    formats = [f.get("name") for f in (rt.get("spec") or {}).get("supportedModelFormats") or []]
    if MODEL_FORMAT not in formats:
        return Row(item, "wrong", f"serves {formats}, not {MODEL_FORMAT}", APPLY_FIX)
    return Row(item, "ok", f"serves {MODEL_FORMAT}")


def check_storage_container(read: Read) -> Row:
    item = "ClusterStorageContainer for s3://"
    lst = read("/apis/serving.kserve.io/v1alpha1/clusterstoragecontainers")
    if lst is None:
        return Row(item, "missing", "the cluster serves no ClusterStorageContainers", f"install KServe >= {_v(MIN_KSERVE)}")
    for csc in lst.get("items") or []:
        spec = csc.get("spec") or {}
        if spec.get("disabled"):
            continue
        for fmt in spec.get("supportedUriFormats") or []:
            if fmt.get("prefix") == "s3://":
                return Row(item, "ok", f"{csc['metadata']['name']} downloads s3://")
    return Row(
        item,
        "missing",
        "no enabled ClusterStorageContainer supports s3://",
        "apply KServe's default ClusterStorageContainer (config/storagecontainers/default.yaml)",
    )


# -- Kubeflow Pipelines and the profile namespace --------------------------------------------------------


def kfp_healthz_path() -> str:
    """healthz through the API server's service proxy: no port-forward, the kubeconfig's own credentials."""
    return f"/api/v1/namespaces/{KFP_NAMESPACE}/services/{KFP_SERVICE}/proxy/apis/v2beta1/healthz"


def check_kfp_version(healthz: dict | None) -> Row:
    item = f"Kubeflow Pipelines backend >= {_v(MIN_KFP)}"
    if healthz is None:
        return Row(
            item,
            "missing",
            f"no KFP API answered healthz ({KFP_NAMESPACE}/{KFP_SERVICE})",
            f"install Kubeflow Pipelines >= {_v(MIN_KFP)} (or set KFCT_KFP_HOST)",
        )
    tag = str(healthz.get("tag_name") or "")
    found = version_of(tag)
    if found is None:
        return Row(item, "info", f"healthz tag_name {tag!r} names no version")
    if found < MIN_KFP:
        return Row(
            item,
            "wrong",
            f"KFP {_v(found)}: no dsl.Collected artifacts / retries in dsl.If sub-DAGs",
            f"upgrade Kubeflow Pipelines to >= {_v(MIN_KFP)}",
        )
    return Row(item, "ok", f"KFP {_v(found)}" + (" (multi-user)" if healthz.get("multi_user") else ""))


def check_profile(read: Read, ns: str) -> Row:
    item = f"namespace {ns} is a Kubeflow Profile"
    if read(f"/apis/kubeflow.org/v1/profiles/{ns}") is None:
        return Row(
            item,
            "missing",
            f"no Profile {ns}: no kfp-launcher, no artifact Secret, no PodDefaults there",
            "kubectl apply -f manifests/overlays/prod/profile.yaml (set its owner)",
        )
    # The profile controller labels the namespace (components/profile-controller/config/base/
    # namespace-labels.yaml): KFP's profile controller selects `pipelines.kubeflow.org/enabled`, the
    # PodDefault webhook `app.kubernetes.io/part-of: kubeflow-profile` (admission-webhook
    # manifests/base/mutating-webhook-configuration.yaml namespaceSelector).
    labels = ((read(f"/api/v1/namespaces/{ns}") or {}).get("metadata") or {}).get("labels") or {}
    lacking = [
        f"{k}={v}"
        for k, v in (("pipelines.kubeflow.org/enabled", "true"), ("app.kubernetes.io/part-of", "kubeflow-profile"))
        if labels.get(k) != v
    ]
    if lacking:
        return Row(
            item,
            "wrong",
            f"the namespace lacks {', '.join(lacking)} (profile not reconciled?)",
            "check the profile controller's logs; the labels come from its namespace-labels config",
        )
    return Row(item, "ok", "Profile, pipelines and PodDefault-webhook labels present")


def _check_object(read: Read, item: str, path: str, why: str, fix: str) -> Row:
    return Row(item, "ok", "present") if read(path) is not None else Row(item, "missing", why, fix)


def check_kfp_launcher(read: Read, ns: str) -> Row:
    return _check_object(
        read,
        "ConfigMap kfp-launcher",
        f"/api/v1/namespaces/{ns}/configmaps/kfp-launcher",
        "tasks cannot find the pipeline root",
        "KFP's profile controller provisions it in Profile namespaces labelled pipelines.kubeflow.org/enabled=true",
    )


def check_artifact_secret(read: Read, ns: str) -> Row:
    return _check_object(
        read,
        "Secret mlpipeline-minio-artifact",
        f"/api/v1/namespaces/{ns}/secrets/mlpipeline-minio-artifact",
        "tasks cannot upload their artifacts",
        "KFP's profile controller provisions it in Profile namespaces labelled pipelines.kubeflow.org/enabled=true",
    )


def check_poddefault(read: Read, ns: str) -> Row:
    return _check_object(
        read,
        "PodDefault access-ml-pipeline",
        f"/apis/kubeflow.org/v1alpha1/namespaces/{ns}/poddefaults/access-ml-pipeline",
        "the drift-triggered retrain gets no KFP token (401/403)",
        "kubectl apply -k manifests/overlays/prod (kfp-access.yaml)",
    )


def check_storage_secret(read: Read, ns: str) -> Row:
    """What KServe's storage initializer reads: the serving SA's Secret with the S3 keys and endpoint
    annotations (kserve pkg/credentials/s3: serving.kserve.io/s3-endpoint, AWS_* keys)."""
    from kfct.cluster.kserve_isvc import SERVICE_ACCOUNT

    item = "storage-initializer Secret kfct-s3-credentials"
    sec = read(f"/api/v1/namespaces/{ns}/secrets/kfct-s3-credentials")
    if sec is None:
        return Row(item, "missing", f"not in namespace {ns}", APPLY_FIX + " (fill manifests/base/secrets/*.env first)")
    ann = (sec.get("metadata") or {}).get("annotations") or {}
    keys = set((sec.get("data") or {}) | (sec.get("stringData") or {}))
    lacking = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k not in keys]
    if "serving.kserve.io/s3-endpoint" not in ann or lacking:
        what = ", ".join(
            lacking + ([] if "serving.kserve.io/s3-endpoint" in ann else ["annotation serving.kserve.io/s3-endpoint"])
        )
        return Row(item, "wrong", f"lacks {what}", APPLY_FIX)
    sa = read(f"/api/v1/namespaces/{ns}/serviceaccounts/{SERVICE_ACCOUNT}")
    if sa is None:
        return Row(item, "missing", f"no ServiceAccount {SERVICE_ACCOUNT} (the predictor's)", APPLY_FIX)
    if "kfct-s3-credentials" not in [s.get("name") for s in sa.get("secrets") or []]:
        return Row(item, "wrong", f"ServiceAccount {SERVICE_ACCOUNT} does not list it in .secrets", APPLY_FIX)
    return Row(item, "ok", f"endpoint {ann['serving.kserve.io/s3-endpoint']}, listed by SA {SERVICE_ACCOUNT}")


def check_network_policy(read: Read, ns: str) -> Row:
    item = "NetworkPolicy for MinIO and MLflow"
    lst = read(f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies")
    if lst is None:
        return Row(
            item,
            "missing",
            "the API serves no networking.k8s.io/v1 NetworkPolicies",
            "use a Kubernetes with NetworkPolicy and a CNI that enforces it (Calico, Cilium, ...)",
        )
    names = {p["metadata"]["name"] for p in lst.get("items") or []}
    lacking = sorted({"kfct-minio-ingress", "kfct-mlflow-ingress"} - names)
    if lacking:
        return Row(item, "missing", f"no {', '.join(lacking)}", APPLY_FIX)
    return Row(item, "ok", "both present (enforcement is the CNI's)")


# -- GPU and Trainer ------------------------------------------------------------------------------------


def check_gpu_nodes(read: Read) -> Row:
    """Nodes with allocatable nvidia.com/gpu whose NoSchedule/NoExecute taints the IR tolerates
    (it tolerates `nvidia.com/gpu` only: pipelines.compile)."""
    item = "GPU nodes (--gpu)"
    nodes = (read("/api/v1/nodes") or {}).get("items") or []
    gpu = [
        n for n in nodes if str(((n.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu", "0")) not in ("0", "")
    ]
    if not gpu:
        return Row(
            item,
            "missing",
            "no node has allocatable nvidia.com/gpu",
            "add GPU nodes with the NVIDIA device plugin (or GPU operator)",
        )
    usable = []
    blocked = {}
    for n in gpu:
        taints = [
            t
            for t in (n.get("spec") or {}).get("taints") or []
            if t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") != "nvidia.com/gpu"
        ]
        if taints:
            blocked[n["metadata"]["name"]] = [f"{t.get('key')}={t.get('value', '')}:{t.get('effect')}" for t in taints]
        else:
            usable.append(n["metadata"]["name"])
    if not usable:
        return Row(
            item,
            "wrong",
            f"every GPU node has a taint the train step does not tolerate: {blocked}",
            "taint GPU nodes with nvidia.com/gpu only, or add the toleration to the train step",
        )
    return Row(item, "ok", f"{len(usable)} schedulable GPU node(s): {', '.join(sorted(usable))}")


def check_trainer(read: Read, workers: int) -> list[Row]:
    """Kubeflow Trainer: required when train.workers > 1, else reported as info."""
    need = "missing" if workers > 1 else "info"
    why = f"train.workers={workers}" + (" needs it" if workers > 1 else ": not needed")
    crd_item = f"Kubeflow Trainer >= {_v(MIN_TRAINER)} (TrainJob CRD)"
    rows = []
    if read(f"{CRDS}/trainjobs.trainer.kubeflow.org") is None:
        rows.append(
            Row(
                crd_item, need, f"no trainjobs.trainer.kubeflow.org CRD ({why})", f"install Kubeflow Trainer >= {_v(MIN_TRAINER)}"
            )
        )
    else:
        dep = read(f"/apis/apps/v1/namespaces/{TRAINER_NAMESPACE}/deployments/kubeflow-trainer-controller-manager")
        found = version_of(_image_tag(dep))
        if found is not None and found < MIN_TRAINER:
            rows.append(
                Row(
                    crd_item,
                    "wrong" if workers > 1 else "info",
                    f"Trainer {_v(found)} ({why})",
                    f"upgrade Kubeflow Trainer to >= {_v(MIN_TRAINER)}",
                )
            )
        else:
            rows.append(Row(crd_item, "ok", f"Trainer {_v(found) if found else '(version not in the image tag)'}"))
    rt = read("/apis/trainer.kubeflow.org/v1alpha1/clustertrainingruntimes/xgboost-distributed")
    rt_item = "ClusterTrainingRuntime xgboost-distributed"
    rows.append(
        Row(rt_item, "ok", "present")
        if rt is not None
        else Row(rt_item, need, f"absent ({why})", "apply Trainer's manifests/base/runtimes/xgboost_distributed.yaml")
    )
    return rows


# -- all of it ------------------------------------------------------------------------------------------


def _safe(item: str, check: Callable[[], Row | list[Row]]) -> list[Row]:
    """One check; an API that refuses or fails the read makes the row `wrong`, the others still run."""
    try:
        out = check()
    except ClusterReadError as exc:
        return [Row(item, "wrong", f"cannot read: {exc}", "use credentials that may read it (kubectl auth can-i get ...)")]
    return out if isinstance(out, list) else [out]


def check_cluster(
    read: Read,
    namespace: str,
    mode: str = "Standard",
    gpu: bool = False,
    workers: int = 1,
    healthz: Callable[[], dict | None] | None = None,
) -> list[Row]:
    """Every row, in the order a first deploy meets them. `healthz`: the KFP healthz answer (default:
    through the API server's service proxy)."""
    ns = namespace
    checks: list[tuple[str, Callable[[], Row | list[Row]]]] = [
        ("KServe version", lambda: check_kserve_version(read)),
        ("InferenceService CRD", lambda: check_kserve_crd(read)),
        ("KServe deployment mode", lambda: check_deployment_mode(read, mode)),
        ("Gateway API", lambda: check_gateway_api(read, mode)),
        ("ServingRuntime", lambda: check_serving_runtime(read, ns)),
        ("ClusterStorageContainer", lambda: check_storage_container(read)),
        ("Kubeflow Pipelines backend", lambda: check_kfp_version(healthz() if healthz else read(kfp_healthz_path()))),
        ("Kubeflow Profile", lambda: check_profile(read, ns)),
        ("ConfigMap kfp-launcher", lambda: check_kfp_launcher(read, ns)),
        ("Secret mlpipeline-minio-artifact", lambda: check_artifact_secret(read, ns)),
        ("PodDefault access-ml-pipeline", lambda: check_poddefault(read, ns)),
        ("storage-initializer Secret", lambda: check_storage_secret(read, ns)),
        ("NetworkPolicy", lambda: check_network_policy(read, ns)),
    ]
    if gpu:
        checks.append(("GPU nodes", lambda: check_gpu_nodes(read)))
    checks.append(("Kubeflow Trainer", lambda: check_trainer(read, workers)))
    return [row for item, check in checks for row in _safe(item, check)]


def format_table(rows: list[Row]) -> str:
    w_item = max(len(r.item) for r in rows)
    lines = [f"{'prerequisite':<{w_item}}  status   detail / fix"]
    for r in rows:
        tail = r.detail + (f"  -> fix: {r.fix}" if r.fix and not r.passed else "")
        lines.append(f"{r.item:<{w_item}}  {r.status:<7}  {tail}")
    bad = sum(not r.passed for r in rows)
    lines.append(f"{len(rows) - bad} of {len(rows)} prerequisites pass" + (f"; {bad} to fix" if bad else ""))
    return "\n".join(lines)


def kube_reader(kubeconfig: str | None = None, context: str | None = None, in_cluster: bool | None = None, settings=None) -> Read:
    """GET on the Kubernetes API as kubectl would (kubeconfig, or the pod's service account in a
    cluster): the decoded JSON, None on 404, `ClusterReadError` otherwise (one line)."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    if in_cluster if in_cluster is not None else (s.in_cluster and not kubeconfig):
        config.load_incluster_config()
        api = client.ApiClient()
    else:
        try:
            api = config.new_client_from_config(config_file=kubeconfig, context=context)
        except (config.ConfigException, OSError) as exc:
            raise ClusterReadError(f"no usable kubeconfig ({kubeconfig or '~/.kube/config'}): {exc}") from exc
    timeout = (s.net_connect_timeout_seconds, s.net_timeout_seconds)

    def read(path: str) -> dict | None:
        try:
            return api.call_api(
                path,
                "GET",
                response_type="object",
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=timeout,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ClusterReadError(f"GET {path}: HTTP {exc.status} {str(exc.reason or '')[:120]}") from exc
        except Exception as exc:  # urllib3 connection errors, timeouts
            raise ClusterReadError(f"GET {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from exc

    return read
