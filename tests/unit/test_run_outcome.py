"""Issue 20, item 9: lineage names the run by its uuid, and a run killed from outside is on the trail.

Upstream (kubeflow/pipelines 2.17.0, commit 7b70c7b9, backend/src/v2/driver/resolve.go): the
driver resolves `{{$.pipeline_job_name}}` to `opts.RunDisplayName` (the run's display name,
chosen by whoever starts it: not unique) and `{{$.pipeline_job_uuid}}` to `opts.RunID`; a
`taskFinalStatus` input becomes {state: the MLMD state of the producer (the exit handler's
body), pipelineJobResourceName: the Argo workflow name, pipelineTaskName, error: {}}.
"""

from __future__ import annotations

import pytest
import yaml

from kfct.components.run_outcome import plan_run_outcome

UUID = "5f0c3f7e-0c1e-4a53-9d7e-2b1f6a0f9c11"


def test_a_failed_run_without_a_stage_entry_is_recorded():
    got = plan_run_outcome("FAILED", "kfct-ct-x7k2p", "exit-handler-1", "", [], UUID)
    assert got["state"] == "FAILED" and got["pipeline_run"] == UUID and got["run_resource"] == "kfct-ct-x7k2p"
    assert "killed from outside" in got["reason"]


def test_canceled_counts_as_failed_and_success_records_nothing():
    assert plan_run_outcome("CANCELED", "wf", "t", "", [], UUID)["state"] == "CANCELED"
    for ok in ("COMPLETE", "SUCCEEDED", "CACHED"):
        assert plan_run_outcome(ok, "wf", "t", "", [], UUID) is None


def test_a_stage_that_recorded_its_failure_is_not_recorded_twice():
    by_uuid = [{"event": "stage_failed", "pipeline_run": UUID}]
    by_pod = [{"event": "stage_failed", "pod": "kfct-ct-x7k2p-system-container-impl-123"}]
    by_local = [{"event": "stage_failed", "run_id": "ct-20261207-1"}]
    assert plan_run_outcome("FAILED", "kfct-ct-x7k2p", "t", "", by_uuid, UUID) is None
    assert plan_run_outcome("FAILED", "kfct-ct-x7k2p", "t", "", by_pod, UUID) is None
    assert plan_run_outcome("FAILED", "local-pipeline-x", "t", "", by_local, UUID, "ct-20261207-1") is None
    # another run's failures do not count
    other = [{"event": "stage_failed", "pod": "kfct-ct-x7k2pq-system-container-impl-1", "pipeline_run": "other"}]
    assert plan_run_outcome("FAILED", "kfct-ct-x7k2p", "t", "", other, UUID) is not None
    # a retried exit task finds its own entry
    assert plan_run_outcome("FAILED", "wf", "t", "", [{"event": "run_failed", "pipeline_run": UUID}], UUID) is None


def test_record_outcome_records_once(kfct_home):
    from kfct.components.run_outcome import record_outcome
    from kfct.governance import audit

    status = {"state": "FAILED", "pipeline_job_resource_name": "kfct-ct-abc", "pipeline_task_name": "exit-handler-1"}
    first = record_outcome(status, "churn", UUID, env={})
    again = record_outcome(status, "churn", UUID, env={})
    assert first["recorded"]["event"] == "run_failed" and again["recorded"] is None
    entries = [e for e in audit.read() if e["event"] == "run_failed"]
    assert len(entries) == 1 and entries[0]["model_name"] == "churn" and entries[0]["pipeline_run"] == UUID
    assert record_outcome({"state": "COMPLETE"}, "churn", "other", env={})["recorded"] is None


@pytest.fixture
def ct_ir(cluster_compiled):
    """The CT pipeline's IR as `kfct compile` writes it for a cluster (tests/conftest.py)."""
    return cluster_compiled["ct_pipeline.yaml"][0]


def _all_tasks(spec):
    for comp in [spec["root"], *list(spec["components"].values())]:
        yield from (comp.get("dag") or {}).get("tasks", {}).items()


def test_lineage_names_the_run_by_its_uuid(ct_ir):
    """Every `pipeline_run` input is the run's uuid: the display name may repeat across runs."""
    spec = ct_ir
    consts = {}
    for name, task in _all_tasks(spec):
        src = (task.get("inputs", {}).get("parameters") or {}).get("pipeline_run")
        if src and "runtimeValue" in src:
            consts[name] = src["runtimeValue"]["constant"]
    assert set(consts) == {"validate-data", "train-model", "register-model", "record-run-outcome"}, consts
    assert set(consts.values()) == {"{{$.pipeline_job_uuid}}"}, consts
    assert "{{$.pipeline_job_name}}" not in yaml.safe_dump(spec)


def test_every_stage_runs_inside_an_exit_handler_whose_task_takes_the_final_status(ct_ir):
    from kfct.pipelines.ct import STAGES

    spec = ct_ir
    root = spec["root"]["dag"]["tasks"]
    exit_task = root["record-run-outcome"]
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    body = exit_task["inputs"]["parameters"]["status"]["taskFinalStatus"]["producerTask"]
    assert exit_task["dependentTasks"] == [body] and set(root) == {body, "record-run-outcome"}
    inside = set()

    def visit(comp_name):
        for name, task in spec["components"][comp_name]["dag"]["tasks"].items():
            inside.add(name)
            if "dag" in spec["components"][task["componentRef"]["name"]]:
                visit(task["componentRef"]["name"])

    visit(root[body]["componentRef"]["name"])
    assert set(STAGES) <= inside
    assert not exit_task["cachingOptions"].get("enableCache")
