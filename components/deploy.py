"""Stage 7 — deploy: put a registered version in front of users as a canary.

After `register`, the new version gets alias `challenger` and a first slice of
traffic (the first rollout step, or a shadow copy):

- locally: the split file of the local KServe ModelServer (`kfct.serving.split_state`),
  which a running `kfct serve` watches and applies without a restart;
- on a cluster: the InferenceService is created, or patched with the new model's
  `storageUri` (its MLflow artifact in MinIO) and `canaryTrafficPercent`, through the
  kserve SDK's `KServeClient`. KServe then runs the previous revision and the new
  one side by side with that split.

The very first model has no champion to be compared with: it becomes `champion`
directly and takes all traffic. A version that already is the champion (registered
without a rollout configured) is put in front of all traffic the same way, so a
running server follows the registry. Nothing here moves `champion` otherwise; the
rollout stage decides that.
"""

from typing import Any

from kfct.errors import KfctError

ISVC_API_VERSION = "serving.kserve.io/v1beta1"
RUNTIME_NAME = "kfct-predictor"
MODEL_FORMAT = "kfct-churn"
SERVICE_ACCOUNT = "kfct-serving"


class DeployError(KfctError):
    """The version cannot be deployed (unknown version, cluster API error)."""


# -- InferenceService objects (kserve SDK models) ------------------------------------------------

def model_storage_uri(model_name: str, version: str) -> str:
    """Where the version's MLflow artifact lives (s3://... when MLflow stores artifacts in MinIO)."""
    from kfct import registry

    return registry.client().get_model_version_download_uri(model_name, str(version))


def build_inference_service(model_name: str, version: str, name: str | None = None, namespace: str = "kfct",
                            canary_percent: float | None = None, storage_uri: str | None = None,
                            sha256: str | None = None, settings=None, min_replicas: int = 1):
    """A `V1beta1InferenceService` serving `version` with the kfct ServingRuntime."""
    from kfct.serving import _kserve

    _kserve.load()  # kserve parses sys.argv on first import; this import keeps it away from ours
    from kserve import (V1beta1InferenceService, V1beta1InferenceServiceSpec, V1beta1ModelFormat,
                        V1beta1ModelSpec, V1beta1PredictorSpec)
    from kubernetes.client import V1EnvVar, V1ObjectMeta, V1ResourceRequirements

    from kfct.settings import get_settings

    s = settings or get_settings()
    if storage_uri is None or sha256 is None:
        from kfct import registry

        mv = registry.client().get_model_version(model_name, str(version))
        sha256 = sha256 or (mv.tags or {}).get("model_sha256")
        storage_uri = storage_uri or model_storage_uri(model_name, version)
    if not sha256:
        raise DeployError(f"model {model_name} v{version} has no model_sha256 tag: the server could not verify it")
    isvc_name = name or model_name
    model = V1beta1ModelSpec(
        model_format=V1beta1ModelFormat(name=MODEL_FORMAT),
        runtime=RUNTIME_NAME,
        storage_uri=storage_uri,
        protocol_version="v2",
        args=["--model-dir", "/mnt/models"],
        env=[V1EnvVar(name="KFCT_MODEL_VERSION", value=str(version)),
             V1EnvVar(name="KFCT_MODEL_SHA256", value=sha256),
             V1EnvVar(name="KFCT_REGISTERED_MODEL", value=model_name)],
        resources=V1ResourceRequirements(requests={"cpu": "1", "memory": "1Gi"}, limits={"memory": "2Gi"}),
    )
    predictor = V1beta1PredictorSpec(model=model, min_replicas=min_replicas, service_account_name=SERVICE_ACCOUNT,
                                     canary_traffic_percent=None if canary_percent is None else int(round(canary_percent)))
    return V1beta1InferenceService(
        api_version=ISVC_API_VERSION,
        kind="InferenceService",
        metadata=V1ObjectMeta(name=isvc_name, namespace=namespace,
                              labels={"app.kubernetes.io/part-of": "kfct", "kfct/model": model_name},
                              annotations={"serving.kserve.io/enable-prometheus-scraping": "true",
                                           "kfct/model-version": str(version), "kfct/image": s.serving_image}),
        spec=V1beta1InferenceServiceSpec(predictor=predictor),
    )


def kserve_client(config_file: str | None = None, config_dict: dict | None = None):
    """KServeClient from kubeconfig (or in-cluster config inside a pod)."""
    from kfct.serving import _kserve

    kserve = _kserve.load()
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


def _exists(client, name: str, namespace: str) -> bool:
    try:
        client.get(name, namespace=namespace)
        return True
    except RuntimeError as exc:  # KServeClient wraps ApiException in RuntimeError
        if "404" in str(exc) or "Not Found" in str(exc):
            return False
        raise DeployError(f"cannot read InferenceService {namespace}/{name}: {str(exc).strip()[:300]}") from exc


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


def patch_traffic(client, name: str, namespace: str, percent: float) -> None:
    """Only `spec.predictor.canaryTrafficPercent` changes (a merge patch)."""
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


# -- the stage ------------------------------------------------------------------------------------

def converge_core(model_name: str, target: str = "local", client=None, namespace: str | None = None,
                  state_path=None, settings=None, reason: str = "") -> dict[str, Any]:
    """Make the split file (local) or InferenceService (cluster) follow the registry aliases.

    Runs on every deploy (and when the deploy stage finds its version superseded): whatever
    an earlier crash interrupted, what serves afterwards is what the aliases say.
    """
    from kfct import audit, registry
    from kfct.convergence import split_changes
    from kfct.settings import get_settings

    s = settings or get_settings()
    al = registry.aliases(model_name)
    out: dict[str, Any] = {"model_name": model_name, "target": target, "aliases": al, "changes": {}}
    if "champion" not in al:
        return out
    if target == "local":
        from kfct.serving.split_state import SplitState, read_state, update_state
        from kfct.serving.split_state import state_path as default_path

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
        ann = ((live or {}).get("metadata") or {}).get("annotations") or {} if isinstance(live, dict) else {}
        served = ann.get("kfct/model-version")
        pct = ((((live or {}).get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
               if isinstance(live, dict) else None)
        chal = al.get("challenger")
        if served != al["champion"] and not (served == chal and pct not in (None, 100)):
            isvc = build_inference_service(model_name, al["champion"], namespace=ns, settings=s, canary_percent=100)
            action = apply_inference_service(client, isvc, model_name, ns)
            out.update(changes={"champion_version": al["champion"]},
                       reasons=[f"InferenceService served v{served}, alias champion is v{al['champion']} ({action})"])
    if out["changes"]:
        audit.record("serving_converged", model_name=model_name, target=target, aliases=al,
                     changes=out["changes"], reasons=out.get("reasons"), reason=reason)
    return out


def deploy_core(model_name: str, version: str, cfg: dict, target: str = "local", canary_percent: float | None = None,
                shadow: bool = False, client=None, namespace: str | None = None, state_path=None,
                settings=None, require_alias: bool = False) -> dict[str, Any]:
    """Alias `challenger` + first traffic slice. Returns what was done (plain values).

    `require_alias` (the pipeline's deploy stage): a version that holds no alias while a newer
    one is champion was superseded by another run after its registration: nothing is moved
    and serving is only converged on the aliases as they are.
    """
    from kfct import audit, registry
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


def _deploy_locked(model_name: str, version: str, cfg: dict, target: str, canary_percent, shadow: bool, client,
                   namespace, state_path, s, require_alias: bool) -> dict[str, Any]:
    from kfct import audit, registry

    if require_alias:
        al = registry.aliases(model_name)
        champ = al.get("champion")
        if version not in al.values() and champ and champ.isdigit() and version.isdigit() and int(champ) > int(version):
            conv = converge_core(model_name, target, client, namespace, state_path, s,
                                 reason=f"v{version} superseded before its deploy")
            out = {"model_name": model_name, "version": version, "target": target, "mode": "superseded",
                   "alias": None, "aliases": al, "converged": conv.get("changes"),
                   "action": f"v{version} holds no alias any more (aliases {al}): serving follows the aliases"}
            audit.record("deploy_superseded", **{k: v for k, v in out.items() if k != "model_name"},
                         model_name=model_name)
            return out
    try:
        mv = registry.client().get_model_version(model_name, version)
    except Exception as exc:
        raise DeployError(f"model {model_name} v{version} is not registered: {exc}") from exc
    if (mv.tags or {}).get("rejected") == "true":
        raise DeployError(f"model {model_name} v{version} was rejected by an earlier rollout; register a new version")
    champion = registry.alias_version(model_name, "champion")
    steps = (cfg.get("rollout") or {}).get("steps") or [10]
    pct = float(canary_percent if canary_percent is not None else (0.0 if shadow else steps[0]))
    if not 0 <= pct <= 100:
        raise DeployError(f"canary percent must be within 0..100, got {pct:g}")
    direct = champion is None or champion == version  # first model, or registered straight as champion
    out: dict[str, Any] = {"model_name": model_name, "version": version, "target": target,
                           "champion": champion, "mode": "shadow" if shadow else "canary"}
    if target == "local":
        from kfct.serving.split_state import state_path as default_path
        from kfct.serving.split_state import update_state

        path = state_path or default_path(model_name, s.home)
        if direct:  # a running `kfct serve` switches to it without a restart
            st = update_state(model_name, path, champion_version=version, canary_version=None, canary_percent=0.0,
                              mode="canary", reason=f"deploy v{version} as champion")
        else:
            st = update_state(model_name, path, champion_version=champion, canary_version=version,
                              canary_percent=0.0 if shadow else pct, mode="shadow" if shadow else "canary",
                              reason=f"deploy v{version} as {'shadow' if shadow else f'canary at {pct:g}%'}")
        out.update(state_path=str(path), generation=st.generation, action="split file updated")
    else:
        ns = namespace or s.kfp_namespace
        client = client or kserve_client()
        actions = []
        if not direct and not _exists(client, model_name, ns):
            # KServe splits between the previous and the latest revision: the champion must be there first.
            base = build_inference_service(model_name, champion, namespace=ns, settings=s)
            actions.append(apply_inference_service(client, base, model_name, ns) + f" v{champion}")
        isvc = build_inference_service(model_name, version, namespace=ns, settings=s,
                                       canary_percent=100 if direct else pct)
        actions.append(apply_inference_service(client, isvc, model_name, ns) + f" v{version}")
        out.update(namespace=ns, isvc=model_name, action=", ".join(actions))
        if shadow:
            out["note"] = "KServe has no shadow split; deployed as a canary at the given percent"

    if direct:
        if champion is None:
            registry.set_alias(model_name, "champion", version, reason="first model: no champion to compare with")
        out.update(alias="champion", canary_percent=100.0, mode="direct")
    else:
        if registry.alias_version(model_name, "challenger") != version:
            registry.set_alias(model_name, "challenger", version,
                               reason=f"deployed as {'shadow' if shadow else f'canary at {pct:g}%'}")
        out.update(alias="challenger", canary_percent=0.0 if shadow else pct)
    audit.record("model_deployed", **{k: v for k, v in out.items() if k != "model_name"}, model_name=model_name)
    if target == "local":  # the file now agrees with the aliases, whatever an earlier crash left
        conv = converge_core(model_name, target, state_path=out.get("state_path"), settings=s,
                             reason=f"deploy v{version}")
        if conv.get("changes"):
            out["converged"] = conv["changes"]
    return out


def deploy_model(config_json: str, model_name: str, version: str, target: str = "auto",
                 namespace: str = "") -> str:
    """Deploy the registered version as a canary (alias challenger): local router split or KServe InferenceService."""
    import json
    import os

    from kfct.components.deploy import deploy_core
    from kfct.config import config_from_json

    from kfct.testhooks import pause_at

    cfg = config_from_json(config_json)
    if target == "auto":
        target = "cluster" if os.environ.get("KUBERNETES_SERVICE_HOST") else "local"
    pause_at("before_deploy")
    if not version:  # register blocked at the hand-off: nothing to deploy; still follow the aliases
        from kfct.components.deploy import converge_core
        from kfct import registry

        registry.setup()
        conv = converge_core(model_name, target, namespace=namespace or None, reason="registration blocked")
        return json.dumps({"mode": "skipped", "version": "", "target": target, "reason": "nothing registered",
                           "converged": conv.get("changes")}, default=str)
    out = deploy_core(model_name, version, cfg, target=target, namespace=namespace or None, require_alias=True)
    return json.dumps(out, default=str)
