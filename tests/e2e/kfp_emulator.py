"""Execute a compiled KFP v2 IR the way KFP's driver + launcher do, one pod per task.

Small on purpose; what it keeps from kubeflow/pipelines backend/src/v2 (version 2.17.0, commit
7b70c7b9; the file each behaviour follows is named where it is emulated):
- the driver: tasks of each DAG in dependency order (dsl.ParallelFor's `parameterIterator`:
  the loop DAG per item, in sequence; `dsl.Collected` outputs gathered through `dag.outputs`); inputs resolved from the parent
  DAG's inputs (`componentInputParameter` / `componentInputArtifact`), sibling outputs
  (`taskOutputParameter` / `taskOutputArtifact`), `taskFinalStatus` and `runtimeValue`
  constants, placeholders matched whole as driver/resolve.go does (`{{$.pipeline_job_name}}`
  -> the run's DISPLAY name, `{{$.pipeline_job_uuid}}` -> the run id, `..._resource_name}}`
  -> the workflow name); a task whose `triggerPolicy.condition` is false is skipped with
  everything under it; a sub-DAG (dsl.If) runs its own DAG with the inputs it was given,
  optional inputs it was not given filled from their defaults (resolve.go, DAG driver);
- failures: a failed task fails its DAG and nothing new starts in it (Argo's failFast),
  except tasks with `triggerPolicy.strategy: ALL_UPSTREAM_TASKS_COMPLETED` (dsl.ExitHandler's
  exit task), which run once their upstream ended and get the producer's final status
  (resolve.go `TaskFinalStatus`: state = the MLMD execution state COMPLETE / FAILED /
  CACHED, pipelineTaskName, pipelineJobResourceName, error {});
- the cache (driver/cache.go `getFingerPrint`, cacheutils/cache.go `GenerateCacheKey` /
  `GenerateFingerPrint`): for a task with `cachingOptions.enableCache`, the sha256 of the
  CacheKey JSON (input parameter values, input artifact ids, output artifact specs without
  URI, output parameter types, image + command + args) looked up per pipeline name and
  namespace; a hit skips the pod and reuses the outputs (state CACHED); only a succeeded
  execution is stored (component/launcher_v2.go);
- the executor input JSON: `inputs.parameterValues`, `inputs.artifacts` (name = the MLMD
  artifact id as metadata/converter.go writes it, type with schemaTitle + schemaVersion, uri,
  metadata), `outputs.parameters.*.outputFile`, `outputs.artifacts` (name = output key, uri
  <root>/<pipeline>/<run id>/<task name>/<uuid salt>/<output>: driver.go `provisionOutputs`
  and metadata/client.go `GetPipeline`), `outputs.outputFile`;
- the pod: the executor's own command + args, an env made only of the platform spec's
  `configMapAsEnv` / `secretAsEnv` resolved against the rendered manifests (plus what a
  kubelet adds: KUBERNETES_SERVICE_HOST/PORT, and HOME/TMPDIR/KFCT_HOME/PATH of the
  image; what KFP's Argo compiler adds: KFP_POD_NAME / KFP_POD_UID, argocompiler/common.go),
  its pod labels (`podMetadata`), its memory limit (`resources.resourceMemoryLimit`,
  driver.go `initPodSpecPatch`), its own empty directory, and artifacts moved only through
  S3 (pod.py: cgroup memory limit, the image's uid).

Not emulated: retries, CPU limits, Argo itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
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
POD_ROOT = "/run/pod"  # where pod.py mounts the pod's own directory (a container's view of its volumes)
_COND = re.compile(
    r"^(?:(int|double|string)\()?inputs\.parameter_values\['([^']+)'\]\)?\s*(==|!=|<=|>=|<|>)\s*"
    r"(true|false|'[^']*'|-?\d+(?:\.\d+)?)$"
)
_OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_CASTS = {"int": int, "double": float, "string": str, None: lambda v: v}


class TaskFailed(RuntimeError):
    def __init__(self, message: str, result: RunResult | None = None):
        super().__init__(message)
        self.result = result


_MLMD_IDS = itertools.count(1)  # one metadata store per cluster: artifact ids never repeat
# TaskRecord.state -> the MLMD execution state the driver reports in a PipelineTaskFinalStatus
MLMD_STATE = {"SUCCEEDED": "COMPLETE", "CACHED": "CACHED", "FAILED": "FAILED", "SKIPPED": "COMPLETE"}
OK_STATES = ("SUCCEEDED", "CACHED")
_K8S_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T|k)?$")
_UNITS = {
    None: 1,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


def quantity_bytes(q: str) -> int:
    """A Kubernetes memory quantity ("2Gi", "512M", "1073741824") in bytes."""
    m = _K8S_QUANTITY.match(str(q).strip())
    if not m:
        raise ValueError(f"unsupported memory quantity {q!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _go_json(obj) -> str:
    """encoding/json's Marshal of a decoded value: sorted keys, no spaces, HTML characters escaped."""
    s = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (
        s.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def cache_fingerprint(
    executor_input: dict, output_param_types: dict, image: str, cmd_args: list[str], pvc_names: list[str] | None = None
) -> str:
    """cacheutils/cache.go GenerateCacheKey + GenerateFingerPrint (protojson field names, empty fields omitted)."""
    ins, outs = executor_input["inputs"], executor_input["outputs"]
    key: dict = {}
    names = {k: {"artifactNames": [a["name"] for a in v["artifacts"]]} for k, v in ins.get("artifacts", {}).items()}
    if names:
        key["inputArtifactNames"] = names
    if ins.get("parameterValues"):
        key["inputParameterValues"] = ins["parameterValues"]
    spec = {}
    for k, v in outs.get("artifacts", {}).items():
        if v["artifacts"]:
            a = v["artifacts"][0]
            spec[k] = {x: a[x] for x in ("name", "type", "metadata") if a.get(x)}
    if spec:
        key["outputArtifactsSpec"] = spec
    if outs.get("parameters"):
        key["outputParametersSpec"] = {k: output_param_types[k] for k in outs["parameters"]}
    container = {"image": image, "cmdArgs": list(cmd_args)}
    if pvc_names:
        container["pvcNames"] = sorted(set(pvc_names))
    key["containerSpec"] = container
    return hashlib.sha256(_go_json(key).encode()).hexdigest()


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
    exit_code: int | None = None


@dataclass
class RunResult:
    run_id: str  # the run's uuid ({{$.pipeline_job_uuid}})
    job_name: str  # its display name ({{$.pipeline_job_name}}): chosen by the submitter, not unique
    tasks: dict  # path ("condition-1/train-model") -> TaskRecord
    resource_name: str = ""  # the Argo workflow name ({{$.pipeline_job_resource_name}})
    state: str = "SUCCEEDED"

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

    def __init__(
        self,
        ir_path,
        cluster,
        pipeline_root: str,
        python: str,
        workdir,
        timeout_s: float = 240,
        cache: dict | None = None,
        namespace: str = "kubeflow-user",
        kill: dict | None = None,
        uid: int | None = None,
    ):
        docs = list(yaml.safe_load_all(Path(ir_path).read_text()))
        self.spec = docs[0]
        self.platform = (
            (docs[1] if len(docs) > 1 else {})
            .get("platforms", {})
            .get("kubernetes", {})
            .get("deploymentSpec", {})
            .get("executors", {})
        )
        self.cluster = cluster
        self.root = pipeline_root.rstrip("/")
        self.python = python
        self.workdir = Path(workdir)
        self.timeout_s = timeout_s
        # The KFP cache server's table, shared by every Emulator given the same dict (KFP's default: caching on).
        self.cache = cache if cache is not None else {}
        self.namespace = namespace
        self.kill = dict(kill or {})  # task name -> signal sent to its pod once the component runs (from outside)
        self.uid = uid  # the image's USER: the component runs as this uid (None: as root)

    # -- driver -------------------------------------------------------------------------------
    def run(self, params: dict | None = None, job_name: str | None = None, raise_on_failure: bool = True) -> RunResult:
        """One run; `job_name` is its display name (default: the pipeline's name, as a UI run of it shows)."""
        run_id = str(uuid.uuid4())
        pipeline = self.spec["pipelineInfo"]["name"]
        job = job_name or pipeline
        resource = f"{pipeline}-{uuid.uuid4().hex[:5]}"  # argocompiler/argo.go: GenerateName <pipeline name>-
        root_inputs = self.spec["root"].get("inputDefinitions", {}).get("parameters", {})
        unknown = set(params or {}) - set(root_inputs)
        if unknown:
            raise ValueError(f"unknown pipeline parameters {sorted(unknown)}")
        values = {}
        for name, d in root_inputs.items():
            v = (params or {}).get(name, d.get("defaultValue"))
            values[name] = _typed(v, d["parameterType"])
        result = RunResult(run_id, job, {}, resource_name=resource)
        out = self._run_dag(self.spec["root"]["dag"], values, {}, result, prefix="")
        result.state = out.state
        if out.state == "FAILED" and raise_on_failure:
            failed = [t for t in result.tasks.values() if t.state == "FAILED" and t.log]
            raise TaskFailed(
                f"task {failed[0].path if failed else '?'} failed:\n{failed[0].log[-4000:] if failed else ''}", result
            )
        return result

    def _run_dag(self, dag: dict, in_params: dict, in_arts: dict, result: RunResult, prefix: str) -> TaskRecord:  # noqa: C901 - the driver's loop
        """Run one DAG; returns its outputs (dag.outputs: artifactSelectors / valueFromParameter)."""
        tasks = dag["tasks"]
        done: dict[str, TaskRecord] = {}
        pending = dict(tasks)
        failed = False
        while pending:
            ready = [n for n, t in pending.items() if all(d in done for d in t.get("dependentTasks", []))]
            if not ready:
                raise RuntimeError(f"DAG cycle or missing dependency among {sorted(pending)}")
            for name in sorted(ready):
                t = pending.pop(name)
                path = f"{prefix}{name}"
                on_completion = (t.get("triggerPolicy") or {}).get("strategy") == "ALL_UPSTREAM_TASKS_COMPLETED"
                if failed and not on_completion:  # failFast: nothing new starts once a task failed
                    done[name] = result.tasks[path] = TaskRecord(name, path, "SKIPPED")
                    continue
                if not on_completion and any(done[d].state not in OK_STATES for d in t.get("dependentTasks", [])):
                    done[name] = result.tasks[path] = TaskRecord(name, path, "SKIPPED")
                    continue
                params, arts = self._resolve_inputs(t, in_params, in_arts, done, result)
                cond = (t.get("triggerPolicy") or {}).get("condition")
                if cond and not evaluate_condition(cond, params):
                    done[name] = result.tasks[path] = TaskRecord(name, path, "SKIPPED")
                    continue
                comp = self.spec["components"][t["componentRef"]["name"]]
                if "dag" in comp and "parameterIterator" in t:
                    rec = self._run_loop(name, path, t["parameterIterator"], comp["dag"], params, arts, result)
                elif "dag" in comp:
                    params = self._dag_defaults(comp, params)
                    rec = self._run_dag(comp["dag"], params, arts, result, prefix=f"{path}/")
                    rec.name, rec.path = name, path
                else:
                    rec = self._run_container(name, path, t, comp, params, arts, result)
                done[name] = result.tasks[path] = rec
                failed = failed or rec.state == "FAILED"
        out = TaskRecord("", "", "FAILED" if failed else "SUCCEEDED")
        if failed:
            return out
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
        items = params[it["items"]["inputParameter"]] if "inputParameter" in it["items"] else json.loads(it["items"]["raw"])
        if isinstance(items, str):
            items = json.loads(items)
        rec = TaskRecord(name, path, "SUCCEEDED")
        for i, item in enumerate(items):
            sub = self._run_dag(dag, {**params, it["itemInput"]: item}, arts, result, prefix=f"{path}-{i}/")
            if sub.state == "FAILED":
                rec.state = "FAILED"
                return rec
            for k, v in sub.artifacts.items():
                rec.artifacts.setdefault(k, []).extend(v)
        return rec

    @staticmethod
    def _dag_defaults(comp: dict, params: dict) -> dict:
        """resolve.go (DAG driver): an optional input the task did not pass gets its default (else null)."""
        out = dict(params)
        for k, d in (comp.get("inputDefinitions", {}).get("parameters") or {}).items():
            if k not in out and d.get("isOptional"):
                out[k] = _typed(d.get("defaultValue"), d["parameterType"])
        return out

    def _resolve_inputs(self, t: dict, in_params: dict, in_arts: dict, done: dict, result: RunResult):
        params, arts = {}, {}
        # resolve.go: a runtimeValue constant that IS one of these placeholders (whole-string match)
        placeholders = {
            "{{$.pipeline_job_name}}": result.job_name,
            "{{$.pipeline_job_uuid}}": result.run_id,
            "{{$.pipeline_job_resource_name}}": result.resource_name,
            "{{$.pipeline_task_name}}": t["taskInfo"]["name"],
        }
        for k, src in (t.get("inputs", {}).get("parameters") or {}).items():
            if "componentInputParameter" in src:
                params[k] = in_params[src["componentInputParameter"]]
            elif "taskOutputParameter" in src:
                o = src["taskOutputParameter"]
                params[k] = done[o["producerTask"]].parameters[o["outputParameterKey"]]
            elif "runtimeValue" in src:
                c = src["runtimeValue"]["constant"]
                params[k] = placeholders.get(c, c) if isinstance(c, str) else c
            elif "taskFinalStatus" in src:
                producer = done[src["taskFinalStatus"]["producerTask"]]
                params[k] = {
                    "state": MLMD_STATE[producer.state],
                    "pipelineTaskName": producer.name,
                    "pipelineJobResourceName": result.resource_name,
                    "error": {},
                }
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
    def _executor_input(self, name: str, comp: dict, params: dict, arts: dict, result: RunResult) -> dict:
        """driver/container.go + driver.go `provisionOutputs`: paths are the pod's own (pod.py mounts its dir
        at POD_ROOT)."""
        outdefs = comp.get("outputDefinitions", {})
        indefs = comp.get("inputDefinitions", {})
        task_root = f"{self.root}/{self.spec['pipelineInfo']['name']}/{result.run_id}/{name}/{uuid.uuid4()}"
        return {
            "inputs": {
                "parameterValues": {k: _typed(v, indefs["parameters"][k]["parameterType"]) for k, v in params.items()},
                "artifacts": {k: {"artifacts": list(a)} for k, a in arts.items()},
            },
            "outputs": {
                "parameters": {k: {"outputFile": f"{POD_ROOT}/outputs/params/{k}"} for k in outdefs.get("parameters", {})},
                "artifacts": {
                    k: {
                        "artifacts": [
                            {
                                "name": k,
                                "type": dict(d["artifactType"]),
                                "uri": f"{task_root}/{k}",
                                **({"metadata": d["metadata"]} if d.get("metadata") else {}),
                            }
                        ]
                    }
                    for k, d in outdefs.get("artifacts", {}).items()
                },
                "outputFile": f"{POD_ROOT}/outputs/executor_output.json",
            },
        }

    def _run_container(  # noqa: C901 - the launcher's steps, in order
        self,
        name: str,
        path: str,
        task: dict,
        comp: dict,
        params: dict,
        arts: dict,
        result: RunResult,
    ):
        exec_label = comp["executorLabel"]
        container = self.spec["deploymentSpec"]["executors"][exec_label]["container"]
        outdefs = comp.get("outputDefinitions", {})
        executor_input = self._executor_input(name, comp, params, arts, result)
        cmd = container["command"] + container.get("args", [])
        fingerprint = None
        if (task.get("cachingOptions") or {}).get("enableCache"):
            types = {k: d["parameterType"] for k, d in outdefs.get("parameters", {}).items()}
            fingerprint = cache_fingerprint(executor_input, types, container["image"], cmd)
            key = ("pipeline/" + self.spec["pipelineInfo"]["name"], self.namespace, fingerprint)
            if key in self.cache:  # driver/container.go: reuseCachedOutputs, no pod
                hit = self.cache[key]
                return TaskRecord(
                    name,
                    path,
                    "CACHED",
                    parameters=dict(hit.parameters),
                    artifacts={k: list(v) for k, v in hit.artifacts.items()},
                )
        pod_dir = self.workdir / result.run_id / path.replace("/", "__")
        for sub in ("work", "home", "tmp", "kfct-home", "outputs"):
            (pod_dir / sub).mkdir(parents=True)
        platform = self.platform.get(exec_label, {})
        labels = dict((platform.get("podMetadata") or {}).get("labels") or {})
        env = self.cluster.pod_env(platform)
        for e in container.get("env", []) or []:
            env[e["name"]] = e["value"]
        env.update(
            {
                "HOME": f"{POD_ROOT}/home",
                "TMPDIR": f"{POD_ROOT}/tmp",
                "KFCT_HOME": f"{POD_ROOT}/kfct-home",
                "PATH": f"{Path(self.python).parent}:/usr/local/bin:/usr/bin:/bin",
                # argocompiler/common.go commonEnvs; Argo names a workflow's pods <workflow>-<template>-<hash>
                "KFP_POD_NAME": f"{result.resource_name}-system-container-impl-{uuid.uuid4().int % 10**10}",
                "KFP_POD_UID": str(uuid.uuid4()),
            }
        )
        files = self.cluster.pod_files(labels) if hasattr(self.cluster, "pod_files") else self.cluster.service_account
        limit = (container.get("resources") or {}).get("resourceMemoryLimit")
        spec = {
            "executor_input": executor_input,
            "command": cmd,
            "env": env,
            "pod_dir": str(pod_dir),
            "launcher_s3": self.cluster.launcher_s3,
            "service_account": files,
            "labels": labels,
            "memory_limit_bytes": quantity_bytes(limit) if limit else None,
            "uid": self.uid,
            "cgroup": f"kfct-e2e/{result.run_id[:8]}-{path.replace('/', '__')}"[:200],
        }
        spec_path = pod_dir / "pod.json"
        spec_path.write_text(json.dumps(spec))
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", self.python, str(POD), str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={"PATH": env["PATH"]},
            start_new_session=True,
        )
        if name in self.kill:
            _kill_when_started(proc, pod_dir, self.kill[name])
        try:
            log, _ = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:  # activeDeadlineSeconds: killed from outside
            os.killpg(proc.pid, 9)
            log, _ = proc.communicate()
        _remove_cgroup(spec["cgroup"])  # a pod killed whole (SIGKILL) could not remove its own
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode  # as a runtime reports a signal
        rec = TaskRecord(
            name,
            path,
            "SUCCEEDED" if code == 0 else "FAILED",
            seconds=round(time.perf_counter() - t0, 1),
            log=log,
            exit_code=code,
        )
        (pod_dir / "log.txt").write_text(rec.log)
        if proc.returncode != 0:
            return rec
        out_file = pod_dir / "outputs" / "executor_output.json"
        out = json.loads(out_file.read_text()) if out_file.exists() else {}
        for k, d in outdefs.get("parameters", {}).items():
            if k in out.get("parameterValues", {}):
                rec.parameters[k] = _typed(out["parameterValues"][k], d["parameterType"])
            else:
                f = pod_dir / "outputs" / "params" / k
                rec.parameters[k] = _typed(f.read_text(), d["parameterType"]) if f.exists() else None
        for k in outdefs.get("artifacts", {}):
            a = dict(executor_input["outputs"]["artifacts"][k]["artifacts"][0])
            got = (out.get("artifacts", {}).get(k, {}).get("artifacts") or [{}])[0]
            a["metadata"] = got.get("metadata", {})
            a["name"] = str(next(_MLMD_IDS))  # downstream sees the MLMD artifact id (metadata/converter.go)
            rec.artifacts[k] = [a]
        if fingerprint:  # component/launcher_v2.go: a succeeded execution becomes a cache entry
            self.cache[("pipeline/" + self.spec["pipelineInfo"]["name"], self.namespace, fingerprint)] = rec
        return rec


def _remove_cgroup(name: str) -> None:
    """rmdir the pod's cgroup v1 memory group and its then-empty parents (pod.py made them)."""
    group = Path("/sys/fs/cgroup/memory") / name
    for _ in range(100):  # a SIGKILLed pod's processes may still be exiting: the group is busy until they are gone
        try:
            group.rmdir()
            break
        except FileNotFoundError:
            break
        except OSError:
            time.sleep(0.1)
    for d in group.parents:
        if d == Path("/sys/fs/cgroup/memory"):
            break
        try:
            d.rmdir()
        except OSError:  # not empty: another pod's group
            break


def _kill_when_started(proc: subprocess.Popen, pod_dir: Path, sig: int) -> None:
    """Send `sig` to the pod once its component process runs (pod.py writes `started`), as a kubelet
    ends an OOMKilled / evicted / deadline-exceeded pod: the component gets no chance to react."""
    import threading

    def watch():
        marker = pod_dir / "started"
        while proc.poll() is None:
            if marker.exists():
                time.sleep(float(os.environ.get("KFCT_E2E_KILL_DELAY", "1.0")))
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


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
