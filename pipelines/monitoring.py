"""The monitoring pipeline: drift check on the current window, retraining when it is due.

    prepare (champion's training snapshot + current window, both scored by the champion)
      -> check drift (Evidently report, severity, retrain needed?)
      -> trigger retrain (policy + cooldown; a CT run through the KFP API on a cluster,
         the CT pipeline with kfp.local on this machine)

Compiled to `build/monitoring_pipeline.yaml` by `kfct.pipelines.compile` and scheduled like
the CT pipeline (weekly, as in the case study). `kfct monitor` runs the same stages on
this machine: in-process by default (`run_monitor`), or as this pipeline under
kfp.local (`run_monitor(..., via_kfp=True)`). The trigger stage always runs and
decides, so a forced or held-back retrain is recorded like any other outcome.
"""

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # kfp ships no types (Any to mypy); the names say what each value is.
    from kfp.dsl import PipelineTask
    from kfp.dsl.graph_component import GraphComponent
    from kfp.dsl.python_component import PythonComponent

    from kfct.config import RunConfig
    from kfct.runtime.settings import Settings

PIPELINE_NAME = "kfct-monitoring"
STAGES = ("prepare-drift-data", "check-drift", "trigger-retrain", "report-realized-performance", "decide-ab-test")
DEFAULT_CRON = "0 0 4 * * 1"  # Mondays 04:00 UTC (6-field KFP cron)


def make_components(settings: "Settings | None" = None) -> "dict[str, PythonComponent]":
    from kfp import dsl

    from kfct.components import drift, outcomes_report, retrain_policy
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()

    def comp(fn: Callable[..., Any]) -> "PythonComponent":
        return dsl.component(fn, base_image=s.component_image, install_kfp_package=False)

    return {
        "prepare": comp(drift.prepare_drift_data),
        "check": comp(drift.check_drift),
        "trigger": comp(retrain_policy.trigger_retrain),
        "realized": comp(outcomes_report.report_realized_performance),
        "ab": comp(outcomes_report.decide_ab_test),
    }


def _configure(task: "PipelineTask", stage: str, cfg: "RunConfig", settings: "Settings") -> "PipelineTask":
    """Cluster resources/secrets like the CT stages; never cached: the same inputs mean a new window."""
    from kfct.pipelines.task_config import apply_task_config

    task = apply_task_config(task, stage, cfg, settings, gpu=False)
    task.set_caching_options(enable_caching=False)
    return task


def build_monitoring_pipeline(
    settings: "Settings | None" = None, cfg: "RunConfig | dict[str, Any] | None" = None
) -> "GraphComponent":
    """Return the monitoring `@dsl.pipeline` function (parameters are its run-time knobs)."""
    from kfp import dsl

    from kfct.config import config_to_json, load_config, validate_config, with_overrides
    from kfct.data.datatags import LATEST_URI
    from kfct.pipelines.task_config import building_for_local, grant_kfp_access
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    # A dict arrives from run_pipeline's JSON request (the build_kwargs of a local run).
    cfg = validate_config(cfg) if cfg is not None else load_config()
    ops = make_components(s)
    # On a cluster a retrain ingests the moving pointer (resolved when that CT run executes).
    default_ct_data = "" if building_for_local() else LATEST_URI
    default_config = config_to_json(cfg)
    # A retried trigger could submit a second CT run: the trigger stage never retries.
    task_cfg = with_overrides(cfg, {"resources": {"trigger_retrain": {"retries": 0}}})
    default_model = cfg.register_.model_name

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="kfct monitoring: Evidently drift of the serving window vs the champion's training snapshot; "
        "retrains (a gated CT run) when drift passes the configured thresholds, with a cooldown.",
    )
    def monitoring_pipeline(
        current_uri: str = "",
        since: str = "",
        config_json: str = default_config,
        model_name: str = default_model,
        ct_data_uri: str = default_ct_data,
        force: bool = False,
        dry_run: bool = False,
        mode: str = "auto",
        outcomes_retrain: bool = True,
        ab_act: bool = True,
    ) -> None:
        prep = _configure(
            ops["prepare"](current_uri=current_uri, since=since, config_json=config_json, model_name=model_name), "drift", cfg, s
        )
        prep.set_display_name("load reference & current window")
        chk = _configure(
            ops["check"](
                reference=prep.outputs["reference"],
                current=prep.outputs["current"],
                config_json=config_json,
                model_name=model_name,
                champion_version=prep.outputs["Output"],
            ),
            "drift",
            cfg,
            s,
        )
        chk.set_display_name("drift report (Evidently)")
        trig = _configure(
            ops["trigger"](
                retrain_needed=chk.outputs["Output"],
                drift_summary=chk.outputs["summary_json"],
                config_json=config_json,
                model_name=model_name,
                current_uri=current_uri,
                ct_data_uri=ct_data_uri,
                force=force,
                dry_run=dry_run,
                mode=mode,
            ),
            "trigger_retrain",
            task_cfg,
            s,
        )
        trig.set_display_name("retrain decision")
        grant_kfp_access(trig)  # it starts CT runs through the KFP API (multi-user: projected token)
        # Outcomes close the loop: realized performance (may ask for a CT run on decay; after the
        # drift trigger so the cooldown sees it) and the running A/B test's decision.
        real = _configure(
            ops["realized"](config_json=config_json, model_name=model_name, since=since, retrain=outcomes_retrain),
            "trigger_retrain",
            task_cfg,
            s,
        )
        real.set_display_name("realized performance (outcomes)")
        real.after(trig)
        grant_kfp_access(real)  # a decayed champion starts a CT run through the KFP API too
        ab = _configure(ops["ab"](config_json=config_json, model_name=model_name, act=ab_act), "trigger_retrain", task_cfg, s)
        ab.set_display_name("A/B test decision (outcomes)")

    return monitoring_pipeline


# --------------------------------------------------------------------------- local driver
def run_monitor(
    current_uri: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    since: str | float | None = None,
    ct_data_uri: str | None = None,
    cfg: "RunConfig | None" = None,
    model_name: str | None = None,
    settings: "Settings | None" = None,
    mode: str = "local",
    via_kfp: bool = False,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """One monitoring pass on this machine; returns a summary (drift figures, reports, decision, CT outcome).

    In-process by default: the pipeline's own three component functions called one after
    the other on local artifacts, without a subprocess per stage. `via_kfp=True` executes
    the monitoring pipeline itself with kfp.local (slower; what the cluster runs).
    """
    from kfct.config import config_to_json, load_config
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    cfg = cfg or load_config()
    model_name = model_name or cfg.register_.model_name
    arguments = dict(
        current_uri=current_uri or "",
        since=str(since or ""),
        config_json=config_to_json(cfg),
        model_name=model_name,
        ct_data_uri=ct_data_uri or "",
        force=bool(force),
        dry_run=bool(dry_run),
        mode=mode,
    )
    if via_kfp:
        return _run_monitor_kfp(arguments, cfg, s)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = Path(out_dir) if out_dir else Path(s.home) / "monitoring" / f"drift-{stamp}"
    return _run_monitor_in_process(arguments, out)


def _artifacts(out: Path) -> dict[str, Any]:
    """The monitoring stages' output artifacts as local files under `out` (what kfp.local would hand them)."""
    from kfp import dsl

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "reference": (dsl.Dataset, "reference.parquet"),
        "current": (dsl.Dataset, "current.parquet"),
        "report_html": (dsl.HTML, "drift_report.html"),
        "report_json": (dsl.Artifact, "drift_report.json"),
        "summary": (dsl.Markdown, "drift_summary.md"),
        "summary_json": (dsl.Artifact, "drift_summary.json"),
        "metrics": (dsl.Metrics, "metrics.json"),
    }
    return {k: cls(name=k, uri=str(out / name), metadata={}) for k, (cls, name) in files.items()}


def _run_monitor_in_process(args: dict[str, Any], out: Path) -> dict[str, Any]:
    from kfct.components.drift import DriftInputError, check_drift, prepare_drift_data
    from kfct.components.retrain_policy import trigger_retrain
    from kfct.errors import KfctError

    t0 = time.perf_counter()
    a = _artifacts(out)
    try:
        version = prepare_drift_data(
            args["current_uri"],
            args["since"],
            args["config_json"],
            args["model_name"],
            reference=a["reference"],
            current=a["current"],
        )
        retrain = check_drift(
            a["reference"],
            a["current"],
            args["config_json"],
            args["model_name"],
            version,
            report_html=a["report_html"],
            report_json=a["report_json"],
            summary=a["summary"],
            summary_json=a["summary_json"],
            metrics=a["metrics"],
        )
    except (DriftInputError, ValueError) as exc:
        raise KfctError(f"drift check: {exc}") from exc
    drift_seconds = round(time.perf_counter() - t0, 2)
    decision = json.loads(
        trigger_retrain(
            retrain,
            a["summary_json"],
            args["config_json"],
            args["model_name"],
            args["current_uri"],
            args["ct_data_uri"],
            args["force"],
            args["dry_run"],
            args["mode"],
        )
    )
    decision.pop("stage_time", None)
    return {
        "model_name": args["model_name"],
        "champion_version": version,
        "reference": a["reference"].metadata.get("source"),
        "current": a["current"].metadata.get("source"),
        "drift": json.loads(Path(a["summary_json"].path).read_text()),
        "reports": _report_paths(a["report_html"].path, a["report_json"].path, a["summary"].path, a["summary_json"].path),
        "mlflow_run_id": a["summary_json"].metadata.get("mlflow_run_id"),
        "decision": decision,
        "drift_seconds": drift_seconds,
        "total_seconds": round(time.perf_counter() - t0, 2),
    }


def _report_paths(html: str | None, json_: str | None, md: str | None, summary_json: str | None) -> dict[str, Any]:
    return {"html": html, "json": json_, "summary_md": md, "summary_json": summary_json}


def _run_monitor_kfp(args: dict[str, Any], cfg: "RunConfig", s: "Settings") -> dict[str, Any]:
    """The monitoring pipeline under kfp.local (through the one local-run helper); this run's outputs."""
    from kfct.config import config_dict
    from kfct.errors import StageError
    from kfct.pipelines.runner import run_pipeline

    run = run_pipeline(
        "kfct.pipelines.monitoring:build_monitoring_pipeline", {"cfg": config_dict(cfg)}, args, s.home, prefix="monitor"
    )
    if run.error is not None:
        raise StageError(f"monitoring pipeline failed in {run.failed_task or '?'}: {run.error} (log: {run.log_path})")
    summ = run.artifact("check-drift", "summary_json")
    drift = json.loads(Path(summ["uri"]).read_text()) if summ.get("uri") else {}
    decision = json.loads(run.param("trigger-retrain", default="{}"))
    decision.pop("stage_time", None)
    return {
        "model_name": args["model_name"],
        "run_id": run.run_id,
        "run_name": run.run_name,
        "run_dir": str(run.run_dir),
        "champion_version": run.param("prepare-drift-data"),
        "current": args["current_uri"] or "prediction log",
        "drift": drift,
        "reports": _report_paths(
            run.artifact("check-drift", "report_html").get("uri"),
            run.artifact("check-drift", "report_json").get("uri"),
            run.artifact("check-drift", "summary").get("uri"),
            summ.get("uri"),
        ),
        "mlflow_run_id": summ.get("metadata", {}).get("mlflow_run_id"),
        "decision": decision,
        "stages": run.durations(),
        "total_seconds": run.total_seconds,
    }


def format_monitor_summary(summary: dict[str, Any], rate_name: str = "positive rate") -> str:
    """The lines `kfct monitor` prints; `rate_name` names the predicted class's rate in the data's own words."""
    d = summary["drift"]
    dec = summary["decision"]
    cr = d.get("churn_rate") or {}
    lines = [f"kfct monitor: {summary['model_name']} v{summary.get('champion_version')} vs {summary.get('current')}"]
    lines.append(
        f"  drift       share {d['drift_share']:.3f} ({d['n_drifted_features']}/{d['n_features']} features: "
        f"{', '.join(d.get('drifted_features', [])[:8]) or 'none'}"
        f"{' ...' if len(d.get('drifted_features', [])) > 8 else ''})"
    )
    if d.get("churn_rate_shift") is not None:
        lines.append(
            f"  {rate_name}  reference {cr['reference']:.4f} -> current {cr['current']:.4f} "
            f"(relative shift {d['churn_rate_shift']:.1%})"
        )
    perf = d.get("performance")
    if perf:
        lines.append(
            f"  ROC AUC     reference {perf['reference']['roc_auc']:.4f} -> current "
            f"{perf['current']['roc_auc']:.4f} (drop {perf['roc_auc_drop']:+.4f})"
        )
    lines.append(f"  severity    {d['severity']}; retrain needed: {'yes' if d['retrain'] else 'no'} ({d['reason']})")
    act = dec.get("action")
    if dec.get("dry_run") and act == "retrain":
        what = "would start a CT run (dry run: nothing started)"
    elif act == "retrain" and dec.get("mode") == "cluster":
        run = dec.get("run", {})
        what = f"CT run submitted to Kubeflow Pipelines: {run.get('run_name')} ({run.get('url')})"
    elif act == "retrain":
        ct = dec.get("ct") or {}
        reg = ct.get("registered")
        outcome = (
            f"new champion v{reg['version']}"
            if reg and reg.get("alias") == "champion"
            else f"registered v{reg['version']} as {reg.get('alias')}"
            if reg
            else "validation failed"
            if ct.get("validation_passed") is False
            else "gate said no: champion unchanged"
        )
        what = f"CT run {ct.get('run_name')} ({ct.get('total_seconds')}s): {outcome}"
    elif act == "cooldown":
        what = "held back by the cooldown"
    else:
        what = "nothing to do"
    lines.append(f"  action      {what}")
    lines.append(f"              {dec.get('reason')}")
    ct = dec.get("ct") or {}
    for r in ct.get("reasons", [])[:8]:
        lines.append(f"              - {r}")
    rep = summary.get("reports") or {}
    if rep.get("html"):
        lines.append(f"  report      {rep['html']}")
    return "\n".join(lines)
