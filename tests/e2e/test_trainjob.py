"""The train step's TrainJob path against Kubeflow Trainer on loopback (tests/e2e/trainer_fake.py).

The step's own code (`train_with_workers`, engine kubeflow-trainer) creates the TrainJob
through the kubernetes client's CustomObjectsApi, waits on its conditions and deletes it;
the fake plays Trainer's controller as kubeflow/trainer v2.2.0's XGBoost plugin does
(pkg/runtime/framework/plugins/xgboost/xgboost.go: DMLC_* env, completion index as rank,
tracker port on rank 0), each worker a process with its own cwd / HOME / TMPDIR and only the
env the TrainJob gives it (Secret and ConfigMap keys resolved by reference). The workers read
their parquet parts from a real S3-protocol server (moto) through pyarrow's S3 filesystem,
rank 0 writes the model to the step's S3 model URI.
"""

from __future__ import annotations

import io
from pathlib import Path

import joblib
import pytest

from tests.e2e.trainer_fake import FakeTrainer
from tests.faultkit.servers import moto_s3

pytestmark = pytest.mark.slow

BUCKET = "kfct"
KEYS = {
    "KFCT_S3_ACCESS_KEY": "e2e-access",
    "KFCT_S3_SECRET_KEY": "e2e-secret",
    "AWS_ACCESS_KEY_ID": "e2e-access",
    "AWS_SECRET_ACCESS_KEY": "e2e-secret",
}
ROWS = 6_000


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server with the bucket; the split parts and the fitted encoder in it, as featurize leaves them."""
    import boto3

    from kfct.components.featurize import featurize_core
    from kfct.config import load_config
    from kfct.data.datagen import generate

    with moto_s3() as (host, port):
        endpoint = f"{host}:{port}"
        c = boto3.client(
            "s3", endpoint_url=f"http://{endpoint}", aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
        )
        c.create_bucket(Bucket=BUCKET)
        cfg = load_config(overrides={"train": {"workers": 2}})
        tr, va, te, enc = featurize_core(generate(ROWS, seed=3), cfg)

        def put(key: str, data: bytes) -> str:
            c.put_object(Bucket=BUCKET, Key=key, Body=data)
            return f"s3://{BUCKET}/{key}"

        def parquet(df) -> bytes:
            buf = io.BytesIO()
            df.to_parquet(buf, index=False)
            return buf.getvalue()

        thirds = [tr.iloc[i::3] for i in range(3)]
        buf = io.BytesIO()
        joblib.dump(enc, buf)
        from kfct.components.train_distributed import typed_config

        yield {
            "endpoint": endpoint,
            "cfg": cfg,
            "test": te,
            "label": typed_config(cfg).dataset.label,
            "client": c,
            "n_train": len(tr),
            "train": [put(f"root/featurize/train/part-{i}.parquet", parquet(p)) for i, p in enumerate(thirds)],
            "val": [put("root/featurize/val", parquet(va))],
            "preprocessor": put("root/featurize/preprocessor", buf.getvalue()),
            "bad_part": put("root/featurize/train-bad/part-1.parquet", parquet(thirds[1].drop(columns=["tenure_days"]))),
        }


@pytest.fixture
def step_env(s3, monkeypatch):
    """The train step pod's own settings (its env from the same Secret and ConfigMap)."""
    from kfct.runtime.settings import reset_settings

    for k, v in {**KEYS, "KFCT_S3_ENDPOINT": s3["endpoint"], "KFCT_S3_BUCKET": BUCKET}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    reset_settings()
    yield
    reset_settings()


@pytest.fixture
def kube(tmp_path, s3):
    with FakeTrainer(
        tmp_path / "nodes",
        secrets={"kfct-s3-credentials": dict(KEYS)},
        config_maps={"kfct-config": {"KFCT_S3_ENDPOINT": s3["endpoint"], "KFCT_S3_BUCKET": BUCKET, "KFCT_S3_SECURE": "false"}},
    ) as fake:
        yield fake


def _train(s3, kube, tmp_path, cfg=None, train=None, run_id="7d1f0c2e-run-uuid"):
    from kubernetes import client, config

    from kfct.components.train_distributed import train_with_workers

    api = client.CustomObjectsApi(config.new_client_from_config_dict(kube.kubeconfig()))
    return train_with_workers(
        cfg or s3["cfg"],
        train or s3["train"],
        s3["val"],
        s3["preprocessor"],
        f"s3://{BUCKET}/root/{tmp_path.name}/train-model/model",
        str(tmp_path / "model"),
        "cpu",
        "kfct-ct-2026-12-07-03-00-00",
        run_id,
        engine="kubeflow-trainer",
        api=api,
        namespace="kfct-team",
        poll_seconds=0.1,
    )


def test_trainjob_trains_on_two_worker_pods_and_the_step_gets_rank_0s_model(s3, step_env, kube, tmp_path):
    from sklearn.metrics import roc_auc_score

    from kfct.evidence.model import ChurnModel

    out = _train(s3, kube, tmp_path)

    model = joblib.load(tmp_path / "model")  # where the step's launcher uploads from; evaluate reads it
    assert isinstance(model, ChurnModel) and type(model.estimator).__name__ == "Booster"
    label = s3["label"]
    assert roc_auc_score(s3["test"][label], model.predict_positive(s3["test"])) > 0.8
    assert out["info"]["workers"] == 2 and out["info"]["engine"] == "kubeflow-trainer"
    assert out["info"]["n_train"] == s3["n_train"]  # every row of the three parts, once
    s3_model = s3["client"].get_object(Bucket=BUCKET, Key=f"root/{tmp_path.name}/train-model/model")["Body"].read()
    assert s3_model == (tmp_path / "model").read_bytes()  # rank 0 wrote it; the step took the same bytes

    (create,) = [r for r in kube.requests if r["method"] == "POST"]
    assert create["path"] == "/apis/trainer.kubeflow.org/v1alpha1/namespaces/kfct-team/trainjobs"
    job = create["body"]
    assert job["metadata"]["labels"]["kfct/pipeline-run-id"] == "7d1f0c2e-run-uuid"
    assert create["auth"] == "Bearer pipeline-runner-token"
    assert kube.deleted == [job["metadata"]["name"]] and not kube.jobs  # deleted when done

    pods = sorted(kube.pods, key=lambda p: p["name"])
    assert [p["env"]["DMLC_TASK_ID"] for p in pods] == ["0", "1"]
    assert {p["env"]["DMLC_NUM_WORKER"] for p in pods} == {"2"}
    assert len({p["cwd"] for p in pods}) == 2 and len({p["env"]["HOME"] for p in pods}) == 2
    # only what the TrainJob and the runtime give a pod: no test-process env leaks in
    allowed = {e["name"] for e in job["spec"]["trainer"]["env"]} | {
        "DMLC_TRACKER_URI",
        "DMLC_TRACKER_PORT",
        "DMLC_TASK_ID",
        "DMLC_NUM_WORKER",
        "HOME",
        "TMPDIR",
        "PATH",
    }
    assert all(set(p["env"]) <= allowed for p in pods)
    assert "worker 0/2:" in Path(pods[0]["log"]).read_text() and "worker 1/2:" in Path(pods[1]["log"]).read_text()


def test_a_failing_worker_fails_the_job_and_the_step_with_its_reason(s3, step_env, kube, tmp_path):
    from kfct.components.train_distributed import TrainJobError

    parts = [s3["train"][0], s3["bad_part"], s3["train"][2]]  # rank 1 owns part 1 (round robin)
    with pytest.raises(TrainJobError, match=r"failed: FailedJobs: jobset failed due to one or more job failures"):
        _train(s3, kube, tmp_path, train=parts)
    assert len(kube.deleted) == 1 and not kube.jobs
    pods = {p["env"]["DMLC_TASK_ID"]: p for p in kube.pods}
    assert pods["1"]["proc"].returncode == 1
    assert "kfct train worker 1 failed: FeatureError" in Path(pods["1"]["log"]).read_text()
    assert "tenure_days" in Path(pods["1"]["log"]).read_text()
    assert pods["0"]["proc"].returncode not in (None, 0)  # rank 0 waited for rank 1: terminated with the job
    assert not (tmp_path / "model").exists()


def test_a_job_past_its_deadline_fails_the_step_and_is_deleted(s3, step_env, kube, tmp_path):
    from kfct.components.train_distributed import TrainJobError
    from kfct.config import load_config

    cfg = load_config(overrides={"train": {"workers": 2, "deadline_seconds": 1}})  # workers need longer to start
    with pytest.raises(TrainJobError, match="DeadlineExceeded: TrainJob exceeded its active deadline"):
        _train(s3, kube, tmp_path, cfg=cfg)
    (create,) = [r for r in kube.requests if r["method"] == "POST"]
    assert create["body"]["spec"]["activeDeadlineSeconds"] == 1
    assert len(kube.deleted) == 1 and not kube.jobs
    assert all(p["proc"].poll() is not None for p in kube.pods)  # no worker left running


def test_the_runtime_must_exist_and_owns_the_dmlc_variables(s3, step_env, kube, tmp_path):
    from kubernetes import client, config

    from kfct.components.train_distributed import TrainJobError, build_trainjob, run_trainjob

    api = client.CustomObjectsApi(config.new_client_from_config_dict(kube.kubeconfig()))
    body = build_trainjob("kfct-train-0123456789", "img", "s3://b/spec", 2, {}, False, 60, {}, [])
    body["spec"]["runtimeRef"]["name"] = "torch-distributed"
    with pytest.raises(TrainJobError, match=r"Trainer >= 2\.2 installed with its xgboost-distributed runtime"):
        run_trainjob(api, "kfct-team", body, poll_seconds=0.1)
    body = build_trainjob("kfct-train-0123456789", "img", "s3://b/spec", 2, {}, False, 60, {}, [])
    body["spec"]["trainer"]["env"] = [{"name": "DMLC_TASK_ID", "value": "0"}]
    with pytest.raises(TrainJobError, match="DMLC_TASK_ID is reserved for the XGBoost runtime"):
        run_trainjob(api, "kfct-team", body, poll_seconds=0.1)
    assert not kube.pods
