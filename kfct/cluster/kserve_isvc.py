"""The KServe InferenceService adapter: what kfct reads from and writes to the cluster.

Shared by the deploy stage, the rollout stage, `kfct ab`/`kfct rollback` and `kfct cluster check`,
so each reads a deployment mode, names a predictor and judges a canary the same way:

- modes: `normalise_mode` / `detect_mode` (KServe's spellings, as its webhook stores them);
- names: the Standard-mode canary and predictor workloads (`canary_name`, `predictor_workload`);
- objects: `build_inference_service`, `build_predictor`, `build_canary` (kserve SDK models);
- reads and patches: `kserve_client`, `get_inference_service`, `apply_inference_service`,
  `merge_patch`, `patch_traffic`, `set_canary`, `set_canary_traffic`, `promote_canary`,
  `remove_canary`;
- readiness: `canary_ready` (the canary's own status) and `canary_routed` (the Gateway API
  HTTPRoute really carries its weight; `get_http_route`), waited on by `wait_canary_ready`;
- the address clients score at: `stable_address` (`status.url`, through the gateway).

Decisions stay with the stages (pure functions there); this module only talks to the API.
"""

from __future__ import annotations

from kfct.errors import KfctError

ISVC_API_VERSION = "serving.kserve.io/v1beta1"
RUNTIME_NAME = "kfct-predictor"
MODEL_FORMAT = "kfct-churn"
SERVICE_ACCOUNT = "kfct-serving"


class DeployError(KfctError):
    """An InferenceService cannot be read, built or changed as asked (the deploy and rollout stages'
    error: components.deploy re-exports it)."""


# -- KServe deployment modes ------------------------------------------------------------------------
# Knative (formerly Serverless) splits traffic between revisions with `spec.predictor.canaryTrafficPercent`.
# Standard (formerly RawDeployment, KServe's default without Knative) ignores that field without a word: a
# 10 % canary there would be a full rollout. Since KServe 0.20 Standard mode has `spec.canary`: named
# canary predictors, each its own Deployment `{isvc}-{name}-predictor`, with `trafficPercent`.

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# KServe's names (pkg/constants/constants.go, v0.20): `Knative` and `Standard`. Its mutating webhook
# (pkg/apis/serving/v1beta1/inference_service_defaults.go) rewrites the deprecated spellings on CREATE
# and UPDATE, Serverless -> Knative and RawDeployment -> Standard, and the controller writes
# `status.deploymentMode` the same way: what we read back is never what an older manifest wrote.
KNATIVE, STANDARD = "Knative", "Standard"
SERVERLESS = KNATIVE  # the deprecated name of the same mode (KServe < 0.15 spelled it so)
_MODES = {"knative": KNATIVE, "serverless": KNATIVE, "standard": STANDARD, "rawdeployment": STANDARD}


def normalise_mode(value) -> str:
    """KServe's canonical mode name for any spelling it accepts (any case), or one clear error."""
    key = str(value or "").strip().lower()
    if key == "modelmesh":
        raise DeployError("KServe deployment mode 'ModelMesh' is not supported by kfct: use Standard or Knative")
    mode = _MODES.get(key)
    if mode is None:
        raise DeployError(f"unknown KServe deployment mode {value!r}: expected Standard (RawDeployment) or Knative (Serverless)")
    return mode


def detect_mode(isvc: dict | None, default: str) -> str:
    """The mode of an existing InferenceService: its annotation (what was asked), else
    `status.deploymentMode` (what the controller chose), else `default` (a new one)."""
    if isvc:
        ann = ((isvc.get("metadata") or {}).get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION)
        if ann:
            return normalise_mode(ann)
        status_mode = (isvc.get("status") or {}).get("deploymentMode")
        if status_mode:
            return normalise_mode(status_mode)
    return normalise_mode(default)


def canary_name(version: str) -> str:
    """Name of a Standard-mode canary predictor (a DNS label: Deployment `{isvc}-v7-predictor`)."""
    return f"v{version}"


def predictor_workload(isvc_name: str, predictor_name: str | None) -> str:
    """Deployment / Service name of a Standard-mode predictor (stable: unnamed or renamed by a promotion)."""
    return f"{isvc_name}-{predictor_name}-predictor" if predictor_name else f"{isvc_name}-predictor"


# -- InferenceService objects (kserve SDK models) ------------------------------------------------


def model_storage_uri(model_name: str, version: str) -> str:
    """Where the version's MLflow artifact lives (s3://... when MLflow stores artifacts in MinIO)."""
    from kfct.governance import registry

    return registry.client().get_model_version_download_uri(model_name, str(version))


# Schemes KServe's storage initializer downloads (kserve_storage.Storage); `mlflow-artifacts:/`
# and `file://` (a pod's own disk) are not among them.
KSERVE_STORAGE_SCHEMES = ("s3", "gs", "https", "http", "hdfs", "webhdfs", "pvc", "oci", "hf")


def check_storage_uri(uri: str, model_name: str, version: str) -> str:
    from urllib.parse import urlparse

    scheme = urlparse(uri or "").scheme
    if scheme not in KSERVE_STORAGE_SCHEMES:
        raise DeployError(
            f"model {model_name} v{version} is stored at {uri!r}, which KServe's storage initializer "
            f"cannot read: set KFCT_MLFLOW_ARTIFACT_ROOT to an s3:// root in MinIO (kfct-config)"
        )
    return uri


def build_predictor(
    model_name: str,
    version: str,
    storage_uri: str | None = None,
    sha256: str | None = None,
    settings=None,
    min_replicas: int | None = 1,
    name: str | None = None,
    canary_percent: float | None = None,
    reference_version: str | None = None,
):
    """A `V1beta1PredictorSpec` serving `version` with the kfct ServingRuntime and the serving image
    this code was built with (so a deploy rolls new serving code, not only a new model).

    `reference_version`: a canary's champion. The pod loads it too and scores its requests with both
    (KFCT_PAIRED_REFERENCE_VERSION, `kfct.serving.server.attach_reference`), so the rollout judges the
    canary against the champion on the same requests (kfct_paired_* series), not on whatever rows a
    client chose to send each arm."""
    from kfct.cluster import kserve_sdk

    kserve_sdk.load()  # kserve parses sys.argv on first import; this import keeps it away from ours
    from kserve import V1beta1ModelFormat, V1beta1ModelSpec, V1beta1PredictorSpec
    from kubernetes.client import V1EnvVar, V1PodSecurityContext, V1ResourceRequirements, V1SeccompProfile

    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    if storage_uri is None or sha256 is None:
        from kfct.governance import registry

        mv = registry.client().get_model_version(model_name, str(version))
        sha256 = sha256 or (mv.tags or {}).get("model_sha256")
        storage_uri = storage_uri or model_storage_uri(model_name, version)
    if not sha256:
        raise DeployError(f"model {model_name} v{version} has no model_sha256 tag: the server could not verify it")
    check_storage_uri(storage_uri, model_name, version)
    model = V1beta1ModelSpec(
        model_format=V1beta1ModelFormat(name=MODEL_FORMAT),
        runtime=RUNTIME_NAME,
        image=s.serving_image,
        storage_uri=storage_uri,
        protocol_version="v2",
        args=["--model-dir", "/mnt/models"],
        env=[
            V1EnvVar(name="KFCT_MODEL_VERSION", value=str(version)),
            V1EnvVar(name="KFCT_MODEL_SHA256", value=sha256),
            V1EnvVar(name="KFCT_REGISTERED_MODEL", value=model_name),
        ]
        + (
            [V1EnvVar(name="KFCT_PAIRED_REFERENCE_VERSION", value=str(reference_version))]
            if reference_version and str(reference_version) != str(version)
            else []
        ),
        resources=V1ResourceRequirements(requests={"cpu": "1", "memory": "1Gi"}, limits={"memory": "2Gi"}),
    )
    # PodSecurity `restricted` at pod level, as manifests/base/serving/inferenceservice.yaml: it also
    # covers the storage-initializer KServe injects (the runtime's container has the rest).
    pod_security = V1PodSecurityContext(seccomp_profile=V1SeccompProfile(type="RuntimeDefault"))
    return V1beta1PredictorSpec(
        model=model,
        min_replicas=min_replicas,
        service_account_name=SERVICE_ACCOUNT,
        name=name,
        security_context=pod_security,
        canary_traffic_percent=None if canary_percent is None else round(canary_percent),
    )


def build_inference_service(
    model_name: str,
    version: str,
    name: str | None = None,
    namespace: str = "kfct",
    canary_percent: float | None = None,
    storage_uri: str | None = None,
    sha256: str | None = None,
    settings=None,
    min_replicas: int = 1,
    mode: str | None = None,
    predictor_name: str | None = None,
    reference_version: str | None = None,
):
    """A `V1beta1InferenceService` serving `version`, its deployment mode written explicitly.

    Serverless: `canary_percent` becomes `canaryTrafficPercent` (KServe splits between the
    previous and this revision). Standard: the stable predictor only (canaries are
    `spec.canary` entries: `build_canary`); `canary_percent` must be None or 100 there.
    """
    from kserve import V1beta1InferenceService, V1beta1InferenceServiceSpec
    from kubernetes.client import V1ObjectMeta

    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    mode = normalise_mode(mode or s.kserve_deployment_mode)
    if mode == STANDARD and canary_percent not in (None, 100):
        raise DeployError(f"Standard mode ignores canaryTrafficPercent ({canary_percent:g}%): use spec.canary")
    predictor = build_predictor(
        model_name,
        version,
        storage_uri,
        sha256,
        s,
        min_replicas,
        name=predictor_name,
        canary_percent=canary_percent if mode == SERVERLESS else None,
        reference_version=reference_version,
    )
    return V1beta1InferenceService(
        api_version=ISVC_API_VERSION,
        kind="InferenceService",
        metadata=V1ObjectMeta(
            name=name or model_name,
            namespace=namespace,
            labels={"app.kubernetes.io/part-of": "kfct", "kfct/model": model_name},
            annotations={
                "serving.kserve.io/enable-prometheus-scraping": "true",
                DEPLOYMENT_MODE_ANNOTATION: mode,
                "kfct/model-version": str(version),
                "kfct/image": s.serving_image,
            },
        ),
        spec=V1beta1InferenceServiceSpec(predictor=predictor),
    )


def build_canary(
    model_name: str,
    version: str,
    percent: float,
    storage_uri: str | None = None,
    sha256: str | None = None,
    settings=None,
    reference_version: str | None = None,
):
    """A Standard-mode `V1beta1CanarySpec`: predictor named `canary_name(version)` with `trafficPercent`.

    No minReplicas: KServe derives the canary's replicas from its traffic share."""
    from kserve import V1beta1CanarySpec

    pred = build_predictor(
        model_name,
        version,
        storage_uri,
        sha256,
        settings,
        min_replicas=None,
        name=canary_name(version),
        reference_version=reference_version,
    )
    return V1beta1CanarySpec(predictor=pred, traffic_percent=round(percent))


def kserve_client(config_file: str | None = None, config_dict: dict | None = None):
    """KServeClient from kubeconfig (or in-cluster config inside a pod)."""
    from kfct.cluster import kserve_sdk

    kserve = kserve_sdk.load()
    return _with_timeouts(kserve.KServeClient(config_file=config_file, config_dict=config_dict))


def _with_timeouts(kclient, settings=None):
    """Give every Kubernetes request the Settings timeouts (connect, read).

    The kubernetes client sends `timeout=None` (wait forever) unless each call passes
    `_request_timeout`, which the kserve SDK never does: so each REST client this KServeClient
    holds gets that argument by default.
    """
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    timeout = (s.net_connect_timeout_seconds, s.net_timeout_seconds)
    seen: set[int] = set()
    for api in list(vars(kclient).values()):
        rest = getattr(getattr(api, "api_client", None), "rest_client", None)
        if rest is None or id(rest) in seen:
            continue
        seen.add(id(rest))

        def request(*args, _orig=rest.request, _request_timeout=None, **kwargs):
            return _orig(*args, _request_timeout=_request_timeout or timeout, **kwargs)

        rest.request = request
    return kclient


def _not_found(exc: Exception) -> bool:
    return "404" in str(exc) or "Not Found" in str(exc)


def get_inference_service(client, name: str, namespace: str) -> dict | None:
    """The InferenceService as the API returns it (a dict), or None when there is none."""
    try:
        return client.get(name, namespace=namespace)
    except RuntimeError as exc:  # KServeClient wraps ApiException in RuntimeError
        if _not_found(exc):
            return None
        raise DeployError(f"cannot read InferenceService {namespace}/{name}: {str(exc).strip()[:300]}") from exc


def _exists(client, name: str, namespace: str) -> bool:
    return get_inference_service(client, name, namespace) is not None


def apply_inference_service(client, isvc, name: str, namespace: str) -> str:
    """Create, or merge-patch an existing one. Returns 'created' or 'patched'."""
    try:
        if _exists(client, name, namespace):
            client.patch(name, isvc, namespace=namespace)
            return "patched"
        client.create(isvc, namespace=namespace)
        return "created"
    except RuntimeError as exc:
        raise DeployError(f"InferenceService {namespace}/{name}: {str(exc).strip()[:300]}") from exc


def merge_patch(client, name: str, namespace: str, body: dict, what: str) -> dict:
    """A JSON merge patch given as a dict, so `None` travels as null and removes a field
    (KServeClient.patch takes SDK models, which drop None)."""
    from kubernetes.client.rest import ApiException

    version = ISVC_API_VERSION.split("/")[1]
    try:
        return client.api_instance.patch_namespaced_custom_object(
            "serving.kserve.io", version, namespace, "inferenceservices", name, body
        )
    except ApiException as exc:
        raise DeployError(f"cannot {what} on {namespace}/{name}: HTTP {exc.status} {str(exc.body or exc.reason)[:300]}") from exc


def _serialize(obj) -> dict:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def patch_traffic(client, name: str, namespace: str, percent: float) -> None:
    """Serverless: only `spec.predictor.canaryTrafficPercent` changes (a merge patch)."""
    from kserve import V1beta1InferenceService, V1beta1InferenceServiceSpec, V1beta1PredictorSpec
    from kubernetes.client import V1ObjectMeta

    body = V1beta1InferenceService(
        api_version=ISVC_API_VERSION,
        kind="InferenceService",
        metadata=V1ObjectMeta(name=name, namespace=namespace),
        spec=V1beta1InferenceServiceSpec(predictor=V1beta1PredictorSpec(canary_traffic_percent=round(percent))),
    )
    try:
        client.patch(name, body, namespace=namespace)
    except RuntimeError as exc:
        raise DeployError(f"cannot set canaryTrafficPercent={percent:g} on {namespace}/{name}: {str(exc).strip()[:300]}") from exc


def set_canary(client, name: str, namespace: str, canary) -> dict:
    """Standard: `spec.canary` becomes exactly this one canary (a merge patch replaces the list)."""
    return merge_patch(
        client,
        name,
        namespace,
        {"spec": {"canary": [_serialize(canary)]}},
        f"set spec.canary {canary.predictor.name} at {canary.traffic_percent}%",
    )


def set_canary_traffic(client, name: str, namespace: str, version: str, percent: float) -> dict:
    """Standard: the canary of `version` keeps its predictor and gets `percent` of the traffic."""
    isvc = get_inference_service(client, name, namespace)
    entries = ((isvc or {}).get("spec") or {}).get("canary") or []
    mine = [c for c in entries if ((c.get("predictor") or {}).get("name")) == canary_name(version)]
    if not mine:
        raise DeployError(f"{namespace}/{name} has no spec.canary entry {canary_name(version)!r} for v{version}")
    entry = {**mine[0], "trafficPercent": round(percent)}
    return merge_patch(
        client, name, namespace, {"spec": {"canary": [entry]}}, f"set spec.canary {canary_name(version)} to {percent:g}%"
    )


def promote_canary(client, name: str, namespace: str, version: str) -> dict:
    """Standard: the stable predictor becomes the canary's (same name: KServe retargets, no restart); no canary left."""
    isvc = get_inference_service(client, name, namespace)
    entries = ((isvc or {}).get("spec") or {}).get("canary") or []
    mine = [c for c in entries if ((c.get("predictor") or {}).get("name")) == canary_name(version)]
    if not mine:
        raise DeployError(f"{namespace}/{name} has no spec.canary entry {canary_name(version)!r} to promote")
    predictor = dict(mine[0]["predictor"])
    old = ((isvc or {}).get("spec") or {}).get("predictor") or {}
    for key in ("minReplicas", "serviceAccountName"):
        if key in old and key not in predictor:
            predictor[key] = old[key]
    # A merge patch merges maps: fields of the old stable predictor the canary lacks must be nulled.
    body_pred = {k: None for k in old if k not in predictor}
    body_pred.update(predictor)
    return merge_patch(
        client,
        name,
        namespace,
        {"metadata": {"annotations": {"kfct/model-version": str(version)}}, "spec": {"predictor": body_pred, "canary": None}},
        f"promote canary {canary_name(version)}",
    )


def remove_canary(client, name: str, namespace: str) -> dict:
    """Standard: no canary: all traffic on the stable predictor at once."""
    return merge_patch(client, name, namespace, {"spec": {"canary": None}}, "remove spec.canary")


def canary_ready(isvc: dict | None, mode: str, version: str) -> tuple[bool, str]:
    """(ready, why) read from the canary's own status, not the InferenceService's overall Ready.

    Standard: `status.canaryStatuses[name == v<version>].ready`. Serverless: the predictor's
    latest created revision is also its latest ready one, and that revision runs `version`
    (the spec the controller observed, `observedGeneration` == `generation`).
    """
    status = (isvc or {}).get("status") or {}
    if mode == STANDARD:
        for c in status.get("canaryStatuses") or []:
            if c.get("name") == canary_name(version):
                return bool(c.get("ready")), f"canary {canary_name(version)} ready={c.get('ready')}"
        return False, f"no canaryStatuses entry {canary_name(version)!r} yet"
    meta = (isvc or {}).get("metadata") or {}
    if status.get("observedGeneration") is not None and status.get("observedGeneration") != meta.get("generation"):
        return False, f"controller has not observed generation {meta.get('generation')} yet"
    pred = (status.get("components") or {}).get("predictor") or {}
    created, ready = pred.get("latestCreatedRevision"), pred.get("latestReadyRevision")
    if not created:
        return False, "no predictor revision created yet"
    return created == ready, f"latest revision {created}, latest ready {ready}"


# -- the Gateway API route: where Standard-mode canary weights really live ----------------------
# KServe v0.20 (kserve/kserve aaac4e294) applies `spec.canary[].trafficPercent` only in its Gateway API
# reconciler (pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/httproute_reconciler.go,
# `applyCanaryWeights`), which runs only with `"enableGatewayApi": true` in the `ingress` entry of
# the `inferenceservice-config` ConfigMap (off by default). It writes the HTTPRoute named after the
# service (`createRawTopLevelHTTPRoute`; host = status.url, through the gateway) and `<isvc>-predictor`:
# the stable backendRef `<isvc>[-<predictor name>]-predictor` at `100 - sum(ready canaries)` and one
# backendRef `<isvc>-<canary name>-predictor` at its trafficPercent per canary whose
# `status.canaryStatuses` entry is ready. With the Ingress reconciler the canary runs and serves nothing.

GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"
ENABLE_GATEWAY_FIX = (
    'set "enableGatewayApi": true in the ingress entry of the kserve/inferenceservice-config '
    "ConfigMap (KServe >= 0.20, Gateway API CRDs installed)"
)


class RouteUnavailable(DeployError):
    """The cluster serves no HTTPRoute resource at all (the Gateway API CRDs are not installed)."""


def get_http_route(client, name: str, namespace: str) -> dict | None:
    """The HTTPRoute `namespace/name` (a dict), None when there is none; `RouteUnavailable` when the
    API serves no httproutes: its 404 then names no object (`details` without `name`), as the
    apiserver answers for a resource it does not know."""
    import json

    from kubernetes.client.rest import ApiException

    try:
        return client.api_instance.get_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, namespace, "httproutes", name)
    except ApiException as exc:
        if exc.status != 404:
            raise DeployError(
                f"cannot read HTTPRoute {namespace}/{name}: HTTP {exc.status} {str(exc.body or exc.reason)[:300]}"
            ) from exc
        try:
            details = (json.loads(exc.body or "{}") or {}).get("details") or {}
        except ValueError:
            details = {}
        if not details.get("name"):
            raise RouteUnavailable(
                f"Gateway API missing: the cluster serves no httproutes.{GATEWAY_GROUP}, so a "
                f"Standard-mode canary would get no traffic: {ENABLE_GATEWAY_FIX}"
            ) from exc
        return None


def no_route_reason(name: str, namespace: str) -> str:
    return (
        f"no HTTPRoute {namespace}/{name}: KServe's Gateway API is disabled (or the service is "
        f"cluster-local), so a Standard-mode canary would get no traffic: {ENABLE_GATEWAY_FIX}"
    )


def route_backends(route: dict) -> list[list[tuple[str, int | None]]]:
    """(Service name, weight) of each rule's backendRefs (rules without backends left out)."""
    rules = ((route or {}).get("spec") or {}).get("rules") or []
    return [[(str(b.get("name")), b.get("weight")) for b in r.get("backendRefs") or []] for r in rules if r.get("backendRefs")]


def canary_routed(isvc: dict | None, route: dict | None, version: str) -> tuple[bool, str]:
    """(routed, why): every rule of the service's HTTPRoute sends the canary of `version` the weight
    its `spec.canary` entry asks for. Pure: both objects are read beforehand."""
    meta = (isvc or {}).get("metadata") or {}
    name, ns = meta.get("name", "?"), meta.get("namespace", "?")
    if route is None:
        return False, no_route_reason(name, ns)
    entries = [
        c
        for c in ((isvc or {}).get("spec") or {}).get("canary") or []
        if (c.get("predictor") or {}).get("name") == canary_name(version)
    ]
    if not entries:
        return False, f"{ns}/{name} has no spec.canary entry {canary_name(version)!r}"
    want = int(entries[0].get("trafficPercent") or 0)
    service = predictor_workload(name, canary_name(version))
    rules = route_backends(route)
    for refs in rules or [[]]:
        if (service, want) not in refs:
            return False, (
                f"HTTPRoute {ns}/{name} does not carry canary {canary_name(version)}'s weight (wants "
                f"backendRef {service} at {want}, has {refs}): KServe applies spec.canary weights "
                f"only from 0.20 on, with Gateway API"
            )
    return True, f"HTTPRoute {ns}/{name} sends {want}% to {service}"


def stable_address(isvc: dict | None) -> str | None:
    """Where clients score: `status.url`, the host of the service's top-level HTTPRoute
    (`createRawURL`, default domainTemplate `<isvc>-<namespace>.<ingressDomain>`), reached through
    the gateway, so the canary split applies and the address survives promotions. Not
    `status.address.url`: that is the stable predictor Service, which bypasses the split and is
    renamed `<isvc>-v<N>-predictor` at each promotion."""
    url = ((isvc or {}).get("status") or {}).get("url")
    return str(url) if url else None


def wait_canary_ready(
    client, name: str, namespace: str, mode: str, version: str, timeout: float = 600.0, poll: float = 5.0, sleep=None
) -> None:
    """Until the canary's own status says ready and, in Standard mode, the HTTPRoute carries its
    weight (KServe writes the weight only once the canary is ready); one line on timeout."""
    import time

    sleep = sleep or time.sleep
    deadline = time.monotonic() + timeout
    while True:
        isvc = get_inference_service(client, name, namespace)
        ok, why = canary_ready(isvc, mode, version)
        if ok and mode == STANDARD:
            ok, why = canary_routed(isvc, get_http_route(client, name, namespace), version)
            if not ok and time.monotonic() >= deadline:
                raise DeployError(f"canary v{version} of {namespace}/{name} gets no traffic: {why}")
        if ok:
            return
        if time.monotonic() >= deadline:
            raise DeployError(f"canary v{version} of {namespace}/{name} ({mode}) not ready after {timeout:g} s: {why}")
        sleep(poll)
