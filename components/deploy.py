"""Stage 7 — deploy: put a registered version in front of users as a canary.

After `register`, the new version gets alias `challenger` and a first slice of
traffic (the first rollout step, or a shadow copy):

- locally: the split file of the local KServe ModelServer (`kfct.split_state`),
  which a running `kfct serve` watches and applies without a restart;
- on a cluster: the InferenceService, through the kserve SDK, in the deployment mode
  it has (annotation `serving.kserve.io/deploymentMode`, else its status, else
  settings `kserve_deployment_mode`). Serverless (Knative): the predictor is patched
  with the new model's `storageUri` and `canaryTrafficPercent`; KServe runs the previous
  revision and the new one side by side. Standard (RawDeployment, KServe's default),
  which ignores `canaryTrafficPercent`: the champion stays the stable predictor and the
  new version becomes a `spec.canary` entry with `trafficPercent`. Either way the
  predictor names the serving image this code was compiled with, so a deploy also rolls
  new serving code.

The very first model has no champion to be compared with: it becomes `champion`
directly and takes all traffic. A version that already is the champion (registered
without a rollout configured) is put in front of all traffic the same way, so a
running server follows the registry. Nothing here moves `champion` otherwise; the
rollout stage decides that.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kfct.errors import KfctError

if TYPE_CHECKING:
    from kfct.config import RunConfig

ISVC_API_VERSION = "serving.kserve.io/v1beta1"
RUNTIME_NAME = "kfct-predictor"
MODEL_FORMAT = "kfct-churn"
SERVICE_ACCOUNT = "kfct-serving"


class DeployError(KfctError):
    """The version cannot be deployed (unknown version, cluster API error)."""


# -- KServe deployment modes ------------------------------------------------------------------------
# Serverless (Knative) splits traffic between revisions with `spec.predictor.canaryTrafficPercent`.
# Standard (RawDeployment, KServe's default without Knative) ignores that field without a word: a
# 10 % canary there would be a full rollout. Since KServe 0.20 Standard mode has `spec.canary`: named
# canary predictors, each its own Deployment `{isvc}-{name}-predictor`, with `trafficPercent`.

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
SERVERLESS, STANDARD = "Serverless", "Standard"
_MODES = {"serverless": SERVERLESS, "standard": STANDARD, "rawdeployment": STANDARD}


def normalise_mode(value) -> str:
    mode = _MODES.get(str(value or "").strip().lower())
    if mode is None:
        raise DeployError(f"unknown KServe deployment mode {value!r}: expected Standard (RawDeployment) or Serverless")
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
    from kfct import registry

    return registry.client().get_model_version_download_uri(model_name, str(version))


# Schemes KServe's storage initializer downloads (kserve_storage.Storage); `mlflow-artifacts:/`
# and `file://` (a pod's own disk) are not among them.
KSERVE_STORAGE_SCHEMES = ("s3", "gs", "https", "http", "hdfs", "webhdfs", "pvc", "oci", "hf")


def check_storage_uri(uri: str, model_name: str, version: str) -> str:
    from urllib.parse import urlparse

    scheme = urlparse(uri or "").scheme
    if scheme not in KSERVE_STORAGE_SCHEMES:
        raise DeployError(f"model {model_name} v{version} is stored at {uri!r}, which KServe's storage initializer "
                          f"cannot read: set KFCT_MLFLOW_ARTIFACT_ROOT to an s3:// root in MinIO (kfct-config)")
    return uri


def build_predictor(model_name: str, version: str, storage_uri: str | None = None, sha256: str | None = None,
                    settings=None, min_replicas: int | None = 1, name: str | None = None,
                    canary_percent: float | None = None):
    """A `V1beta1PredictorSpec` serving `version` with the kfct ServingRuntime and the serving image
    this code was built with (so a deploy rolls new serving code, not only a new model)."""
    from kfct import kserve_sdk

    kserve_sdk.load()  # kserve parses sys.argv on first import; this import keeps it away from ours
    from kserve import V1beta1ModelFormat, V1beta1ModelSpec, V1beta1PredictorSpec
    from kubernetes.client import V1EnvVar, V1ResourceRequirements

    from kfct.settings import get_settings

    s = settings or get_settings()
    if storage_uri is None or sha256 is None:
        from kfct import registry

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
        env=[V1EnvVar(name="KFCT_MODEL_VERSION", value=str(version)),
             V1EnvVar(name="KFCT_MODEL_SHA256", value=sha256),
             V1EnvVar(name="KFCT_REGISTERED_MODEL", value=model_name)],
        resources=V1ResourceRequirements(requests={"cpu": "1", "memory": "1Gi"}, limits={"memory": "2Gi"}),
    )
    return V1beta1PredictorSpec(model=model, min_replicas=min_replicas, service_account_name=SERVICE_ACCOUNT,
                                name=name,
                                canary_traffic_percent=None if canary_percent is None else int(round(canary_percent)))


def build_inference_service(model_name: str, version: str, name: str | None = None, namespace: str = "kfct",
                            canary_percent: float | None = None, storage_uri: str | None = None,
                            sha256: str | None = None, settings=None, min_replicas: int = 1,
                            mode: str | None = None, predictor_name: str | None = None):
    """A `V1beta1InferenceService` serving `version`, its deployment mode written explicitly.

    Serverless: `canary_percent` becomes `canaryTrafficPercent` (KServe splits between the
    previous and this revision). Standard: the stable predictor only (canaries are
    `spec.canary` entries: `build_canary`); `canary_percent` must be None or 100 there.
    """
    from kserve import V1beta1InferenceService, V1beta1InferenceServiceSpec
    from kubernetes.client import V1ObjectMeta

    from kfct.settings import get_settings

    s = settings or get_settings()
    mode = normalise_mode(mode or s.kserve_deployment_mode)
    if mode == STANDARD and canary_percent not in (None, 100):
        raise DeployError(f"Standard mode ignores canaryTrafficPercent ({canary_percent:g}%): use spec.canary")
    predictor = build_predictor(model_name, version, storage_uri, sha256, s, min_replicas, name=predictor_name,
                                canary_percent=canary_percent if mode == SERVERLESS else None)
    return V1beta1InferenceService(
        api_version=ISVC_API_VERSION,
        kind="InferenceService",
        metadata=V1ObjectMeta(name=name or model_name, namespace=namespace,
                              labels={"app.kubernetes.io/part-of": "kfct", "kfct/model": model_name},
                              annotations={"serving.kserve.io/enable-prometheus-scraping": "true",
                                           DEPLOYMENT_MODE_ANNOTATION: mode,
                                           "kfct/model-version": str(version), "kfct/image": s.serving_image}),
        spec=V1beta1InferenceServiceSpec(predictor=predictor),
    )


def build_canary(model_name: str, version: str, percent: float, storage_uri: str | None = None,
                 sha256: str | None = None, settings=None):
    """A Standard-mode `V1beta1CanarySpec`: predictor named `canary_name(version)` with `trafficPercent`.

    No minReplicas: KServe derives the canary's replicas from its traffic share."""
    from kserve import V1beta1CanarySpec

    pred = build_predictor(model_name, version, storage_uri, sha256, settings, min_replicas=None,
                           name=canary_name(version))
    return V1beta1CanarySpec(predictor=pred, traffic_percent=int(round(percent)))


def kserve_client(config_file: str | None = None, config_dict: dict | None = None):
    """KServeClient from kubeconfig (or in-cluster config inside a pod)."""
    from kfct import kserve_sdk

    kserve = kserve_sdk.load()
    return _with_timeouts(kserve.KServeClient(config_file=config_file, config_dict=config_dict))


def _with_timeouts(kclient, settings=None):
    """Give every Kubernetes request the Settings timeouts (connect, read).

    The kubernetes client sends `timeout=None` (wait forever) unless each call passes
    `_request_timeout`, which the kserve SDK never does: so each REST client this KServeClient
    holds gets that argument by default.
    """
    from kfct.settings import get_settings

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
            "serving.kserve.io", version, namespace, "inferenceservices", name, body)
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
        api_version=ISVC_API_VERSION, kind="InferenceService",
        metadata=V1ObjectMeta(name=name, namespace=namespace),
        spec=V1beta1InferenceServiceSpec(predictor=V1beta1PredictorSpec(canary_traffic_percent=int(round(percent)))),
    )
    try:
        client.patch(name, body, namespace=namespace)
    except RuntimeError as exc:
        raise DeployError(f"cannot set canaryTrafficPercent={percent:g} on {namespace}/{name}: "
                          f"{str(exc).strip()[:300]}") from exc


def set_canary(client, name: str, namespace: str, canary) -> dict:
    """Standard: `spec.canary` becomes exactly this one canary (a merge patch replaces the list)."""
    return merge_patch(client, name, namespace, {"spec": {"canary": [_serialize(canary)]}},
                       f"set spec.canary {canary.predictor.name} at {canary.traffic_percent}%")


def set_canary_traffic(client, name: str, namespace: str, version: str, percent: float) -> dict:
    """Standard: the canary of `version` keeps its predictor and gets `percent` of the traffic."""
    isvc = get_inference_service(client, name, namespace)
    entries = ((isvc or {}).get("spec") or {}).get("canary") or []
    mine = [c for c in entries if ((c.get("predictor") or {}).get("name")) == canary_name(version)]
    if not mine:
        raise DeployError(f"{namespace}/{name} has no spec.canary entry {canary_name(version)!r} for v{version}")
    entry = {**mine[0], "trafficPercent": int(round(percent))}
    return merge_patch(client, name, namespace, {"spec": {"canary": [entry]}},
                       f"set spec.canary {canary_name(version)} to {percent:g}%")


def promote_canary(client, name: str, namespace: str, version: str) -> dict:
    """Standard: the stable predictor becomes the canary's (same name: KServe retargets, no restart); no canary left."""
    isvc = get_inference_service(client, name, namespace)
    entries = ((isvc or {}).get("spec") or {}).get("canary") or []
    mine = [c for c in entries if ((c.get("predictor") or {}).get("name")) == canary_name(version)]
    if not mine:
        raise DeployError(f"{namespace}/{name} has no spec.canary entry {canary_name(version)!r} to promote")
    predictor = dict(mine[0]["predictor"])
    old = (((isvc or {}).get("spec") or {}).get("predictor") or {})
    for key in ("minReplicas", "serviceAccountName"):
        if key in old and key not in predictor:
            predictor[key] = old[key]
    # A merge patch merges maps: fields of the old stable predictor the canary lacks must be nulled.
    body_pred = {k: None for k in old if k not in predictor}
    body_pred.update(predictor)
    return merge_patch(client, name, namespace,
                       {"metadata": {"annotations": {"kfct/model-version": str(version)}},
                        "spec": {"predictor": body_pred, "canary": None}},
                       f"promote canary {canary_name(version)}")


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


def wait_canary_ready(client, name: str, namespace: str, mode: str, version: str, timeout: float = 600.0,
                      poll: float = 5.0, sleep=None) -> None:
    import time

    sleep = sleep or time.sleep
    deadline = time.monotonic() + timeout
    while True:
        ok, why = canary_ready(get_inference_service(client, name, namespace), mode, version)
        if ok:
            return
        if time.monotonic() >= deadline:
            raise DeployError(f"canary v{version} of {namespace}/{name} ({mode}) not ready after {timeout:g} s: {why}")
        sleep(poll)


# -- the stage ------------------------------------------------------------------------------------

def converge_serving(model_name: str, target: str = "local", client=None, namespace: str | None = None,
                  state_path=None, settings=None, reason: str = "") -> dict[str, Any]:
    """Make the split file (local) or InferenceService (cluster) follow the registry aliases.

    Runs on every deploy (and when the deploy stage finds its version superseded): whatever
    an earlier crash interrupted, what serves afterwards is what the aliases say.
    """
    from kfct import audit, registry
    from kfct.convergence import isvc_changes, split_changes
    from kfct.settings import get_settings

    s = settings or get_settings()
    al = registry.aliases(model_name)
    out: dict[str, Any] = {"model_name": model_name, "target": target, "aliases": al, "changes": {}}
    if "champion" not in al:
        return out
    if target == "local":
        from kfct.split_state import SplitState, read_state, update_state
        from kfct.split_state import state_path as default_path

        path = state_path or default_path(model_name, s.home)
        cur = read_state(path) or SplitState(model_name=model_name)
        changes, reasons = split_changes(cur.champion_version, cur.canary_version, cur.canary_percent, cur.mode, al)
        if changes:
            update_state(model_name, path, **changes, reason="converge on aliases: " + "; ".join(reasons))
            out.update(changes=changes, reasons=reasons)
    else:
        ns = namespace or s.kfp_namespace
        client = client or kserve_client()
        try:
            live = client.get(model_name, namespace=ns)
        except Exception as exc:  # RuntimeError from the SDK, urllib3 errors on timeouts
            if "404" not in str(exc) and "Not Found" not in str(exc):
                raise DeployError(f"cannot read InferenceService {ns}/{model_name}: {str(exc).strip()[:300]}") from exc
            live = None
        changes, reasons = isvc_changes(live, al)
        if changes:
            mode = detect_mode(live if isinstance(live, dict) else None, s.kserve_deployment_mode)
            isvc = build_inference_service(model_name, al["champion"], namespace=ns, settings=s, mode=mode,
                                           canary_percent=100 if mode == SERVERLESS else None)
            action = apply_inference_service(client, isvc, model_name, ns)
            out.update(changes=changes, reasons=[f"{reasons[0]} ({action})"])
    if out["changes"]:
        audit.record("serving_converged", model_name=model_name, target=target, aliases=al,
                     changes=out["changes"], reasons=out.get("reasons"), reason=reason)
    return out


def plan_deploy(model_name: str, version: str, champion: str | None, rejected: bool, cfg: "RunConfig", target: str,
                canary_percent: float | None = None, shadow: bool = False) -> dict[str, Any]:
    """What deploying `version` means, decided from plain values (no registry, no cluster).

    `direct`: the first model (no champion) or the champion itself takes all traffic;
    otherwise a canary (or shadow) at `percent`, by default the first rollout step.
    """
    if target not in ("local", "cluster"):
        raise DeployError(f"deploy target must be 'local' or 'cluster', got {target!r}")
    if rejected:
        raise DeployError(f"model {model_name} v{version} was rejected by an earlier rollout; register a new version")
    steps = cfg.rollout.steps or [10]
    pct = float(canary_percent if canary_percent is not None else (0.0 if shadow else steps[0]))
    if not 0 <= pct <= 100:
        raise DeployError(f"canary percent must be within 0..100, got {pct:g}")
    return {"direct": champion is None or champion == version, "percent": pct, "champion": champion}


def is_superseded(version: str, aliases: dict[str, str]) -> bool:
    """A version that holds no alias while a newer one is champion was overtaken by another run
    after its registration: deploying it would put an old model back in front of users."""
    champ = str(aliases.get("champion") or "")
    return version not in aliases.values() and champ.isdigit() and version.isdigit() and int(champ) > int(version)


@dataclass(frozen=True)
class DeployEffects:
    """What a deploy plan changes outside the cluster: the local split file (`update_state`
    arguments), the alias to move (alias, version, reason; None when it already is where it
    belongs) and the fields the report and audit record gain."""

    split: dict[str, Any]
    alias_move: tuple[str, str, str] | None
    report: dict[str, Any]


def plan_deploy_effects(version: str, plan: dict[str, Any], shadow: bool, challenger: str | None) -> DeployEffects:
    """`plan_deploy`'s decision -> its effects. `challenger`: the version alias `challenger`
    holds now (read beforehand; only needed for a canary)."""
    pct, champion = plan["percent"], plan["champion"]
    if plan["direct"]:  # a running `kfct serve` switches to it without a restart
        first = ("champion", version, "first model: no champion to compare with") if champion is None else None
        return DeployEffects({"champion_version": version, "canary_version": None, "canary_percent": 0.0,
                              "mode": "canary", "reason": f"deploy v{version} as champion"},
                             first, {"alias": "champion", "canary_percent": 100.0, "mode": "direct"})
    as_what = "shadow" if shadow else f"canary at {pct:g}%"
    share = 0.0 if shadow else pct
    move = None if challenger == version else ("challenger", version, f"deployed as {as_what}")
    return DeployEffects({"champion_version": champion, "canary_version": version, "canary_percent": share,
                          "mode": "shadow" if shadow else "canary", "reason": f"deploy v{version} as {as_what}"},
                         move, {"alias": "challenger", "canary_percent": share})


def plan_cluster_deploy(version: str, champion: str | None, direct: bool, percent: float, mode: str,
                        exists: bool) -> list[tuple]:
    """The InferenceService changes, in order: ("apply", version, canaryTrafficPercent or None),
    ("drop_canary",) (remove a leftover spec.canary) or ("canary", version, percent)."""
    steps: list[tuple] = []
    if not direct and not exists:
        # The canary is split against the champion: the champion must be served first.
        steps.append(("apply", str(champion), None))
    if mode == SERVERLESS:  # KServe splits between the previous and the latest revision
        steps.append(("apply", version, 100 if direct else percent))
    elif direct:
        steps += [("apply", version, None), ("drop_canary",)]
    else:
        steps.append(("canary", version, percent))
    return steps


def deploy_version(model_name: str, version: str, cfg: "RunConfig", target: str = "local", canary_percent: float | None = None,
                shadow: bool = False, client=None, namespace: str | None = None, state_path=None,
                settings=None, require_alias: bool = False) -> dict[str, Any]:
    """Alias `challenger` + first traffic slice. Returns what was done (plain values).

    The adapter around `plan_deploy`, `plan_deploy_effects` and `plan_cluster_deploy`: reads
    the registry, applies the plan (split file or InferenceService), moves the alias, records
    it in the audit trail — under the registry lock, so another run cannot move the champion
    between this read and write.
    `require_alias` (the pipeline's deploy stage): a version that holds no alias while a newer
    one is champion was superseded by another run after its registration: nothing is moved
    and serving is only converged on the aliases as they are.
    """
    from kfct import registry
    from kfct.settings import get_settings

    s = settings or get_settings()
    version = str(version)
    if target not in ("local", "cluster"):
        raise DeployError(f"deploy target must be 'local' or 'cluster', got {target!r}")
    registry.setup(s)
    # Reading the aliases and moving them is one step: another run's registration cannot move
    # the champion between this deploy's read and its write.
    with registry.champion_lock(model_name, s):
        return _deploy_locked(model_name, version, cfg, target, canary_percent, shadow, client, namespace,
                              state_path, s, require_alias)


def _deploy_locked(model_name: str, version: str, cfg: "RunConfig", target: str, canary_percent, shadow: bool, client,
                   namespace, state_path, s, require_alias: bool) -> dict[str, Any]:
    """Read, plan, then act: traffic first, then the alias, then the audit record."""
    from kfct import audit, registry

    if require_alias:
        al = registry.aliases(model_name)
        if is_superseded(version, al):
            return _deploy_superseded(model_name, version, target, al, client, namespace, state_path, s)
    try:
        mv = registry.client().get_model_version(model_name, version)
    except Exception as exc:
        raise DeployError(f"model {model_name} v{version} is not registered: {exc}") from exc
    champion = registry.alias_version(model_name, "champion")
    plan = plan_deploy(model_name, version, champion, (mv.tags or {}).get("rejected") == "true", cfg, target,
                       canary_percent, shadow)
    challenger = None if plan["direct"] else registry.alias_version(model_name, "challenger")
    effects = plan_deploy_effects(version, plan, shadow, challenger)
    out: dict[str, Any] = {"model_name": model_name, "version": version, "target": target,
                           "champion": champion, "mode": "shadow" if shadow else "canary"}
    if target == "local":
        out.update(_deploy_local(model_name, state_path, s, effects.split))
    else:
        out.update(_deploy_cluster(model_name, version, plan, shadow, client, namespace, s))
    if effects.alias_move is not None:
        alias, to, reason = effects.alias_move
        registry.set_alias(model_name, alias, to, reason=reason)
    out.update(effects.report)
    audit.record("model_deployed", **{k: v for k, v in out.items() if k != "model_name"}, model_name=model_name)
    if target == "local":  # the file now agrees with the aliases, whatever an earlier crash left
        conv = converge_serving(model_name, target, state_path=out.get("state_path"), settings=s,
                             reason=f"deploy v{version}")
        if conv.get("changes"):
            out["converged"] = conv["changes"]
    return out


def _deploy_superseded(model_name: str, version: str, target: str, al: dict[str, str], client, namespace,
                       state_path, s) -> dict[str, Any]:
    """Move nothing; serving converges on the aliases as they are, and the audit trail says why."""
    from kfct import audit

    conv = converge_serving(model_name, target, client, namespace, state_path, s,
                         reason=f"v{version} superseded before its deploy")
    out: dict[str, Any] = {"model_name": model_name, "version": version, "target": target, "mode": "superseded",
                           "alias": None, "aliases": al, "converged": conv.get("changes"),
                           "action": f"v{version} holds no alias any more (aliases {al}): serving follows the aliases"}
    audit.record("deploy_superseded", **{k: v for k, v in out.items() if k != "model_name"}, model_name=model_name)
    return out


def _deploy_local(model_name: str, state_path, s, split: dict[str, Any]) -> dict[str, Any]:
    """The split file a running `kfct serve` watches gets the planned split."""
    from kfct.split_state import state_path as default_path
    from kfct.split_state import update_state

    path = state_path or default_path(model_name, s.home)
    st = update_state(model_name, path, **split)
    return {"state_path": str(path), "generation": st.generation, "action": "split file updated"}


def _deploy_cluster(model_name: str, version: str, plan: dict[str, Any], shadow: bool, client, namespace,
                    s) -> dict[str, Any]:
    """The InferenceService, in the mode it has, gets the steps `plan_cluster_deploy` lists."""
    ns = namespace or s.kfp_namespace
    client = client or kserve_client()
    existing = get_inference_service(client, model_name, ns)
    mode = detect_mode(existing, s.kserve_deployment_mode)
    actions = []
    for step in plan_cluster_deploy(version, plan["champion"], plan["direct"], plan["percent"], mode,
                                    existing is not None):
        if step[0] == "apply":
            isvc = build_inference_service(model_name, step[1], namespace=ns, settings=s, mode=mode,
                                           canary_percent=step[2])
            actions.append(apply_inference_service(client, isvc, model_name, ns) + f" v{step[1]}")
        elif step[0] == "drop_canary":
            if ((get_inference_service(client, model_name, ns) or {}).get("spec") or {}).get("canary"):
                remove_canary(client, model_name, ns)
                actions.append("removed spec.canary")
        else:
            set_canary(client, model_name, ns, build_canary(model_name, step[1], step[2], settings=s))
            actions.append(f"spec.canary {canary_name(step[1])} at {step[2]:g}%")
    out: dict[str, Any] = {"namespace": ns, "isvc": model_name, "deployment_mode": mode, "image": s.serving_image,
                           "action": ", ".join(actions)}
    if shadow:
        out["note"] = "KServe has no shadow split; deployed as a canary at the given percent"
    return out


def deploy_model(config_json: str, model_name: str, version: str, target: str = "auto",
                 namespace: str = "") -> str:
    """Deploy the registered version as a canary (alias challenger): local router split or KServe InferenceService."""
    from kfct.stage import stage

    with stage("deploy-model", config_json, model_name=model_name) as st:
        import json

        from kfct.components.deploy import deploy_version
        from kfct.settings import get_settings

        from kfct.testhooks import pause_at

        cfg = st.config
        s = get_settings()
        target = s.target(target)
        pause_at("before_deploy")
        if not version:  # register blocked at the hand-off: nothing to deploy; still follow the aliases
            from kfct.components.deploy import converge_serving
            from kfct import registry

            registry.setup(s)
            conv = converge_serving(model_name, target, namespace=namespace or None, settings=s,
                                 reason="registration blocked")
            return json.dumps({"mode": "skipped", "version": "", "target": target, "reason": "nothing registered",
                               "converged": conv.get("changes")}, default=str)
        out = deploy_version(model_name, version, cfg, target=target, namespace=namespace or None, settings=s,
                          require_alias=True)
        st.log.info("deployed %s v%s: alias %s, %s %g%% (%s)", model_name, version,
                                                    out.get("alias"), out.get("mode"), out.get("canary_percent", 0),
                                                    out.get("action"))
        return json.dumps({**out, "stage_time": st.times()}, default=str)
