"""The compiled CT pipeline hands the train step what a TrainJob needs: the KFP run's id (its
`kfct/pipeline-run-id` label and the lineage's `pipeline_run`), resolved by KFP at run time."""

from __future__ import annotations

import yaml

from tests.homekit import off_the_stack


def _all_tasks(spec: dict) -> dict[str, dict]:
    """Every task of the IR, at any depth (the stages sit inside the exit handler and the conditions)."""
    out: dict[str, dict] = {}

    def walk(tasks: dict) -> None:
        for name, task in tasks.items():
            out[name] = task
            comp = spec["components"].get((task.get("componentRef") or {}).get("name", ""), {})
            walk((comp.get("dag") or {}).get("tasks") or {})

    walk(spec["root"]["dag"]["tasks"])
    return out


def test_train_task_gets_the_kfp_run_uuid(tmp_path):
    from kfct.pipelines.compile import compile_ct
    from kfct.runtime.settings import Settings

    spec = next(yaml.safe_load_all(off_the_stack(compile_ct, tmp_path, gpu=True, settings=Settings()).read_text()))
    params = _all_tasks(spec)["train-model"]["inputs"]["parameters"]
    assert params["pipeline_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    # The run's display name is not unique (kubeflow/pipelines 2.17.0 backend/src/v2/driver/resolve.go):
    # lineage names the run by its uuid too.
    assert params["pipeline_run"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
