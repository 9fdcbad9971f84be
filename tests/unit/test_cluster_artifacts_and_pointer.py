"""Issue 14, findings 1 and 4, checked without a cluster.

1. A pipeline pod with only the kfct-config ConfigMap's environment must log models to
   MinIO (an s3:// root KServe's storage initializer can read), never to its own disk;
   deploy refuses to hand KServe a URI it cannot read.
4. The cluster's default data is the moving pointer `dataset://latest`, resolved at run
   time by ingest, which is never cached; the monitoring pipeline's retrain uses it too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _configmap_env() -> dict:
    doc = yaml.safe_load((ROOT / "manifests/base/config.yaml").read_text())
    assert doc["kind"] == "ConfigMap"
    return {k: str(v) for k, v in doc["data"].items()}


def _settings_from(env: dict, monkeypatch, tmp_path):
    from kfct.runtime.settings import Settings

    for k in [k for k in os.environ if k.startswith(("KFCT_", "MLFLOW_"))]:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("KFCT_HOME", str(tmp_path / "pod-home"))
    return Settings(_env_file=None)


def test_configmap_env_sends_model_artifacts_to_minio(monkeypatch, tmp_path):
    s = _settings_from(_configmap_env(), monkeypatch, tmp_path)
    root = s.artifact_root
    assert root and root.startswith(f"s3://{s.s3_bucket}/"), root
    assert str(tmp_path) not in root


def test_tracking_server_without_root_never_uses_the_pods_disk(monkeypatch, tmp_path):
    s = _settings_from({"KFCT_MLFLOW_TRACKING_URI": "http://kfct-mlflow:5000"}, monkeypatch, tmp_path)
    assert s.artifact_root is None  # the server decides; never file://<pod>/mlartifacts
    local = _settings_from({}, monkeypatch, tmp_path)
    assert local.artifact_root.startswith("file://")  # the local SQLite store keeps its folder


def test_every_configmap_key_reaches_the_pods():
    from kfct.pipelines.task_config import CONFIG_KEYS

    assert set(_configmap_env()) == set(CONFIG_KEYS)


def test_inferenceservice_comment_names_what_is_written():
    env = _configmap_env()
    text = (ROOT / "manifests/base/serving/inferenceservice.yaml").read_text()
    comment = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "KFCT_MLFLOW_ARTIFACT_ROOT" in comment and env["KFCT_MLFLOW_ARTIFACT_ROOT"] in comment
    assert "mlartifacts" not in comment


@pytest.mark.parametrize(
    "uri", ["file:///home/pod/.kfct/mlartifacts/1/models/m-1/artifacts", "mlflow-artifacts:/1/models/m-1/artifacts", "/tmp/x"]
)
def test_deploy_refuses_storage_uri_kserve_cannot_read(uri):
    from kfct.components.deploy import DeployError, build_inference_service
    from kfct.runtime.settings import Settings

    with pytest.raises(DeployError, match="storage initializer"):
        build_inference_service("churn-classifier", "3", storage_uri=uri, sha256="ab" * 32, settings=Settings())


@pytest.fixture(scope="module")
def compiled(cluster_compiled):
    """CT and monitoring as `kfct compile` writes them for a cluster (tests/conftest.py)."""
    return cluster_compiled["ct_pipeline.yaml"], cluster_compiled["monitoring_pipeline.yaml"]


def test_ct_default_data_is_the_moving_pointer_and_ingest_never_caches(compiled):
    ct, _ = compiled
    params = ct[0]["root"]["inputDefinitions"]["parameters"]
    assert params["data_uri"]["defaultValue"] == "dataset://latest"
    body = ct[0]["components"][ct[0]["root"]["dag"]["tasks"]["exit-handler-1"]["componentRef"]["name"]]
    ingest = body["dag"]["tasks"]["ingest-data"]  # the stages sit inside the run's exit handler
    assert not ingest.get("cachingOptions", {}).get("enableCache", False)
    env = ct[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model"]["configMapAsEnv"][0]
    assert "KFCT_MLFLOW_ARTIFACT_ROOT" in {e["envVar"] for e in env["keyToEnv"]}


def test_monitoring_retrain_uses_the_pointer(compiled):
    _, mon = compiled
    params = mon[0]["root"]["inputDefinitions"]["parameters"]
    assert params["ct_data_uri"]["defaultValue"] == "dataset://latest"


def test_batch_scoring_default_data_is_the_moving_pointer_and_nothing_caches(compiled_pipelines):
    (batch,) = [p for p in compiled_pipelines if p.name == "batch_scoring_pipeline.yaml"]
    ir = list(yaml.safe_load_all(batch.read_text()))
    assert ir[0]["root"]["inputDefinitions"]["parameters"]["data_uri"]["defaultValue"] == "dataset://latest"
    for name, task in ir[0]["root"]["dag"]["tasks"].items():
        assert not task.get("cachingOptions", {}).get("enableCache", False), name


def test_local_runs_keep_the_generator_default():
    from kfp import local

    from kfct.pipelines.batch_scoring import build_batch_pipeline
    from kfct.pipelines.ct import build_ct_pipeline
    from kfct.pipelines.task_config import target

    with target("local"):
        p = build_ct_pipeline()
        b = build_batch_pipeline()
    assert p.component_spec.inputs["data_uri"].default.startswith("generate://")
    assert b.component_spec.inputs["data_uri"].default.startswith("generate://")
    del local


@pytest.mark.parametrize(
    "uri,expected",
    [
        ("dataset://latest", "s3://kfct/datasets/tags/latest.json"),
        ("s3://other/datasets/tags/nightly", "s3://other/datasets/tags/nightly.json"),
        ("s3://other/datasets/tags/nightly.json", "s3://other/datasets/tags/nightly.json"),
        ("s3://kfct/datasets/" + "a" * 64 + ".parquet", None),
        ("generate://100", None),
    ],
)
def test_pointer_uris(uri, expected, monkeypatch):
    from kfct.data.datatags import pointer_manifest_uri
    from kfct.runtime.settings import Settings

    monkeypatch.delenv("KFCT_S3_BUCKET", raising=False)
    assert pointer_manifest_uri(uri, Settings()) == expected


@pytest.mark.parametrize(
    "bad,field",
    [
        ('{"sha256": "xyz", "uri": "s3://kfct/datasets/xyz.parquet"}', "sha256"),
        ('{"sha256": "' + "b" * 64 + '", "uri": "s3://kfct/datasets/' + "c" * 64 + '.parquet"}', "uri"),
        ("[1]", "JSON object"),
        ("{", "not JSON"),
    ],
)
def test_bad_tag_manifest_is_one_clear_line(bad, field):
    from kfct.data.datatags import parse_manifest
    from kfct.errors import DataSourceError

    with pytest.raises(DataSourceError, match=field):
        parse_manifest(bad, "s3://kfct/datasets/tags/latest.json")


@pytest.mark.parametrize("tag", ["", "a/b", "../x", "x.json", "-x", "a" * 65])
def test_bad_tag_names(tag):
    from kfct.data.datatags import check_tag
    from kfct.errors import DataSourceError

    with pytest.raises(DataSourceError, match="bad dataset tag"):
        check_tag(tag)


def test_kfp_client_imports_inside_a_pipeline_pod():
    """KFP's launcher runs components with _KFP_RUNTIME=true; the retrain trigger must still reach kfp.Client."""
    import subprocess
    import sys

    code = (
        "import kfp.dsl\n"  # what the ephemeral component module does first
        "from kfct.pipelines.kfp_client import _client_class\n"
        "assert _client_class({}).__mro__[1].__name__ == 'Client'\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, _KFP_RUNTIME="true"), capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr[-1500:]
