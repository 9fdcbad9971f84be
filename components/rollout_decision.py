"""The rollout's pure decision core: thresholds, the step verdict, the plans for its end.

No I/O here (no registry, no HTTP, no clock): the loop (`kfct.components.rollout`) reads
the backends' windows and performs what these functions decide, so every rule a canary is
judged by is testable with plain values.
"""

import itertools
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kfct.contracts.window_stats import WindowStats as Window  # what a backend measured for one version in a step
from kfct.errors import KfctError

if TYPE_CHECKING:
    from kfct.config import RunConfig
    from kfct.contracts.split_state import SplitState


class RolloutError(KfctError):
    """The rollout cannot start or cannot talk to the serving side."""


@dataclass
class Thresholds:
    min_requests: int = 200
    max_error_rate_increase: float = 0.01
    max_p99_latency_ratio: float = 1.5
    min_p99_latency_delta_ms: float = 5.0
    max_churn_rate_shift: float = 0.10
    significance_z: float = 3.0
    min_customers: int = 20  # customers scored by both versions before the paired shifts are judged

    @classmethod
    def from_config(cls, cfg: "RunConfig") -> "Thresholds":
        """`cfg.rollout`'s thresholds (RolloutConfig already checked them: min_requests >= 1, min_customers >= 2)."""
        r = cfg.rollout
        return cls(
            min_requests=r.min_requests,
            max_error_rate_increase=r.max_error_rate_increase,
            max_p99_latency_ratio=r.max_p99_latency_ratio,
            min_p99_latency_delta_ms=r.min_p99_latency_delta_ms,
            max_churn_rate_shift=r.max_churn_rate_shift,
            significance_z=r.significance_z,
            min_customers=r.min_customers,
        )


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
        return WAIT, [
            f"champion v{champion.version} has {champion.requests} of {thr.min_requests} requests needed "
            "and no earlier step to compare with"
        ]
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
        msg = (
            f"server error rate {e_can:.2%} vs champion {e_ref:.2%} (+{d_err:.2%} > {thr.max_error_rate_increase:.2%}, z={z:.1f})"
        )
        (failures if z >= thr.significance_z else unclear).append(msg)
    # Judged on paired predictions, which no client chooses: locally each customer weighs one; on a
    # cluster (Prometheus) each customer shard does (`kfct.contracts.window_stats.CUSTOMER_SHARDS`).
    summary = _judge_paired(canary, thr, failures, unclear)
    if summary is None:
        if failures:
            return FAIL, failures
        unit = "customers" if canary.customers else "customer shards"
        return WAIT, [
            f"canary v{canary.version} has {canary.paired_customers} of {thr.min_customers} {unit} "
            "scored by both versions" + _dominance(canary)
        ] + [f"not yet clear: {m}" for m in unclear]
    if failures:
        return FAIL, failures
    if unclear:
        return WAIT, [f"not yet clear: {m}" for m in unclear]
    return PASS, [f"server error rate {e_can:.2%} (champion {e_ref:.2%}), {summary}"]


def _dominance(canary: Window) -> str:
    if not canary.dominated:
        return ""
    return f"; one customer sent {canary.top_customer_share:.0%} of the canary's paired rows: reported, left out of the judgement"


def _judge_paired(canary: Window, thr: Thresholds, failures: list[str], unclear: list[str]) -> str | None:
    """The canary against the champion on the same requests; None while too few customers.

    - predicted churn rate: each customer's mean of (canary label - champion label) on its own
      records, averaged over customers; fails once it is past `max_churn_rate_shift` by
      `significance_z` standard errors (the spread across customers, so one sender's many rows are
      one piece of evidence); past the limit but not that clearly, the step waits for more
      customers, and a step still unclear at its longest wait fails (never promote without evidence);
    - latency: model time per row, p99, on the same requests for both versions (a client that
      sends big batches to one arm weighs on both alike); it fails only when the canary is also slower
      on significantly more than half of the paired requests (sign test, z >= `significance_z`): a p99
      of a few dozen requests is one stall of the machine, which hits either version at random.
    """
    if canary.paired_customers < thr.min_customers:
        return None
    shift, se = canary.label_shift, canary.label_shift_se
    excess = abs(shift) - thr.max_churn_rate_shift
    if excess > 0:
        # z of the excess over the limit, not of the shift over 0: a good canary whose true shift is a
        # few points (two good models disagree on some customers) otherwise fails on the first early
        # poll whose few dozen customers happen to show 14 % (z=3.0 against 0, 72 customers).
        z = excess / se if se > 0 else math.inf
        msg = (
            f"predicted churn rate shift {shift:+.2%} vs the champion on the same requests "
            f"(limit {thr.max_churn_rate_shift:.2%}, beyond it by z={z:.1f}, {canary.paired_customers} customers, "
            f"{canary.paired_rows} rows){_dominance(canary)}"
        )
        (failures if z >= thr.significance_z else unclear).append(msg)
    p_can, p_ref = canary.paired_p99_instance_s, canary.paired_champion_p99_instance_s
    n, slower = canary.paired_requests, canary.paired_slower
    z_slow = (slower - n / 2) / math.sqrt(n / 4) if n else 0.0
    if p_can > thr.max_p99_latency_ratio * p_ref and (p_can - p_ref) * 1e3 > thr.min_p99_latency_delta_ms:
        msg = (
            f"p99 latency per row {p_can * 1e3:.3f} ms vs champion {p_ref * 1e3:.3f} ms on the same requests "
            f"(> {thr.max_p99_latency_ratio:g}x and +{(p_can - p_ref) * 1e3:.2f} ms; slower on {slower} of {n} "
            f"requests, z={z_slow:.1f})"
        )
        if z_slow >= thr.significance_z:
            failures.append(msg)
    return (
        f"churn rate shift {shift:+.2%} ± {se:.2%} on the same requests ({canary.paired_customers} customers), "
        f"p99 per row {p_can * 1e3:.3f} ms (champion {p_ref * 1e3:.3f} ms){_dominance(canary)}"
    )


def parse_steps(steps: Any) -> list[float]:
    """'10,50,100' or [10, 50, 100] -> increasing percents within (0, 100]."""
    parts = [p for p in steps.replace(" ", "").split(",") if p] if isinstance(steps, str) else list(steps or [])
    try:
        out = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise RolloutError(f"rollout steps must be numbers, got {steps!r}") from None
    if not out:
        raise RolloutError("rollout needs at least one step")
    if any(not 0 < p <= 100 for p in out) or any(b <= a for a, b in itertools.pairwise(out)):
        raise RolloutError(f"rollout steps must increase within (0, 100], got {out}")
    return out


def plan_versions(
    model_name: str,
    canary_version: str | None,
    champion_version: str | None,
    challenger_alias: str | None,
    champion_alias: str | None,
) -> tuple[str, str]:
    """(canary, champion) to compare: the ones given, else the aliases read beforehand.

    A rollout without both, or of the champion against itself, has nothing to judge: one line.
    """
    canary = str(canary_version or challenger_alias or "")
    if not canary:
        raise RolloutError(
            f"model {model_name}: no version has alias 'challenger'; nothing to roll out "
            "(deploy a version first: the deploy stage or `kfct serve --canary-version`)"
        )
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


def plan_rollout_step(
    champion: Window,
    canary: Window,
    thr: Thresholds,
    baseline: Window | None,
    elapsed: float,
    bake_seconds: float,
    max_wait_factor: float,
) -> StepDecision:
    """Judge one poll of a step that has baked `elapsed` seconds.

    A failure ends the step at once; a pass only after the bake time; a canary still
    without enough evidence after `max_wait_factor` x the bake time fails (never promote
    without evidence). Anything else keeps polling.
    """
    verdict, reasons = evaluate_step(champion, canary, thr, baseline)
    if verdict == FAIL or (verdict == PASS and elapsed >= bake_seconds):
        return StepDecision(True, verdict, reasons)
    if elapsed >= max_wait_factor * bake_seconds:
        return StepDecision(
            True, FAIL, [f"not enough traffic to judge within {max_wait_factor * bake_seconds:g} s: " + "; ".join(reasons)]
        )
    return StepDecision(False, verdict, reasons)


@dataclass(frozen=True)
class OutcomePlan:
    """The registry and audit effects of a rollout's end, in the order the adapter applies them.

    `conflict`: the promotion is refused (the canary was gated against another champion)
    and the rollout rolls back with that reason instead.
    """

    outcome: str  # promoted | rolled_back | aborted
    reason: str
    reasons: list[str]
    tags: dict[str, str]
    challenger_reason: str | None  # why alias `challenger` is removed; None: it stays
    audit_event: str
    audit_fields: dict[str, Any]
    conflict: str | None = None


def plan_promotion(
    model_name: str, canary: str, champion: str, steps: list[float], gated: str | None, seconds: float
) -> OutcomePlan:
    """Promote `canary` over `champion`, unless the gate compared it with another champion
    (`gated`: the gate's champion tag, '' = none, None = unrecorded)."""
    reason = f"canary passed {', '.join(f'{p:g}%' for p in steps)}"
    conflict = None
    if gated is not None and gated != (champion or ""):
        conflict = f"v{canary} was gated against v{gated or None}, not the champion v{champion}"
    return OutcomePlan(
        "promoted",
        reason,
        [reason],
        {"rollout_status": "promoted"},
        "promoted to champion",
        "rollout_promoted",
        {"model_name": model_name, "version": canary, "previous": champion, "reason": reason, "seconds": seconds},
        conflict,
    )


def plan_rollback(
    model_name: str, canary: str, champion: str, failed: list[str], seconds: float, evidence: dict[str, Any] | None = None
) -> OutcomePlan:
    """Reject `canary` for the reasons `failed` (each named in its tag and the audit trail).

    `evidence`: the failing step's figures (both versions' windows, the paired shifts, the
    customers judged), recorded with the rollback so an operator can see what it was judged on
    and decide on `kfct rollout --retry`."""
    reason = "; ".join(failed)
    fields: dict[str, Any] = {
        "model_name": model_name,
        "version": canary,
        "champion": champion,
        "reason": reason,
        "seconds": seconds,
    }
    if evidence is not None:
        fields["evidence"] = evidence
    return OutcomePlan(
        "rolled_back",
        reason,
        failed,
        {"rejected": "true", "rollout_status": "rejected", "rejected_reason": reason[:4000]},
        f"rolled back: {reason}"[:4000],
        "rollout_rolled_back",
        fields,
    )


def plan_abort(model_name: str, canary: str, champion: str, failed: list[str], seconds: float) -> OutcomePlan:
    """The rollout stopped because the infrastructure failed, not the model: the route or the split
    was not applied, the canary never got ready, the serving side or Prometheus did not answer.

    Traffic goes back to the champion like any rollback, but the version is not judged: no
    `rejected` tag (which `kfct deploy --version` refuses and only `kfct rollout --retry` lifts),
    and alias `challenger` stays on it, so the registry is as a failed deploy step leaves it (a
    failed step never touches the aliases): once the prerequisite is fixed, `kfct rollout` picks
    the same challenger again. The cause goes to the audit trail as `rollout_aborted`."""
    reason = "; ".join(failed)
    return OutcomePlan(
        "aborted",
        reason,
        failed,
        {"rollout_status": "aborted"},
        None,
        "rollout_aborted",
        {
            "model_name": model_name,
            "version": canary,
            "champion": champion,
            "cause": "infrastructure",
            "reason": reason,
            "seconds": seconds,
        },
    )


def plan_retry(model_name: str, version: str, tags: dict[str, Any], champion: str | None) -> dict[str, Any]:
    """What `kfct rollout --retry VERSION` changes: a version a rollout rejected gets its `rejected`
    tag lifted (the old reason kept as `previous_rejected_reason`) and alias `challenger`, so the
    rollout that follows judges it afresh. Only a rollout's rejection can be retried."""
    if tags.get("rejected") != "true":
        raise RolloutError(f"model {model_name} v{version} is not rejected; roll it out with `kfct rollout --version {version}`")
    if champion is not None and str(champion) == str(version):
        raise RolloutError(f"model {model_name}: v{version} is already the champion")
    return {
        "tags": {
            "rejected": "false",
            "rollout_status": "retry",
            "previous_rejected_reason": tags.get("rejected_reason", "")[:4000],
        },
        "delete_tags": ["rejected_reason"],
        "audit": {"model_name": model_name, "version": str(version), "previous_reason": tags.get("rejected_reason", "")[:1000]},
    }


def plan_expiry(st: "SplitState | None", now: float | None = None) -> str | None:
    """Why the deferred canary in split state `st` must be rolled back now, or None while it may stand."""
    if st is None or not st.canary_version or st.canary_deadline is None or not st.expired(now):
        return None
    return (
        f"deferred rollout of v{st.canary_version} passed its deadline "
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(st.canary_deadline))} without a judgement"
    )
