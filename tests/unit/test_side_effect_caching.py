"""No side-effecting task may be a KFP cache hit (issue 20, item 6).

KFP's driver (kubeflow/pipelines 2.17.0, backend/src/v2/driver/container.go + cache.go)
skips the launcher and copies the outputs of an earlier execution when a task has
`cachingOptions.enableCache` and its fingerprint (input parameters + upstream artifact ids
+ output specs + image/command; backend/src/v2/cacheutils/cache.go GenerateCacheKey)
matches one in the same pipeline and namespace. A cached register, deploy or rollout is a
step whose effect on the registry, the aliases, the audit trail or serving never happens:
e.g. the converge-on-aliases deploy after a blocked registration has the inputs of the
last deploy and would not re-align serving.

Every task of every compiled pipeline is named here: side-effecting ones must have caching
off whatever the config says; the few pure ones may cache; an unknown (new) task fails
this test until someone decides which list it belongs to.
"""

from __future__ import annotations

import pytest
import yaml

# task name in the IR -> the effect a cache hit would skip
SIDE_EFFECTS = {
    "kfct-ct": {
        "ingest-data": "resolves the moving pointer, writes the dataset snapshot",
        "validate-data": "audit entry `validation`, data docs",
        "train-model": "an MLflow run (the registry's lineage points at it)",
        "evaluate-model": "MLflow metrics/tags, audit entry `gate_decision`",
        "register-model": "model version, aliases, audit trail",
        "deploy-model": "InferenceService / split file, challenger alias, audit trail",
        "rollout-model": "traffic steps, champion alias, audit trail",
        "record-run-outcome": "audit entry `run_failed` for a pod killed from outside",
    },
    "kfct-monitoring": {
        "prepare-drift-data": "reads the window that is current now",
        "check-drift": "MLflow run of the drift report",
        "trigger-retrain": "starts a CT run, audit trail",
        "report-realized-performance": "may start a CT run, audit trail",
        "decide-ab-test": "ends an A/B test: aliases, audit trail",
    },
    "kfct-batch-scoring": {
        "resolve-champion": "reads the alias that holds now",
        "ingest-data": "resolves the moving pointer",
        "split-shards": "writes shards of the data resolved now",
        "score-shard": "scores with the champion resolved now",
        "gather-scores": "publishes the result to output_uri",
    },
}
# Pure: outputs are a function of the inputs alone (the key covers them all).
CACHEABLE = {"kfct-ct": {"featurize-split"}, "kfct-monitoring": set(), "kfct-batch-scoring": set()}


def container_tasks(spec: dict):
    """(name, task) for every container task, through sub-DAGs (dsl.If, ParallelFor, ExitHandler)."""
    comps = spec["components"]

    def visit(dag: dict):
        for name, task in dag["tasks"].items():
            sub = comps.get(task["componentRef"]["name"], {}).get("dag")
            if sub is not None:
                yield from visit(sub)
            else:
                yield name, task

    yield from visit(spec["root"]["dag"])


def check(spec: dict) -> list[str]:
    pipeline = spec["pipelineInfo"]["name"]
    problems = []
    for name, task in container_tasks(spec):
        cached = bool((task.get("cachingOptions") or {}).get("enableCache"))
        if name in SIDE_EFFECTS[pipeline]:
            if cached:
                problems.append(f"{pipeline}/{name}: caching on, but a cache hit skips: {SIDE_EFFECTS[pipeline][name]}")
        elif name not in CACHEABLE[pipeline]:
            problems.append(f"{pipeline}/{name}: unknown task: add it to SIDE_EFFECTS or CACHEABLE in {__name__}")
    return problems


@pytest.fixture(scope="module")
def irs(tmp_path_factory, cluster_compiled):
    """CT compiled with caching turned on everywhere, then CT, monitoring and batch scoring as
    `kfct compile` writes them for a cluster (`cluster_compiled`, tests/conftest.py)."""
    from kfct.config import config_dict, load_config, validate_config
    from kfct.pipelines.compile import compile_ct
    from kfct.runtime.settings import Settings
    from tests.conftest import CLUSTER_SETTINGS
    from tests.homekit import off_the_stack

    # An operator who turns caching on everywhere must not turn it on for side effects.
    raw = config_dict(load_config())
    raw["resources"] = {
        **raw["resources"],
        "default": {**raw["resources"]["default"], "caching": True},
        **{
            k: {**raw["resources"].get(k, {}), "caching": True}
            for k in ("register", "deploy", "rollout", "evaluate", "validate_data", "train")
        },
    }
    cfg = validate_config(raw)
    cached = off_the_stack(compile_ct, tmp_path_factory.mktemp("ir"), settings=Settings(**CLUSTER_SETTINGS), cfg=cfg)
    shared = ("ct_pipeline.yaml", "monitoring_pipeline.yaml", "batch_scoring_pipeline.yaml")
    return [next(yaml.safe_load_all(cached.read_text()))] + [cluster_compiled[name][0] for name in shared]


def test_every_side_effecting_task_has_caching_off(irs):
    problems = [p for spec in irs for p in check(spec)]
    assert not problems, "\n".join(problems)


def test_every_listed_task_exists(irs):
    """The lists follow the pipelines: a task renamed away would leave a stale entry that guards nothing."""
    seen: dict[str, set] = {}
    for spec in irs:
        seen.setdefault(spec["pipelineInfo"]["name"], set()).update(n for n, _ in container_tasks(spec))
    for pipeline, names in SIDE_EFFECTS.items():
        assert set(names) | CACHEABLE[pipeline] == seen[pipeline], pipeline


def test_featurize_still_caches_by_default(irs):
    """Caching stays on where it is safe: the check above is not met by switching the cache off wholesale."""
    tasks = dict(container_tasks(irs[1]))
    assert tasks["featurize-split"]["cachingOptions"].get("enableCache") is True


def test_an_unknown_task_fails_the_check():
    spec = {
        "pipelineInfo": {"name": "kfct-ct"},
        "components": {"comp-x": {"executorLabel": "exec-x"}},
        "root": {"dag": {"tasks": {"new-stage": {"componentRef": {"name": "comp-x"}, "cachingOptions": {}}}}},
    }
    assert check(spec) == [f"kfct-ct/new-stage: unknown task: add it to SIDE_EFFECTS or CACHEABLE in {__name__}"]
