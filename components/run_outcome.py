"""The CT run's exit handler: a failed run always leaves an audit entry, even when no stage could.

Every stage records its own `stage_failed` before it re-raises (`kfct.runtime.stagefail`). A pod
killed from outside (OOMKill: status 137, eviction, `activeDeadlineSeconds`, an image that
cannot be pulled) never reaches that code, and the run would fail without a word on the
trail. The CT pipeline wraps its stages in `dsl.ExitHandler(record_run_outcome(...))`: this
task runs after the body whatever its outcome, receives the body's `PipelineTaskFinalStatus`
and records `run_failed` when the run failed and no stage of it recorded `stage_failed`.

Where the status comes from (kubeflow/pipelines 2.17.0, backend/src/v2/driver/resolve.go,
`TaskFinalStatus`): `state` is the MLMD execution state of the exit handler's body
(`COMPLETE`, `FAILED`, `CANCELED`, ...; kfp.local says `SUCCEEDED` / `FAILED`),
`pipelineJobResourceName` the run's Argo workflow name, `error` left empty by the driver.
Which `stage_failed` entries belong to this run: the one with this run's uuid
(`pipeline_run`), the one the local runner tagged (`run_id` = KFCT_RUN_ID), or one written
from a pod of this workflow (KFP's Argo compiler gives every executor `KFP_POD_NAME`, and
Argo names a workflow's pods `<workflow name>-<template>-<hash>`).
"""

import os
from collections.abc import Iterable, Mapping

from kfp.dsl import PipelineTaskFinalStatus

EVENT = "run_failed"
FAILED_STATES = frozenset({"FAILED", "CANCELED", "CANCELLED"})


def _belongs(entry: dict, pipeline_run: str, local_run_id: str, resource_name: str) -> bool:
    if pipeline_run and entry.get("pipeline_run") == pipeline_run:
        return True
    if local_run_id and entry.get("run_id") == local_run_id:
        return True
    return bool(resource_name) and str(entry.get("pod", "")).startswith(resource_name + "-")


def plan_run_outcome(
    state: str, resource_name: str, task_name: str, error: str, entries: Iterable[dict], pipeline_run: str, local_run_id: str = ""
) -> dict | None:
    """Pure: the fields of the `run_failed` entry to record, or None (the run succeeded, or one
    of its stages already put its own failure on the trail: one failure, one entry; a retried
    exit task finds its own earlier entry)."""
    if str(state or "").upper() not in FAILED_STATES:
        return None
    for e in entries:
        if e.get("event") in ("stage_failed", EVENT) and _belongs(e, pipeline_run, local_run_id, resource_name):
            return None
    fields = {
        "state": str(state).upper(),
        "pipeline_run": pipeline_run,
        "run_resource": resource_name,
        "task": task_name,
        "reason": "a task ended without recording its failure (killed from outside: OOMKill, eviction, deadline or image pull)",
    }
    if local_run_id:
        fields["run_id"] = local_run_id
    if error:
        fields["error"] = error
    return {k: v for k, v in fields.items() if v not in (None, "")}


def record_outcome(status: Mapping, model_name: str, pipeline_run: str, env: Mapping[str, str] = os.environ) -> dict:
    """Read the trail, decide, record: returns {"state", "recorded": the entry or None}."""
    from kfct.governance import audit
    from kfct.runtime.stagefail import RUN_ID_ENV

    state = str(status.get("state") or "")
    fields = None
    if state.upper() in FAILED_STATES:  # a succeeded run reads nothing
        fields = plan_run_outcome(
            state,
            status.get("pipeline_job_resource_name") or "",
            status.get("pipeline_task_name") or "",
            status.get("error_message") or "",
            audit.read(),
            pipeline_run,
            env.get(RUN_ID_ENV, ""),
        )
    entry = audit.record(EVENT, model_name=model_name, **fields) if fields else None
    return {"state": state, "recorded": entry}


# --- kfp component (thin adapter) --------------------------------------------------------------
def record_run_outcome(status: PipelineTaskFinalStatus, model_name: str, pipeline_run: str) -> str:
    """Exit handler of the CT run: records `run_failed` when the run failed and no stage recorded why."""
    import json

    from kfct.runtime.stage import stage

    with stage("record-run-outcome", model_name=model_name, pipeline_run=pipeline_run) as st:
        from kfct.components.run_outcome import record_outcome

        final = {
            "state": status.state,
            "pipeline_job_resource_name": status.pipeline_job_resource_name,
            "pipeline_task_name": status.pipeline_task_name,
            "error_message": status.error_message,
        }
        out = record_outcome(final, model_name, pipeline_run)
        recorded = out["recorded"]
        return json.dumps(
            {
                "state": out["state"],
                "pipeline_run": pipeline_run,
                "recorded": bool(recorded),
                "entry": {k: recorded[k] for k in ("seq", "event", "task") if k in recorded} if recorded else None,
                "stage_time": st.times(),
            }
        )
