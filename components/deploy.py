"""Stage 7 — deploy: put a registered version in front of users as a canary.

After `register`, the new version gets alias `challenger` and a first slice of
traffic (the first rollout step, or a shadow copy):

- locally: the split file of the local KServe ModelServer (`kfct.split_state`),
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
    from kfct import kserve_sdk

    kserve_sdk.load()  # kserve parses sys.argv on first import; this import keeps it away from ours
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
    from kfct import kserve_sdk

    kserve = kserve_sdk.load()
    return kserve.KServeClient(config_file=config_file, config_dict=config_dict)


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

def plan_deploy(model_name: str, version: str, champion: str | None, rejected: bool, cfg: dict, target: str,
                canary_percent: float | None = None, shadow: bool = False) -> dict[str, Any]:
    """What deploying `version` means, decided from plain values (no registry, no cluster).

    `direct`: the first model (no champion) or the champion itself takes all traffic;
    otherwise a canary (or shadow) at `percent`, by default the first rollout step.
    """
    if target not in ("local", "cluster"):
        raise DeployError(f"deploy target must be 'local' or 'cluster', got {target!r}")
    if rejected:
        raise DeployError(f"model {model_name} v{version} was rejected by an earlier rollout; register a new version")
    steps = (cfg.get("rollout") or {}).get("steps") or [10]
    pct = float(canary_percent if canary_percent is not None else (0.0 if shadow else steps[0]))
    if not 0 <= pct <= 100:
        raise DeployError(f"canary percent must be within 0..100, got {pct:g}")
    return {"direct": champion is None or champion == version, "percent": pct, "champion": champion}


def deploy_core(model_name: str, version: str, cfg: dict, target: str = "local", canary_percent: float | None = None,
                shadow: bool = False, client=None, namespace: str | None = None, state_path=None,
                settings=None) -> dict[str, Any]:
    """Alias `challenger` + first traffic slice. Returns what was done (plain values).

    The adapter around `plan_deploy`: reads the registry, applies the plan (split file or
    InferenceService), moves the alias, records it in the audit trail."""
    from kfct import audit, registry
    from kfct.settings import get_settings

    s = settings or get_settings()
    version = str(version)
    if target not in ("local", "cluster"):
        raise DeployError(f"deploy target must be 'local' or 'cluster', got {target!r}")
    registry.setup(s)
    try:
        mv = registry.client().get_model_version(model_name, version)
    except Exception as exc:
        raise DeployError(f"model {model_name} v{version} is not registered: {exc}") from exc
    champion = registry.alias_version(model_name, "champion")
    plan = plan_deploy(model_name, version, champion, (mv.tags or {}).get("rejected") == "true", cfg, target,
                       canary_percent, shadow)
    pct, direct = plan["percent"], plan["direct"]
    out: dict[str, Any] = {"model_name": model_name, "version": version, "target": target,
                           "champion": champion, "mode": "shadow" if shadow else "canary"}
    if target == "local":
        from kfct.split_state import state_path as default_path
        from kfct.split_state import update_state

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
            base = build_inference_service(model_name, str(champion), namespace=ns, settings=s)
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
    return out


def deploy_model(config_json: str, model_name: str, version: str, target: str = "auto",
                 namespace: str = "") -> str:
    """Deploy the registered version as a canary (alias challenger): local router split or KServe InferenceService."""
    from kfct.stageclock import StageClock

    clock = StageClock()
    import json

    from kfct.components.deploy import deploy_core
    from kfct.config import config_from_json
    from kfct.logs import stage_logger
    from kfct.settings import get_settings

    cfg = config_from_json(config_json)
    s = get_settings()
    out = deploy_core(model_name, version, cfg, target=s.target(target), namespace=namespace or None, settings=s)
    stage_logger("kfct.components.deploy").info("deployed %s v%s: alias %s, %s %g%% (%s)", model_name, version,
                                                out.get("alias"), out.get("mode"), out.get("canary_percent", 0),
                                                out.get("action"))
    return json.dumps({**out, "stage_time": clock.as_dict()}, default=str)
