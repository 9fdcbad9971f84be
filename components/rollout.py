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
is removed. Every step and the outcome go to the audit trail.

Where the numbers come from is a `RolloutBackend`: `LocalRouterBackend` (the local
KServe ModelServer's split file and `/kfct/stats`) or `ClusterBackend` (patching the
InferenceService through the kserve SDK in its own deployment mode, metrics from
Prometheus' HTTP API narrowed to each version's pods).
"""

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from kfct.errors import KfctError
from kfct.window_stats import WindowStats as Window  # what a backend measured for one version in a step

if TYPE_CHECKING:
    from kfct.config import RunConfig


class RolloutError(KfctError):
    """The rollout cannot start or cannot talk to the serving side."""


# -- pure decision core --------------------------------------------------------------------------

@dataclass
class Thresholds:
    min_requests: int = 200
    max_error_rate_increase: float = 0.01
    max_p99_latency_ratio: float = 1.5
    min_p99_latency_delta_ms: float = 5.0
    max_churn_rate_shift: float = 0.10
    significance_z: float = 3.0

    @classmethod
    def from_config(cls, cfg: "RunConfig") -> "Thresholds":
        """`cfg.rollout`'s thresholds (RolloutConfig already checked them: min_requests >= 1)."""
        r = cfg.rollout
        return cls(min_requests=r.min_requests, max_error_rate_increase=r.max_error_rate_increase,
                   max_p99_latency_ratio=r.max_p99_latency_ratio, min_p99_latency_delta_ms=r.min_p99_latency_delta_ms,
                   max_churn_rate_shift=r.max_churn_rate_shift, significance_z=r.significance_z)


PASS, FAIL, WAIT = "pass", "fail", "wait"


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> float:
    """|z| of the difference of two proportions (pooled); inf when both are certain and differ."""
    import math

    if n1 <= 0 or n2 <= 0:
        return 0.0
    p1, p2 = x1 / n1, x2 / n2
    pool = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pool * (1.0 - pool) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return 0.0 if p1 == p2 else math.inf
    return abs(p1 - p2) / se


def evaluate_step(champion: Window, canary: Window, thr: Thresholds, baseline: Window | None = None) -> tuple[str, list[str]]:
    """(verdict, reasons): `wait` while there is not enough data to judge either way.

    A rate over its limit fails the step only when the difference is also statistically
    clear (two-proportion z >= `significance_z`); over the limit but not yet clear means
    wait for more requests. The step is checked repeatedly while it bakes, so without
    this a healthy canary would sooner or later trip on sampling noise.
    """
    if canary.requests < thr.min_requests:
        return WAIT, [f"canary v{canary.version} has {canary.requests} of {thr.min_requests} requests needed"]
    ref = champion if champion.requests >= thr.min_requests else baseline
    if ref is None or ref.requests < thr.min_requests:
        return WAIT, [f"champion v{champion.version} has {champion.requests} of {thr.min_requests} requests needed "
                      "and no earlier step to compare with"]
    failures: list[str] = []
    unclear: list[str] = []
    # Server-side failures only, each customer once (WindowStats.failure_counts): a client's
    # malformed requests are refused alike by both versions, and one sender pinned to the
    # canary by its id must not be able to get a good canary rolled back.
    (x_can, n_can), (x_ref, n_ref) = canary.failure_counts, ref.failure_counts
    e_can, e_ref = canary.server_error_rate, ref.server_error_rate
    d_err = e_can - e_ref
    if d_err > thr.max_error_rate_increase:
        z = two_proportion_z(x_can, n_can, x_ref, n_ref)
        msg = (f"server error rate {e_can:.2%} vs champion {e_ref:.2%} "
               f"(+{d_err:.2%} > {thr.max_error_rate_increase:.2%}, z={z:.1f})")
        (failures if z >= thr.significance_z else unclear).append(msg)
    p_can, p_ref = canary.p99_latency_s, ref.p99_latency_s
    if p_can > thr.max_p99_latency_ratio * p_ref and (p_can - p_ref) * 1e3 > thr.min_p99_latency_delta_ms:
        failures.append(f"p99 latency {p_can * 1e3:.2f} ms vs champion {p_ref * 1e3:.2f} ms "
                        f"(> {thr.max_p99_latency_ratio:g}x and +{(p_can - p_ref) * 1e3:.2f} ms)")
    shift = canary.positive_rate - ref.positive_rate
    if abs(shift) > thr.max_churn_rate_shift:
        z = two_proportion_z(canary.positives, canary.instances, ref.positives, ref.instances)
        msg = (f"predicted churn rate {canary.positive_rate:.2%} vs champion {ref.positive_rate:.2%} "
               f"(shift {shift:+.2%}, limit {thr.max_churn_rate_shift:.2%}, z={z:.1f})")
        (failures if z >= thr.significance_z else unclear).append(msg)
    if failures:
        return FAIL, failures
    if unclear:
        return WAIT, [f"not yet clear: {m}" for m in unclear]
    return PASS, [f"server error rate {e_can:.2%} (champion {e_ref:.2%}), "
                  f"p99 {p_can * 1e3:.2f} ms (champion {p_ref * 1e3:.2f} ms), "
                  f"churn rate {canary.positive_rate:.2%} (champion {ref.positive_rate:.2%})"]


def parse_steps(steps: Any) -> list[float]:
    """'10,50,100' or [10, 50, 100] -> increasing percents within (0, 100]."""
    if isinstance(steps, str):
        parts = [p for p in steps.replace(" ", "").split(",") if p]
    else:
        parts = list(steps or [])
    try:
        out = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise RolloutError(f"rollout steps must be numbers, got {steps!r}") from None
    if not out:
        raise RolloutError("rollout needs at least one step")
    if any(not 0 < p <= 100 for p in out) or any(b <= a for a, b in zip(out, out[1:])):
        raise RolloutError(f"rollout steps must increase within (0, 100], got {out}")
    return out


def plan_versions(model_name: str, canary_version: str | None, champion_version: str | None,
                  challenger_alias: str | None, champion_alias: str | None) -> tuple[str, str]:
    """(canary, champion) to compare: the ones given, else the aliases read beforehand.

    A rollout without both, or of the champion against itself, has nothing to judge: one line.
    """
    canary = str(canary_version or challenger_alias or "")
    if not canary:
        raise RolloutError(f"model {model_name}: no version has alias 'challenger'; nothing to roll out "
                           "(deploy a version first: the deploy stage or `kfct serve --canary-version`)")
    champion = str(champion_version or champion_alias or "")
    if not champion:
        raise RolloutError(f"model {model_name}: no champion to compare v{canary} with")
    if champion == canary:
        raise RolloutError(f"model {model_name}: v{canary} is already the champion")
    return canary, champion


@dataclass(frozen=True)
class StepDecision:
    """What one poll of a step decides: `done` ends the step with `verdict` (PASS or FAIL)."""

    done: bool
    verdict: str
    reasons: list[str]


def plan_rollout_step(champion: Window, canary: Window, thr: Thresholds, baseline: Window | None, elapsed: float,
                      bake_seconds: float, max_wait_factor: float) -> StepDecision:
    """Judge one poll of a step that has baked `elapsed` seconds.

    A failure ends the step at once; a pass only after the bake time; a canary still
    without enough evidence after `max_wait_factor` x the bake time fails (never promote
    without evidence). Anything else keeps polling.
    """
    verdict, reasons = evaluate_step(champion, canary, thr, baseline)
    if verdict == FAIL or (verdict == PASS and elapsed >= bake_seconds):
        return StepDecision(True, verdict, reasons)
    if elapsed >= max_wait_factor * bake_seconds:
        return StepDecision(True, FAIL, [f"not enough traffic to judge within {max_wait_factor * bake_seconds:g} s: "
                                         + "; ".join(reasons)])
    return StepDecision(False, verdict, reasons)


@dataclass(frozen=True)
class OutcomePlan:
    """The registry and audit effects of a rollout's end, in the order the adapter applies them.

    `conflict`: the promotion is refused (the canary was gated against another champion)
    and the rollout rolls back with that reason instead.
    """

    outcome: str  # promoted | rolled_back
    reason: str
    reasons: list[str]
    tags: dict[str, str]
    challenger_reason: str  # why alias `challenger` is removed
    audit_event: str
    audit_fields: dict[str, Any]
    conflict: str | None = None


def plan_promotion(model_name: str, canary: str, champion: str, steps: list[float], gated: str | None,
                   seconds: float) -> OutcomePlan:
    """Promote `canary` over `champion`, unless the gate compared it with another champion
    (`gated`: the gate's champion tag, '' = none, None = unrecorded)."""
    reason = f"canary passed {', '.join(f'{p:g}%' for p in steps)}"
    conflict = None
    if gated is not None and gated != (champion or ""):
        conflict = f"v{canary} was gated against v{gated or None}, not the champion v{champion}"
    return OutcomePlan("promoted", reason, [reason], {"rollout_status": "promoted"}, "promoted to champion",
                       "rollout_promoted", {"model_name": model_name, "version": canary, "previous": champion,
                                            "reason": reason, "seconds": seconds}, conflict)


def plan_rollback(model_name: str, canary: str, champion: str, failed: list[str], seconds: float) -> OutcomePlan:
    """Reject `canary` for the reasons `failed` (each named in its tag and the audit trail)."""
    reason = "; ".join(failed)
    return OutcomePlan("rolled_back", reason, failed,
                       {"rejected": "true", "rollout_status": "rejected", "rejected_reason": reason[:4000]},
                       f"rolled back: {reason}"[:4000], "rollout_rolled_back",
                       {"model_name": model_name, "version": canary, "champion": champion, "reason": reason,
                        "seconds": seconds})


# -- backends ------------------------------------------------------------------------------------

class RolloutBackend(Protocol):
    def set_split(self, champion_version: str, canary_version: str, percent: float) -> None: ...

    def windows(self, champion_version: str, canary_version: str, since: float) -> tuple[Window, Window]: ...

    def promote(self, version: str) -> None: ...

    def rollback(self, champion_version: str, canary_version: str) -> None: ...

    def now(self) -> float: ...


class LocalRouterBackend:
    """The local KServe ModelServer: writes its split file, reads `GET /kfct/stats?since=T`."""

    def __init__(self, model_name: str, url: str, state_path=None, apply_timeout: float = 60.0,
                 http_timeout: float | None = None):
        from kfct.settings import get_settings
        from kfct.split_state import state_path as default_path

        http_timeout = get_settings().net_timeout_seconds if http_timeout is None else http_timeout

        self.model_name = model_name
        self.url = url.rstrip("/")
        self.state_path = state_path or default_path(model_name)
        self.apply_timeout = apply_timeout
        self.http_timeout = http_timeout

    def _get(self, path: str, params: dict | None = None) -> dict:
        import httpx

        try:
            r = httpx.get(f"{self.url}{path}", params=params, timeout=self.http_timeout)
        except httpx.HTTPError as exc:
            raise RolloutError(f"model server {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            raise RolloutError(f"model server {self.url}{path} answered {r.status_code}: {r.text[:200]}")
        return r.json()

    def reachable(self) -> bool:
        try:
            self._get("/kfct/stats", {"since": time.time()})
            return True
        except RolloutError:
            return False

    def now(self) -> float:
        return time.time()

    def _write_and_wait(self, **changes) -> None:
        from kfct.split_state import update_state

        st = update_state(self.model_name, self.state_path, **changes)
        deadline = time.monotonic() + self.apply_timeout
        while True:
            s = self._get("/kfct/stats", {"since": time.time()})
            if int(s.get("applied_generation", 0)) >= st.generation:
                return
            if int(s.get("failed_generation", 0)) >= st.generation:
                raise RolloutError(f"model server could not apply split generation {st.generation}: "
                                   f"{s.get('last_error')}")
            if time.monotonic() > deadline:
                raise RolloutError(f"model server did not apply split generation {st.generation} within "
                                   f"{self.apply_timeout:.0f} s")
            time.sleep(0.05)

    def set_split(self, champion_version: str, canary_version: str, percent: float) -> None:
        self._write_and_wait(champion_version=champion_version, canary_version=canary_version,
                             canary_percent=float(percent), mode="canary", reason=f"rollout step {percent:g}%",
                             canary_deadline=None)  # this rollout owns the canary now

    def windows(self, champion_version: str, canary_version: str, since: float) -> tuple[Window, Window]:
        s = self._get("/kfct/stats", {"since": since})
        v = s.get("versions", {})
        return (Window.from_json({**(v.get(str(champion_version)) or {}), "version": str(champion_version)}),
                Window.from_json({**(v.get(str(canary_version)) or {}), "version": str(canary_version)}))

    def promote(self, version: str) -> None:
        self._write_and_wait(champion_version=str(version), canary_version=None, canary_percent=0.0,
                             mode="canary", reason=f"rollout promoted v{version}", canary_deadline=None)

    def rollback(self, champion_version: str, canary_version: str) -> None:
        self._write_and_wait(champion_version=champion_version, canary_version=None, canary_percent=0.0,
                             mode="canary", reason=f"rollout rolled back v{canary_version}", canary_deadline=None)


class PrometheusMetrics:
    """Per-version windows from Prometheus' HTTP API (`/api/v1/query`) over kfct_* series."""

    def __init__(self, url: str, model_name: str, timeout: float | None = None, extra_selector: str = ""):
        from kfct.settings import get_settings

        timeout = get_settings().net_timeout_seconds if timeout is None else timeout
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.timeout = timeout
        self.extra = extra_selector

    def _sel(self, version: str, more: str = "") -> str:
        parts = [f'model_name="{self.model_name}"', f'model_version="{version}"']
        if self.extra:
            parts.append(self.extra)
        if more:
            parts.append(more)
        return "{" + ",".join(parts) + "}"

    def query(self, promql: str) -> float:
        import httpx

        try:
            r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise RolloutError(f"Prometheus {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            raise RolloutError(f"Prometheus answered {r.status_code} to {promql!r}: {r.text[:200]}")
        body = r.json()
        if body.get("status") != "success":
            raise RolloutError(f"Prometheus query {promql!r} failed: {body.get('error')}")
        result = body.get("data", {}).get("result", [])
        if not result:
            return 0.0
        value = float(result[0]["value"][1])
        return 0.0 if value != value else value  # NaN (no samples) -> 0

    def window(self, version: str, seconds: float, workload: str = "") -> Window:
        """Figures of `version` over the last `seconds`; `workload` narrows them to the pods of one
        predictor (a label selector such as `service="churn-classifier-v7-predictor"`)."""
        rng = f"[{max(1, int(round(seconds)))}s]"
        q = self.query

        def sel(more: str = "") -> str:
            return self._sel(version, ",".join(x for x in (workload, more) if x))

        every, client = sel(), sel('kind="client"')
        server, positive = sel('kind="server"'), sel('label="1"')
        req = q(f"sum(increase(kfct_requests_total{every}{rng}))")
        cerr = q(f"sum(increase(kfct_request_errors_total{client}{rng}))")
        serr = q(f"sum(increase(kfct_request_errors_total{server}{rng}))")
        pos = q(f"sum(increase(kfct_predictions_total{positive}{rng}))")
        inst = q(f"sum(increase(kfct_predictions_total{every}{rng}))")
        p99 = q(f"histogram_quantile(0.99, sum by (le) (rate(kfct_request_latency_seconds_bucket{every}{rng})))")
        return Window(version=str(version), requests=int(round(req + cerr + serr)), instances=int(round(inst)),
                      client_errors=int(round(cerr)), server_errors=int(round(serr)), positives=int(round(pos)),
                      p99_latency_s=p99)


class ClusterBackend:
    """An InferenceService patched through the kserve SDK in its own deployment mode; metrics from Prometheus.

    Serverless (Knative): the split is `canaryTrafficPercent`; the two versions are the
    predictor's previous and latest revisions, told apart in Prometheus by the
    `revision` label (pod label serving.knative.dev/revision). Standard: the split is
    the `spec.canary` entry's `trafficPercent`; the two versions are two Deployments,
    told apart by the `service` label (`{isvc}-predictor` or `{isvc}-{name}-predictor`).
    Both labels are what manifests/base/serving/servicemonitor.yaml relabels in. Each step
    waits until the canary's own status says it is ready before the bake time starts.
    """

    def __init__(self, model_name: str, isvc_name: str, namespace: str, prometheus_url: str, kserve_client=None,
                 settings=None, cfg: "RunConfig | None" = None, ready_timeout: float = 600.0, ready_poll: float = 5.0):
        self.model_name = model_name
        self.isvc_name = isvc_name
        self.namespace = namespace
        self.metrics = PrometheusMetrics(prometheus_url, model_name=isvc_name)
        self.client = kserve_client
        self.settings = settings
        self.cfg = cfg
        self.ready_timeout = ready_timeout
        self.ready_poll = ready_poll

    def now(self) -> float:
        return time.time()

    def _client(self):
        if self.client is None:
            from kfct.components.deploy import kserve_client

            self.client = kserve_client()
        return self.client

    def _isvc(self) -> dict | None:
        from kfct.components.deploy import get_inference_service

        return get_inference_service(self._client(), self.isvc_name, self.namespace)

    def mode(self, isvc: dict | None = None) -> str:
        from kfct.components.deploy import detect_mode
        from kfct.settings import get_settings

        s = self.settings or get_settings()
        return detect_mode(isvc if isvc is not None else self._isvc(), s.kserve_deployment_mode)

    def set_split(self, champion_version: str, canary_version: str, percent: float) -> None:
        from kfct.components.deploy import (SERVERLESS, DeployError, patch_traffic, set_canary_traffic,
                                            wait_canary_ready)

        client = self._client()
        mode = self.mode()
        try:
            if mode == SERVERLESS:
                patch_traffic(client, self.isvc_name, self.namespace, percent)
            else:
                set_canary_traffic(client, self.isvc_name, self.namespace, canary_version, percent)
            wait_canary_ready(client, self.isvc_name, self.namespace, mode, canary_version,
                              timeout=self.ready_timeout, poll=self.ready_poll)
        except DeployError as exc:
            raise RolloutError(str(exc)) from exc

    def workloads(self, champion_version: str, canary_version: str) -> tuple[str, str]:
        """Prometheus label selectors for the champion's and the canary's pods, as each mode labels them."""
        from kfct.components.deploy import SERVERLESS, canary_name, predictor_workload

        isvc = self._isvc() or {}
        if self.mode(isvc) == SERVERLESS:
            pred = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
            champ_rev = pred.get("previousRolledoutRevision") or pred.get("latestRolledoutRevision")
            canary_rev = pred.get("latestCreatedRevision")
            return (f'revision="{champ_rev}"' if champ_rev else "", f'revision="{canary_rev}"' if canary_rev else "")
        stable = ((isvc.get("spec") or {}).get("predictor") or {}).get("name")
        return (f'service="{predictor_workload(self.isvc_name, stable)}"',
                f'service="{predictor_workload(self.isvc_name, canary_name(canary_version))}"')

    def windows(self, champion_version: str, canary_version: str, since: float) -> tuple[Window, Window]:
        seconds = max(1.0, time.time() - since)
        champ_sel, canary_sel = self.workloads(champion_version, canary_version)
        return (self.metrics.window(champion_version, seconds, champ_sel),
                self.metrics.window(canary_version, seconds, canary_sel))

    def promote(self, version: str) -> None:
        from kfct.components.deploy import SERVERLESS, patch_traffic, promote_canary

        if self.mode() == SERVERLESS:
            patch_traffic(self._client(), self.isvc_name, self.namespace, 100)
        else:
            promote_canary(self._client(), self.isvc_name, self.namespace, version)

    def rollback(self, champion_version: str, canary_version: str) -> None:
        """Traffic back to the champion at once; Serverless then puts the spec back to the champion."""
        from kfct.components.deploy import (SERVERLESS, apply_inference_service, build_inference_service,
                                            patch_traffic, remove_canary)

        client = self._client()
        mode = self.mode()
        if mode != SERVERLESS:
            remove_canary(client, self.isvc_name, self.namespace)
            return
        patch_traffic(client, self.isvc_name, self.namespace, 0)
        isvc = build_inference_service(self.model_name, champion_version, name=self.isvc_name,
                                       namespace=self.namespace, canary_percent=100, settings=self.settings,
                                       mode=mode)
        apply_inference_service(client, isvc, self.isvc_name, self.namespace)


# -- the loop ------------------------------------------------------------------------------------

@dataclass
class RolloutResult:
    model_name: str
    canary_version: str
    champion_version: str | None
    outcome: str  # promoted | rolled_back | deferred
    reasons: list[str] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def run_rollout(model_name: str, backend: RolloutBackend, thresholds: Thresholds, steps: list[float],
                bake_seconds: float, canary_version: str | None = None, champion_version: str | None = None,
                poll_seconds: float = 0.5, max_wait_factor: float = 3.0, sleep: Callable[[float], None] = time.sleep,
                log: Callable[[str], None] | None = None,
                clock: Callable[[], float] = time.monotonic) -> RolloutResult:
    """Walk the steps; promote or roll back. Registry changes happen only at the end, once.

    The adapter around the pure decisions (`plan_versions`, `plan_rollout_step`,
    `plan_promotion`, `plan_rollback`): it reads the registry and the backend's windows,
    and performs what they decide. `sleep` and `clock` are the loop's notion of time
    (tests pass a fake pair that advance together, so a 60 s bake takes no real time).
    """
    from kfct import audit

    say = log or (lambda _m: None)
    canary, champion = _read_versions(model_name, canary_version, champion_version)
    steps = parse_steps(steps)
    t_start = clock()
    audit.record("rollout_started", model_name=model_name, version=canary, champion=champion,
                 steps=steps, bake_seconds=bake_seconds, thresholds=asdict(thresholds))
    result = RolloutResult(model_name, canary, champion, "rolled_back")
    failed = _walk_steps(result, backend, thresholds, steps, bake_seconds, poll_seconds, max_wait_factor,
                         sleep, clock, say)
    result.seconds = round(clock() - t_start, 2)
    if failed is None:
        failed = _promote(result, backend, canary, champion, steps)
        if failed is None:
            return result
    return _roll_back(result, backend, canary, champion, failed)


def _read_versions(model_name: str, canary_version: str | None, champion_version: str | None) -> tuple[str, str]:
    """The aliases `plan_versions` falls back on, read only where no version was given."""
    from kfct import registry

    registry.setup()
    challenger = None if canary_version else registry.alias_version(model_name, "challenger")
    champion = None if champion_version else registry.alias_version(model_name, "champion")
    return plan_versions(model_name, canary_version, champion_version, challenger, champion)


def _walk_steps(result: RolloutResult, backend: RolloutBackend, thresholds: Thresholds, steps: list[float],
                bake_seconds: float, poll_seconds: float, max_wait_factor: float, sleep: Callable[[float], None],
                clock: Callable[[], float], say: Callable[[str], None]) -> list[str] | None:
    """Each step in turn, audited; returns why the rollout failed, None when every step passed."""
    from kfct import audit

    canary, champion = result.canary_version, str(result.champion_version)
    baseline: Window | None = None
    for pct in steps:
        try:
            backend.set_split(champion, canary, pct)
        except RolloutError as exc:
            return [f"step {pct:g}%: could not route traffic to the canary: {exc}"]
        say(f"step {pct:g}%: baking {bake_seconds:g} s")
        step, champ = _bake(backend, champion, canary, pct, thresholds, baseline, bake_seconds,
                            poll_seconds, max_wait_factor, sleep, clock)
        result.steps.append(step)
        audit.record("rollout_step", model_name=result.model_name, version=canary, **step)
        say(f"step {pct:g}%: {step['verdict']}: {'; '.join(step['reasons'])}")
        if step["verdict"] != PASS:
            return [f"step {pct:g}%: {r}" for r in step["reasons"]]
        if champ.requests >= thresholds.min_requests:
            baseline = champ  # the reference for a later step where the champion gets no traffic
    return None


def _bake(backend: RolloutBackend, champion_version: str, canary_version: str, pct: float, thresholds: Thresholds,
          baseline: Window | None, bake_seconds: float, poll_seconds: float, max_wait_factor: float,
          sleep: Callable[[float], None], clock: Callable[[], float]) -> tuple[dict, Window]:
    """One step: poll the windows until `plan_rollout_step` ends it."""
    since = backend.now()
    t0 = clock()
    while True:
        sleep(poll_seconds)
        champ, can = backend.windows(champion_version, canary_version, since)
        decision = plan_rollout_step(champ, can, thresholds, baseline, clock() - t0, bake_seconds, max_wait_factor)
        if decision.done:
            break
    return ({"percent": pct, "verdict": decision.verdict, "reasons": decision.reasons, "champion": champ.summary(),
             "canary": can.summary(), "seconds": round(clock() - t0, 2)}, champ)


def _promote(result: RolloutResult, backend: RolloutBackend, canary: str, champion: str,
             steps: list[float]) -> list[str] | None:
    """Move the champion to the canary, by compare-and-set against the champion it was judged
    against; returns None when promoted, else why not (the caller rolls back)."""
    from kfct import registry

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


def _roll_back(result: RolloutResult, backend: RolloutBackend, canary: str, champion: str,
               failed: list[str]) -> RolloutResult:
    """Traffic back to the champion first; only once that happened does the registry say so.

    A rollback that raises leaves the canary's traffic unknown: the version keeps its
    `challenger` alias (it may still serve) and gets no `rejected` tag, the failure is
    audited, and the error names what to do.
    """
    from kfct import audit

    name = result.model_name
    plan = plan_rollback(name, canary, champion, failed, result.seconds)
    try:
        backend.rollback(champion, canary)
    except Exception as exc:
        audit.record("rollout_rollback_failed", model_name=name, version=canary, champion=champion,
                     reason=plan.reason, error=f"{type(exc).__name__}: {exc}"[:1000], seconds=result.seconds)
        raise RolloutError(f"model {name}: rolling v{canary} back failed ({type(exc).__name__}: {exc}); its traffic "
                           f"share is unknown and the registry is unchanged (alias 'challenger' still on "
                           f"v{canary}): retry with `kfct rollout`") from exc
    _record_outcome(result, plan)
    return result


def _record_outcome(result: RolloutResult, plan: OutcomePlan) -> None:
    """The registry and audit effects of `plan`, in its order: tags, alias `challenger`, audit."""
    from kfct import audit, registry

    name, canary = result.model_name, result.canary_version
    for key, value in plan.tags.items():
        registry.set_version_tag(name, canary, key, value)
    registry.delete_alias(name, "challenger", reason=plan.challenger_reason)
    result.outcome, result.reasons = plan.outcome, plan.reasons
    audit.record(plan.audit_event, **plan.audit_fields)


def _gated_against(model_name: str, version: str) -> str | None:
    """The champion version the gate compared `version` with ('' = none), None when unrecorded."""
    from kfct import registry

    mv = registry.client().get_model_version(model_name, str(version))
    return (mv.tags or {}).get(registry.GATED_TAG)


def rollout_version(model_name: str, cfg: "RunConfig", backend: RolloutBackend, steps=None, bake_seconds: float | None = None,
                 canary_version: str | None = None, poll_seconds: float | None = None, log=None) -> RolloutResult:
    """Thresholds, steps and bake time from `cfg.rollout` unless given."""
    r = cfg.rollout
    return run_rollout(model_name, backend, Thresholds.from_config(cfg),
                       parse_steps(steps if steps is not None else r.steps),
                       float(bake_seconds if bake_seconds is not None else r.bake_seconds),
                       canary_version=canary_version,
                       poll_seconds=float(poll_seconds if poll_seconds is not None else r.poll_seconds),
                       log=log)


def defer_rollout(model_name: str, version: str, reason: str, deadline_seconds: float, state_path=None,
                  now: float | None = None) -> dict:
    """No live traffic to judge by: leave the canary deployed, but give it an owner. The split
    file gets a deadline; past it every server routes the canary no traffic (the server's own
    watcher enforces it) and `expire_deferred` (run by the next rollout) rolls it back."""
    from kfct import audit
    from kfct.split_state import read_state, update_state

    now = time.time() if now is None else now
    deadline = now + float(deadline_seconds)
    st = read_state(state_path) if state_path else None
    if state_path is not None and st is not None and st.canary_version == str(version):
        update_state(model_name, state_path, canary_deadline=deadline,
                     reason=f"rollout deferred: {reason}; rolled back after the deadline unless a rollout owns it")
    audit.record("rollout_deferred", model_name=model_name, version=version, reason=reason, deadline=deadline,
                 deadline_seconds=float(deadline_seconds))
    return {"outcome": "deferred", "reason": reason, "deadline": deadline}


def plan_expiry(st, now: float | None = None) -> str | None:
    """Why the deferred canary in split state `st` must be rolled back now, or None while it may stand."""
    if st is None or not st.canary_version or st.canary_deadline is None or not st.expired(now):
        return None
    return (f"deferred rollout of v{st.canary_version} passed its deadline "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(st.canary_deadline))} without a judgement")


def expire_deferred(model_name: str, state_path=None, now: float | None = None) -> dict | None:
    """Roll back a deferred canary whose deadline passed (split to 0, version tagged `rejected`,
    `challenger` removed, audited). Returns what it did, or None when nothing had expired."""
    from kfct import audit, registry
    from kfct.split_state import read_state, state_path as default_path, update_state

    path = state_path or default_path(model_name)
    st = read_state(path)
    reason = plan_expiry(st, now)
    if st is None or reason is None or not st.canary_version:
        return None
    version = st.canary_version
    update_state(model_name, path, canary_version=None, canary_percent=0.0, mode="canary", canary_deadline=None,
                 reason=reason)
    registry.setup()
    registry.set_version_tag(model_name, version, "rejected", "true")
    registry.set_version_tag(model_name, version, "rollout_status", "rejected")
    registry.set_version_tag(model_name, version, "rejected_reason", reason)
    if registry.alias_version(model_name, "challenger") == version:
        registry.delete_alias(model_name, "challenger", reason=reason)
    audit.record("rollout_rolled_back", model_name=model_name, version=version, champion=st.champion_version,
                 reason=reason, seconds=0.0)
    return {"outcome": "rolled_back", "version": version, "reason": reason}


def make_backend(model_name: str, target: str, settings, cfg: "RunConfig | None" = None, server_url: str = "",
                 prometheus_url: str = "", isvc: str = "", namespace: str = "") -> "LocalRouterBackend | ClusterBackend":
    """The one place a rollout backend is built (the pipeline stage and `kfct rollout`).

    cluster: the InferenceService `isvc` (default: the model name) in `namespace` (default:
    settings.kfp_namespace), metrics from `prometheus_url`, else settings.prometheus_url
    (KFCT_PROMETHEUS_URL). local: the model server at `server_url`, else settings' host:port.
    """
    if target == "cluster":
        return ClusterBackend(model_name, isvc_name=isvc or model_name, namespace=namespace or settings.kfp_namespace,
                              prometheus_url=prometheus_url or settings.prometheus_url, settings=settings, cfg=cfg)
    if target != "local":
        raise RolloutError(f"rollout target must be 'local' or 'cluster', got {target!r}")
    return LocalRouterBackend(model_name, server_url or f"http://{settings.serving_host}:{settings.serving_port}")


def rollout_model(config_json: str, model_name: str, version: str, target: str = "auto",
                  server_url: str = "", prometheus_url: str = "", namespace: str = "") -> str:
    """Roll the deployed canary out step by step; promote it or roll it back by itself. Returns the outcome."""
    from kfct.stage import stage

    with stage("rollout-model", config_json, model_name=model_name) as st:
        import json

        from kfct.components.rollout import (LocalRouterBackend, defer_rollout, expire_deferred, make_backend,
                                             rollout_version)
        from kfct.settings import get_settings

        from kfct import registry

        cfg = st.config
        s = get_settings()
        registry.setup(s)
        if not version:
            return json.dumps({"outcome": "skipped", "reason": "nothing registered (blocked at the registry hand-off)"})
        if version and registry.alias_version(model_name, "champion") == str(version):
            # Deployed straight as champion (first model, or no rollout configured): nothing to roll out.
            return json.dumps({"outcome": "skipped", "reason": f"v{version} is already the champion",
                               "stage_time": st.times()})
        backend = make_backend(model_name, s.target(target), s, cfg, server_url=server_url, prometheus_url=prometheus_url,
                               namespace=namespace)
        if isinstance(backend, LocalRouterBackend):
            expire_deferred(model_name, backend.state_path)  # an earlier deferred canary whose time is up
            if not backend.reachable():
                # No live traffic to judge by: the canary stays deployed until a deadline (its owner).
                out = defer_rollout(model_name, version, f"no model server at {backend.url}",
                                    float(cfg.rollout.deferred_deadline_seconds), state_path=backend.state_path)
                return json.dumps({**out, "stage_time": st.times()})
        log = st.log
        res = rollout_version(model_name, cfg, backend, canary_version=version or None, log=log.info)
        log.info("rollout of v%s: %s (%s)", res.canary_version, res.outcome, "; ".join(res.reasons))
        return json.dumps({**res.to_json(), "stage_time": st.times()})
