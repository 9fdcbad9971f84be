"""The compiled CT pipeline hands the train step what a TrainJob needs: the KFP run's id (its
`kfct/pipeline-run-id` label) and the run's name, resolved by KFP at run time."""

from __future__ import annotations

import yaml


def test_train_task_gets_the_kfp_run_id_and_name(tmp_path):
    from kfct.pipelines.compile import compile_ct
    from kfct.settings import Settings

    spec = next(yaml.safe_load_all(compile_ct(tmp_path, gpu=True, settings=Settings()).read_text()))
    tasks = {}
    for comp in spec["root"]["dag"]["tasks"].values():  # train sits inside the data-valid condition
        for name, task in (comp.get("componentRef") and spec["components"][comp["componentRef"]["name"]]
                           .get("dag", {}).get("tasks", {}) or {}).items():
            tasks[name] = task
    params = tasks["train-model"]["inputs"]["parameters"]
    assert params["pipeline_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert params["pipeline_run"]["runtimeValue"]["constant"] == "{{$.pipeline_job_name}}"
