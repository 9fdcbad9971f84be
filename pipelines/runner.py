"""The one way kfct runs a pipeline on this machine: kfp.local's SubprocessRunner in a driver process.

`run_pipeline` starts `python -m kfct.pipelines.runner REQUEST` as a child process. The
child builds the pipeline (a builder named by "module:function", so nothing has to be
pickled), calls `kfp.local.init` with a pipeline root of its own for this run and
executes the pipeline; kfp starts one subprocess per task, which inherit the child's
environment. So:

- the caller's process keeps its `os.environ`, stdout/stderr and kfp's process-wide
  `LocalExecutionConfig` singleton untouched (two runs in one process, or two
  processes on one home, do not see each other);
- the run folder is known, not guessed: `<home>/pipeline_root/<run id>/<kfp run name>`;
- each task's outputs are read from its `executor_output.json`, and its wall time from
  the start/end stamps the stage wrote into its own output metadata (`kfct.runtime.stageclock`),
  never from kfp's log. kfp's log goes to `<home>/runs/<run id>.log` (and to the terminal
  with `verbose`); it is read only to quote the failing stage's exception.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERRLINE = re.compile(r"^\s*((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Failed|Exit)): (.+)$")
# The stage subprocesses read these; a value the user exported wins.
_CHILD_ENV_DEFAULTS = {
    # MLflow's usage telemetry flushes to a remote endpoint when a process exits: offline
    # (or in a pod without egress) every MLflow stage would then wait on its timeouts.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
}


@dataclass
class TaskResult:
    """One executed task: its parameter outputs, output artifacts (uri + metadata) and own wall time."""

    name: str
    parameters: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)
    seconds: float | None = None

    def artifact(self, name: str) -> dict:
        arts = self.artifacts.get(name) or []
        return arts[0] if arts else {}


@dataclass
class PipelineRun:
    """What a local run produced; `tasks` holds only the tasks that ran (conditions may skip some)."""

    run_id: str
    run_name: str | None
    run_dir: Path | None
    log_path: Path
    tasks: dict[str, TaskResult]
    total_seconds: float
    error: str | None = None
    failed_task: str | None = None

    def param(self, task: str, name: str = "Output", default: Any = None) -> Any:
        t = self.tasks.get(task)
        return default if t is None else t.parameters.get(name, default)

    def artifact(self, task: str, name: str) -> dict:
        t = self.tasks.get(task)
        return {} if t is None else t.artifact(name)

    def durations(self) -> dict[str, float | None]:
        """Task name -> seconds, in the order the tasks started."""
        return {t.name: t.seconds for t in self.tasks.values()}


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def run_pipeline(
    builder: str,
    build_kwargs: dict,
    arguments: dict,
    home: str | Path,
    prefix: str = "run",
    verbose: bool = False,
    env: dict | None = None,
    pod_limits: bool = False,
) -> PipelineRun:
    """Execute the pipeline `builder(**build_kwargs)` returns with `arguments` under kfp.local; never raises for a
    failed task (see `PipelineRun.error` / `.failed_task`).

    `builder` is "module:function"; `build_kwargs` must be JSON-serialisable. `env` adds
    variables for the stage processes only. `pod_limits` holds every task process to the memory limit
    its IR gives its pod (`kfct.pipelines.pod_limits`; figures in `<root>/memory.jsonl`).
    """
    home = Path(home).resolve()
    run_id = new_run_id(prefix)
    root = home / "pipeline_root" / run_id
    logs = home / "runs"
    log_path = logs / f"{run_id}.log"
    request = root / "request.json"
    try:
        root.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        request.write_text(
            json.dumps(
                {
                    "builder": builder,
                    "build_kwargs": build_kwargs,
                    "arguments": arguments,
                    "pipeline_root": str(root),
                    "pod_limits": bool(pod_limits),
                    "run_id": run_id,
                },
                default=str,
            )
        )
        log_path.touch()
    except OSError as exc:  # nothing ran: no stage, no registry, no alias
        import shutil

        from kfct.errors import StageError

        shutil.rmtree(root, ignore_errors=True)  # no half-written request left for anyone to read
        raise StageError(f"cannot start the pipeline run: {_where_full(home, exc) or f'{home}: {exc}'}") from exc
    # KFCT_RUN_ID: a failing stage names this run in its `stage_failed` audit entry (kfct.runtime.stagefail).
    child_env = {**_CHILD_ENV_DEFAULTS, **os.environ, **(env or {}), "KFCT_HOME": str(home), "KFCT_RUN_ID": run_id}
    cmd = [sys.executable, "-m", "kfct.pipelines.runner", str(request)]
    t0 = time.perf_counter()
    with log_path.open("w") as fh:
        if verbose:
            with subprocess.Popen(
                cmd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
            ) as proc:
                for line in proc.stdout or ():
                    fh.write(line)
                    sys.stdout.write(line)
            rc = proc.returncode
        else:
            rc = subprocess.run(cmd, env=child_env, stdout=fh, stderr=subprocess.STDOUT).returncode
    total = round(time.perf_counter() - t0, 2)
    run_dir = _run_dir(root)
    tasks = read_tasks(run_dir) if run_dir else {}
    run = PipelineRun(
        run_id=run_id,
        run_name=run_dir.name if run_dir else None,
        run_dir=run_dir,
        log_path=log_path,
        tasks=tasks,
        total_seconds=total,
    )
    if rc != 0:
        outcome = root / "failure.json"
        failure = json.loads(outcome.read_text()) if outcome.exists() else {}
        run.failed_task = failure.get("failed_task") or _failed_task(run_dir)
        try:
            text = log_path.read_text(errors="replace")
        except OSError:
            text = ""
        run.error = _last_error(text) or failure.get("error") or f"pipeline driver exited with {rc}"
        full = _where_full(root, run.error)
        if full:  # name the full disk first: the stage's own words may be a library's (pyarrow, sqlite)
            run.error = f"{full}: {run.error}"
    return run


_NO_SPACE = ("No space left on device", "[Errno 28]", "errno 28", "database or disk is full", "ENOSPC")


def _where_full(path: Path, error: BaseException | str | None) -> str | None:
    """'disk full under <path> (N bytes free)' when `error` is ENOSPC or the filesystem has no room.

    A stage that hits a full pipeline root or KFCT_HOME dies in whatever library was writing
    (pyarrow, SQLite, the JSON writer) and its log may be cut short on the same full disk:
    the one line the user reads must say that the disk is full, and where.
    """
    import errno
    import shutil

    said = (isinstance(error, OSError) and error.errno == errno.ENOSPC) or (
        error is not None and any(m in str(error) for m in _NO_SPACE)
    )
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = None
    if not said and free != 0:
        return None
    return f"disk full under {path}" + (f" ({free} bytes free)" if free is not None else "")


def _run_dir(root: Path) -> Path | None:
    """kfp.local writes one `<pipeline name>-<time>` folder into this run's own root."""
    dirs = [p for p in root.iterdir() if p.is_dir()]
    return dirs[0] if len(dirs) == 1 else None


def read_tasks(run_dir: Path) -> dict[str, TaskResult]:
    """Each finished task's executor output; ordered by the start stamp each stage wrote."""
    from kfct.runtime.stageclock import STARTED, duration

    found = []
    for task_dir in run_dir.iterdir():
        f = task_dir / "executor_output.json"
        if not f.is_file():
            continue
        out = json.loads(f.read_text())
        arts = {k: v.get("artifacts", []) for k, v in (out.get("artifacts") or {}).items()}
        params = out.get("parameterValues") or {}
        stamps = _stamps(arts, params)
        found.append(
            (
                float(stamps.get(STARTED, float("inf"))),
                TaskResult(task_dir.name, params, arts, duration(stamps) if stamps else None),
            )
        )
    return {t.name: t for _, t in sorted(found, key=lambda x: (x[0], x[1].name))}


def _stamps(arts: dict, params: dict) -> dict:
    """A stage's start/end stamps: in an output artifact's metadata, or in its JSON result's `stage_time`."""
    from kfct.runtime.stageclock import ENDED, STARTED

    for items in arts.values():
        for a in items:
            meta = a.get("metadata") or {}
            if STARTED in meta and ENDED in meta:
                return meta
    raw = params.get("Output")
    if isinstance(raw, str) and raw.startswith("{"):
        try:
            return json.loads(raw).get("stage_time") or {}
        except ValueError:
            return {}
    return {}


def _failed_task(run_dir: Path | None) -> str | None:
    """The task that started (kfp made its folder) but wrote no executor output."""
    if run_dir is None:
        return None
    unfinished = [p.name for p in run_dir.iterdir() if p.is_dir() and not (p / "executor_output.json").exists()]
    return unfinished[0] if len(unfinished) == 1 else None


def _last_error(text: str) -> str | None:
    """The last exception line a stage printed (kfp's own RuntimeError wrapper skipped)."""
    err = None
    for raw in text.splitlines():
        m = _ERRLINE.match(_ANSI.sub("", raw))
        if m and not m.group(1).startswith(("RuntimeError", "subprocess.")):
            err = f"{m.group(1).split('.')[-1]}: {m.group(2).strip()}"
    return err


def _kfp_local() -> Any:
    """`kfp.local`, with kfp's authoring modules but without its REST client.

    `import kfp` also imports `kfp.Client` (kfp_server_api, the Kubernetes client,
    google-auth: about 1,100 modules, 0.3 s before the first stage) unless
    `_KFP_RUNTIME=true`, the switch kfp's executor sets in every task process for the same
    reason. The driver never talks to a KFP API server: the package itself is imported under
    that switch, everything after it (`kfp.dsl` in full, `kfp.local`) without it. A driver
    started from inside a task process (a retrain launched by a monitoring stage) inherits
    the switch; it is an authoring process all the same, and each task's command sets the
    switch again for itself.
    """
    os.environ["_KFP_RUNTIME"] = "true"
    import kfp  # noqa: F401

    del os.environ["_KFP_RUNTIME"]
    from kfp import local

    return local


def _drive(request_path: str) -> int:
    """Child side: build the pipeline, init kfp.local on this run's root, execute it."""
    import contextlib
    import importlib
    import warnings

    req = json.loads(Path(request_path).read_text())
    warnings.simplefilter("ignore")  # kfp.local: image / resource settings it ignores (this process only)
    local = _kfp_local()

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=req["pipeline_root"], raise_on_error=True)
    module, _, fn = req["builder"].partition(":")
    limits: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if req.get("pod_limits"):
        from kfct.pipelines import pod_limits
        from kfct.pipelines.task_config import local_limits

        pod_limits.install(req["pipeline_root"], req["run_id"])
        limits = local_limits()
    with limits:
        pipeline = getattr(importlib.import_module(module), fn)(**req["build_kwargs"])
    try:
        pipeline(**req["arguments"])
    except RuntimeError as exc:  # kfp names the failed task; the stage's own error is above in the log
        msg = _ANSI.sub("", str(exc))
        print(f"kfct: {msg}", flush=True)
        failed = re.search(r"Inner task failed: '([^']+)'", msg)
        (Path(req["pipeline_root"]) / "failure.json").write_text(
            json.dumps({"failed_task": failed.group(1) if failed else None, "error": msg})
        )
        return 1
    finally:
        if req.get("pod_limits"):
            pod_limits.uninstall(req["run_id"])
    return 0


if __name__ == "__main__":
    sys.exit(_drive(sys.argv[1]))
