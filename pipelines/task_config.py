"""Per-task cluster configuration: resources, retries, caching, GPU, and where secrets come from.

`apply_task_config(task, stage, cfg, settings, gpu)` is called on every task while the
`@dsl.pipeline` is built. Values come from the config's `resources` section
(`default` merged with the stage's own entry), so operators tune pods without touching
pipeline code:

    resources:
      default: {cpu: "1", memory: 2Gi, retries: 1, caching: true}
      train:   {cpu: "4", memory: 8Gi, gpu: 1, retries: 0, caching: false}

Keys: `cpu`, `memory` (requests; also the limits unless `cpu_limit` / `memory_limit`
are given), `retries` (+ `retry_backoff`, default 30s), `caching`, `gpu` (count, only
used when the pipeline is compiled with GPU on).

Credentials never become parameters: every task gets the Kubernetes Secret named by
`settings.k8s_secret_name` as env vars (kfp-kubernetes `use_secret_as_env`) and the
non-secret endpoints from the ConfigMap `settings.k8s_config_map`. The compiled YAML
therefore names the Secret and its keys, never a value.

Local runs (kfp.local) get only the caching option: resources, accelerators and pod
env have no local meaning (the runner warns about each), and a retry with a 30 s
backoff would only delay the clear error of a deterministic local failure. A build is
"local" when `kfp.local.init()` ran before it, unless `target("cluster")` (used by
`kfct.pipelines.compile`) says otherwise.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from kfct.config import RunConfig
    from kfct.runtime.settings import Settings

from kfct.cluster.pod_env import CONFIG_KEYS, SECRET_KEYS

GPU_RESOURCE = "nvidia.com/gpu"
# Multi-user Kubeflow: Kubeflow's PodDefault `access-ml-pipeline` (manifests/overlays/prod/
# kfp-access.yaml) mounts a projected KFP token (audience pipelines.kubeflow.org) into pods
# carrying this label. Only the steps that call the KFP API get it (grant_kfp_access).
KFP_ACCESS_LABEL = ("access-ml-pipeline", "true")
DEFAULT_RETRY_BACKOFF = "30s"

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("kfct_pipeline_target", default=None)
_LOCAL_LIMITS: contextvars.ContextVar[bool] = contextvars.ContextVar("kfct_local_limits", default=False)


@contextlib.contextmanager
def local_limits() -> Iterator[None]:
    """Local builds inside also carry the memory requests/limits a cluster build gives each task, so the
    local runner can hold every task process to its pod's limit (`kfct run --pod-limits`)."""
    token = _LOCAL_LIMITS.set(True)
    try:
        yield
    finally:
        _LOCAL_LIMITS.reset(token)


@contextlib.contextmanager
def target(kind: str) -> Iterator[None]:
    """Force what pipelines built inside are for: "cluster" or "local"."""
    if kind not in ("cluster", "local"):
        raise ValueError(f"target must be 'cluster' or 'local', got {kind!r}")
    token = _TARGET.set(kind)
    try:
        yield
    finally:
        _TARGET.reset(token)


def building_for_local() -> bool:
    forced = _TARGET.get()
    if forced is not None:
        return forced == "local"
    try:
        from kfp.local import config as local_config
    except ImportError:  # pragma: no cover - kfp always ships kfp.local
        return False
    return local_config.LocalExecutionConfig.instance is not None


def stage_resources(cfg: RunConfig | None, stage: str) -> dict:
    """`resources.default` overlaid with `resources.<stage>`; a clear error for bad values."""
    section = cfg.resources if cfg is not None else {}
    if not isinstance(section, dict):
        raise ValueError(f"config 'resources' must be a mapping, got {type(section).__name__}")
    merged: dict = {}
    for key in ("default", stage):
        entry = section.get(key) or {}
        if not isinstance(entry, dict):
            raise ValueError(f"config resources.{key} must be a mapping, got {entry!r}")
        merged.update(entry)
    known = {"cpu", "memory", "cpu_limit", "memory_limit", "retries", "retry_backoff", "caching", "gpu"}
    unknown = set(merged) - known
    if unknown:
        raise ValueError(f"config resources for {stage!r}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    for key in ("retries", "gpu"):
        if key in merged:
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"config resources.{stage}.{key} must be a non-negative integer, got {value!r}")
    if "retry_backoff" in merged and not re.fullmatch(r"\d+s", str(merged["retry_backoff"])):
        raise ValueError(f"config resources.{stage}.retry_backoff must look like '30s', got {merged['retry_backoff']!r}")
    return merged


def apply_task_config(
    task: Any, stage_name: str, cfg: RunConfig | None, settings: Settings | None = None, gpu: bool = False
) -> Any:
    """Configure one pipeline task for the cluster (see module doc); returns the task.

    Safe in local runs: only caching is applied there, and a task already executed
    eagerly (a component called outside a pipeline) is returned untouched.
    """
    from kfp.dsl import pipeline_task

    from kfct.runtime.settings import get_settings

    if getattr(task, "state", None) == pipeline_task.TaskState.FINAL:
        return task
    s = settings or get_settings()
    res = stage_resources(cfg, stage_name)

    task.set_caching_options(enable_caching=bool(res.get("caching", True)))
    if building_for_local():
        if _LOCAL_LIMITS.get():
            _set_memory(task, res)
        return task

    if res.get("cpu") is not None:
        task.set_cpu_request(str(res["cpu"]))
        task.set_cpu_limit(str(res.get("cpu_limit", res["cpu"])))
    elif res.get("cpu_limit") is not None:
        task.set_cpu_limit(str(res["cpu_limit"]))
    _set_memory(task, res)

    retries = int(res.get("retries", 0))
    if retries > 0:
        task.set_retry(
            num_retries=retries,
            backoff_duration=str(res.get("retry_backoff", DEFAULT_RETRY_BACKOFF)),
            backoff_factor=2.0,
            backoff_max_duration="3600s",
        )

    gpus = int(res.get("gpu", 0))
    if gpu and gpus > 0:
        from kfp import kubernetes

        task.set_accelerator_type(GPU_RESOURCE)
        task.set_accelerator_limit(gpus)
        task.set_container_image(s.gpu_image)
        # GPU node pools are usually tainted nvidia.com/gpu:NoSchedule.
        kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")

    attach_cluster_env(task, s)
    return task


def grant_kfp_access(task: Any) -> Any:
    """Label the step's pod so Kubeflow injects the projected KFP API token (cluster builds only)."""
    if building_for_local():
        return task
    from kfp import kubernetes

    kubernetes.add_pod_label(task, KFP_ACCESS_LABEL[0], KFP_ACCESS_LABEL[1])
    return task


def _set_memory(task: Any, res: dict) -> None:
    if res.get("memory") is not None:
        task.set_memory_request(str(res["memory"]))
        task.set_memory_limit(str(res.get("memory_limit", res["memory"])))
    elif res.get("memory_limit") is not None:
        task.set_memory_limit(str(res["memory_limit"]))


def attach_cluster_env(task: Any, settings: Settings | None = None) -> None:
    """Secret (keys) and ConfigMap (endpoints) as env vars, by name only; the image coordinates as values.

    KFCT_IMAGE_REGISTRY / KFCT_IMAGE_TAG travel as plain env (they are not secrets) so a
    step that names an image at run time (deploy: the serving image of the
    InferenceService) names the one this pipeline was compiled against, i.e. the one CD built.
    """
    from kfp import kubernetes

    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    task.set_env_variable("KFCT_IMAGE_REGISTRY", s.image_registry)
    task.set_env_variable("KFCT_IMAGE_TAG", s.image_tag)
    kubernetes.use_secret_as_env(task, secret_name=s.k8s_secret_name, secret_key_to_env={k: k for k in SECRET_KEYS})
    kubernetes.use_config_map_as_env(task, config_map_name=s.k8s_config_map, config_map_key_to_env={k: k for k in CONFIG_KEYS})
    return task
