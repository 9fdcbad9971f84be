"""The train step with `train.workers: N > 1`: N XGBoost workers, on Kubeflow Trainer or as local processes.

The step itself trains nothing. It writes a worker spec (`kfct.components.train_worker`)
beside its model artifact, starts the N workers, waits, and takes what rank 0 wrote: the
`ChurnModel` in the model artifact (which evaluate and register read unchanged) and an info
JSON (params, validation metrics, rows, best iteration) it logs to MLflow like the in-pod path.

- On a cluster (`engine="kubeflow-trainer"`): a `TrainJob` (trainer.kubeflow.org/v1alpha1,
  kubeflow/trainer v2.2.0+: pkg/apis/trainer/v1alpha1/trainjob_types.go, read at commit
  8c0f5059) on the ClusterTrainingRuntime `xgboost-distributed`
  (manifests/base/runtimes/xgboost_distributed.yaml: one replicated job `node`, container
  `node`). `spec.trainer` carries the step's image, the worker command, `numNodes` = N and
  `resourcesPerNode` (the train step's cpu/memory; `nvidia.com/gpu: 1` with a GPU, which the
  XGBoost plugin turns into one worker per GPU); the tolerations go through
  `spec.runtimePatches` (the only place a TrainJob sets them); `activeDeadlineSeconds` is
  `train.deadline_seconds`; labels carry the KFP run. The Secret's and ConfigMap's keys reach
  the workers as `valueFrom` references, never values; the DMLC_* variables are the
  runtime's to set (its webhook forbids them in `spec.trainer.env`). The step polls the job's
  conditions (`Complete` / `Failed`, as TrainJobReconciler sets them from the JobSet, or
  `Failed` with reason `DeadlineExceeded`), deletes the job whatever happened, and fails with
  the job's reason and message.
- Here (`engine="local-processes"`): `run_local_workers` starts N processes with the same
  DMLC_* contract (tracker on 127.0.0.1, a free port) and the same command.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfct.errors import KfctError

if TYPE_CHECKING:
    import pandas as pd
    from kfp.dsl import Dataset, Input, Model, Output
    from kubernetes.client import CustomObjectsApi  # kubernetes ships no types: Any to mypy, named
    from kubernetes.client.exceptions import ApiException

    from kfct.config import RunConfig
    from kfct.evidence.model import ChurnModel
    from kfct.runtime.settings import Settings

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
RUNTIME = "xgboost-distributed"  # kubeflow/trainer manifests/base/runtimes/xgboost_distributed.yaml
NODE = "node"  # the runtime's replicated job and container (pkg/constants: Node)
GPU_RESOURCE = "nvidia.com/gpu"
PATCH_MANAGER = "kfct.io/train-step"
LABEL_RUN_ID, LABEL_RUN = "kfct/pipeline-run-id", "kfct/pipeline-run"
WORKER_MODULE = "kfct.components.train_worker"
ENGINE_TRAINER, ENGINE_LOCAL, ENGINE_POD = "kubeflow-trainer", "local-processes", "in-pod"


class TrainJobError(KfctError):
    """The distributed training job failed, ran past its deadline, or could not be created."""


# -- pure parts: names, labels, resources, the TrainJob ------------------------------------------


def typed_config(cfg: RunConfig | dict[str, Any]) -> RunConfig:
    """The run config as the typed `RunConfig` (a validated dict is accepted and converted)."""
    from kfct.config import RunConfig

    return cfg if isinstance(cfg, RunConfig) else RunConfig.model_validate(cfg)


def config_json(cfg: RunConfig | dict[str, Any]) -> str:
    """The config as the worker spec carries it: the JSON a `config_json` parameter holds."""
    return json.dumps(typed_config(cfg).model_dump(mode="json", by_alias=True), sort_keys=True)


def worker_command(spec_uri: str, python: str = "python") -> list[str]:
    return [python, "-m", WORKER_MODULE, "--spec", spec_uri]


def label_value(text: str) -> str:
    """A Kubernetes label value (<= 63 chars of [A-Za-z0-9._-], alphanumeric at both ends); '' if none left."""
    v = re.sub(r"[^A-Za-z0-9._-]+", "-", text or "")[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", v)


def trainjob_name(pipeline_run: str, model_uri: str, attempt: str | None = None) -> str:
    """`kfct-train-<10 hex>`: unique per run, task output and attempt (a retried step must not meet its
    previous job, which may still be terminating), short enough for the JobSet's pod names
    (`<name>-node-0-<i>` and the rank-0 DNS name `<name>-node-0-0.<name>` the runtime builds)."""
    attempt = os.urandom(4).hex() if attempt is None else attempt
    return "kfct-train-" + hashlib.sha256(f"{pipeline_run}\n{model_uri}\n{attempt}".encode()).hexdigest()[:10]


def node_resources(section: dict[str, Any], gpu: bool) -> dict[str, Any]:
    """`resourcesPerNode`: the train step's cpu/memory from the config's `resources` section (default
    then train), limits as the step's own pod gets them; one GPU per worker with a GPU."""
    res = {**(section.get("default") or {}), **(section.get("train") or {})}
    requests, limits = {}, {}
    for key in ("cpu", "memory"):
        if res.get(key) is not None:
            requests[key] = str(res[key])
        if res.get(f"{key}_limit", res.get(key)) is not None:
            limits[key] = str(res.get(f"{key}_limit", res.get(key)))
    if gpu:
        limits[GPU_RESOURCE] = "1"
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def worker_memory_limit(section: dict[str, Any]) -> int | None:
    """The per-worker memory limit in bytes (`resourcesPerNode.limits.memory`), or None."""
    from kfct.runtime.memgroup import quantity_bytes

    text = node_resources(section, gpu=False).get("limits", {}).get("memory")
    return quantity_bytes(text) if text else None


def worker_env(secret_name: str, config_map: str, plain: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The workers' env: the kfct Secret's and ConfigMap's keys by reference (as every pipeline task gets them)."""
    from kfct.cluster.pod_env import CONFIG_KEYS, SECRET_KEYS

    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted((plain or {}).items())]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": k}}} for k in SECRET_KEYS]
    env += [{"name": k, "valueFrom": {"configMapKeyRef": {"name": config_map, "key": k, "optional": True}}} for k in CONFIG_KEYS]
    return env


def build_trainjob(
    name: str,
    image: str,
    spec_uri: str,
    workers: int,
    resources: dict[str, Any],
    gpu: bool,
    deadline_seconds: int,
    labels: dict[str, str],
    env: list[dict[str, Any]],
) -> dict[str, Any]:
    """The TrainJob (trainer.kubeflow.org/v1alpha1) for N workers on the xgboost-distributed runtime."""
    if workers < 2:
        raise ValueError(f"a TrainJob is for 2 or more workers, got {workers}")
    reserved = {"DMLC_TRACKER_URI", "DMLC_TRACKER_PORT", "DMLC_TASK_ID", "DMLC_NUM_WORKER"}
    clash = sorted(reserved & {e["name"] for e in env})
    if clash:
        raise ValueError(f"{', '.join(clash)} are reserved for the XGBoost runtime")
    trainer: dict[str, Any] = {
        "image": image,
        "command": worker_command(spec_uri)[:3],
        "args": worker_command(spec_uri)[3:],
        "env": env,
        "numNodes": int(workers),
    }
    if resources:
        trainer["resourcesPerNode"] = resources
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "kfct", **labels}},
        "spec": {
            "runtimeRef": {"name": RUNTIME, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
            "activeDeadlineSeconds": int(deadline_seconds),
            "trainer": trainer,
        },
    }
    if gpu:  # GPU node pools are usually tainted nvidia.com/gpu:NoSchedule (as the pipeline's GPU task tolerates)
        pod_patch = {
            "metadata": {"labels": dict(labels)},
            "spec": {"tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]},
        }
        body["spec"]["runtimePatches"] = [
            {
                "manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {
                    "template": {"spec": {"replicatedJobs": [{"name": NODE, "template": {"spec": {"template": pod_patch}}}]}}
                },
            }
        ]
    return body


def job_outcome(obj: dict[str, Any]) -> tuple[str, str] | None:
    """('Complete' | 'Failed', 'reason: message') once a condition says so; None while running."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            text = ": ".join(p for p in (cond.get("reason"), cond.get("message")) if p)
            return cond["type"], text or cond["type"]
    return None


# -- the cluster adapter --------------------------------------------------------------------------


def custom_objects_api(settings: Settings | None = None) -> CustomObjectsApi:
    """CustomObjectsApi from the pod's service account (in a cluster) or the kubeconfig."""
    from kubernetes import client, config

    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    if s.in_cluster:
        config.load_incluster_config()
    else:
        config.load_kube_config()
    return client.CustomObjectsApi()


def pod_namespace(settings: Settings | None = None) -> str:
    """The namespace this step runs in (where its TrainJob goes): the service account's, else settings."""
    from kfct.runtime.settings import get_settings

    f = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if f.is_file():
        return f.read_text().strip()
    return (settings or get_settings()).kfp_namespace


def run_trainjob(
    api: CustomObjectsApi,
    namespace: str,
    body: dict[str, Any],
    poll_seconds: float = 5.0,
    grace_seconds: float = 120.0,
    timeout: tuple[float, float] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Create the TrainJob, wait for Complete / Failed, delete it; TrainJobError with the job's reason.

    The controller enforces `activeDeadlineSeconds`; the step stops waiting `grace_seconds` after it
    too, so a controller that never reports still ends the step."""
    from kubernetes.client.rest import ApiException

    name = body["metadata"]["name"]
    kw = {"_request_timeout": timeout} if timeout else {}
    where = f"TrainJob {namespace}/{name}"
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, **kw)
    except ApiException as exc:
        raise TrainJobError(
            f"cannot create {where} on runtime {RUNTIME} ({exc.status} {exc.reason}): "
            f"{_api_message(exc)}; is Kubeflow Trainer >= 2.2 installed with its xgboost-distributed "
            f"runtime, and may this account create trainjobs?"
        ) from None
    limit = time.monotonic() + float(body["spec"].get("activeDeadlineSeconds") or 0) + grace_seconds
    try:
        while True:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, **kw)
            outcome = job_outcome(obj)
            if outcome and outcome[0] == "Complete":
                done: dict[str, Any] = obj
                return done
            if outcome:
                raise TrainJobError(f"{where} failed: {outcome[1]}")
            if time.monotonic() > limit:
                raise TrainJobError(
                    f"{where} reported no outcome {grace_seconds:.0f} s past its "
                    f"activeDeadlineSeconds ({body['spec']['activeDeadlineSeconds']})"
                )
            time.sleep(poll_seconds)
    finally:
        try:  # Foreground: its JobSet and pods go with it
            api.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body={"propagationPolicy": "Foreground"}, **kw
            )
        except ApiException as exc:
            if exc.status != 404 and log:
                log(f"could not delete {where}: {exc.status} {exc.reason}")


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


# -- the local adapter ---------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def local_worker_env(base: dict[str, str], rank: int, world: int, port: int) -> dict[str, str]:
    """A local worker's env: this process's, less any DMLC_*, plus the runtime's four; OpenMP threads
    split between the workers (a pod gets its own cores; processes here share this machine's)."""
    env = {k: v for k, v in base.items() if not k.startswith("DMLC_")}
    env.update(
        {
            "DMLC_TRACKER_URI": "127.0.0.1",
            "DMLC_TRACKER_PORT": str(port),
            "DMLC_TASK_ID": str(rank),
            "DMLC_NUM_WORKER": str(world),
            "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // world)),
        }
    )
    return env


def worker_groups(workers: int, memory_limit: int | None) -> list[Path | None]:
    """Each worker's own cgroup v1 memory group at the per-worker limit, when the run holds limits
    (`kfct run --pod-limits` sets `memgroup.ENV_PARENT`): on a cluster each worker is a pod of its
    own with `resourcesPerNode`, so the groups sit beside the step's, not inside it."""
    from kfct.runtime import memgroup

    parent = os.environ.get(memgroup.ENV_PARENT)
    if not parent or not memory_limit:
        return [None] * workers
    tag = f"train-worker-{os.getpid()}"
    return [memgroup.create(memgroup.group_name(parent, f"{tag}-{rank}"), memory_limit) for rank in range(workers)]


def _join(group: Path | None) -> Callable[[], None] | None:
    from kfct.runtime import memgroup

    return memgroup.joiner(group) if group is not None else None


def _code(status: int) -> int:
    """A killed process's exit as a container runtime reports it (128 + signal: 137 for the OOM killer)."""
    return 128 - status if status < 0 else status


def run_local_workers(
    spec_uri: str,
    workers: int,
    deadline_seconds: float,
    workdir: str | Path,
    python: str | None = None,
    poll_seconds: float = 0.2,
    memory_limit: int | None = None,
) -> None:
    """N worker processes on this machine with the DMLC_* contract; TrainJobError naming the first that failed.

    When one worker fails the others are stopped (they would wait for it forever), as a failed
    Job fails its JobSet on a cluster; past the deadline all are stopped. Under `--pod-limits`
    each worker is held to `memory_limit` (a TrainJob's per-node memory) and its peak recorded."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    groups = worker_groups(workers, memory_limit)
    procs, logs = [], []
    try:
        for rank in range(workers):
            log = (workdir / f"worker-{rank}.log").open("wb")  # closed below
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    worker_command(spec_uri, python or sys.executable),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=local_worker_env(dict(os.environ), rank, workers, port),
                    preexec_fn=_join(groups[rank]),
                )
            )
        _wait_workers(procs, workers, deadline_seconds, workdir, poll_seconds)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
        _record_workers(procs, groups, memory_limit, workdir)


def _wait_workers(
    procs: list[subprocess.Popen[bytes]], workers: int, deadline_seconds: float, workdir: Path, poll_seconds: float
) -> None:
    limit = time.monotonic() + deadline_seconds
    while True:
        codes = [p.poll() for p in procs]
        bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
        if bad:
            rank, code = bad[0]
            killed = " (killed at its memory limit, as an OOM-killed pod)" if _code(code) == 137 else ""
            raise TrainJobError(
                f"local worker {rank} of {workers} failed (exit {_code(code)}){killed}: {_tail(workdir / f'worker-{rank}.log')}"
            )
        if all(c == 0 for c in codes):
            return
        if time.monotonic() > limit:
            raise TrainJobError(f"local workers ran past train.deadline_seconds ({deadline_seconds:g} s)")
        time.sleep(poll_seconds)


def _record_workers(
    procs: list[subprocess.Popen[bytes]], groups: list[Path | None], memory_limit: int | None, workdir: Path
) -> None:
    """Each held worker's figures into the run's memory record; its group removed."""
    from kfct.runtime import memgroup

    for rank, (p, group) in enumerate(zip(procs, groups, strict=False)):
        if group is None:
            continue
        entry = {
            "task": "train-model",
            "process": f"worker {rank} of {len(procs)}",
            "limit_mib": round(memory_limit / 2**20) if memory_limit else None,
            "exit": _code(p.returncode) if p.returncode is not None else None,
            **memgroup.peaks(group),
        }
        rss = re.search(
            r"peak RSS (\d+(?:\.\d+)?) MiB",
            (workdir / f"worker-{rank}.log").read_text(errors="replace") if (workdir / f"worker-{rank}.log").is_file() else "",
        )
        entry["peak_rss_mib"] = float(rss.group(1)) if rss else None
        memgroup.record(entry)
        memgroup.remove(group)


def _tail(path: Path, lines: int = 3) -> str:
    """The worker's own failure line when it wrote one (train_worker.main), else its log's last lines."""
    from kfct.components.train_worker import FAILED_PREFIX

    text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    own = [t for t in text if t.startswith(FAILED_PREFIX)]
    return own[-1] if own else (" | ".join(text[-lines:]) or "(no output)")


# -- the step's part -------------------------------------------------------------------------------


def s3_uri(uri: str) -> str:
    """KFP's `minio://bucket/key` names the same object as `s3://bucket/key` on the configured endpoint."""
    return "s3://" + uri[len("minio://") :] if uri.startswith("minio://") else uri


def train_with_workers(
    cfg: RunConfig,
    train_uris: list[str],
    val_uris: list[str],
    preprocessor_uri: str,
    model_uri: str,
    model_path: str,
    device: str,
    pipeline_run: str,
    pipeline_run_id: str = "",
    engine: str | None = None,
    api: CustomObjectsApi | None = None,
    namespace: str | None = None,
    settings: Settings | None = None,
    poll_seconds: float = 5.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the workers, leave rank 0's model at `model_path`; returns rank 0's info plus `engine`."""
    from kfct.data.shards import read_bytes, write_bytes
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    ct = typed_config(cfg).train
    workers = int(ct.workers)
    engine = engine or (ENGINE_TRAINER if s.in_cluster else ENGINE_LOCAL)
    model_uri = s3_uri(model_uri)
    spec: dict[str, Any] = {
        "config_json": config_json(cfg),
        "train": [s3_uri(u) for u in train_uris],
        "val": [s3_uri(u) for u in val_uris],
        "preprocessor": s3_uri(preprocessor_uri),
        "model": model_uri,
        "info": model_uri + ".train-info.json",
        "device": device,
    }
    spec_uri = write_bytes(json.dumps(spec).encode(), model_uri + ".worker-spec.json", s)
    if engine == ENGINE_TRAINER:
        gpu = device == "cuda"
        labels = {k: v for k, v in ((LABEL_RUN_ID, label_value(pipeline_run_id)), (LABEL_RUN, label_value(pipeline_run))) if v}
        resources = node_resources(typed_config(cfg).resources, gpu)
        body = build_trainjob(
            trainjob_name(pipeline_run, model_uri),
            s.gpu_image if gpu else s.component_image,
            spec_uri,
            workers,
            resources,
            gpu,
            int(ct.deadline_seconds),
            labels,
            worker_env(
                s.k8s_secret_name, s.k8s_config_map, {"KFCT_IMAGE_REGISTRY": s.image_registry, "KFCT_IMAGE_TAG": s.image_tag}
            ),
        )
        run_trainjob(
            api or custom_objects_api(s),
            namespace or pod_namespace(s),
            body,
            poll_seconds=poll_seconds,
            timeout=(s.net_connect_timeout_seconds, s.net_timeout_seconds),
            log=log,
        )
    elif engine == ENGINE_LOCAL:
        with tempfile.TemporaryDirectory(prefix="kfct-workers-") as tmp:
            run_local_workers(
                spec_uri, workers, float(ct.deadline_seconds), tmp, memory_limit=worker_memory_limit(typed_config(cfg).resources)
            )
    else:
        raise ValueError(f"unknown training engine {engine!r}")
    out = json.loads(read_bytes(spec["info"], s))
    if model_uri != model_path:  # the cluster: the step's launcher uploads model_path to model_uri afterwards
        Path(model_path).parent.mkdir(parents=True, exist_ok=True)
        Path(model_path).write_bytes(read_bytes(model_uri, s))
    out["info"]["engine"] = engine
    result: dict[str, Any] = out
    return result


def train_distributed_step(
    cfg: RunConfig,
    train: Input[Dataset],
    val: Input[Dataset],
    preprocessor: Input[Model],
    model: Output[Model],
    device: str,
    tune_trials: int,
    pipeline_run: str,
    pipeline_run_id: str = "",
) -> tuple[ChurnModel, dict[str, Any], dict[str, Any], dict[str, Any], pd.DataFrame]:
    """The train step's distributed branch, from its kfp artifacts: (model, params, val_metrics, info, sample).

    `sample` is the first `drift.window_rows` rows of the train split (already shuffled by the
    split): the input example and the drift reference, read without loading the split."""
    import joblib

    from kfct.data.shards import parts_of, read_head
    from kfct.runtime.logs import stage_logger

    rc = typed_config(cfg)
    device = (device or rc.train.device or "cpu").lower()
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if int(tune_trials or 0) > 0:
        raise ValueError("tune_trials > 0 needs train.workers: 1 (tuning runs in one pod)")
    log = stage_logger("kfct.components.train")
    log.info("training on %d XGBoost workers", int(rc.train.workers))
    # A split is one parquet file, or a dataset in parts (the parts pipeline's featurize): workers get its parts.
    out = train_with_workers(
        cfg,
        parts_of(train.uri, train.path),
        parts_of(val.uri, val.path),
        preprocessor.uri,
        model.uri,
        model.path,
        device,
        pipeline_run,
        pipeline_run_id,
        log=log.warning,
    )
    sample = read_head(parts_of(train.path), int(rc.drift.window_rows)).to_pandas()
    return joblib.load(model.path), out["params"], out["val_metrics"], out["info"], sample
