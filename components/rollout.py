"""Progressive canary rollout that promotes or rolls back by itself.

KServe splits traffic (`canaryTrafficPercent` in Serverless mode, a `spec.canary` entry's
`trafficPercent` in Standard mode) but leaves promotion to its users;
this stage closes the loop. For each step (e.g. 10 -> 50 -> 100 %) it moves the
split, lets the canary bake, and compares it with the champion over exactly the
requests made during the step:

- server error rate (5xx / model exceptions, each customer counted once; client 4xx are
  refused alike by both versions and do not count): canary minus champion must not
  exceed `max_error_rate_increase`;
- p99 latency: the canary fails when it exceeds `max_p99_latency_ratio` x the champion's
  AND is slower by more than `min_p99_latency_delta_ms` (sub-millisecond p99s are noise);
- predicted churn rate (share of positive labels): must not move by more than
  `max_churn_rate_shift` (absolute), which catches a model that flips predictions.

Rates over their limit fail only once the difference is statistically clear
(two-proportion z >= `significance_z`, default 3), because the step is re-checked
every poll while it bakes and sampling noise would otherwise reject healthy canaries.

A step passes after `bake_seconds` with at least `min_requests` canary requests; it
fails as soon as a check fails on enough data (no need to wait out the bake); it
fails too when the canary gets too little traffic within 3 x the bake time (never
promote without evidence). At 100 % the champion gets no traffic, so it is compared
with the champion's figures from the previous steps.

Promotion: alias `champion` moves to the canary (audited by the registry), the split
returns to 0 with the new champion serving, `challenger` is removed. Roll back: the
split returns to 0, the version is tagged `rejected` with the reason, `challenger`
is removed. Abort (outcome `aborted`): the infrastructure failed, not the model (the
split or the route was not applied, the canary never got ready, the serving side or
Prometheus did not answer): the split returns to 0 as in a rollback, but the version is
not judged: no `rejected` tag, `challenger` stays, the cause is audited as
`rollout_aborted` (see `plan_abort`). Every step and the outcome go to the audit trail.

Where the numbers come from is a `RolloutBackend`: `LocalRouterBackend` (the local
KServe ModelServer's split file and `/kfct/stats`) or `ClusterBackend` (patching the
InferenceService through the kserve SDK in its own deployment mode, metrics from
Prometheus' HTTP API narrowed to each version's pods).
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kfct.components.rollout_backends import ClusterBackend, LocalRouterBackend, PrometheusMetrics, RolloutBackend, make_backend  # noqa: F401
from kfct.components.rollout_decision import (  # noqa: F401
    FAIL,
    PASS,
    WAIT,
    OutcomePlan,
    RolloutError,
    StepDecision,
    Thresholds,
    Window,
    evaluate_step,
    parse_steps,
    plan_abort,
    plan_expiry,
    plan_promotion,
    plan_retry,
    plan_rollback,
    plan_rollout_step,
    plan_versions,
    two_proportion_z,
)
from kfct.components.rollout_defer import defer_rollout, expire_deferred  # noqa: F401

if TYPE_CHECKING:
    from kfct.config import RunConfig

# -- the loop ------------------------------------------------------------------------------------


@dataclass
class RolloutResult:
    model_name: str
    canary_version: str
    champion_version: str | None
    outcome: str  # promoted | rolled_back | aborted (infrastructure, see plan_abort) | deferred
    reasons: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_rollout(
    model_name: str,
    backend: RolloutBackend,
    thresholds: Thresholds,
    steps: list[float],
    bake_seconds: float,
    canary_version: str | None = None,
    champion_version: str | None = None,
    poll_seconds: float = 0.5,
    max_wait_factor: float = 3.0,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RolloutResult:
    """Walk the steps; promote or roll back. Registry changes happen only at the end, once.

    The adapter around the pure decisions (`plan_versions`, `plan_rollout_step`,
    `plan_promotion`, `plan_rollback`): it reads the registry and the backend's windows,
    and performs what they decide. `sleep` and `clock` are the loop's notion of time
    (tests pass a fake pair that advance together, so a 60 s bake takes no real time).
    """
    from kfct.governance import audit

    pace = Pace(bake_seconds, poll_seconds, max_wait_factor, sleep, clock, log or (lambda _m: None))
    canary, champion = _read_versions(model_name, canary_version, champion_version)
    steps = parse_steps(steps)
    t_start = clock()
    audit.record(
        "rollout_started",
        model_name=model_name,
        version=canary,
        champion=champion,
        steps=steps,
        bake_seconds=bake_seconds,
        thresholds=asdict(thresholds),
    )
    result = RolloutResult(model_name, canary, champion, "rolled_back")
    failed, infra = _walk_steps(result, backend, thresholds, steps, pace)
    result.seconds = round(clock() - t_start, 2)
    if failed is None:
        failed = _promote(result, backend, canary, champion, steps)
        if failed is None:
            return result
    return _roll_back(result, backend, canary, champion, failed, infra=infra)


def _read_versions(model_name: str, canary_version: str | None, champion_version: str | None) -> tuple[str, str]:
    """The aliases `plan_versions` falls back on, read only where no version was given."""
    from kfct.governance import registry

    registry.setup()
    challenger = None if canary_version else registry.alias_version(model_name, "challenger")
    champion = None if champion_version else registry.alias_version(model_name, "champion")
    return plan_versions(model_name, canary_version, champion_version, challenger, champion)


@dataclass(frozen=True)
class Pace:
    """How the loop spends time: bake and poll intervals, how long to wait for evidence, and its
    notion of time (`sleep`, `clock`; tests pass a fake pair that advance together)."""

    bake_seconds: float
    poll_seconds: float = 0.5
    max_wait_factor: float = 3.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    say: Callable[[str], None] = lambda _m: None


def _walk_steps(
    result: RolloutResult, backend: RolloutBackend, thresholds: Thresholds, steps: list[float], pace: Pace
) -> tuple[list[str] | None, bool]:
    """Each step in turn, audited; returns why the rollout failed (None when every step passed) and
    whether the infrastructure failed rather than the canary (a `RolloutError` from the backend: the
    split or route not applied, the canary not ready, the figures unreachable)."""
    from kfct.governance import audit

    canary, champion = result.canary_version, str(result.champion_version)
    baseline: Window | None = None
    for pct in steps:
        try:
            backend.set_split(champion, canary, pct)
        except RolloutError as exc:
            return [f"step {pct:g}%: could not route traffic to the canary: {exc}"], True
        pace.say(f"step {pct:g}%: baking {pace.bake_seconds:g} s")
        try:
            step, champ = _bake(backend, champion, canary, pct, thresholds, baseline, pace)
        except RolloutError as exc:
            return [f"step {pct:g}%: could not read the versions' figures: {exc}"], True
        result.steps.append(step)
        audit.record("rollout_step", model_name=result.model_name, version=canary, **step)
        pace.say(f"step {pct:g}%: {step['verdict']}: {'; '.join(step['reasons'])}")
        if step["verdict"] != PASS:
            return [f"step {pct:g}%: {r}" for r in step["reasons"]], False
        if champ.requests >= thresholds.min_requests:
            baseline = champ  # the reference for a later step where the champion gets no traffic
    return None, False


def _bake(
    backend: RolloutBackend,
    champion_version: str,
    canary_version: str,
    pct: float,
    thresholds: Thresholds,
    baseline: Window | None,
    pace: Pace,
) -> tuple[dict[str, Any], Window]:
    """One step: poll the windows until `plan_rollout_step` ends it."""
    since = backend.now()
    t0 = pace.clock()
    while True:
        pace.sleep(pace.poll_seconds)
        champ, can = backend.windows(champion_version, canary_version, since)
        decision = plan_rollout_step(champ, can, thresholds, baseline, pace.clock() - t0, pace.bake_seconds, pace.max_wait_factor)
        if decision.done:
            break
    return (
        {
            "percent": pct,
            "verdict": decision.verdict,
            "reasons": decision.reasons,
            "champion": champ.summary(),
            "canary": can.summary(),
            "seconds": round(pace.clock() - t0, 2),
        },
        champ,
    )


def _promote(result: RolloutResult, backend: RolloutBackend, canary: str, champion: str, steps: list[float]) -> list[str] | None:
    """Move the champion to the canary, by compare-and-set against the champion it was judged
    against; returns None when promoted, else why not (the caller rolls back)."""
    from kfct.governance import registry

    name = result.model_name
    try:
        with registry.champion_lock(name) as lock:
            plan = plan_promotion(name, canary, champion, steps, _gated_against(name, canary), result.seconds)
            if plan.conflict is not None:
                return [f"not promoted: {plan.conflict}"]
            registry.compare_and_set_alias(lock, name, "champion", champion, canary, reason=f"rollout: {plan.reason}")
    except registry.AliasConflict as exc:
        return [f"not promoted: {exc}"]
    backend.promote(canary)
    _record_outcome(result, plan)
    return None


def _roll_back(
    result: RolloutResult, backend: RolloutBackend, canary: str, champion: str, failed: list[str], infra: bool = False
) -> RolloutResult:
    """Traffic back to the champion first; only once that happened does the registry say so.

    `infra`: the infrastructure failed, not the canary: the same traffic rollback, but
    `plan_abort` (no `rejected` tag, alias `challenger` kept, `rollout_aborted` audited).

    A rollback that raises leaves the canary's traffic unknown: the version keeps its
    `challenger` alias (it may still serve) and gets no `rejected` tag, the failure is
    audited, and the error names what to do.
    """
    from kfct.governance import audit

    name = result.model_name
    last = result.steps[-1] if result.steps else None
    plan = (
        plan_abort(name, canary, champion, failed, result.seconds)
        if infra
        else plan_rollback(name, canary, champion, failed, result.seconds, evidence=last)
    )
    try:
        backend.rollback(champion, canary)
    except Exception as exc:
        audit.record(
            "rollout_rollback_failed",
            model_name=name,
            version=canary,
            champion=champion,
            reason=plan.reason,
            error=f"{type(exc).__name__}: {exc}"[:1000],
            seconds=result.seconds,
        )
        raise RolloutError(
            f"model {name}: rolling v{canary} back failed ({type(exc).__name__}: {exc}); its traffic "
            f"share is unknown and the registry is unchanged (alias 'challenger' still on "
            f"v{canary}): retry with `kfct rollout`"
        ) from exc
    _record_outcome(result, plan)
    return result


def _record_outcome(result: RolloutResult, plan: OutcomePlan) -> None:
    """The registry and audit effects of `plan`, in its order: tags, alias `challenger`, audit."""
    from kfct.governance import audit, registry

    name, canary = result.model_name, result.canary_version
    for key, value in plan.tags.items():
        registry.set_version_tag(name, canary, key, value)
    if plan.challenger_reason is not None:
        registry.delete_alias(name, "challenger", reason=plan.challenger_reason)
    result.outcome, result.reasons = plan.outcome, plan.reasons
    audit.record(plan.audit_event, **plan.audit_fields)


def _gated_against(model_name: str, version: str) -> str | None:
    """The champion version the gate compared `version` with ('' = none), None when unrecorded."""
    from kfct.governance import registry

    mv = registry.client().get_model_version(model_name, str(version))
    return (mv.tags or {}).get(registry.GATED_TAG)


def retry_rejected(model_name: str, version: str, operator: str | None = None) -> dict[str, Any]:
    """An operator's second chance for a version a rollout rejected (`kfct rollout --retry`):
    the `rejected` tag lifted, alias `challenger` set, audited (`rollout_retry`, with who and the
    old reason). The rollout that follows judges it like any canary."""
    import getpass

    from kfct.governance import audit, registry

    registry.setup()
    tags = dict(registry.client().get_model_version(model_name, str(version)).tags or {})
    plan = plan_retry(model_name, str(version), tags, registry.alias_version(model_name, "champion"))
    for key, value in plan["tags"].items():
        registry.set_version_tag(model_name, str(version), key, value)
    for key in plan["delete_tags"]:
        if key in tags:
            registry.client().delete_model_version_tag(model_name, str(version), key)
    registry.set_alias(model_name, "challenger", str(version), reason=f"rollout retry of rejected v{version}")
    audit.record("rollout_retry", operator=operator or getpass.getuser(), **plan["audit"])
    done: dict[str, Any] = plan["audit"]
    return done


def rollout_version(
    model_name: str,
    cfg: "RunConfig",
    backend: RolloutBackend,
    steps: str | list[float] | None = None,
    bake_seconds: float | None = None,
    canary_version: str | None = None,
    poll_seconds: float | None = None,
    log: Callable[[str], None] | None = None,
) -> RolloutResult:
    """Thresholds, steps and bake time from `cfg.rollout` unless given."""
    r = cfg.rollout
    return run_rollout(
        model_name,
        backend,
        Thresholds.from_config(cfg),
        parse_steps(steps if steps is not None else r.steps),
        float(bake_seconds if bake_seconds is not None else r.bake_seconds),
        canary_version=canary_version,
        poll_seconds=float(poll_seconds if poll_seconds is not None else r.poll_seconds),
        log=log,
    )


def rollout_model(
    config_json: str,
    model_name: str,
    version: str,
    target: str = "auto",
    server_url: str = "",
    prometheus_url: str = "",
    namespace: str = "",
) -> str:
    """Roll the deployed canary out step by step; promote it or roll it back by itself. Returns the outcome."""
    from kfct.runtime.stage import stage

    with stage("rollout-model", config_json, model_name=model_name) as st:
        import json

        from kfct.components.rollout import LocalRouterBackend, defer_rollout, expire_deferred, make_backend, rollout_version
        from kfct.governance import registry
        from kfct.runtime.settings import get_settings

        cfg = st.config
        s = get_settings()
        registry.setup(s)
        if not version:
            return json.dumps({"outcome": "skipped", "reason": "nothing registered (blocked at the registry hand-off)"})
        if version and registry.alias_version(model_name, "champion") == str(version):
            # Deployed straight as champion (first model, or no rollout configured): nothing to roll out.
            return json.dumps({"outcome": "skipped", "reason": f"v{version} is already the champion", "stage_time": st.times()})
        backend = make_backend(
            model_name, s.target(target), s, cfg, server_url=server_url, prometheus_url=prometheus_url, namespace=namespace
        )
        if isinstance(backend, LocalRouterBackend):
            expire_deferred(model_name, backend.state_path)  # an earlier deferred canary whose time is up
            if not backend.reachable():
                # No live traffic to judge by: the canary stays deployed until a deadline (its owner).
                out = defer_rollout(
                    model_name,
                    version,
                    f"no model server at {backend.url}",
                    float(cfg.rollout.deferred_deadline_seconds),
                    state_path=backend.state_path,
                )
                return json.dumps({**out, "stage_time": st.times()})
        log = st.log
        res = rollout_version(model_name, cfg, backend, canary_version=version or None, log=log.info)
        log.info("rollout of v%s: %s (%s)", res.canary_version, res.outcome, "; ".join(res.reasons))
        return json.dumps({**res.to_json(), "stage_time": st.times()})
