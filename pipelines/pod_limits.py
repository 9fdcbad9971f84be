"""`kfct run --pod-limits`: every task process of a local run held to the memory limit its IR gives its pod.

kfp's local runner ignores `resources` (kfp 2.17, kfp/local/subprocess_task_handler.py: the
task runs as a plain subprocess). This wraps its two seams, in the driver process only:

- `kfp.local.task_dispatcher.run_single_task_implementation(..., executor_spec, ...)` (called
  by name from kfp/local/orchestrator/task_executor.py) is where the compiled executor spec
  of the task is at hand: its `container.resources.resource_memory_limit` is the limit
  (the IR a cluster run gets: the local build sets it too under `task_config.local_limits`);
- `kfp.local.subprocess_task_handler.run_local_subprocess(full_command, env_vars)` starts the
  task: the same Popen, with the child joining a cgroup v1 memory group at that limit before
  exec (`kfct.runtime.memgroup`). A task over its limit is killed by the kernel (status 137 in the
  record, a failed task for kfp), as an OOM-killed pod.

Each task's peak RSS (its own process, `wait4`), its group's peak and its exit are appended to
`<pipeline root>/memory.jsonl`; the stages add their workers there (`memgroup.ENV_RECORD`).
Pinned on kfp 2.17.0 (tests/unit/test_pod_limits.py checks both seams still exist).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
from pathlib import Path

from kfct.runtime import memgroup

_current = threading.local()  # the task being dispatched, per thread: kfp.local runs a ParallelFor's tasks concurrently
_seq = itertools.count(1)


def memory_limit_of(executor_spec) -> int | None:
    """The memory limit (bytes) a compiled executor spec gives its container, or None."""
    res = executor_spec.container.resources
    text = res.resource_memory_limit
    if text:
        return memgroup.quantity_bytes(text)
    return int(res.memory_limit * 10**9) if res.memory_limit else None  # the deprecated float field (GB)


def run_held(full_command: list[str], env_vars: dict | None = None) -> int:
    """kfp's `run_local_subprocess`, with the child in its task's memory group; records its peaks."""
    env = {**os.environ, **env_vars} if env_vars else None
    limit, task = getattr(_current, "limit", None), getattr(_current, "task", "task")
    group = None
    if limit:
        group = memgroup.create(memgroup.group_name(os.environ[memgroup.ENV_PARENT], f"{next(_seq):03d}-{task}"), limit)
    t0 = time.perf_counter()
    with subprocess.Popen(
        full_command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=env,
        preexec_fn=memgroup.joiner(group) if group else None,
    ) as proc:
        for line in iter(proc.stdout.readline, "") if proc.stdout else ():
            print(line, end="")
        print("\n")
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    code = proc.returncode
    entry = {
        "task": task,
        "process": "task",
        "limit_mib": round(limit / 2**20) if limit else None,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "exit": 128 - code if code < 0 else code,
    }
    if group is not None:
        entry.update(memgroup.peaks(group))
        memgroup.remove(group)
    memgroup.record(entry)
    return code


def install(pipeline_root: str, run_id: str) -> None:
    """Wrap kfp.local's seams (driver process only) and tell the stages where the run's groups and record are."""
    from kfp.local import subprocess_task_handler, task_dispatcher

    if not memgroup.available():
        raise SystemExit(f"--pod-limits needs root and the cgroup v1 memory controller at {memgroup.CGROUP_V1_MEMORY}")
    os.environ[memgroup.ENV_PARENT] = memgroup.group_name("kfct", run_id)
    os.environ[memgroup.ENV_RECORD] = str(Path(pipeline_root) / "memory.jsonl")
    dispatch = task_dispatcher.run_single_task_implementation

    def dispatch_held(*args, **kwargs):
        names = ("pipeline_resource_name", "component_name", "component_spec", "executor_spec")
        given = dict(zip(names, args, strict=False)) | kwargs
        _current.task = str(given.get("component_name", "task"))
        _current.limit = memory_limit_of(given["executor_spec"])
        try:
            return dispatch(*args, **kwargs)
        finally:
            _current.task, _current.limit = "task", None

    task_dispatcher.run_single_task_implementation = dispatch_held
    subprocess_task_handler.run_local_subprocess = run_held


def uninstall(run_id: str) -> None:
    memgroup.remove_tree(memgroup.group_name("kfct", run_id))
