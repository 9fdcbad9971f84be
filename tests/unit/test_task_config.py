"""`kfct.pipelines.task_config`: per-task resources, retries, caching, GPU, secrets — and its local no-op."""

# no `from __future__ import annotations`: kfp reads component annotations as types.
import pytest
import yaml

from kfct.config import load_config

CFG = load_config(
    overrides={
        "resources": {
            "default": {"cpu": "1", "memory": "2Gi", "retries": 1, "caching": True},
            "train": {"cpu": "4", "memory": "8Gi", "gpu": 1, "retries": 0, "caching": False},
            "validate_data": {"caching": False},
        }
    }
)


def _compile(tmp_path, stage, gpu, kind="cluster", cfg=CFG):
    from kfp import compiler, dsl

    from kfct.pipelines.task_config import apply_task_config, target
    from kfct.runtime.settings import Settings

    s = Settings(image_registry="reg.test/kfct", image_tag="7.7.7")

    @dsl.component(base_image=s.component_image, install_kfp_package=False)
    def step(x: int) -> int:
        return x

    with target(kind):

        @dsl.pipeline(name="t")
        def pipe(x: int = 1):
            apply_task_config(step(x=x), stage, cfg, s, gpu=gpu)

    path = tmp_path / f"{stage}-{gpu}-{kind}.yaml"
    compiler.Compiler().compile(pipe, str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    spec = docs[0]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    (executor,) = spec["deploymentSpec"]["executors"].values()
    (task,) = spec["root"]["dag"]["tasks"].values()
    return s, executor["container"], task, next(iter(platform.values()), {})


def test_stage_resources_merges_default_and_stage():
    from kfct.pipelines.task_config import stage_resources

    assert stage_resources(CFG, "train") == {"cpu": "4", "memory": "8Gi", "retries": 0, "caching": False, "gpu": 1}
    assert stage_resources(CFG, "validate_data") == {"cpu": "1", "memory": "2Gi", "retries": 1, "caching": False}
    assert stage_resources(CFG, "ingest") == CFG.resources["default"]
    assert stage_resources(None, "ingest") == {}


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"resources": {"train": {"gpus": 1}}}, "unknown keys"),
        ({"resources": {"train": {"retries": -1}}}, "non-negative integer"),
        ({"resources": {"train": {"gpu": "one"}}}, "non-negative integer"),
        ({"resources": {"train": {"retry_backoff": "30 seconds"}}}, "retry_backoff"),
        ({"resources": {"train": [1, 2]}}, "must be a mapping"),
    ],
)
def test_stage_resources_rejects_bad_config(bad, match):
    from kfct.pipelines.task_config import stage_resources

    unchecked = CFG.model_copy(update=bad)  # as a model built without validation would hold it
    with pytest.raises(ValueError, match=match):
        stage_resources(unchecked, "train")


def test_cluster_train_with_gpu(tmp_path):
    from kfct.pipelines.task_config import CONFIG_KEYS, SECRET_KEYS

    s, container, task, platform = _compile(tmp_path, "train", gpu=True)
    res = container["resources"]
    assert res["accelerator"]["resourceType"] == "nvidia.com/gpu" and res["accelerator"]["resourceCount"] == "1"
    assert res["resourceCpuRequest"] == res["resourceCpuLimit"] == "4"
    assert res["resourceMemoryRequest"] == res["resourceMemoryLimit"] == "8Gi"
    assert container["image"] == s.gpu_image == "reg.test/kfct/kfct-train-gpu:7.7.7"
    assert "retryPolicy" not in task and not task["cachingOptions"].get("enableCache")
    assert platform["tolerations"][0]["key"] == "nvidia.com/gpu"
    (secret,) = platform["secretAsEnv"]
    assert secret["secretNameParameter"]["runtimeValue"]["constant"] == s.k8s_secret_name
    assert {m["secretKey"] for m in secret["keyToEnv"]} == set(SECRET_KEYS)
    (cm,) = platform["configMapAsEnv"]
    assert {m["configMapKey"] for m in cm["keyToEnv"]} == set(CONFIG_KEYS)


def test_cluster_train_without_gpu_and_default_stage(tmp_path):
    s, container, task, platform = _compile(tmp_path, "train", gpu=False)
    assert "accelerator" not in container["resources"]
    assert container["image"] == s.component_image
    assert "tolerations" not in platform and platform["secretAsEnv"]

    _, container, task, platform = _compile(tmp_path, "ingest", gpu=True)  # GPU never leaks to other stages
    assert "accelerator" not in container["resources"] and container["image"] == s.component_image
    assert container["resources"]["resourceCpuRequest"] == "1"
    assert task["retryPolicy"] == {
        "backoffDuration": "30s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "3600s",
        "maxRetryCount": 1,
    }
    assert task["cachingOptions"]["enableCache"] is True


def test_local_build_gets_only_caching(tmp_path):
    _, container, task, platform = _compile(tmp_path, "train", gpu=True, kind="local")
    assert "resources" not in container and "retryPolicy" not in task and platform == {}
    assert not task["cachingOptions"].get("enableCache")
    _, _, task, _ = _compile(tmp_path, "ingest", gpu=False, kind="local")
    assert task["cachingOptions"]["enableCache"] is True


def test_local_detection_follows_kfp_local_init(tmp_path):
    from kfp import local
    from kfp.local import config as local_config

    from kfct.pipelines.task_config import building_for_local, target

    saved = local_config.LocalExecutionConfig.instance
    try:
        local_config.LocalExecutionConfig.instance = None
        assert building_for_local() is False
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
        assert building_for_local() is True
        with target("cluster"):
            assert building_for_local() is False
    finally:
        local_config.LocalExecutionConfig.instance = saved
    with pytest.raises(ValueError), target("laptop"):
        pass


def test_task_already_executed_is_returned_untouched():
    from kfp.dsl import pipeline_task

    from kfct.pipelines.task_config import apply_task_config

    class Done:
        state = pipeline_task.TaskState.FINAL

    t = Done()
    assert apply_task_config(t, "train", CFG, None, gpu=True) is t
