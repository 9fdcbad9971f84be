"""Run the CT pipeline on this machine with kfp's own local runner (SubprocessRunner).

Each stage runs as a real kfp task in a subprocess of this virtualenv, with the
pipeline root, MLflow store and audit trail under `KFCT_HOME` (default `.kfct/`).
kfp's own log goes to `.kfct/runs/<run>.log`; what the user sees is the summary.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from kfct.errors import DataSourceError, StageError, ValidationFailed

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXEC = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - INFO - Executing task '([^']+)'")
_DONE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - (?:INFO|ERROR) - Task '([^']+)' finished with status (\w+)")
_ERRLINE = re.compile(r"^\s*((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Failed|Exit)): (.+)$")


class _Tee(io.TextIOBase):
    """Write kfp's output to the run log, and to the terminal too when verbose."""

    def __init__(self, fh, echo=None):
        self.fh, self.echo = fh, echo

    def write(self, s):
        self.fh.write(s)
        if self.echo is not None:
            self.echo.write(s)
        return len(s)

    def flush(self):
        self.fh.flush()
        if self.echo is not None:
            self.echo.flush()


def _precheck(data_uri: str) -> None:
    """Fail fast, with one line, on a local dataset path that cannot be read."""
    scheme = urlparse(data_uri).scheme
    if scheme in ("", "file"):
        p = Path(urlparse(data_uri).path if scheme == "file" else data_uri).expanduser()
        if not p.exists():
            raise DataSourceError(f"dataset not found: {p}")
        if p.suffix.lower() not in (".parquet", ".pq", ".csv"):
            raise DataSourceError(f"unsupported dataset format {p.suffix!r} for {p}: use .parquet or .csv")
    elif scheme not in ("s3", "generate"):
        raise DataSourceError(f"unsupported dataset URI scheme {scheme!r} in {data_uri!r}: use a path, s3:// or generate://")


def _parse_log(text: str) -> tuple[dict, list[tuple[str, str]], dict]:
    starts, order, status = {}, [], {}
    durations = {}
    for raw in text.splitlines():
        line = _ANSI.sub("", raw)
        m = _EXEC.match(line)
        if m:
            starts[m.group(2)] = m.group(1)
            order.append((m.group(2), m.group(1)))
            continue
        m = _DONE.match(line)
        if m and m.group(2) in starts:
            fmt = "%H:%M:%S.%f"
            d = datetime.strptime(m.group(1), fmt) - datetime.strptime(starts[m.group(2)], fmt)
            durations[m.group(2)] = round(d.total_seconds() % 86400, 2)
            status[m.group(2)] = m.group(3)
    return durations, order, status


def _failure_line(text: str) -> tuple[str | None, str | None]:
    """The failed task and the last exception line it printed."""
    failed = None
    for raw in text.splitlines():
        m = _DONE.match(_ANSI.sub("", raw))
        if m and m.group(3) != "SUCCESS":
            failed = m.group(2)
    err = None
    for raw in text.splitlines():
        m = _ERRLINE.match(_ANSI.sub("", raw))
        if m and not m.group(1).startswith(("RuntimeError", "subprocess.")):
            err = f"{m.group(1).split('.')[-1]}: {m.group(2).strip()}"
    return failed, err


def _outputs(run_dir: Path) -> dict:
    out = {}
    for task_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        f = task_dir / "executor_output.json"
        if f.exists():
            out[task_dir.name] = json.loads(f.read_text())
    return out


def _artifact(outputs: dict, task: str, name: str) -> dict:
    arts = outputs.get(task, {}).get("artifacts", {}).get(name, {}).get("artifacts", [])
    return arts[0] if arts else {}


def run_ct(
    data_uri: str | None = None,
    cfg: dict | None = None,
    model_name: str | None = None,
    device: str | None = None,
    tune_trials: int = 0,
    run_reason: str = "manual",
    serving_url: str = "",
    settings=None,
    verbose: bool = False,
    raise_on_validation: bool = True,
) -> dict:
    """Execute the CT pipeline locally; return a summary (stages, timings, decision, registration)."""
    from kfct.config import config_to_json, load_config
    from kfct.datasource import DEFAULT_URI
    from kfct.lineage import code_version
    from kfct.settings import get_settings, reset_settings

    s = settings or get_settings()
    home = Path(s.home).resolve()
    os.environ["KFCT_HOME"] = str(home)  # the stage subprocesses read the same settings
    # MLflow's usage telemetry flushes to a remote endpoint when a process exits: offline
    # (or in a pod without egress) every MLflow stage then waits on its timeouts. An
    # explicit user setting wins.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    reset_settings()
    s = get_settings() if settings is None else s.model_copy(update={"home": home})
    cfg = cfg or load_config()
    data_uri = data_uri or DEFAULT_URI
    _precheck(data_uri)
    model_name = model_name or cfg["register"]["model_name"]
    device = device or cfg["train"]["device"]

    from kfp import local

    from kfct.pipelines.ct import build_ct_pipeline

    root = home / "pipeline_root"
    logs = home / "runs"
    logs.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    pipeline = build_ct_pipeline(s, cfg, gpu=False)

    before = {p.name for p in root.iterdir()}
    log_path = logs / f"ct-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    t0 = time.perf_counter()
    error = None
    with log_path.open("w") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tee = _Tee(fh, echo=sys.stdout if verbose else None)
        with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
            try:
                pipeline(data_uri=data_uri, config_json=config_to_json(cfg), model_name=model_name, device=device,
                         tune_trials=int(tune_trials), code_version=code_version(), run_reason=run_reason,
                         rollout=bool(cfg["rollout"]["enabled"]), serving_url=serving_url)
            except Exception as exc:  # kfp raises RuntimeError naming the failed task
                error = exc
    total = time.perf_counter() - t0
    text = log_path.read_text()
    durations, order, status = _parse_log(text)
    new = sorted((p for p in root.iterdir() if p.name not in before and p.is_dir()), key=lambda p: p.stat().st_mtime)
    run_dir = new[-1] if new else None
    if error is not None:
        failed, line = _failure_line(text)
        raise StageError(f"stage {failed or '?'} failed: {line or error} (log: {log_path})")

    outputs = _outputs(run_dir) if run_dir else {}
    params = lambda task: outputs.get(task, {}).get("parameterValues", {})  # noqa: E731
    vrep = _artifact(outputs, "validate-data", "report_json")
    validation = {}
    if vrep.get("uri") and Path(vrep["uri"]).exists():
        validation = json.loads(Path(vrep["uri"]).read_text())
    summary = {
        "run_name": run_dir.name if run_dir else None,
        "run_dir": str(run_dir) if run_dir else None,
        "log": str(log_path),
        "data_uri": data_uri,
        "dataset": _artifact(outputs, "ingest-data", "dataset").get("metadata", {}),
        "stages": {t: durations.get(t) for t, _ in order},
        "total_seconds": round(total, 2),
        "validation": {
            "passed": bool(params("validate-data").get("Output", False)),
            "n_expectations": validation.get("n_expectations"),
            "n_failed": validation.get("n_failed"),
            "failures": validation.get("failures", []),
            "report": vrep.get("uri"),
            "report_html": html_named(_artifact(outputs, "validate-data", "report").get("uri")),
            "hints": validation.get("hints", []),
        },
        "model_name": model_name,
    }
    dec_art = _artifact(outputs, "evaluate-model", "decision")
    if dec_art.get("uri") and Path(dec_art["uri"]).exists():
        summary["decision"] = json.loads(Path(dec_art["uri"]).read_text())
    if "register-model" in outputs:
        card = _artifact(outputs, "register-model", "model_card")
        summary["registered"] = {"version": params("register-model").get("Output"),
                                 "alias": card.get("metadata", {}).get("alias")}
        if card.get("metadata", {}).get("blocked"):  # another run moved the champion after this gate
            summary["registered"]["blocked"] = card["metadata"]["blocked"]
    for task, key in (("deploy-model", "deploy"), ("rollout-model", "rollout")):
        raw = params(task).get("Output")
        if raw:
            summary[key] = json.loads(raw)
    if "train-model" in outputs:
        summary["mlflow_run_id"] = params("train-model").get("Output")
    if raise_on_validation and not summary["validation"]["passed"]:
        raise ValidationFailed(format_validation_failure(summary))
    return summary


def html_named(path: str | None) -> str | None:
    """kfp names the HTML artifact `report`; a copy named `.html` opens in a browser."""
    if not path or path.endswith(".html") or not Path(path).is_file():
        return path
    import shutil

    return shutil.copyfile(path, path + ".html")


def format_validation_failure(summary: dict) -> str:
    v = summary["validation"]
    from kfct.components.validation_report import failure_lines

    lines = [f"validation failed: {v.get('n_failed')} of {v.get('n_expectations')} expectations "
             f"(report: {v.get('report_html') or v.get('report')})"]
    lines += [f"  - {line}" for line in failure_lines(v)]
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    """The few lines `make run` ends with."""
    out = [f"kfct CT run {summary.get('run_name')}  ({summary['data_uri']})"]
    ds = summary.get("dataset") or {}
    if ds:
        out.append(f"  data        {int(ds.get('rows', 0)):,} rows x {int(ds.get('columns', 0))} cols, "
                   f"sha256 {str(ds.get('sha256', ''))[:16]}")
    v = summary["validation"]
    out.append(f"  validation  {v.get('n_expectations')} expectations, {v.get('n_failed')} failed -> "
               f"{'passed' if v['passed'] else 'FAILED'}")
    dec = summary.get("decision")
    if dec:
        m = dec["metrics"]
        out.append("  metrics     " + ", ".join(f"{k} {m[k]:.4f}" for k in ("roc_auc", "pr_auc", "recall", "precision", "f1")))
        out.append(f"  decision    {'DEPLOY' if dec['deploy'] else 'BLOCKED'}")
        for r in dec.get("reasons", []):
            out.append(f"              - {r}")
    reg = summary.get("registered")
    if reg and not reg.get("version"):
        out.append(f"  registered  nothing: {reg.get('blocked') or 'blocked at the registry hand-off'}")
        reg = None
    elif reg:
        alias = reg["alias"]
        dep = summary.get("deploy") or {}
        if dep.get("alias") and dep["alias"] != alias:  # e.g. the first model goes straight to champion
            alias = f"{alias}' -> '{dep['alias']}"
        out.append(f"  registered  {summary['model_name']} v{reg['version']} -> alias '{alias}'")
    elif dec:
        out.append("  registered  nothing (registry and aliases unchanged)")
    dep = summary.get("deploy")
    if dep:
        pct = dep.get("canary_percent")
        out.append(f"  deploy      {dep.get('target')}: v{dep.get('version')} {dep.get('mode')}"
                   + (f" at {pct:g}%" if isinstance(pct, (int, float)) else "") + f" ({dep.get('action', '')})")
    ro = summary.get("rollout")
    if ro:
        out.append(f"  rollout     {ro.get('outcome')}: {ro.get('reason', '')}")
    stages = summary.get("stages") or {}
    if stages:
        out.append("  wall time   " + ", ".join(f"{k} {v:.1f}s" for k, v in stages.items() if v is not None)
                   + f"; total {summary['total_seconds']:.1f}s")
    out.append(f"  kfp log     {summary['log']}")
    return "\n".join(out)
