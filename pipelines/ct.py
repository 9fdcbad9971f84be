"""The conditional continuous-training pipeline.

ingest -> validate -> [data valid] featurize/split -> train -> evaluate -> [deploy] register -> deploy
                                                                       -> [rollout] rollout (promote / roll back)

The same function is executed by kfp's local SubprocessRunner (`kfct.pipelines.local`)
and compiled for Kubeflow Pipelines (`kfct.pipelines.compile`). Components are built
here, at pipeline-build time, so their images come from settings without any work
at import.
"""

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # kfp ships no types (Any to mypy); the names say what each value is.
    from kfp.dsl import PipelineTask
    from kfp.dsl.graph_component import GraphComponent
    from kfp.dsl.pipeline_channel import PipelineParameterChannel
    from kfp.dsl.python_component import PythonComponent

    from kfct.config import RunConfig
    from kfct.runtime.settings import Settings

PIPELINE_NAME = "kfct-ct"
STAGES = (
    "ingest-data",
    "validate-data",
    "featurize-split",
    "train-model",
    "evaluate-model",
    "register-model",
    "deploy-model",
    "rollout-model",
)
# The same DAG for a dataset in parts (kfct.data.parts): ingest hands on part references, validate and
# featurize run per part (dsl.ParallelFor) and a reduce step merges (see components/parts_stages.py).
PARTS_STAGES = (
    "ingest-parts",
    "validate-part",
    "merge-validation",
    "featurize-part",
    "merge-featurize",
    "train-model",
    "evaluate-model",
    "register-model",
    "deploy-model",
    "rollout-model",
)


def make_components(settings: "Settings | None" = None, gpu: bool = False) -> "dict[str, PythonComponent]":
    """Wrap each stage's component function with `dsl.component` and the image from settings."""
    from kfp import dsl

    from kfct.components import (
        deploy,
        evaluate,
        featurize,
        ingest,
        ingest_parts,
        parts_stages,
        register,
        rollout,
        run_outcome,
        train,
        validate,
    )
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()

    def comp(fn: Callable[..., Any], image: str | None = None) -> "PythonComponent":
        return dsl.component(fn, base_image=image or s.component_image, install_kfp_package=False)

    return {
        "ingest": comp(ingest.ingest_data),
        "validate": comp(validate.validate_data),
        "featurize": comp(featurize.featurize_split),
        "train": comp(train.train_model, s.gpu_image if gpu else None),
        "evaluate": comp(evaluate.evaluate_model),
        "register": comp(register.register_model),
        "deploy": comp(deploy.deploy_model),
        "rollout": comp(rollout.rollout_model),
        "outcome": comp(run_outcome.record_run_outcome),
        "ingest_parts": comp(ingest_parts.ingest_parts),
        "validate_part": comp(parts_stages.validate_part),
        "merge_validation": comp(parts_stages.merge_validation),
        "featurize_part": comp(parts_stages.featurize_part),
        "merge_featurize": comp(parts_stages.merge_featurize),
    }


# Stages whose effect lies outside their outputs: the dataset store and the moving pointer
# (ingest), the audit trail, MLflow runs, the registry and its aliases, serving. KFP's driver
# serves a task with caching on from an earlier execution whose inputs match (backend/src/v2/
# driver/cache.go, kubeflow/pipelines 2.17.0) and then never runs it: the effect would silently
# not happen (a repeated deploy would not re-align serving). Off whatever the config says;
# featurize (outputs a function of its inputs) is the one CT stage the config may cache.
SIDE_EFFECT_STAGES = frozenset(
    {"ingest", "validate_data", "train", "evaluate", "register", "deploy", "rollout", "record_run_outcome"}
)


def _configure(task: "PipelineTask", stage: str, cfg: "RunConfig", settings: "Settings", gpu: bool) -> "PipelineTask":
    """Per-task resources, retries, caching, GPU and secrets (see kfct.pipelines.task_config)."""
    from kfct.pipelines.task_config import apply_task_config

    task = apply_task_config(task, stage, cfg, settings, gpu=gpu)
    if stage in SIDE_EFFECT_STAGES:
        task.set_caching_options(enable_caching=False)
    return task


def build_ct_pipeline(
    settings: "Settings | None" = None, cfg: "RunConfig | dict[str, Any] | None" = None, gpu: bool = False, parts: bool = False
) -> "GraphComponent":
    """Return the CT `@dsl.pipeline` function; `gpu=True` puts training on the CUDA image with a GPU.

    `parts=True` builds the map -> reduce variant for a dataset in parts (any dataset: a single
    file is split into parts of `part_rows` rows by ingest): validate and featurize fan out over
    the parts with `dsl.ParallelFor`, and each pod's memory is bounded by one part.
    """
    from kfp import dsl

    from kfct.config import config_to_json, load_config, validate_config
    from kfct.data.datasource import DEFAULT_URI
    from kfct.data.datatags import LATEST_URI
    from kfct.pipelines.task_config import building_for_local
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    # On a cluster the default is the moving pointer, resolved when each run executes, so
    # a recurring run (whose parameters are frozen at creation) still sees new pushes.
    default_data = DEFAULT_URI if building_for_local() else LATEST_URI
    # A dict arrives from run_pipeline's JSON request (the build_kwargs of a local run).
    cfg = validate_config(cfg) if cfg is not None else load_config()
    ops = make_components(s, gpu=gpu)
    default_config = config_to_json(cfg)
    default_model = cfg.register_.model_name

    @dsl.pipeline(
        name=PIPELINE_NAME + ("-parts" if parts else ""),
        description="kfct continuous training: ingest, validate (GX), featurize, train, evaluate + gate, register (MLflow).",
    )
    def ct_pipeline(
        data_uri: str = default_data,
        config_json: str = default_config,
        model_name: str = default_model,
        device: str = "cuda" if gpu else "cpu",
        tune_trials: int = 0,
        code_version: str = "unknown",
        run_reason: str = "manual",
        rollout: bool = bool(cfg.rollout.enabled),
        serving_url: str = "",
        part_rows: int = 250_000,
    ) -> None:
        # The run's uuid: KFP's driver resolves {{$.pipeline_job_name}} to the run's display name (not unique:
        # every run of a recurring run may share it) and {{$.pipeline_job_uuid}} to the run id
        # (kubeflow/pipelines 2.17.0, backend/src/v2/driver/resolve.go); lineage must name one run.
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        # Runs last whatever happened: a pod killed from outside (OOMKill, eviction, deadline) records nothing
        # itself, so the exit handler puts `run_failed` on the trail (kfct.components.run_outcome).
        outcome = _configure(ops["outcome"](model_name=model_name, pipeline_run=run_id), "record_run_outcome", cfg, s, gpu)
        outcome.set_display_name("record the run's outcome")
        with dsl.ExitHandler(outcome, name="ct-stages"):
            _ct_stages(
                dsl,
                ops,
                cfg,
                s,
                gpu,
                run_id,
                data_uri,
                config_json,
                model_name,
                device,
                tune_trials,
                code_version,
                run_reason,
                rollout,
                serving_url,
                parts,
                part_rows,
            )

    return ct_pipeline


def _ct_stages(
    dsl: ModuleType,
    ops: "dict[str, PythonComponent]",
    cfg: "RunConfig",
    s: "Settings",
    gpu: bool,
    run_name: str,
    data_uri: "PipelineParameterChannel",  # the pipeline's parameters, as channels inside the DAG
    config_json: "PipelineParameterChannel",
    model_name: "PipelineParameterChannel",
    device: "PipelineParameterChannel",
    tune_trials: "PipelineParameterChannel",
    code_version: "PipelineParameterChannel",
    run_reason: "PipelineParameterChannel",
    rollout: "PipelineParameterChannel",
    serving_url: "PipelineParameterChannel",
    parts: bool,
    part_rows: "PipelineParameterChannel",
) -> None:
    """The CT stages inside the pipeline's exit handler (channels in, tasks wired); `parts`: the map -> reduce
    variant (validate and featurize fanned out over the dataset's parts)."""
    if parts:
        ing = _configure(ops["ingest_parts"](data_uri=data_uri, part_rows=part_rows), "ingest", cfg, s, gpu)
        ing.set_display_name("ingest (parts)")
        ing.set_caching_options(enable_caching=False)
        # Only the loop item and pipeline parameters enter an iteration (kfp 2.17's local runner
        # replaces task-output parameters there with the item; see pipelines/batch_scoring.py).
        with dsl.ParallelFor(ing.outputs["Output"], name="validate-parts") as part:
            vp = _configure(ops["validate_part"](part=part, config_json=config_json), "validate_part", cfg, s, gpu)
            vp.set_display_name("validate part")
        val = _configure(
            ops["merge_validation"](
                stats=dsl.Collected(vp.outputs["stats"]),
                config_json=config_json,
                model_name=model_name,
                pipeline_run=run_name,
                dataset=ing.outputs["dataset"],
            ),
            "validate_data",
            cfg,
            s,
            gpu,
        )
        val.set_display_name("validate: merge parts (Great Expectations)")
    else:
        ing = _configure(ops["ingest"](data_uri=data_uri), "ingest", cfg, s, gpu)
        ing.set_display_name("ingest")
        # Never cached: the same parameter (a pointer) names new data after each push.
        ing.set_caching_options(enable_caching=False)
        data_sha = ing.outputs["Output"]
        val = _configure(
            ops["validate"](
                dataset=ing.outputs["dataset"], config_json=config_json, model_name=model_name, pipeline_run=run_name
            ),
            "validate_data",
            cfg,
            s,
            gpu,
        )
        val.set_display_name("validate (Great Expectations)")
    with dsl.If(val.outputs["Output"] == True, name="data-valid"):  # noqa: E712 (kfp condition)
        if parts:
            with dsl.ParallelFor(ing.outputs["Output"], name="featurize-parts") as part:
                fp = _configure(ops["featurize_part"](part=part, config_json=config_json), "featurize_part", cfg, s, gpu)
                fp.set_display_name("featurize part")
            fs = _configure(
                ops["merge_featurize"](
                    train_parts=dsl.Collected(fp.outputs["train"]),
                    val_parts=dsl.Collected(fp.outputs["val"]),
                    test_parts=dsl.Collected(fp.outputs["test"]),
                    config_json=config_json,
                    dataset=ing.outputs["dataset"],
                ),
                "featurize",
                cfg,
                s,
                gpu,
            )
            fs.set_display_name("featurize: merge parts, fit encoder")
            data_sha = fs.outputs["Output"]
        else:
            fs = _configure(ops["featurize"](dataset=ing.outputs["dataset"], config_json=config_json), "featurize", cfg, s, gpu)
            fs.set_display_name("featurize & split")
        tr = _configure(
            ops["train"](
                train=fs.outputs["train"],
                val=fs.outputs["val"],
                preprocessor=fs.outputs["preprocessor"],
                config_json=config_json,
                device=device,
                tune_trials=tune_trials,
                dataset_sha256=data_sha,
                data_uri=data_uri,
                code_version=code_version,
                pipeline_run=run_name,
                run_reason=run_reason,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "train",
            cfg,
            s,
            gpu,
        )
        tr.set_display_name("train")
        ev = _configure(
            ops["evaluate"](
                test=fs.outputs["test"],
                model=tr.outputs["model"],
                config_json=config_json,
                model_name=model_name,
                mlflow_run_id=tr.outputs["Output"],
            ),
            "evaluate",
            cfg,
            s,
            gpu,
        )
        ev.set_display_name("evaluate & gate")
        with dsl.If(ev.outputs["Output"] == True, name="deploy"):  # noqa: E712
            reg = _configure(
                ops["register"](
                    model=tr.outputs["model"],
                    decision=ev.outputs["decision"],
                    evidence=ev.outputs["evidence"],
                    dataset=ing.outputs["dataset"],
                    test=fs.outputs["test"],
                    config_json=config_json,
                    model_name=model_name,
                    data_uri=data_uri,
                    dataset_sha256=data_sha,
                    pipeline_run=run_name,
                    code_version=code_version,
                ),
                "register",
                cfg,
                s,
                gpu,
            )
            reg.set_display_name("register")
            dep = _configure(
                ops["deploy"](config_json=config_json, model_name=model_name, version=reg.outputs["Output"]),
                "deploy",
                cfg,
                s,
                gpu,
            )
            dep.set_display_name("deploy (canary)")
            with dsl.If(rollout == True, name="progressive-rollout"):  # noqa: E712
                ro = _configure(
                    ops["rollout"](
                        config_json=config_json, model_name=model_name, version=reg.outputs["Output"], server_url=serving_url
                    ),
                    "rollout",
                    cfg,
                    s,
                    gpu,
                )
                ro.set_display_name("rollout: promote or roll back")
                ro.after(dep)
