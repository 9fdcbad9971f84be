"""The pure parts of distributed training (train.workers > 1): shard plans, the DMLC_* contract,
the TrainJob the train step creates, the config's checks, the RBAC and the card's line.

The TrainJob's shape follows kubeflow/trainer v2.2.0 (read at commit 8c0f5059, tag v2.3.0
identical in these parts): pkg/apis/trainer/v1alpha1/trainjob_types.go (runtimeRef, trainer.
{image, command, args, env, numNodes, resourcesPerNode}, activeDeadlineSeconds, runtimePatches
-> replicatedJobs[node] -> pod spec tolerations) and pkg/runtime/framework/plugins/xgboost/
xgboost.go (DMLC_* reserved; GPU limits per node = workers per node).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from kfct.components.train_distributed import (
    build_trainjob,
    job_outcome,
    label_value,
    local_worker_env,
    node_resources,
    s3_uri,
    trainjob_name,
    worker_env,
)
from kfct.components.train_worker import collective_from_env, parse_spec, tracker_host
from kfct.data.shards import read_head, read_shard, shard_plan

ROOT = Path(__file__).resolve().parents[2]


# -- shards ---------------------------------------------------------------------------------------


def test_whole_parts_go_round_robin_when_there_are_enough():
    rows = [10, 20, 30, 40, 50]
    assert shard_plan(rows, 0, 2) == [(0, 0, 10), (2, 0, 30), (4, 0, 50)]
    assert shard_plan(rows, 1, 2) == [(1, 0, 20), (3, 0, 40)]


def test_fewer_parts_than_workers_split_rows_evenly_and_exactly_once():
    rows = [7, 0, 5]
    plans = [shard_plan(rows, r, 4) for r in range(4)]
    covered = sorted((i, k) for plan in plans for i, a, b in plan for k in range(a, b))
    assert covered == [(0, k) for k in range(7)] + [(2, k) for k in range(5)]
    assert [sum(b - a for _, a, b in p) for p in plans] == [3, 3, 3, 3]


def test_a_rank_outside_the_group_is_refused():
    with pytest.raises(ValueError, match=r"rank 2 is outside 0\.\.1"):
        shard_plan([1, 2], 2, 2)


def test_read_shard_reads_only_its_rows(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"x": list(range(100))}), path, row_group_size=16)
    got = [read_shard([str(path)], r, 3).column("x").to_pylist() for r in range(3)]
    assert got[0] == list(range(0, 33)) and got[1] == list(range(33, 66)) and got[2] == list(range(66, 100))
    assert read_head([str(path)], 20).column("x").to_pylist() == list(range(20))


# -- the DMLC_* contract ----------------------------------------------------------------------------


def test_collective_from_env_reads_the_runtime_variables():
    c = collective_from_env(
        {"DMLC_TRACKER_URI": "job-node-0-0.job", "DMLC_TRACKER_PORT": "29500", "DMLC_TASK_ID": "1", "DMLC_NUM_WORKER": "2"}
    )
    assert (c.tracker_uri, c.tracker_port, c.rank, c.world) == ("job-node-0-0.job", 29500, 1, 2)
    assert tracker_host(c.tracker_uri) == "0.0.0.0" and tracker_host("127.0.0.1") == "127.0.0.1"


@pytest.mark.parametrize(
    "env,msg",
    [
        ({"DMLC_TRACKER_URI": "h", "DMLC_TRACKER_PORT": "1", "DMLC_NUM_WORKER": "2"}, "lacks DMLC_TASK_ID"),
        ({"DMLC_TRACKER_URI": "h", "DMLC_TRACKER_PORT": "x", "DMLC_TASK_ID": "0", "DMLC_NUM_WORKER": "2"}, "integers"),
        ({"DMLC_TRACKER_URI": "h", "DMLC_TRACKER_PORT": "1", "DMLC_TASK_ID": "2", "DMLC_NUM_WORKER": "2"}, "outside"),
    ],
)
def test_a_bad_worker_environment_is_named(env, msg):
    with pytest.raises(ValueError, match=msg):
        collective_from_env(env)


def test_a_spec_without_parts_is_refused():
    with pytest.raises(ValueError, match="lacks preprocessor"):
        parse_spec('{"config_json": "", "train": ["a"], "val": ["b"], "model": "m", "info": "i", "device": "cpu"}')
    with pytest.raises(ValueError, match="'train' must be a non-empty list"):
        parse_spec(
            '{"config_json": "", "train": [], "val": ["b"], "preprocessor": "p", "model": "m", "info": "i", "device": "cpu"}'
        )


def test_local_workers_get_the_contract_and_no_inherited_dmlc():
    env = local_worker_env({"PATH": "/bin", "DMLC_TASK_ID": "7", "DMLC_FOO": "x"}, 1, 2, 4242)
    assert {k: v for k, v in env.items() if k.startswith("DMLC_")} == {
        "DMLC_TRACKER_URI": "127.0.0.1",
        "DMLC_TRACKER_PORT": "4242",
        "DMLC_TASK_ID": "1",
        "DMLC_NUM_WORKER": "2",
    }
    assert env["PATH"] == "/bin" and int(env["OMP_NUM_THREADS"]) >= 1


# -- the TrainJob -----------------------------------------------------------------------------------


def _job(gpu: bool) -> dict:
    resources = {"default": {"cpu": "1", "memory": "2Gi"}, "train": {"cpu": "4", "memory": "8Gi", "gpu": 1}}
    return build_trainjob(
        trainjob_name("kfct-ct-run-1", "s3://b/root/train-model/model"),
        "reg/kfct-train-gpu:1",
        "s3://b/root/train-model/model.worker-spec.json",
        3,
        node_resources(resources, gpu),
        gpu,
        900,
        {"kfct/pipeline-run-id": "1234-abcd"},
        worker_env("kfct-s3-credentials", "kfct-config"),
    )


def test_trainjob_on_the_xgboost_runtime_with_image_command_workers_deadline_and_labels():
    job = _job(gpu=False)
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    assert job["metadata"]["name"].startswith("kfct-train-") and len(job["metadata"]["name"]) <= 21
    assert job["metadata"]["labels"]["kfct/pipeline-run-id"] == "1234-abcd"
    spec = job["spec"]
    assert spec["runtimeRef"] == {
        "name": "xgboost-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    assert spec["activeDeadlineSeconds"] == 900
    t = spec["trainer"]
    assert t["image"] == "reg/kfct-train-gpu:1" and t["numNodes"] == 3
    assert t["command"] + t["args"] == [
        "python",
        "-m",
        "kfct.components.train_worker",
        "--spec",
        "s3://b/root/train-model/model.worker-spec.json",
    ]
    assert t["resourcesPerNode"] == {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}
    assert "runtimePatches" not in spec  # no GPU: no tolerations to patch in


def test_gpu_trainjob_asks_one_gpu_per_worker_and_tolerates_the_gpu_taint():
    spec = _job(gpu=True)["spec"]
    assert spec["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "1"
    (patch,) = spec["runtimePatches"]
    (rj,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert rj["name"] == "node" and patch["manager"]
    assert rj["template"]["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_workers_get_secrets_by_reference_and_never_the_runtime_variables():
    env = _job(gpu=False)["spec"]["trainer"]["env"]
    refs = {e["name"]: e["valueFrom"] for e in env if "valueFrom" in e}
    assert refs["KFCT_S3_SECRET_KEY"] == {"secretKeyRef": {"name": "kfct-s3-credentials", "key": "KFCT_S3_SECRET_KEY"}}
    assert refs["KFCT_S3_ENDPOINT"]["configMapKeyRef"]["name"] == "kfct-config"
    assert all("value" not in e for e in env if e["name"].endswith(("SECRET_KEY", "ACCESS_KEY", "ACCESS_KEY_ID")))
    with pytest.raises(ValueError, match="DMLC_TASK_ID are reserved"):
        build_trainjob("j", "i", "s", 2, {}, False, 1, {}, [{"name": "DMLC_TASK_ID", "value": "0"}])


def test_label_values_and_uris():
    assert label_value("kfct-ct-2026-12-07 02:44:21.177352") == "kfct-ct-2026-12-07-02-44-21.177352"
    assert label_value("{{$.pipeline_job_uuid}}") == "pipeline_job_uuid"
    assert len(label_value("x" * 100)) == 63
    assert s3_uri("minio://mlpipeline/a/b") == "s3://mlpipeline/a/b" and s3_uri("/tmp/x") == "/tmp/x"


def test_job_outcome_reads_complete_and_failed_conditions():
    assert job_outcome({"status": {"conditions": [{"type": "Suspended", "status": "False"}]}}) is None
    assert (
        job_outcome({"status": {"conditions": [{"type": "Complete", "status": "True", "reason": "AllJobsCompleted"}]}})[0]
        == "Complete"
    )
    failed = {
        "type": "Failed",
        "status": "True",
        "reason": "DeadlineExceeded",
        "message": "TrainJob exceeded its active deadline",
    }
    assert job_outcome({"status": {"conditions": [failed]}}) == (
        "Failed",
        "DeadlineExceeded: TrainJob exceeded its active deadline",
    )


# -- config, RBAC, card ----------------------------------------------------------------------------


def test_config_workers_default_one_and_checked():
    from kfct.components.train_distributed import typed_config
    from kfct.config import ConfigError, load_config

    assert typed_config(load_config()).train.workers == 1
    assert typed_config(load_config(overrides={"train": {"workers": 4}})).train.workers == 4
    with pytest.raises(ConfigError, match=r"train\.workers > 1 needs model xgboost"):
        load_config(overrides={"train": {"workers": 2, "model": "random_forest"}})
    with pytest.raises(ConfigError, match=r"train\.workers: Input should be greater than or equal to 1"):
        load_config(overrides={"train": {"workers": 0}})
    with pytest.raises(ConfigError, match="cannot tune"):
        load_config(overrides={"train": {"workers": 2, "tune_trials": 5}})


def test_the_pipeline_account_may_run_trainjobs():
    role = yaml.safe_load((ROOT / "manifests/base/rbac/role.yaml").read_text())
    verbs = {
        v for r in role["rules"] if "trainer.kubeflow.org" in r["apiGroups"] and "trainjobs" in r["resources"] for v in r["verbs"]
    }
    assert {"create", "get", "delete"} <= verbs and "*" not in verbs


def test_model_card_says_how_it_was_trained():
    from kfct.evidence.modelcard import build_model_card

    md, _ = build_model_card(
        {"model_name": "m", "version": "3", "training": {"workers": 4, "engine": "kubeflow-trainer", "device": "cuda"}}
    )
    assert "| Trained | 4 workers, kubeflow-trainer, cuda |" in md


class _RecordingApi:
    """CustomObjectsApi's three calls the step makes; the job fails at once (its body is what is checked)."""

    def __init__(self):
        self.calls = []

    def create_namespaced_custom_object(self, group, version, ns, plural, body, **kw):
        self.calls.append(("create", ns, body))

    def get_namespaced_custom_object(self, group, version, ns, plural, name, **kw):
        self.calls.append(("get", ns, name))
        return {
            "status": {
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "FailedJobs",
                        "message": "jobset failed due to one or more job failures",
                    }
                ]
            }
        }

    def delete_namespaced_custom_object(self, group, version, ns, plural, name, body=None, **kw):
        self.calls.append(("delete", ns, name))


def test_the_gpu_step_asks_trainer_for_gpu_workers_on_the_gpu_image(tmp_path, monkeypatch):
    """--gpu (device cuda): the structure a GPU node pool needs; not run here (no GPU on this machine)."""
    from kfct.components.train_distributed import TrainJobError, train_with_workers
    from kfct.config import load_config
    from kfct.runtime.settings import Settings

    cfg = load_config(overrides={"train": {"workers": 4, "deadline_seconds": 1800}})
    api = _RecordingApi()
    with pytest.raises(TrainJobError, match="FailedJobs"):
        train_with_workers(
            cfg,
            [str(tmp_path / "train")],
            [str(tmp_path / "val")],
            str(tmp_path / "pre"),
            str(tmp_path / "model"),
            str(tmp_path / "model"),
            "cuda",
            "kfct-ct-run",
            "uuid-1",
            engine="kubeflow-trainer",
            api=api,
            namespace="team",
            settings=Settings(),
            poll_seconds=0,
        )
    (_, ns, body), _, (_, _, deleted) = api.calls
    assert ns == "team" and deleted == body["metadata"]["name"]
    t = body["spec"]["trainer"]
    assert t["image"] == Settings().gpu_image and t["numNodes"] == 4
    assert t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "1"
    assert body["spec"]["activeDeadlineSeconds"] == 1800
    assert body["metadata"]["labels"]["kfct/pipeline-run-id"] == "uuid-1"
    pod = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert pod["template"]["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    spec = json.loads((tmp_path / "model.worker-spec.json").read_text())
    assert spec["device"] == "cuda" and t["args"] == ["--spec", str(tmp_path / "model.worker-spec.json")]


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--workers", "2", "--tune-trials", "3"], "--tune-trials needs train.workers: 1"),
        (["--workers", "2", "--model", "random_forest"], "train.workers > 1 needs model xgboost"),
        (["--workers", "0"], "train.workers: Input should be greater than or equal to 1"),
    ],
)
def test_kfct_run_refuses_bad_worker_settings_before_any_stage(argv, msg, kfct_home, capsys):
    from kfct.cli import main

    assert main(["run", "--rows", "500", *argv]) == 2
    assert msg in capsys.readouterr().err
    assert not (kfct_home / "pipeline_root").exists()  # nothing ran


def test_bench_workers_cell_renders_what_it_measured():
    import sys

    sys.path.insert(0, str(ROOT))
    from bench.report import SECTIONS
    from bench.workers import render

    cells = [
        {
            "workers": 1,
            "engine": "in-pod",
            "threads": 2,
            "seconds": 9.5,
            "fit_seconds": 9.0,
            "trees": 80,
            "test_roc_auc": 0.87,
            "auc_gap": 0.0,
        },
        {
            "workers": 2,
            "engine": "local-processes",
            "threads": 1,
            "seconds": 12.0,
            "fit_seconds": 4.0,
            "trees": 77,
            "test_roc_auc": 0.8695,
            "auc_gap": -0.0005,
        },
    ]
    md = "\n".join(render({"status": "ok", "data": {"rows": 1000, "cores": 2, "cells": cells}}, "T"))
    assert "| local-processes | 2 | 1 | 12.0 | 4.0 | 77 | 0.8695 | -0.0005 |" in md and "workers" in SECTIONS
    assert "Skipped: --quick" in "\n".join(render({"status": "skipped", "reason": "--quick"}, "T"))


def test_a_split_in_parts_gives_the_workers_its_parts_in_manifest_order(tmp_path):
    """kfct-parts/1 (the parts branch's docs/data-at-scale.md): <dir>/_manifest.json + <dir>/<sha256>.parquet."""
    from kfct.data.shards import parts_of

    split = tmp_path / "train"
    split.mkdir()
    for i, sha in enumerate(("bb", "aa")):
        pq.write_table(pa.table({"x": [i] * (i + 2)}), split / f"{sha}.parquet")
    (split / "_manifest.json").write_text(
        json.dumps(
            {
                "format": "kfct-parts/1",
                "rows": 5,
                "parts": [{"sha256": "bb", "rows": 2, "bytes": 1}, {"sha256": "aa", "rows": 3, "bytes": 1}],
            }
        )
    )
    assert parts_of(str(split)) == [f"{split}/bb.parquet", f"{split}/aa.parquet"]
    # on a cluster: the manifest read from the downloaded copy, the parts named at the artifact's S3 URI
    assert parts_of("s3://b/root/train", str(split)) == ["s3://b/root/train/bb.parquet", "s3://b/root/train/aa.parquet"]
    assert parts_of(str(tmp_path / "one.parquet")) == [str(tmp_path / "one.parquet")]
    assert [read_shard(parts_of(str(split)), r, 2).column("x").to_pylist() for r in range(2)] == [[0, 0], [1, 1, 1]]


def test_local_workers_name_the_one_that_failed_and_its_error(tmp_path):
    from kfct.components.train_distributed import TrainJobError, run_local_workers

    with pytest.raises(
        TrainJobError,
        match=r"local worker \d of 2 failed \(exit 1\): kfct train worker \d failed: "
        r"DataSourceError: not found: .*no-spec.json",
    ):
        run_local_workers(str(tmp_path / "no-spec.json"), 2, 120, tmp_path / "logs")


@pytest.mark.slow  # starts worker processes and waits out their deadline
def test_local_workers_past_the_deadline_are_stopped(tmp_path, monkeypatch):
    import joblib

    from kfct.components.featurize import featurize_core
    from kfct.components.train_distributed import TrainJobError, config_json, run_local_workers
    from kfct.config import load_config
    from kfct.data.datagen import generate

    cfg = load_config(overrides={"train": {"workers": 2}})
    tr, va, _, enc = featurize_core(generate(400, seed=1), cfg)
    tr.to_parquet(tmp_path / "train.parquet")
    va.to_parquet(tmp_path / "val.parquet")
    joblib.dump(enc, tmp_path / "pre")
    spec = {
        "config_json": config_json(cfg),
        "train": [str(tmp_path / "train.parquet")],
        "val": [str(tmp_path / "val.parquet")],
        "preprocessor": str(tmp_path / "pre"),
        "model": str(tmp_path / "model"),
        "info": str(tmp_path / "info"),
        "device": "cpu",
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    monkeypatch.setenv("KFCT_TEST_PAUSE_AT", "train_worker")  # both workers stop before training
    monkeypatch.setenv("KFCT_TEST_PAUSE_DIR", str(tmp_path / "pause"))
    t0 = time.monotonic()
    with pytest.raises(TrainJobError, match=r"ran past train\.deadline_seconds"):
        run_local_workers(str(tmp_path / "spec.json"), 2, 8, tmp_path / "logs")
    assert time.monotonic() - t0 < 60
    pids = [int(f.read_text()) for f in (tmp_path / "pause").glob("*.reached")]
    for pid in pids:  # killed and reaped, not left waiting
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (tmp_path / "model").exists()


def test_each_attempt_gets_its_own_job_name():
    a, b = trainjob_name("run", "s3://b/m"), trainjob_name("run", "s3://b/m")
    assert a != b and re.fullmatch(r"kfct-train-[0-9a-f]{10}", a)
    assert trainjob_name("run", "s3://b/m", "1") == trainjob_name("run", "s3://b/m", "1")
