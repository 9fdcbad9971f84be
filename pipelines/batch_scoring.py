"""The batch-scoring pipeline: the champion scores a whole dataset, fanned out over shards.

    resolve champion (alias -> version, once) ─┐
    ingest (any data URI ingest accepts) -> split into N shards
        -> dsl.ParallelFor(shard): score shard with that version   (one pod per shard)
        -> gather (dsl.Collected): shard=NNNNN/part-0.parquet + _summary.json

Compiled to `build/batch_scoring_pipeline.yaml` beside the CT and monitoring pipelines
and scheduled like them (`kfct schedule --pipeline batch`, monthly by default). Nothing
is cached: the same URI may point at new data and the champion may have moved. kfp
2.17's local runner executes `ParallelFor` and `dsl.Collected`, so `run_batch_local`
runs this same pipeline on this machine (shards in parallel subprocesses).
"""

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # kfp ships no types (Any to mypy); the names say what each value is.
    from kfp.dsl import PipelineTask
    from kfp.dsl.graph_component import GraphComponent
    from kfp.dsl.python_component import PythonComponent

    from kfct.config import RunConfig
    from kfct.runtime.settings import Settings

PIPELINE_NAME = "kfct-batch-scoring"
STAGES = ("resolve-champion", "ingest-data", "split-shards", "score-shard", "gather-scores")
DEFAULT_CRON = "0 0 6 1 * *"  # 06:00 on the 1st of each month (after the monthly CT run at 03:00)
DEFAULT_SHARDS = 8


def make_components(settings: "Settings | None" = None) -> "dict[str, PythonComponent]":
    from kfp import dsl

    from kfct.components import batch_score, ingest
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()

    def comp(fn: Callable[..., Any]) -> "PythonComponent":
        return dsl.component(fn, base_image=s.component_image, install_kfp_package=False)

    return {
        "resolve": comp(batch_score.resolve_champion),
        "ingest": comp(ingest.ingest_data),
        "split": comp(batch_score.split_shards),
        "score": comp(batch_score.score_shard),
        "gather": comp(batch_score.gather_scores),
    }


def _configure(task: "PipelineTask", stage: str, cfg: "RunConfig", settings: "Settings") -> "PipelineTask":
    from kfct.pipelines.task_config import apply_task_config

    task = apply_task_config(task, stage, cfg, settings, gpu=False)
    task.set_caching_options(enable_caching=False)
    return task


def build_batch_pipeline(
    settings: "Settings | None" = None, cfg: "RunConfig | dict[str, Any] | None" = None, n_shards: int = DEFAULT_SHARDS
) -> "GraphComponent":
    """Return the batch-scoring `@dsl.pipeline` function."""
    from kfp import dsl

    from kfct.config import load_config, validate_config
    from kfct.data.datasource import DEFAULT_URI
    from kfct.data.datatags import LATEST_URI
    from kfct.pipelines.task_config import building_for_local
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    # On a cluster the default is the moving pointer (as the CT pipeline's), resolved when the
    # run executes: a monthly recurring run's frozen parameters still score the newest push.
    default_data = DEFAULT_URI if building_for_local() else LATEST_URI
    # A dict arrives from run_pipeline's JSON request (the build_kwargs of a local run).
    cfg = validate_config(cfg) if cfg is not None else load_config()
    ops = make_components(s)
    default_model = cfg.register_.model_name

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="kfct batch scoring: the champion (resolved once) scores every row of a dataset, "
        "sharded with ParallelFor; one partitioned parquet result + summary.",
    )
    def batch_scoring_pipeline(
        data_uri: str = default_data,
        model_name: str = default_model,
        alias: str = "champion",
        n_shards: int = n_shards,
        output_uri: str = "",
    ) -> None:
        champ = _configure(ops["resolve"](model_name=model_name, alias=alias), "resolve_champion", cfg, s)
        champ.set_display_name("resolve champion (once)")
        ing = _configure(ops["ingest"](data_uri=data_uri), "ingest", cfg, s)
        ing.set_display_name("ingest")
        split = _configure(ops["split"](dataset=ing.outputs["dataset"], n_shards=n_shards), "split_shards", cfg, s)
        split.set_display_name("split into shards")
        # The resolved version enters the fan-out as the `champion` artifact, not as a parameter:
        # kfp 2.17's local runner replaces every task-output parameter passed into a ParallelFor
        # iteration with the loop item (kfp/local/orchestrator/task_spec_utils.py); on a cluster
        # both ways are equivalent: one resolution, read by every shard.
        with dsl.ParallelFor(split.outputs["Output"], name="shards") as shard:
            sc = _configure(
                ops["score"](shards=split.outputs["shards"], shard=shard, champion=champ.outputs["champion"]),
                "batch_score",
                cfg,
                s,
            )
            sc.set_display_name("score shard")
        gather = _configure(
            ops["gather"](
                scores=dsl.Collected(sc.outputs["scores"]),
                version=champ.outputs["Output"],
                model_name=model_name,
                dataset_sha256=ing.outputs["Output"],
                output_uri=output_uri,
            ),
            "gather_scores",
            cfg,
            s,
        )
        gather.set_display_name("gather: partitioned parquet + summary")

    return batch_scoring_pipeline


def run_batch_local(
    data_uri: str,
    n_shards: int = 2,
    model_name: str | None = None,
    alias: str = "champion",
    output_uri: str = "",
    settings: "Settings | None" = None,
    cfg: "RunConfig | None" = None,
) -> dict[str, Any]:
    """Run the pipeline under kfp.local (the one local-run helper); returns this run's summary and result."""
    from kfct.config import config_dict, load_config
    from kfct.errors import StageError
    from kfct.pipelines.runner import run_pipeline
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    cfg = cfg or load_config()
    args = dict(
        data_uri=data_uri,
        model_name=model_name or cfg.register_.model_name,
        alias=alias,
        n_shards=n_shards,
        output_uri=output_uri,
    )
    run = run_pipeline(
        "kfct.pipelines.batch_scoring:build_batch_pipeline",
        {"cfg": config_dict(cfg), "n_shards": n_shards},
        args,
        s.home,
        prefix="batch",
    )
    if run.error is not None:
        raise StageError(f"batch-scoring pipeline failed in {run.failed_task or '?'}: {run.error} (log: {run.log_path})")
    summary = json.loads(run.param("gather-scores"))
    return {
        **summary,
        "result": run.artifact("gather-scores", "result").get("uri"),
        "run_id": run.run_id,
        "run_dir": str(run.run_dir),
        "log": str(run.log_path),
    }
