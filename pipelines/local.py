"""Run the CT pipeline on this machine with kfp's own local runner (SubprocessRunner).

Each stage runs as a real kfp task in a subprocess of this virtualenv, with the
pipeline root, MLflow store and audit trail under `KFCT_HOME` (default `.kfct/`).
The run itself goes through `kfct.pipelines.runner` (the one local-run helper); this
module turns what the run produced into the summary the user sees.
kfp's own log goes to `.kfct/runs/<run id>.log`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from kfct.errors import DataSourceError, StageError, ValidationFailed

if TYPE_CHECKING:
    from kfct.config import RunConfig
    from kfct.pipelines.runner import PipelineRun
    from kfct.runtime.settings import Settings


def wants_parts(data_uri: str) -> bool:
    """A dataset in parts (a parts directory or manifest, an S3 parts prefix, `generate://...part_rows=`,
    or a tag that names parts) runs the map -> reduce pipeline."""
    from kfct.data import parts
    from kfct.data.datatags import is_pointer, resolve

    if is_pointer(data_uri):
        data_uri, _ = resolve(data_uri)
    u = urlparse(data_uri)
    if u.scheme == "generate":
        return "part_rows" in u.query
    if u.scheme in ("", "file"):
        return parts.is_parts(Path(u.path if u.scheme == "file" else data_uri).expanduser())
    return u.scheme == "s3" and parts.is_parts(data_uri)


def _precheck(data_uri: str) -> None:
    """Fail fast, with one line, on a local dataset path that cannot be read."""
    scheme = urlparse(data_uri).scheme
    if scheme in ("", "file"):
        p = Path(urlparse(data_uri).path if scheme == "file" else data_uri).expanduser()
        if not p.exists():
            raise DataSourceError(f"dataset not found: {p}")
        if p.is_dir() or p.name.endswith(".json"):
            from kfct.data import parts

            if not parts.is_parts(p):
                raise DataSourceError(f"dataset directory {p} has no parts manifest (_manifest.json)")
            return
        if p.suffix.lower() not in (".parquet", ".pq", ".csv"):
            raise DataSourceError(f"unsupported dataset format {p.suffix!r} for {p}: use .parquet or .csv")
    elif scheme not in ("s3", "generate", "dataset"):
        raise DataSourceError(
            f"unsupported dataset URI scheme {scheme!r} in {data_uri!r}: use a path, s3://, dataset://<tag> or generate://"
        )


def run_ct(
    data_uri: str | None = None,
    cfg: RunConfig | None = None,
    model_name: str | None = None,
    device: str | None = None,
    tune_trials: int = 0,
    run_reason: str = "manual",
    serving_url: str = "",
    settings: Settings | None = None,
    verbose: bool = False,
    raise_on_validation: bool = True,
    parts: bool | None = None,
    part_rows: int | None = None,
    pod_limits: bool = False,
) -> dict:
    """Execute the CT pipeline locally; return this run's summary (stages, timings, decision, registration).

    `parts` (default: whether the data is in parts, `wants_parts`) runs the map -> reduce
    variant, splitting anything else into parts of `part_rows` rows. `pod_limits` holds every stage's
    process (and each training worker) to the memory limit the compiled pipeline gives its pod.
    """
    from kfct.config import config_dict, config_to_json, load_config
    from kfct.data.datasource import DEFAULT_URI
    from kfct.governance.lineage import code_version
    from kfct.pipelines.runner import run_pipeline
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    cfg = cfg or load_config()
    data_uri = data_uri or DEFAULT_URI
    _precheck(data_uri)
    if pod_limits:
        from kfct.runtime import memgroup

        if not memgroup.available():  # nothing ran: say why before any stage starts
            raise StageError(
                f"--pod-limits needs root and the cgroup v1 memory controller at "
                f"{memgroup.CGROUP_V1_MEMORY} (to hold each stage at its pod's memory limit)"
            )
    model_name = model_name or cfg.register_.model_name
    arguments = dict(
        data_uri=data_uri,
        config_json=config_to_json(cfg),
        model_name=model_name,
        device=device or cfg.train.device,
        tune_trials=int(tune_trials),
        code_version=code_version(),
        run_reason=run_reason,
        rollout=bool(cfg.rollout.enabled),
        serving_url=serving_url,
    )
    in_parts = wants_parts(data_uri) if parts is None else bool(parts)
    build: dict = {"cfg": config_dict(cfg), "gpu": False}
    if in_parts:
        build["parts"] = True
        if part_rows:
            arguments["part_rows"] = int(part_rows)
    run = run_pipeline(
        "kfct.pipelines.ct:build_ct_pipeline", build, arguments, s.home, prefix="ct", verbose=verbose, pod_limits=pod_limits
    )
    if run.error is not None:
        killed = [r for r in memory_records(run) if r.get("exit") == 137 or r.get("oom_killed")]
        why = "; ".join(
            f"{r['task']} ({r['process']}) was killed at its pod's memory limit ({r.get('limit_mib')} MiB)" for r in killed
        )
        err = StageError(
            f"stage {run.failed_task or '?'} failed: {run.error}" + (f" [{why}]" if why else "") + f" (log: {run.log_path})"
        )
        err.run_id = run.run_id  # the CLI looks for the stage's own `stage_failed` entry by it
        raise err
    summary = summarize(run, data_uri, model_name)
    if raise_on_validation and not summary["validation"]["passed"]:
        raise ValidationFailed(format_validation_failure(summary))
    return summary


def _read_json(art: dict) -> dict:
    uri = art.get("uri")
    return json.loads(Path(uri).read_text()) if uri and Path(uri).exists() else {}


def summarize(run: PipelineRun, data_uri: str, model_name: str) -> dict:
    """The summary of one finished CT run, from its own tasks' outputs only."""
    in_parts = "merge-validation" in run.tasks
    vtask, itask = ("merge-validation", "ingest-parts") if in_parts else ("validate-data", "ingest-data")
    vrep = run.artifact(vtask, "report_json")
    validation = _read_json(vrep)
    summary: dict[str, Any] = {
        "run_id": run.run_id,
        "run_name": run.run_name,
        "run_dir": str(run.run_dir) if run.run_dir else None,
        "log": str(run.log_path),
        "data_uri": data_uri,
        "dataset": _dataset_meta(run.artifact(itask, "dataset").get("metadata", {})),
        "stages": run.durations(),
        "total_seconds": run.total_seconds,
        "validation": {
            "passed": bool(run.param(vtask, default=False)),
            "n_expectations": validation.get("n_expectations"),
            "n_failed": validation.get("n_failed"),
            "failures": validation.get("failures", []),
            "report": vrep.get("uri"),
            "report_html": html_named(run.artifact(vtask, "report").get("uri")),
            "data_docs": data_docs_index(run.artifact(vtask, "data_docs").get("uri")),
            "hints": validation.get("hints", []),
        },
        "model_name": model_name,
    }
    decision = _read_json(run.artifact("evaluate-model", "decision"))
    if decision:
        summary["decision"] = decision
    if "register-model" in run.tasks:
        card = run.artifact("register-model", "model_card")
        summary["registered"] = {"version": run.param("register-model"), "alias": card.get("metadata", {}).get("alias")}
        if card.get("metadata", {}).get("blocked"):  # another run moved the champion after this gate
            summary["registered"]["blocked"] = card["metadata"]["blocked"]
        if card.get("metadata", {}).get("regate"):  # re-gated against the new champion: that gate decided
            summary["decision"] = {**summary.get("decision", {}), **card["metadata"]["regate"], "regated": True}
    for task, key in (("deploy-model", "deploy"), ("rollout-model", "rollout")):
        raw = run.param(task)
        if raw:
            summary[key] = {k: v for k, v in json.loads(raw).items() if k != "stage_time"}
    if "train-model" in run.tasks:
        summary["mlflow_run_id"] = run.param("train-model")
    memory = memory_records(run)
    if memory:
        summary["memory"] = memory
    outcome = run.param("record-run-outcome")
    if outcome:  # the run's uuid, as its lineage tags and audit entries name it
        summary["pipeline_run"] = json.loads(outcome).get("pipeline_run")
    return summary


def memory_records(run: PipelineRun) -> list[dict]:
    """Per held process (`kfct run --pod-limits`): task, limit, peak RSS, group peak, exit; [] otherwise."""
    f = run.run_dir.parent / "memory.jsonl" if run.run_dir else None
    if f is None or not f.is_file():
        return []
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def _dataset_meta(meta: dict) -> dict:
    from kfct.runtime.stageclock import ENDED, STARTED

    return {k: v for k, v in meta.items() if k not in (STARTED, ENDED)}


def html_named(path: str | None) -> str | None:
    """kfp names the HTML artifact `report`; a copy named `.html` opens in a browser."""
    if not path or path.endswith(".html") or not Path(path).is_file():
        return path
    import shutil

    return shutil.copyfile(path, path + ".html")


def data_docs_index(site: str | None) -> str | None:
    """The index page of the run's GX Data Docs site (the `data_docs` directory artifact), if it was written."""
    index = Path(site) / "index.html" if site else None
    return str(index) if index is not None and index.is_file() else None


def format_validation_failure(summary: dict) -> str:
    v = summary["validation"]
    from kfct.components.validation_report import failure_lines

    lines = [
        f"validation failed: {v.get('n_failed')} of {v.get('n_expectations')} expectations "
        f"(report: {v.get('report_html') or v.get('report')})"
    ]
    if v.get("data_docs"):
        lines.append(f"  Great Expectations Data Docs: {v['data_docs']}")
    lines += [f"  - {line}" for line in failure_lines(v)]
    return "\n".join(lines)


def _decision_lines(dec: dict) -> list[str]:
    m = dec["metrics"]
    return [
        "  metrics     " + ", ".join(f"{k} {m[k]:.4f}" for k in ("roc_auc", "pr_auc", "recall", "precision", "f1")),
        f"  decision    {'DEPLOY' if dec['deploy'] else 'STOPPED (data)' if dec.get('stop') else 'BLOCKED'}",
        *(f"              - {r}" for r in dec.get("reasons", [])),
    ]


def _registered_line(summary: dict, dec: dict | None) -> str | None:
    """What the registry got: a version and its alias, nothing (blocked), or no line (no decision)."""
    reg = summary.get("registered")
    if reg and not reg.get("version"):
        return f"  registered  nothing: {reg.get('blocked') or 'blocked at the registry hand-off'}"
    if reg:
        alias = reg["alias"]
        dep = summary.get("deploy") or {}
        if dep.get("alias") and dep["alias"] != alias:  # e.g. the first model goes straight to champion
            alias = f"{alias}' -> '{dep['alias']}"
        return f"  registered  {summary['model_name']} v{reg['version']} -> alias '{alias}'"
    return "  registered  nothing (registry and aliases unchanged)" if dec else None


def format_summary(summary: dict) -> str:
    """The few lines `make run` ends with."""
    out = [f"kfct CT run {summary.get('run_id')}  ({summary['data_uri']}; kfp run {summary.get('run_name')})"]
    ds = summary.get("dataset") or {}
    if ds:
        out.append(
            f"  data        {int(ds.get('rows', 0)):,} rows x {int(ds.get('columns', 0))} cols, "
            f"sha256 {str(ds.get('sha256', ''))[:16]}"
        )
    v = summary["validation"]
    out.append(
        f"  validation  {v.get('n_expectations')} expectations, {v.get('n_failed')} failed -> "
        f"{'passed' if v['passed'] else 'FAILED'}"
    )
    if v.get("data_docs"):
        out.append(f"  data docs   {v['data_docs']}")
    dec = summary.get("decision")
    if dec:
        out += _decision_lines(dec)
    registered = _registered_line(summary, dec)
    if registered:
        out.append(registered)
    dep = summary.get("deploy")
    if dep:
        pct = dep.get("canary_percent")
        out.append(
            f"  deploy      {dep.get('target')}: v{dep.get('version')} {dep.get('mode')}"
            + (f" at {pct:g}%" if isinstance(pct, (int, float)) else "")
            + f" ({dep.get('action', '')})"
        )
    ro = summary.get("rollout")
    if ro:
        out.append(f"  rollout     {ro.get('outcome')}: {ro.get('reason', '')}")
    stages = summary.get("stages") or {}
    if stages:
        out.append(
            "  wall time   "
            + ", ".join(f"{k} {v:.1f}s" for k, v in stages.items() if v is not None)
            + f"; total {summary['total_seconds']:.1f}s"
        )
    mem = summary.get("memory")
    if mem:
        out.append("  memory      " + memory_line(mem))
    out.append(f"  kfp log     {summary['log']}")
    return "\n".join(out)


def memory_line(records: list[dict]) -> str:
    """One line over the held processes: the largest share of its limit, and any killed at it."""
    killed = [r for r in records if r.get("exit") == 137 or r.get("oom_killed")]
    top = max(records, key=lambda r: (r.get("peak_rss_mib") or 0) / (r.get("limit_mib") or float("inf")))
    line = (
        f"{len(records)} processes held to their pods' limits; largest share: {top['task']} "
        f"({top['process']}) {top.get('peak_rss_mib')} of {top.get('limit_mib')} MiB"
    )
    if killed:
        line += "; KILLED at the limit: " + ", ".join(f"{r['task']} ({r['process']})" for r in killed)
    return line
