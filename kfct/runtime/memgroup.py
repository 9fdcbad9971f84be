"""Hold a process to a pod's memory limit on this machine: a cgroup v1 memory group.

Why: on a cluster every CT step runs in a pod whose memory limit the compiled pipeline sets
(`resources` in the config); a process over it is OOM-killed (status 137). A local run that
never enforces the limit cannot show that a step fits its pod. As root, with the cgroup v1
memory controller at `/sys/fs/cgroup/memory`, a process started into a group whose
`memory.limit_in_bytes` is the pod's limit is killed by the kernel's OOM killer past it,
exactly as a kubelet's container is (page cache is reclaimed first, as in a pod).

Used by the local runner (`kfct run --pod-limits`: each task process in its own group at the
limit its IR gives it), by the local distributed-training workers (each worker its own group
at the per-worker limit a TrainJob's `resourcesPerNode` would give it) and by the bench.

Groups live under `kfct/` in the hierarchy; `ENV_PARENT` names the run's folder so a stage can
put the processes it starts (training workers: pods of their own on a cluster) beside itself,
and `ENV_RECORD` names a JSON-lines file where each held process's peak is appended.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")
ENV_PARENT = "KFCT_MEMORY_CGROUP"  # the run's group folder (relative to CGROUP_V1_MEMORY); set: limits are held
ENV_RECORD = "KFCT_MEMORY_RECORD"  # JSON lines: one per held process (what, limit, peaks, exit)
_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T|k)?")
_UNITS = {
    None: 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


def available() -> bool:
    """Root and the cgroup v1 memory controller: limits can be held."""
    return os.geteuid() == 0 and (CGROUP_V1_MEMORY / "memory.limit_in_bytes").is_file()


def quantity_bytes(text: str | float | int) -> int:
    """A Kubernetes memory quantity ("2Gi", "500M", "8589934592") in bytes; ValueError naming a bad one."""
    m = _QUANTITY.fullmatch(str(text).strip())
    if not m:
        raise ValueError(f"not a Kubernetes memory quantity: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def create(name: str, limit: int) -> Path:
    """The group `name` (created) with `limit` bytes (memory + swap where the kernel accounts swap)."""
    group = CGROUP_V1_MEMORY / name
    group.mkdir(parents=True, exist_ok=True)
    (group / "memory.limit_in_bytes").write_text(str(int(limit)))
    memsw = group / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        memsw.write_text(str(int(limit)))
    return group


def joiner(group: Path) -> Callable[[], None]:
    """A `preexec_fn`: the child joins `group` before exec, so all it ever allocates is charged there."""
    procs = group / "cgroup.procs"

    def join() -> None:
        procs.write_text(str(os.getpid()))

    return join


def peaks(group: Path) -> dict:
    """The group's peak usage (page cache included) and whether the OOM killer fired in it."""
    out = {
        "cgroup_peak_mib": round(int((group / "memory.max_usage_in_bytes").read_text()) / 2**20, 1),
        "limit_hits": int((group / "memory.failcnt").read_text()),
    }
    oom = group / "memory.oom_control"
    if oom.is_file():
        m = re.search(r"oom_kill (\d+)", oom.read_text())
        out["oom_killed"] = bool(m and int(m.group(1)))
    return out


def remove(group: Path) -> None:
    """rmdir the group (empty once its processes exited); a busy group is left for the kernel to report."""
    with contextlib.suppress(OSError):
        group.rmdir()


def remove_tree(name: str) -> None:
    """rmdir a run's folder of groups, deepest first, then its parents while empty (another run's stay)."""
    root = CGROUP_V1_MEMORY / name
    if not root.is_dir():
        return
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        remove(d)
    while root != CGROUP_V1_MEMORY and root.is_dir():
        remove(root)
        if root.is_dir():  # busy: a process still in it, or another run's groups below
            break
        root = root.parent


def record(entry: dict, path: str | None = None) -> None:
    """Append one held process's figures to the run's record (`ENV_RECORD`), when there is one."""
    path = path or os.environ.get(ENV_RECORD)
    if path:
        with Path(path).open("a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")


def group_name(*parts: str) -> str:
    """A group path from free text (task names, ranks; a part may hold "/" levels): only [A-Za-z0-9._-]
    per level."""
    levels = [level for p in parts for level in p.split("/") if level]
    return "/".join(re.sub(r"[^A-Za-z0-9._-]", "_", level)[:100] for level in levels)
