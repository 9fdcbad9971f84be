"""When drift means retraining: severity, the retrain decision and the cooldown. Pure.

Severity follows the case study's drift detector:
- critical: drift share > 0.5 or predicted churn-rate shift > 0.5;
- high:     drift share > 0.3 or shift > 0.3;
- medium:   drift share > `drift.drift_share_threshold` (0.2);
- low:      otherwise.
A retrain is needed when the drift share passes `drift_share_threshold`, the relative
shift of the predicted churn rate passes `prediction_shift_threshold`, or (when labels
are available) the ROC AUC dropped by more than `performance_drop_threshold`; whatever
triggers a retrain makes the severity at least medium.

The cooldown (`drift.cooldown_hours`) keeps a drifting stream from starting a CT run
every time the monitor fires: within it, a needed retrain is reported but not started,
unless forced. The time of the last trigger comes from the audit trail (events
`retrain_triggered`), which is append-only and tamper-evident.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfct.config import DriftConfig, RunConfig
    from kfct.contracts.launcher import RetrainLauncher
    from kfct.runtime.settings import Settings

from kfp.dsl import Artifact, Input

SEVERITIES = ("low", "medium", "high", "critical")
CRITICAL_LEVEL = 0.5
HIGH_LEVEL = 0.3
TRIGGER_EVENT = "retrain_triggered"


def _required(name: str, value: Any) -> float:
    """A measured figure the decision cannot do without: a number, not None or NaN."""
    v = _num(name, value)
    if v is None:
        raise ValueError(f"{name} is required (got {value!r})")
    return v


def _num(name: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc
    if v != v:  # NaN: treat as not measured
        return None
    return v


def severity(drift_share: float, churn_rate_shift: float | None, drift_share_threshold: float = 0.2) -> str:
    """The case study's severity level for a drift share and a relative churn-rate shift."""
    share = _required("drift_share", drift_share)
    shift = _num("churn_rate_shift", churn_rate_shift)
    if share > CRITICAL_LEVEL or (shift is not None and shift > CRITICAL_LEVEL):
        return "critical"
    if share > HIGH_LEVEL or (shift is not None and shift > HIGH_LEVEL):
        return "high"
    if share > float(drift_share_threshold):
        return "medium"
    return "low"


def should_retrain(
    drift_share: float, churn_rate_shift: float | None, cfg_drift: "DriftConfig", performance_drop: float | None = None
) -> tuple[bool, list[str]]:
    """(retrain needed, reasons). Every threshold crossed is named; none crossed says why not."""
    share = _required("drift_share", drift_share)
    shift = _num("churn_rate_shift", churn_rate_shift)
    drop = _num("performance_drop", performance_drop)
    t_share = float(cfg_drift.drift_share_threshold)
    t_shift = float(cfg_drift.prediction_shift_threshold)
    t_drop = float(cfg_drift.performance_drop_threshold)
    reasons = []
    if share > t_share:
        reasons.append(f"drift share {share:.3f} > {t_share}")
    if shift is not None and shift > t_shift:
        reasons.append(f"predicted churn-rate shift {shift:.1%} > {t_shift:.0%}")
    if drop is not None and drop > t_drop:
        reasons.append(f"ROC AUC dropped by {drop:.3f} > {t_drop}")
    if reasons:
        return True, reasons
    why = [f"drift share {share:.3f} <= {t_share}"]
    why.append("churn-rate shift not measured" if shift is None else f"churn-rate shift {shift:.1%} <= {t_shift:.0%}")
    if drop is not None:
        why.append(f"ROC AUC drop {drop:.3f} <= {t_drop}")
    return False, why


def assess(
    drift_share: float, churn_rate_shift: float | None, cfg_drift: "DriftConfig", performance_drop: float | None = None
) -> dict:
    """Severity, retrain flag and reason together (what `detect_drift` reports)."""
    retrain, reasons = should_retrain(drift_share, churn_rate_shift, cfg_drift, performance_drop)
    level = severity(drift_share, churn_rate_shift, float(cfg_drift.drift_share_threshold))
    if retrain and SEVERITIES.index(level) < SEVERITIES.index("medium"):
        level = "medium"
    return {"severity": level, "retrain": retrain, "reason": "; ".join(reasons)}


def parse_ts(value: object) -> datetime:
    """An audit timestamp (ISO 8601, 'Z' allowed) or datetime as an aware UTC datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not an ISO timestamp: {value!r}") from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def last_trigger(entries: Iterable[dict], event: str = TRIGGER_EVENT) -> datetime | None:
    """Time of the latest retrain trigger among audit entries (None when there is none)."""
    last = None
    for e in entries:
        if e.get("event") == event and e.get("ts"):
            ts = parse_ts(e["ts"])
            if last is None or ts > last:
                last = ts
    return last


def cooldown_remaining(last: datetime | None, now: datetime, cooldown_hours: float) -> float:
    """Seconds left in the cooldown after the last trigger (0 when none or expired)."""
    if last is None or float(cooldown_hours) <= 0:
        return 0.0
    end = parse_ts(last) + timedelta(hours=float(cooldown_hours))
    return max(0.0, (end - parse_ts(now)).total_seconds())


def decide(assessment: dict, last: datetime | None, now: datetime, cfg_drift: "DriftConfig", force: bool = False) -> dict:
    """What the monitor does now: `retrain`, `cooldown` (needed but held back) or `none`.

    `force` starts a run even without drift and ignores the cooldown (a person asked).
    """
    remaining = cooldown_remaining(last, now, float(cfg_drift.cooldown_hours))
    needed = bool(assessment.get("retrain"))
    reason = assessment.get("reason", "")
    if force:
        return {
            "action": "retrain",
            "retrain_needed": needed,
            "cooldown_remaining_s": remaining,
            "reason": f"forced by operator{'; ' + reason if reason else ''}",
        }
    if not needed:
        return {
            "action": "none",
            "retrain_needed": False,
            "cooldown_remaining_s": remaining,
            "reason": f"no retrain needed: {reason}" if reason else "no retrain needed",
        }
    if remaining > 0:
        hours = remaining / 3600.0
        return {
            "action": "cooldown",
            "retrain_needed": True,
            "cooldown_remaining_s": remaining,
            "reason": f"{reason}; held back by cooldown: last retrain triggered {parse_ts(last).isoformat()}, "
            f"{hours:.1f} h of {cfg_drift.cooldown_hours} h left",
        }
    return {"action": "retrain", "retrain_needed": True, "cooldown_remaining_s": 0.0, "reason": reason}


# --------------------------------------------------------------------------- the trigger: plan, then act
def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TriggerPlan:
    """What the trigger does, decided from plain values; the adapter performs it in order.

    `out`: the report (without what the launch returns); `held`: fields of the
    `retrain_held` audit record, None when nothing is held back (or a dry run); `launch`:
    run_reason, data_uri and severity of the CT run to start, None when none is started;
    `audit`: the fields every record of the started run carries.
    """

    out: dict
    held: dict | None = None
    launch: dict | None = None
    audit: dict = field(default_factory=dict)


def plan_trigger(
    drift: dict,
    history: Iterable[dict],
    now: datetime,
    cfg: "RunConfig",
    model_name: str,
    current_uri: str = "",
    ct_data_uri: str = "",
    force: bool = False,
    dry_run: bool = False,
) -> TriggerPlan:
    """Drift (from the detector), the model's audit history and the time -> what to do.

    The data for a new run: `ct_data_uri`, else the current batch when it carries labels,
    else the CT pipeline's default ('').
    """
    decision = decide(
        {"retrain": drift.get("retrain"), "reason": drift.get("reason", "")}, last_trigger(history), now, cfg.drift, force=force
    )
    out = {**decision, "severity": drift.get("severity"), "dry_run": bool(dry_run), "triggered": False}
    if decision["action"] == "cooldown":
        held = (
            None
            if dry_run
            else {
                "model_name": model_name,
                "severity": drift.get("severity"),
                "reason": decision["reason"],
                "cooldown_remaining_s": round(decision["cooldown_remaining_s"]),
            }
        )
        return TriggerPlan(out, held=held)
    if decision["action"] != "retrain" or dry_run:
        return TriggerPlan(out)
    data_uri = ct_data_uri or (current_uri if current_uri and drift.get("has_labels") else "")
    severity_ = drift.get("severity", "?")
    run_reason = f"drift ({severity_}): {decision['reason']}"[:500]
    out.update(data_uri=data_uri or "(CT pipeline default)", run_reason=run_reason)
    return TriggerPlan(
        out,
        launch={"run_reason": run_reason, "data_uri": data_uri, "severity": severity_},
        audit={
            "model_name": model_name,
            "severity": severity_,
            "reason": decision["reason"],
            "data_uri": out["data_uri"],
            "forced": bool(force),
        },
    )


def plan_finished(model_name: str, summary: dict) -> tuple[dict, dict]:
    """A local CT run's summary -> (fields of its `retrain_finished` record, the report's `ct` entry)."""
    dec = summary.get("decision") or {}
    reg = summary.get("registered") or {}
    finished = {
        "model_name": model_name,
        "run_name": summary.get("run_name"),
        "validation_passed": summary["validation"]["passed"],
        "deploy": dec.get("deploy"),
        "version": reg.get("version"),
        "alias": reg.get("alias"),
    }
    ct = {k: summary.get(k) for k in ("run_name", "total_seconds", "registered", "mlflow_run_id", "log")}
    ct.update(validation_passed=summary["validation"]["passed"], deploy=dec.get("deploy"), reasons=dec.get("reasons", []))
    return finished, ct


def run_trigger(
    drift: dict,
    cfg: "RunConfig",
    model_name: str,
    current_uri: str = "",
    ct_data_uri: str = "",
    force: bool = False,
    dry_run: bool = False,
    mode: str = "auto",
    settings: "Settings | None" = None,
    now: datetime | None = None,
    launcher: "RetrainLauncher | None" = None,
) -> dict:
    """Decide (`plan_trigger`: policy + cooldown from the audit trail) and, when it says so, start a CT run.

    The run is started by `launcher` (`kfct.contracts.launcher.RetrainLauncher`; by default the one
    `pick_launcher(mode)` names): on a cluster a new run of the CT pipeline through the KFP
    API, the reason in its name and `run_reason` parameter; locally the CT pipeline with
    kfp.local, which gates the new model like any other run. Every outcome is audited.
    """
    from kfct.contracts.launcher import RetrainRequest, uses_cluster
    from kfct.governance import audit
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    uses_cluster(s, mode)  # a bad mode is refused before anything is read
    now = now or _utcnow()
    history = [e for e in audit.read() if e.get("model_name") in (None, model_name)]
    plan = plan_trigger(drift, history, now, cfg, model_name, current_uri, ct_data_uri, force, dry_run)
    out = plan.out
    if plan.held is not None:
        audit.record("retrain_held", **plan.held)
    if plan.launch is None:
        return out
    if launcher is None:
        from kfct.contracts.launcher import pick_launcher

        launcher = pick_launcher(mode, s)
    request = RetrainRequest(model_name=model_name, cfg=cfg, requested_at=now, **plan.launch)
    if launcher.where == "cluster":
        run = launcher.launch(request)
        audit.record(
            TRIGGER_EVENT,
            mode="cluster",
            run_id=run.get("run_id"),
            run_name=run.get("run_name"),
            url=run.get("url"),
            pipeline_version_id=run.get("pipeline_version_id"),
            **plan.audit,
        )
        out.update(triggered=True, mode="cluster", run=run)
        return out
    audit.record(TRIGGER_EVENT, mode="local", **plan.audit)
    out.update(triggered=True, mode="local")
    try:
        summary = launcher.launch(request)
    except Exception as exc:
        audit.record("retrain_failed", model_name=model_name, error=f"{type(exc).__name__}: {exc}"[:1000])
        raise
    finished, out["ct"] = plan_finished(model_name, summary)
    audit.record("retrain_finished", **finished)
    return out


def trigger_retrain(
    retrain_needed: bool,
    drift_summary: Input[Artifact],
    config_json: str,
    model_name: str,
    current_uri: str,
    ct_data_uri: str,
    force: bool,
    dry_run: bool,
    mode: str,
) -> str:
    """Apply the retrain policy and cooldown; when retraining is due start a CT run (KFP API on a
    cluster, kfp.local locally); returns the outcome as JSON."""
    from kfct.runtime.stage import stage

    with stage("trigger-retrain", config_json, model_name=model_name) as st:
        import json
        from pathlib import Path

        from kfct.components.retrain_policy import run_trigger

        cfg = st.config
        with Path(drift_summary.path).open() as fh:
            drift = json.load(fh)
        drift["retrain"] = bool(retrain_needed)
        out = run_trigger(drift, cfg, model_name, current_uri, ct_data_uri, force, dry_run, mode)
        st.log.info(
            "retrain decision: %s (%s)%s",
            out["action"],
            out["reason"],
            f"; started a {out['mode']} CT run" if out["triggered"] else "",
        )
        return json.dumps({**out, "stage_time": st.times()}, default=str)
