"""The compiled KFP IR of the CT pipeline: what the cluster will run, inspected here.

Compiled through `kfct.pipelines.compile` (the same code as `make compile`), CPU and GPU
variants, with settings that carry sentinel credentials, so a leak would be visible.
Checks: every stage present; training/evaluation/registration sit under the validation
condition and registration under the gate condition; GPU request, toleration and GPU
image on training only, only when enabled; every image from settings (no pip installs
at run time); Secret and ConfigMap mounted by name on every step and no credential
value anywhere; typed pipeline parameters; per-task resources, retries and caching
from config.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.homekit import off_the_stack

# Compiles the CT pipeline (CPU and GPU) with settings of its own: seconds of CPU, so make test, not make test-fast.
pytestmark = pytest.mark.slow

SENTINELS = {
    "KFCT_S3_ACCESS_KEY": "AKIASENTINEL0ACCESS1",
    "KFCT_S3_SECRET_KEY": "sentinel/secret+key/value-xyz",
    "KFCT_KFP_TOKEN": "sentinel-kfp-token-abc",
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """{False: cpu IR, True: gpu IR} plus the settings used."""
    import os

    from kfct.pipelines.compile import compile_ct
    from kfct.runtime.settings import Settings, reset_settings

    saved = {k: os.environ.get(k) for k in SENTINELS}
    os.environ.update(SENTINELS)
    reset_settings()
    try:
        settings = Settings(
            image_registry="registry.test/team",
            image_tag="9.8.7",
            s3_endpoint="minio.test:9000",
            mlflow_tracking_uri="http://mlflow.test:5000",
        )
        out = {}
        for gpu in (False, True):
            d = tmp_path_factory.mktemp("gpu" if gpu else "cpu")
            path = off_the_stack(compile_ct, d, gpu=gpu, settings=settings)
            assert path == d / "ct_pipeline.yaml"
            text = path.read_text()
            docs = list(yaml.safe_load_all(text))
            out[gpu] = {"text": text, "spec": docs[0], "platform": docs[1] if len(docs) > 1 else {}, "path": path}
        out["settings"] = settings
        return out
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_settings()


def walk_tasks(spec: dict):
    """(task name, task spec, enclosing conditions) for every task in the DAG, through sub-DAGs."""
    comps = spec["components"]

    def visit(dag: dict, conditions: tuple):
        for name, task in dag["tasks"].items():
            cond = (task.get("triggerPolicy") or {}).get("condition")
            ref = task["componentRef"]["name"]
            sub = comps.get(ref, {}).get("dag")
            if sub is not None:
                yield from visit(sub, conditions + ((cond,) if cond else ()))
            else:
                yield name, task, conditions

    yield from visit(spec["root"]["dag"], ())


def executor_of(spec: dict, task: dict) -> dict:
    comp = spec["components"][task["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][comp["executorLabel"]]["container"]


def platform_of(ir: dict, spec: dict, task: dict) -> dict:
    label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
    return ir["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][label]


@pytest.mark.parametrize("gpu", [False, True])
def test_every_stage_present_under_its_conditions(compiled, gpu):
    from kfct.pipelines.ct import STAGES

    tasks = {name: (task, conds) for name, task, conds in walk_tasks(compiled[gpu]["spec"])}
    assert set(STAGES) <= set(tasks), f"missing stages {set(STAGES) - set(tasks)}"

    def gated_by(stage, upstream):
        return any(re.search(rf"{upstream}-Output'\]\s*==\s*true", c) for c in tasks[stage][1])

    assert tasks["ingest-data"][1] == () and tasks["validate-data"][1] == ()
    for stage in ("featurize-split", "train-model", "evaluate-model", "register-model"):
        assert gated_by(stage, "validate-data"), f"{stage} must run only when validation passed"
    assert gated_by("register-model", "evaluate-model"), "register only when the gate says deploy"
    for stage in ("featurize-split", "train-model", "evaluate-model"):
        assert not gated_by(stage, "evaluate-model")


def test_gpu_only_on_training_and_only_when_enabled(compiled):
    s = compiled["settings"]
    for gpu in (False, True):
        ir = compiled[gpu]
        spec = ir["spec"]
        for name, task, _ in walk_tasks(spec):
            container = executor_of(spec, task)
            accel = (container.get("resources") or {}).get("accelerator")
            tolerations = platform_of(ir, spec, task).get("tolerations")
            if gpu and name == "train-model":
                assert accel["resourceType"] == "nvidia.com/gpu" and int(accel["resourceCount"]) >= 1
                assert container["image"] == s.gpu_image
                assert tolerations and tolerations[0]["key"] == "nvidia.com/gpu"
            else:
                assert accel is None, f"{name} requests a GPU (gpu={gpu})"
                assert container["image"] == s.component_image, f"{name}: {container['image']}"
                assert not tolerations
        device = spec["root"]["inputDefinitions"]["parameters"]["device"]["defaultValue"]
        assert device == ("cuda" if gpu else "cpu")


@pytest.mark.parametrize("gpu", [False, True])
def test_images_from_settings_and_nothing_installed_at_run_time(compiled, gpu):
    s = compiled["settings"]
    spec = compiled[gpu]["spec"]
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images and all(i.startswith(f"{s.image_registry}/") and i.endswith(f":{s.image_tag}") for i in images)
    for e in spec["deploymentSpec"]["executors"].values():
        assert "pip install" not in " ".join(e["container"].get("command", [])), "components must be baked into the image"


@pytest.mark.parametrize("gpu", [False, True])
def test_credentials_only_by_reference(compiled, gpu):
    from kfct.pipelines.task_config import CONFIG_KEYS, SECRET_KEYS

    s = compiled["settings"]
    ir = compiled[gpu]
    for value in [*SENTINELS.values(), "minio.test:9000", "http://mlflow.test:5000"]:
        assert value not in ir["text"], f"a settings value leaked into the compiled YAML: {value}"
    spec = ir["spec"]
    for name, task, _ in walk_tasks(spec):
        plat = platform_of(ir, spec, task)
        (secret,) = plat["secretAsEnv"]
        assert secret["secretNameParameter"]["runtimeValue"]["constant"] == s.k8s_secret_name
        assert {m["secretKey"] for m in secret["keyToEnv"]} == set(SECRET_KEYS), name
        (cm,) = plat["configMapAsEnv"]
        assert cm["configMapNameParameter"]["runtimeValue"]["constant"] == s.k8s_config_map
        assert {m["configMapKey"] for m in cm["keyToEnv"]} == set(CONFIG_KEYS), name
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert not [p for p in params if re.search(r"key|secret|password|token", p, re.I)], "no credential parameters"


def test_typed_parameters(compiled):
    params = compiled[False]["spec"]["root"]["inputDefinitions"]["parameters"]
    assert params["data_uri"]["parameterType"] == "STRING"
    assert params["tune_trials"]["parameterType"] == "NUMBER_INTEGER"
    assert params["device"]["parameterType"] == "STRING"
    for name, p in params.items():
        assert p.get("parameterType") in ("STRING", "NUMBER_INTEGER", "NUMBER_DOUBLE", "BOOLEAN", "STRUCT", "LIST"), name
        assert "defaultValue" in p, f"{name} has no default: a UI run would need it typed in"


def test_resources_retries_and_caching_from_config(compiled):
    from kfct.config import load_config
    from kfct.pipelines.ct import SIDE_EFFECT_STAGES
    from kfct.pipelines.task_config import stage_resources

    cfg = load_config()
    spec = compiled[True]["spec"]
    tasks = {name: task for name, task, _ in walk_tasks(spec)}
    stage_keys = {
        "ingest-data": "ingest",
        "validate-data": "validate_data",
        "featurize-split": "featurize",
        "train-model": "train",
        "evaluate-model": "evaluate",
        "register-model": "register",
    }
    for name, key in stage_keys.items():
        want = stage_resources(cfg, key)
        task = tasks[name]
        res = executor_of(spec, task)["resources"]
        assert res["resourceCpuRequest"] == str(want["cpu"]) and res["resourceMemoryRequest"] == str(want["memory"])
        assert res["resourceMemoryLimit"] == str(want.get("memory_limit", want["memory"]))
        retries = (task.get("retryPolicy") or {}).get("maxRetryCount", 0)
        assert retries == want.get("retries", 0), name
        # side effects (and ingest's moving pointer) are never cached, whatever the config says
        want_cache = False if key in SIDE_EFFECT_STAGES else bool(want.get("caching", True))
        assert bool(task["cachingOptions"].get("enableCache")) == want_cache, name


def test_compiled_package_is_accepted_by_kfp_client_loader(compiled):
    """The exact loader `kfp.Client` uses on upload/run reads our package (pipeline + platform spec)."""
    from kfp.client.client import _extract_pipeline_yaml

    doc = _extract_pipeline_yaml(str(compiled[True]["path"]))
    assert doc.pipeline_spec.pipeline_info.name == "kfct-ct"
    assert "kubernetes" in doc.platform_spec.platforms


def test_compile_all_writes_every_pipeline(compiled_pipelines):
    """`make compile`: the CT pipeline, and the monitoring pipeline once it exists."""
    from kfct.pipelines.compile import monitoring_available

    paths = compiled_pipelines  # compile_all's paths (tests/conftest.py)
    names = [p.name for p in paths]
    assert names[0] == "ct_pipeline.yaml"
    assert ("monitoring_pipeline.yaml" in names) == monitoring_available()
    for p in paths:
        doc = yaml.safe_load_all(p.read_text())
        assert next(doc)["pipelineInfo"]["name"]


def test_bad_resources_config_is_one_compile_error(tmp_path):
    from kfct.config import load_config
    from kfct.pipelines.compile import CompileError, compile_ct

    cfg = load_config()
    cfg.resources["train"]["gpus"] = 1  # typo for `gpu`
    with pytest.raises(CompileError, match=r"cannot compile the CT pipeline: ValueError: .*'train'.*unknown keys \['gpus'\]"):
        off_the_stack(compile_ct, tmp_path, gpu=True, cfg=cfg)
    assert not (tmp_path / "ct_pipeline.yaml").exists()
