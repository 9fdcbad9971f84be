"""Stage 7 — deploy: put a registered version in front of users as a canary.

After `register`, the new version gets alias `challenger` and a first slice of
traffic (the first rollout step, or a shadow copy):

- locally: the split file of the local KServe ModelServer (`kfct.contracts.split_state`),
  which a running `kfct serve` watches and applies without a restart;
- on a cluster: the InferenceService, through `kfct.cluster.kserve_isvc` (the adapter this stage
  shares with rollout and `kfct cluster check`), in the deployment mode it has (annotation
  `serving.kserve.io/deploymentMode`, else its status, else settings `kserve_deployment_mode`).
  Knative (formerly Serverless): the predictor is patched with the new model's `storageUri`
  and `canaryTrafficPercent`; KServe runs the previous revision and the new one side by side.
  Standard (formerly RawDeployment, KServe's default), which ignores `canaryTrafficPercent`:
  the champion stays the stable predictor and the new version becomes a `spec.canary` entry
  with `trafficPercent`, which only KServe's Gateway API route applies: deploy checks that
  route before and after (see `_deploy_cluster`). Either way the predictor names the serving
  image this code was compiled with, so a deploy also rolls
  new serving code.

The very first model has no champion to be compared with: it becomes `champion`
directly and takes all traffic. A version that already is the champion (registered
without a rollout configured) is put in front of all traffic the same way, so a
running server follows the registry. Nothing here moves `champion` otherwise; the
rollout stage decides that.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kserve import KServeClient  # kserve ships no types: Any to mypy, named for the reader

    from kfct.config import RunConfig
    from kfct.runtime.settings import Settings

# The InferenceService adapter lives in the library layer (kfct.cluster.kserve_isvc), shared with rollout and
# `kfct cluster check`; its names stay importable from here.
from kfct.cluster.kserve_isvc import (  # noqa: F401
    DEPLOYMENT_MODE_ANNOTATION,
    ISVC_API_VERSION,
    KNATIVE,
    KSERVE_STORAGE_SCHEMES,
    MODEL_FORMAT,
    RUNTIME_NAME,
    SERVERLESS,
    SERVICE_ACCOUNT,
    STANDARD,
    DeployError,
    apply_inference_service,
    build_canary,
    build_inference_service,
    build_predictor,
    canary_name,
    canary_ready,
    check_storage_uri,
    detect_mode,
    get_inference_service,
    kserve_client,
    merge_patch,
    model_storage_uri,
    normalise_mode,
    patch_traffic,
    predictor_workload,
    promote_canary,
    remove_canary,
    set_canary,
    set_canary_traffic,
    wait_canary_ready,
)

# -- the stage ------------------------------------------------------------------------------------


def converge_serving(
    model_name: str,
    target: str = "local",
    client: "KServeClient | None" = None,
    namespace: str | None = None,
    state_path: str | Path | None = None,
    settings: "Settings | None" = None,
    reason: str = "",
) -> dict[str, Any]:
    """Make the split file (local) or InferenceService (cluster) follow the registry aliases.

    Runs on every deploy (and when the deploy stage finds its version superseded): whatever
    an earlier crash interrupted, what serves afterwards is what the aliases say.
    """
    from kfct.governance import audit, registry
    from kfct.governance.convergence import isvc_changes, split_changes
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    al = registry.aliases(model_name)
    out: dict[str, Any] = {"model_name": model_name, "target": target, "aliases": al, "changes": {}}
    if "champion" not in al:
        return out
    if target == "local":
        from kfct.contracts.split_state import SplitState, read_state, update_state
        from kfct.contracts.split_state import state_path as default_path

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
            isvc = build_inference_service(
                model_name,
                al["champion"],
                namespace=ns,
                settings=s,
                mode=mode,
                canary_percent=100 if mode == SERVERLESS else None,
            )
            action = apply_inference_service(client, isvc, model_name, ns)
            out.update(changes=changes, reasons=[f"{reasons[0]} ({action})"])
    if out["changes"]:
        audit.record(
            "serving_converged",
            model_name=model_name,
            target=target,
            aliases=al,
            changes=out["changes"],
            reasons=out.get("reasons"),
            reason=reason,
        )
    return out


def plan_deploy(
    model_name: str,
    version: str,
    champion: str | None,
    rejected: bool,
    cfg: "RunConfig",
    target: str,
    canary_percent: float | None = None,
    shadow: bool = False,
) -> dict[str, Any]:
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
        return DeployEffects(
            {
                "champion_version": version,
                "canary_version": None,
                "canary_percent": 0.0,
                "mode": "canary",
                "reason": f"deploy v{version} as champion",
            },
            first,
            {"alias": "champion", "canary_percent": 100.0, "mode": "direct"},
        )
    as_what = "shadow" if shadow else f"canary at {pct:g}%"
    share = 0.0 if shadow else pct
    move = None if challenger == version else ("challenger", version, f"deployed as {as_what}")
    return DeployEffects(
        {
            "champion_version": champion,
            "canary_version": version,
            "canary_percent": share,
            "mode": "shadow" if shadow else "canary",
            "reason": f"deploy v{version} as {as_what}",
        },
        move,
        {"alias": "challenger", "canary_percent": share},
    )


def plan_cluster_deploy(
    version: str, champion: str | None, direct: bool, percent: float, mode: str, exists: bool
) -> list[tuple[Any, ...]]:
    """The InferenceService changes, in order: ("apply", version, canaryTrafficPercent or None),
    ("drop_canary",) (remove a leftover spec.canary) or ("canary", version, percent)."""
    steps: list[tuple[Any, ...]] = []
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


def deploy_version(
    model_name: str,
    version: str,
    cfg: "RunConfig",
    target: str = "local",
    canary_percent: float | None = None,
    shadow: bool = False,
    client: "KServeClient | None" = None,
    namespace: str | None = None,
    state_path: str | Path | None = None,
    settings: "Settings | None" = None,
    require_alias: bool = False,
    ready_timeout: float = 600.0,
    ready_poll: float = 5.0,
) -> dict[str, Any]:
    """Alias `challenger` + first traffic slice. Returns what was done (plain values).

    The adapter around `plan_deploy`, `plan_deploy_effects` and `plan_cluster_deploy`: reads
    the registry, applies the plan (split file or InferenceService), moves the alias, records
    it in the audit trail — under the registry lock, so another run cannot move the champion
    between this read and write.
    `require_alias` (the pipeline's deploy stage): a version that holds no alias while a newer
    one is champion was superseded by another run after its registration: nothing is moved
    and serving is only converged on the aliases as they are.
    `ready_timeout`/`ready_poll`: how long a Standard-mode canary may take to be ready and carried
    by the Gateway API route (`kserve_isvc.wait_canary_ready`) before the deploy fails.
    """
    from kfct.governance import registry
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    version = str(version)
    if target not in ("local", "cluster"):
        raise DeployError(f"deploy target must be 'local' or 'cluster', got {target!r}")
    registry.setup(s)
    # Reading the aliases and moving them is one step: another run's registration cannot move
    # the champion between this deploy's read and its write.
    with registry.champion_lock(model_name, s):
        return _deploy_locked(
            model_name,
            version,
            cfg,
            target,
            canary_percent,
            shadow,
            client,
            namespace,
            state_path,
            s,
            require_alias,
            (ready_timeout, ready_poll),
        )


def _deploy_locked(
    model_name: str,
    version: str,
    cfg: "RunConfig",
    target: str,
    canary_percent: float | None,
    shadow: bool,
    client: "KServeClient | None",
    namespace: str | None,
    state_path: str | Path | None,
    s: "Settings",
    require_alias: bool,
    ready: tuple[float, float] = (600.0, 5.0),
) -> dict[str, Any]:
    """Read, plan, then act: traffic first, then the alias, then the audit record."""
    from kfct.governance import audit, registry

    if require_alias:
        al = registry.aliases(model_name)
        if is_superseded(version, al):
            return _deploy_superseded(model_name, version, target, al, client, namespace, state_path, s)
    try:
        mv = registry.client().get_model_version(model_name, version)
    except Exception as exc:
        raise DeployError(f"model {model_name} v{version} is not registered: {exc}") from exc
    champion = registry.alias_version(model_name, "champion")
    plan = plan_deploy(
        model_name, version, champion, (mv.tags or {}).get("rejected") == "true", cfg, target, canary_percent, shadow
    )
    challenger = None if plan["direct"] else registry.alias_version(model_name, "challenger")
    effects = plan_deploy_effects(version, plan, shadow, challenger)
    out: dict[str, Any] = {
        "model_name": model_name,
        "version": version,
        "target": target,
        "champion": champion,
        "mode": "shadow" if shadow else "canary",
    }
    if target == "local":
        out.update(_deploy_local(model_name, state_path, s, effects.split))
    else:
        out.update(_deploy_cluster(model_name, version, plan, shadow, client, namespace, s, ready))
    if effects.alias_move is not None:
        alias, to, reason = effects.alias_move
        registry.set_alias(model_name, alias, to, reason=reason)
    out.update(effects.report)
    audit.record("model_deployed", **{k: v for k, v in out.items() if k != "model_name"}, model_name=model_name)
    if target == "local":  # the file now agrees with the aliases, whatever an earlier crash left
        conv = converge_serving(model_name, target, state_path=out.get("state_path"), settings=s, reason=f"deploy v{version}")
        if conv.get("changes"):
            out["converged"] = conv["changes"]
    return out


def _deploy_superseded(
    model_name: str,
    version: str,
    target: str,
    al: dict[str, str],
    client: "KServeClient | None",
    namespace: str | None,
    state_path: str | Path | None,
    s: "Settings",
) -> dict[str, Any]:
    """Move nothing; serving converges on the aliases as they are, and the audit trail says why."""
    from kfct.governance import audit

    conv = converge_serving(
        model_name, target, client, namespace, state_path, s, reason=f"v{version} superseded before its deploy"
    )
    out: dict[str, Any] = {
        "model_name": model_name,
        "version": version,
        "target": target,
        "mode": "superseded",
        "alias": None,
        "aliases": al,
        "converged": conv.get("changes"),
        "action": f"v{version} holds no alias any more (aliases {al}): serving follows the aliases",
    }
    audit.record("deploy_superseded", **{k: v for k, v in out.items() if k != "model_name"}, model_name=model_name)
    return out


def _deploy_local(model_name: str, state_path: str | Path | None, s: "Settings", split: dict[str, Any]) -> dict[str, Any]:
    """The split file a running `kfct serve` watches gets the planned split."""
    from kfct.contracts.split_state import state_path as default_path
    from kfct.contracts.split_state import update_state

    path = state_path or default_path(model_name, s.home)
    st = update_state(model_name, path, **split)
    return {"state_path": str(path), "generation": st.generation, "action": "split file updated"}


def _deploy_cluster(
    model_name: str,
    version: str,
    plan: dict[str, Any],
    shadow: bool,
    client: "KServeClient | None",
    namespace: str | None,
    s: "Settings",
    ready: tuple[float, float] = (600.0, 5.0),
) -> dict[str, Any]:
    """The InferenceService, in the mode it has, gets the steps `plan_cluster_deploy` lists.

    A Standard-mode canary gets traffic only through KServe's Gateway API route: that route is
    checked before anything changes (an existing service must have one), and after the canary is
    set, until it is ready and the route carries its weight. Otherwise the canary just created is
    removed again and the deploy fails with one line naming the missing prerequisite; the alias
    has not moved yet (it moves after this returns).
    """
    ns = namespace or s.kfp_namespace
    client = client or kserve_client()
    existing = get_inference_service(client, model_name, ns)
    mode = detect_mode(existing, s.kserve_deployment_mode)
    if mode == STANDARD and not plan["direct"]:
        _require_gateway_route(client, model_name, ns, existing is not None)
    actions = []
    for step in plan_cluster_deploy(version, plan["champion"], plan["direct"], plan["percent"], mode, existing is not None):
        # a canary's pods also load the champion and score their requests with it (paired judgement)
        reference = None if plan["direct"] or str(step[1]) == str(plan["champion"]) else plan["champion"]
        if step[0] == "apply":
            isvc = build_inference_service(
                model_name, step[1], namespace=ns, settings=s, mode=mode, canary_percent=step[2], reference_version=reference
            )
            actions.append(apply_inference_service(client, isvc, model_name, ns) + f" v{step[1]}")
        elif step[0] == "drop_canary":
            if ((get_inference_service(client, model_name, ns) or {}).get("spec") or {}).get("canary"):
                remove_canary(client, model_name, ns)
                actions.append("removed spec.canary")
        else:
            stored = set_canary(
                client, model_name, ns, build_canary(model_name, step[1], step[2], settings=s, reference_version=reference)
            )
            _canary_carried(client, model_name, ns, step[1], stored, ready)
            actions.append(f"spec.canary {canary_name(step[1])} at {step[2]:g}%")
    out: dict[str, Any] = {
        "namespace": ns,
        "isvc": model_name,
        "deployment_mode": mode,
        "image": s.serving_image,
        "action": ", ".join(actions),
    }
    if shadow:
        out["note"] = "KServe has no shadow split; deployed as a canary at the given percent"
    return out


def _require_gateway_route(client: "KServeClient", name: str, ns: str, exists: bool) -> None:
    """Before any change: the cluster serves HTTPRoutes, and an existing service has KServe's route."""
    from kfct.cluster.kserve_isvc import get_http_route, no_route_reason

    route = get_http_route(client, name, ns)  # RouteUnavailable: no Gateway API CRDs at all
    if exists and route is None:
        raise DeployError(f"cannot deploy a Standard-mode canary to {ns}/{name}: {no_route_reason(name, ns)}")


def _canary_carried(
    client: "KServeClient", name: str, ns: str, version: str, stored: dict[str, Any], ready: tuple[float, float]
) -> None:
    """The canary exists in the stored object, gets ready and the route carries its weight; else it is removed."""
    if not ((stored or {}).get("spec") or {}).get("canary"):
        # A structural CRD schema drops a field it does not declare: KServe < 0.20 has no spec.canary.
        raise DeployError(
            f"{ns}/{name}: the InferenceService CRD dropped spec.canary, so this KServe has no "
            f"Standard-mode canaries: upgrade KServe to >= 0.20 or use Knative mode"
        )
    try:
        wait_canary_ready(client, name, ns, STANDARD, version, timeout=ready[0], poll=ready[1])
    except DeployError as exc:
        remove_canary(client, name, ns)
        raise DeployError(f"{exc}; canary {canary_name(version)} removed again, aliases and traffic unchanged") from exc


def deploy_model(config_json: str, model_name: str, version: str, target: str = "auto", namespace: str = "") -> str:
    """Deploy the registered version as a canary (alias challenger): local router split or KServe InferenceService."""
    from kfct.runtime.stage import stage

    with stage("deploy-model", config_json, model_name=model_name) as st:
        import json

        from kfct.components.deploy import deploy_version
        from kfct.runtime.settings import get_settings
        from kfct.runtime.testhooks import pause_at

        cfg = st.config
        s = get_settings()
        target = s.target(target)
        pause_at("before_deploy")
        if not version:  # register blocked at the hand-off: nothing to deploy; still follow the aliases
            from kfct.components.deploy import converge_serving
            from kfct.governance import registry

            registry.setup(s)
            conv = converge_serving(model_name, target, namespace=namespace or None, settings=s, reason="registration blocked")
            return json.dumps(
                {
                    "mode": "skipped",
                    "version": "",
                    "target": target,
                    "reason": "nothing registered",
                    "converged": conv.get("changes"),
                },
                default=str,
            )
        out = deploy_version(model_name, version, cfg, target=target, namespace=namespace or None, settings=s, require_alias=True)
        st.log.info(
            "deployed %s v%s: alias %s, %s %g%% (%s)",
            model_name,
            version,
            out.get("alias"),
            out.get("mode"),
            out.get("canary_percent", 0),
            out.get("action"),
        )
        return json.dumps({**out, "stage_time": st.times()}, default=str)
