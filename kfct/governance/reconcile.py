"""Find what a crashed run left behind and settle it, auditing what was found.

A `kill -9` (an evicted pod, an OOM kill) can stop a run anywhere. Three leftovers matter:

- a model version registered but never given its alias (`kfct.registration=pending`, no
  alias): an approved model that serves nowhere and has no audit entry for its alias.
  Registration only happens under the registry lock, so a pending version whose run does not
  hold the lock now was abandoned: it is tagged `abandoned` (never deleted: it is evidence).
  A pending version that does carry an alias got it before the crash: it is tagged
  `complete` (the alias is the truth; serving converges on it).
- an MLflow run left `RUNNING`: killed now when its process provably died (same host and
  boot, its pid gone or reused), else once older than `stale_run_seconds` (the lease).
- a logged model left `PENDING` by such a run: finalized `FAILED`.

Each finding is one audit entry. `reconcile` is called by the evaluate stage (every run
that trains) and by register under the registry lock.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfct.governance.registry import RegistryLock
    from kfct.runtime.settings import Settings

HOST_TAG, PID_TAG, BOOT_TAG, START_TAG = "kfct.host", "kfct.pid", "kfct.boot_id", "kfct.proc_start"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_start(pid: int) -> str:
    """Process start time in clock ticks since boot (Linux), '' when unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    """Tags a run carries so a later reconcile can tell whether its process still lives."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), BOOT_TAG: _boot_id(), START_TAG: _proc_start(os.getpid())}


def run_is_dead(tags: dict, start_ms: int | None, stale_seconds: float, now: float | None = None) -> str | None:
    """Why a RUNNING run is dead, or None when it may still be alive (pure)."""
    now = time.time() if now is None else now
    if tags.get(HOST_TAG) == socket.gethostname() and tags.get(BOOT_TAG) and tags.get(PID_TAG):
        if tags[BOOT_TAG] != _boot_id():
            return "its host rebooted since it started"
        started = _proc_start(int(tags[PID_TAG]))
        if not started or (tags.get(START_TAG) and started != tags[START_TAG]):
            return f"its process {tags[PID_TAG]} on {tags[HOST_TAG]} is gone"
        return None
    if start_ms is not None and now - start_ms / 1000.0 > stale_seconds:
        return f"still RUNNING {int(now - start_ms / 1000.0)} s after it started (lease {int(stale_seconds)} s)"
    return None


def reconcile_runs(settings: Settings | None = None) -> list[dict]:
    """Mark dead RUNNING runs KILLED and their PENDING logged models FAILED."""
    from kfct.governance import audit, registry
    from kfct.runtime.retry import retry_call
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    c = registry.client()
    exp = retry_call(lambda: c.get_experiment_by_name(s.mlflow_experiment), "read experiment")
    if exp is None:
        return []
    found = []
    runs = retry_call(
        lambda: c.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=500), "search RUNNING runs"
    )
    dead: dict[str, str] = {}
    for run in runs:
        why = run_is_dead(run.data.tags, run.info.start_time, s.stale_run_seconds)
        if why is None:
            continue
        retry_call(functools.partial(c.set_tag, run.info.run_id, "kfct.reconciled", f"KILLED: {why}"[:5000]), "tag dead run")
        retry_call(functools.partial(c.set_terminated, run.info.run_id, "KILLED"), "mark dead run KILLED")
        dead[run.info.run_id] = why
        found.append(audit.record("stale_run_marked", mlflow_run_id=run.info.run_id, status="KILLED", reason=why))
    pending = [lm for lm in _logged_models(c, exp.experiment_id) if str(lm.status).endswith("PENDING")]
    for lm in pending:
        run_id = getattr(lm, "source_run_id", None)
        why = dead.get(run_id) if run_id else None
        if why is None and run_id:
            r = retry_call(functools.partial(c.get_run, run_id), "read run of a pending model")
            if r.info.status in ("KILLED", "FAILED"):
                why = f"its run {run_id} ended {r.info.status}"
        if why is None and lm.creation_timestamp and time.time() - lm.creation_timestamp / 1000 > s.stale_run_seconds:
            why = "PENDING longer than the lease"
        if why is None:
            continue
        retry_call(functools.partial(c.finalize_logged_model, lm.model_id, "FAILED"), "mark pending model FAILED")
        found.append(
            audit.record("pending_model_marked", model_id=lm.model_id, mlflow_run_id=run_id, status="FAILED", reason=why)
        )
    return found


def _logged_models(c: Any, experiment_id: str, limit: int = 5000) -> list:
    """All logged models of the experiment (MLflow's search cannot filter on status)."""
    from kfct.runtime.retry import retry_call

    out: list = []
    token: str | None = None
    try:
        while len(out) < limit:
            page = retry_call(
                functools.partial(c.search_logged_models, [experiment_id], max_results=500, page_token=token),
                "search logged models",
            )
            out.extend(page)
            token = page.token
            if not token:
                break
    except AttributeError:  # a store without logged models
        return []
    return out


def reconcile_versions(name: str, own_run_id: str | None = None) -> list[dict]:
    """Settle `pending` versions of runs other than `own_run_id`. Call under the registry lock."""
    from kfct.governance import audit, registry
    from kfct.runtime.retry import retry_call

    c = registry.client()
    try:
        versions = retry_call(
            lambda: c.search_model_versions(f"name='{name}' and tag.`{registry.REG_TAG}` = 'pending'"), "search pending versions"
        )
    except Exception as exc:
        from kfct.runtime.retry import is_transient

        if is_transient(exc):
            raise
        versions = []
    found = []
    by_version: dict[str, list[str]] = {}
    if versions:
        for alias, v in registry.aliases(name).items():  # search results do not carry aliases
            by_version.setdefault(str(v), []).append(alias)
    for mv in versions:
        if own_run_id and mv.run_id == own_run_id:
            continue  # ours: the caller resumes it
        held = sorted(by_version.get(str(mv.version), []))
        if held:
            registry.set_version_tag(name, mv.version, registry.REG_TAG, "complete")
            found.append(
                audit.record(
                    "registration_interrupted",
                    model_name=name,
                    version=str(mv.version),
                    mlflow_run_id=mv.run_id,
                    aliases=held,
                    outcome="complete",
                    reason="crashed after its alias moved: the alias stands, serving follows it",
                )
            )
        else:
            registry.set_version_tag(name, mv.version, registry.REG_TAG, "abandoned")
            registry.set_version_tag(
                name, mv.version, "kfct.abandoned_reason", "registered, then the run died before its alias moved"
            )
            found.append(
                audit.record(
                    "orphan_version_found",
                    model_name=name,
                    version=str(mv.version),
                    mlflow_run_id=mv.run_id,
                    outcome="abandoned",
                    reason="registered, then the run died before its alias moved; not served",
                )
            )
    return found


def reconcile(
    name: str, settings: Settings | None = None, own_run_id: str | None = None, lock: RegistryLock | None = None
) -> list[dict]:
    """Runs and versions; takes the registry lock for the versions unless `lock` is given."""
    from kfct.governance import registry

    found = reconcile_runs(settings)
    if lock is not None:
        return found + reconcile_versions(name, own_run_id)
    with registry.champion_lock(name, settings):
        return found + reconcile_versions(name, own_run_id)
