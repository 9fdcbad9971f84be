"""Execute a compiled KFP v2 IR the way KFP's driver + launcher do, one pod per task.

Small on purpose; what it keeps from kubeflow/pipelines backend/src/v2:
- the driver: tasks of each DAG in dependency order (dsl.ParallelFor's `parameterIterator`:
  the loop DAG per item, in sequence; `dsl.Collected` outputs gathered through `dag.outputs`); inputs resolved from the parent
  DAG's inputs (`componentInputParameter` / `componentInputArtifact`), sibling outputs
  (`taskOutputParameter` / `taskOutputArtifact`) and `runtimeValue` constants (with
  `{{$.pipeline_job_name}}`); a task whose `triggerPolicy.condition` is false is skipped
  with everything under it; a sub-DAG (dsl.If) runs its own DAG with the inputs it was given;
- the executor input JSON: `inputs.parameterValues`, `inputs.artifacts` (name, type, uri,
  metadata), `outputs.parameters.*.outputFile`, `outputs.artifacts` (uri under the
  pipeline root: <root>/<pipeline>/<run id>/<task>/<output>), `outputs.outputFile`;
- the pod: the executor's own command + args, an env made only of the platform spec's
  `configMapAsEnv` / `secretAsEnv` resolved against the rendered manifests (plus what a
  kubelet adds: KUBERNETES_SERVICE_HOST/PORT, and HOME/TMPDIR/KFCT_HOME/PATH of the
  image), its own empty directory, and artifacts moved only through S3 (pod.py).

Not emulated: caching (the cluster's cache server), retries, resource limits, Argo.
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

import yaml

POD = Path(__file__).with_name("pod.py")
_COND = re.compile(r"^(?:(int|double|string)\()?inputs\.parameter_values\['([^']+)'\]\)?\s*(==|!=|<=|>=|<|>)\s*"
                   r"(true|false|'[^']*'|-?\d+(?:\.\d+)?)$")
_OPS = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_CASTS = {"int": int, "double": float, "string": str, None: lambda v: v}


class TaskFailed(RuntimeError):
    pass


def evaluate_condition(expr: str, params: dict) -> bool:
    """The CEL subset kfp's dsl.If compiles to: [int|double|string(]inputs.parameter_values['x'][)] op literal."""
    m = _COND.match(" ".join(expr.split()))
    if not m:
        raise ValueError(f"unsupported triggerPolicy condition: {expr!r}")
    cast, name, op, lit = m.groups()
    value = json.loads(lit.replace("'", '"'))
    return bool(_OPS[op](_CASTS[cast](params[name]), value))


def _typed(value, ptype: str):
    if value is None:
        return None
    if ptype == "BOOLEAN":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if ptype == "NUMBER_INTEGER":
        return int(value)
    if ptype == "NUMBER_DOUBLE":
        return float(value)
    if ptype in ("STRUCT", "LIST") and isinstance(value, str):
        return json.loads(value)
    return value


@dataclass
class TaskRecord:
    name: str
    path: str
    state: str  # SUCCEEDED | SKIPPED | FAILED
    parameters: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)
    seconds: float = 0.0
    log: str = ""


@dataclass
class RunResult:
    run_id: str
    job_name: str
    tasks: dict  # path ("condition-1/train-model") -> TaskRecord

    def task(self, name: str) -> TaskRecord:
        hits = [t for p, t in self.tasks.items() if p.split("/")[-1] == name]
        assert len(hits) == 1, f"task {name!r}: {list(self.tasks)}"
        return hits[0]


class Emulator:
    """`Emulator(ir_path, cluster, pipeline_root, python, workdir).run(params)`.

    `cluster.pod_env(platform_executor_spec)` returns the env the platform spec gives a
    pod; `cluster.launcher_s3` the launcher's S3 access; `cluster.service_account` the
    files mounted into every pod.
    """

    def __init__(self, ir_path, cluster, pipeline_root: str, python: str, workdir, timeout_s: float = 240):
        docs = list(yaml.safe_load_all(Path(ir_path).read_text()))
        self.spec = docs[0]
        self.platform = ((docs[1] if len(docs) > 1 else {}).get("platforms", {}).get("kubernetes", {})
                         .get("deploymentSpec", {}).get("executors", {}))
        self.cluster = cluster
        self.root = pipeline_root.rstrip("/")
        self.python = python
        self.workdir = Path(workdir)
        self.timeout_s = timeout_s

    # -- driver -------------------------------------------------------------------------------
    def run(self, params: dict | None = None, job_name: str | None = None) -> RunResult:
        run_id = uuid.uuid4().hex[:12]
        job = job_name or f"{self.spec['pipelineInfo']['name']}-{run_id}"
        root_inputs = self.spec["root"].get("inputDefinitions", {}).get("parameters", {})
        unknown = set(params or {}) - set(root_inputs)
        if unknown:
            raise ValueError(f"unknown pipeline parameters {sorted(unknown)}")
        values = {}
        for name, d in root_inputs.items():
            v = (params or {}).get(name, d.get("defaultValue"))
            values[name] = _typed(v, d["parameterType"])
        result = RunResult(run_id, job, {})
        self._run_dag(self.spec["root"]["dag"], values, {}, result, prefix="")
        return result

    def _run_dag(self, dag: dict, in_params: dict, in_arts: dict, result: RunResult, prefix: str) -> TaskRecord:
        """Run one DAG; returns its outputs (dag.outputs: artifactSelectors / valueFromParameter)."""
        tasks = dag["tasks"]
        done: dict[str, TaskRecord] = {}
        pending = dict(tasks)
        while pending:
            ready = [n for n, t in pending.items() if all(d in done for d in t.get("dependentTasks", []))]
            if not ready:
                raise RuntimeError(f"DAG cycle or missing dependency among {sorted(pending)}")
            for name in sorted(ready):
                t = pending.pop(name)
                path = f"{prefix}{name}"
                if any(done[d].state != "SUCCEEDED" for d in t.get("dependentTasks", [])):
                    done[name] = result.tasks[path] = TaskRecord(name, path, "SKIPPED")
                    continue
                params, arts = self._resolve_inputs(t, in_params, in_arts, done, result.job_name)
                cond = (t.get("triggerPolicy") or {}).get("condition")
                if cond and not evaluate_condition(cond, params):
                    done[name] = result.tasks[path] = TaskRecord(name, path, "SKIPPED")
                    continue
                comp = self.spec["components"][t["componentRef"]["name"]]
                if "dag" in comp and "parameterIterator" in t:
                    rec = self._run_loop(name, path, t["parameterIterator"], comp["dag"], params, arts, result)
                elif "dag" in comp:
                    rec = self._run_dag(comp["dag"], params, arts, result, prefix=f"{path}/")
                    rec.name, rec.path = name, path
                else:
                    rec = self._run_container(name, path, comp, params, arts, result)
                    if rec.state != "SUCCEEDED":
                        result.tasks[path] = rec
                        raise TaskFailed(f"task {path} failed:\n{rec.log[-4000:]}")
                done[name] = result.tasks[path] = rec
        out = TaskRecord("", "", "SUCCEEDED")
        for k, sel in (dag.get("outputs", {}).get("artifacts") or {}).items():
            for a in sel["artifactSelectors"]:
                src = done[a["producerSubtask"]]
                out.artifacts.setdefault(k, []).extend(src.artifacts.get(a["outputArtifactKey"], []))
        for k, sel in (dag.get("outputs", {}).get("parameters") or {}).items():
            v = sel["valueFromParameter"]
            if done[v["producerSubtask"]].state == "SUCCEEDED":
                out.parameters[k] = done[v["producerSubtask"]].parameters[v["outputParameterKey"]]
        return out

    def _run_loop(self, name, path, it: dict, dag: dict, params: dict, arts: dict, result: RunResult) -> TaskRecord:
        """dsl.ParallelFor: the loop DAG once per item (in sequence here; a cluster runs them side
        by side); artifact outputs gathered in item order, as dsl.Collected sees them."""
        items = params[it["items"]["inputParameter"]] if "inputParameter" in it["items"] \
            else json.loads(it["items"]["raw"])
        if isinstance(items, str):
            items = json.loads(items)
        rec = TaskRecord(name, path, "SUCCEEDED")
        for i, item in enumerate(items):
            sub = self._run_dag(dag, {**params, it["itemInput"]: item}, arts, result, prefix=f"{path}-{i}/")
            for k, v in sub.artifacts.items():
                rec.artifacts.setdefault(k, []).extend(v)
        return rec

    def _resolve_inputs(self, t: dict, in_params: dict, in_arts: dict, done: dict, job: str):
        params, arts = {}, {}
        for k, src in (t.get("inputs", {}).get("parameters") or {}).items():
            if "componentInputParameter" in src:
                params[k] = in_params[src["componentInputParameter"]]
            elif "taskOutputParameter" in src:
                o = src["taskOutputParameter"]
                params[k] = done[o["producerTask"]].parameters[o["outputParameterKey"]]
            elif "runtimeValue" in src:
                c = src["runtimeValue"]["constant"]
                params[k] = c.replace("{{$.pipeline_job_name}}", job) if isinstance(c, str) else c
            else:
                raise ValueError(f"unsupported parameter source {src}")
        for k, src in (t.get("inputs", {}).get("artifacts") or {}).items():
            if "componentInputArtifact" in src:
                arts[k] = in_arts[src["componentInputArtifact"]]
            elif "taskOutputArtifact" in src:
                o = src["taskOutputArtifact"]
                arts[k] = done[o["producerTask"]].artifacts[o["outputArtifactKey"]]
            else:
                raise ValueError(f"unsupported artifact source {src}")
        return params, arts

    # -- launcher + pod ---------------------------------------------------------------------
    def _run_container(self, name: str, path: str, comp: dict, params: dict, arts: dict, result: RunResult):
        exec_label = comp["executorLabel"]
        container = self.spec["deploymentSpec"]["executors"][exec_label]["container"]
        pod_dir = self.workdir / result.run_id / path.replace("/", "__")
        for sub in ("work", "home", "tmp", "kfct-home", "outputs"):
            (pod_dir / sub).mkdir(parents=True)
        outdefs = comp.get("outputDefinitions", {})
        indefs = comp.get("inputDefinitions", {})
        executor_input = {
            "inputs": {
                "parameterValues": {k: _typed(v, indefs["parameters"][k]["parameterType"])
                                    for k, v in params.items()},
                "artifacts": {k: {"artifacts": list(a)} for k, a in arts.items()},
            },
            "outputs": {
                "parameters": {k: {"outputFile": str(pod_dir / "outputs" / "params" / k)}
                               for k in outdefs.get("parameters", {})},
                "artifacts": {k: {"artifacts": [{
                    "name": k, "type": {"schemaTitle": d["artifactType"]["schemaTitle"]},
                    "uri": f"{self.root}/{self.spec['pipelineInfo']['name']}/{result.run_id}/{path}/{k}",
                    "metadata": {}}]} for k, d in outdefs.get("artifacts", {}).items()},
                "outputFile": str(pod_dir / "outputs" / "executor_output.json"),
            },
        }
        env = self.cluster.pod_env(self.platform.get(exec_label, {}))
        for e in container.get("env", []) or []:
            env[e["name"]] = e["value"]
        env.update({"HOME": str(pod_dir / "home"), "TMPDIR": str(pod_dir / "tmp"),
                    "KFCT_HOME": str(pod_dir / "kfct-home"),
                    "PATH": f"{Path(self.python).parent}:/usr/local/bin:/usr/bin:/bin"})
        spec = {"executor_input": executor_input, "command": container["command"] + container.get("args", []),
                "env": env, "workdir": str(pod_dir / "work"), "launcher_s3": self.cluster.launcher_s3,
                "service_account": self.cluster.service_account}
        spec_path = pod_dir / "pod.json"
        spec_path.write_text(json.dumps(spec))
        t0 = time.perf_counter()
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", self.python, str(POD), str(spec_path)],
                              capture_output=True, text=True, timeout=self.timeout_s, env={"PATH": env["PATH"]})
        rec = TaskRecord(name, path, "SUCCEEDED" if proc.returncode == 0 else "FAILED",
                         seconds=round(time.perf_counter() - t0, 1), log=proc.stdout + proc.stderr)
        (pod_dir / "log.txt").write_text(rec.log)
        if proc.returncode != 0:
            return rec
        out_file = pod_dir / "outputs" / "executor_output.json"
        out = json.loads(out_file.read_text()) if out_file.exists() else {}
        for k, d in outdefs.get("parameters", {}).items():
            if k in out.get("parameterValues", {}):
                rec.parameters[k] = _typed(out["parameterValues"][k], d["parameterType"])
            else:
                f = Path(executor_input["outputs"]["parameters"][k]["outputFile"])
                rec.parameters[k] = _typed(f.read_text(), d["parameterType"]) if f.exists() else None
        for k in outdefs.get("artifacts", {}):
            a = dict(executor_input["outputs"]["artifacts"][k]["artifacts"][0])
            got = (out.get("artifacts", {}).get(k, {}).get("artifacts") or [{}])[0]
            a["metadata"] = got.get("metadata", {})
            rec.artifacts[k] = [a]
        return rec


def unshare_available() -> str | None:
    """None when private mount namespaces work here (root), else why not."""
    if sys.platform != "linux":
        return "not Linux"
    try:
        p = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare unavailable: {exc}"
    if p.returncode != 0 or os.geteuid() != 0:
        return f"private mount namespaces need root here: {p.stderr.decode().strip()[:200]}"
    return None
