"""One stage prologue (`kfct.runtime.stage.stage`): audit on failure, clock, typed config, logger, stamp on exit."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What only the prologue may do; a stage wrapper that does it itself has grown its own prologue again.
PROLOGUE_NAMES = {"audit_failure", "StageClock", "stage_logger", "config_from_json"}


def _component_functions():
    from kfct.pipelines.batch_scoring import make_components as batch
    from kfct.pipelines.ct import make_components as ct
    from kfct.pipelines.monitoring import make_components as monitoring

    comps = {**ct(), **monitoring(), **batch()}
    return {name: c.python_func for name, c in comps.items()}


def test_every_stage_wrapper_enters_the_one_prologue():
    import inspect
    import textwrap

    funcs = _component_functions()
    assert len({f.__qualname__ for f in funcs.values()}) >= 17
    own, without = {}, []
    for name, fn in funcs.items():
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
        }
        if names & PROLOGUE_NAMES:
            own[name] = sorted(names & PROLOGUE_NAMES)
        body = tree.body[0].body
        withs = [n for n in body if isinstance(n, ast.With)]
        if not withs or not any(
            isinstance(i.context_expr, ast.Call) and getattr(i.context_expr.func, "id", "") == "stage" for i in withs[0].items
        ):
            without.append(name)
    assert not own, f"stage wrappers with a prologue of their own: {own}"
    assert not without, f"stage wrappers not entering kfct.runtime.stage.stage: {without}"


def _failures(home):
    from kfct.governance import audit

    return [e for e in audit.read(home / "audit" / "audit.jsonl") if e["event"] == "stage_failed"]


def test_a_stage_gets_config_logger_clock_and_stamps_on_exit(kfct_home):
    from kfct.config import RunConfig, config_to_json, load_config
    from kfct.runtime.stage import logger_name, stage
    from kfct.runtime.stageclock import ENDED, STARTED

    cfg = load_config(overrides={"gate": {"min_improvement": 0.5}})
    meta: dict = {}
    with stage("featurize-split", config_to_json(cfg), stamp=meta) as st:
        assert isinstance(st.config, RunConfig) and st.config.gate.min_improvement == 0.5
        assert st.log.name == logger_name("featurize-split")
        assert meta == {}  # stamped on the way out, not before
        assert set(st.times()) == {STARTED, ENDED}
    assert meta[ENDED] >= meta[STARTED] > 0


def test_a_failing_stage_is_audited_and_not_stamped(kfct_home):
    from kfct.runtime.stage import stage

    meta: dict = {}
    with pytest.raises(ValueError, match="boom"), stage("train-model", "", stamp=meta, pipeline_run="r1") as st:
        st.context["model_name"] = "m"
        raise ValueError("boom")
    assert meta == {}
    entries = _failures(kfct_home)
    assert entries and entries[-1]["stage"] == "train-model" and entries[-1]["pipeline_run"] == "r1"
    assert entries[-1]["model_name"] == "m" and entries[-1]["error"] == "boom"


def test_a_bad_config_parameter_fails_inside_the_audit(kfct_home):
    from kfct.config import ConfigError
    from kfct.runtime.stage import stage

    with (
        pytest.raises(ConfigError, match=r"unknown key gate\.min_improvment"),
        stage("evaluate-model", json.dumps({"gate": {"min_improvment": 0.1}}), model_name="m"),
    ):
        raise AssertionError("the body never runs")
    [entry] = _failures(kfct_home)
    assert entry["stage"] == "evaluate-model" and entry["error_type"] == "ConfigError"


def test_a_stage_without_config_says_so():
    from kfct.runtime.stage import stage

    with stage("split-shards") as st, pytest.raises(RuntimeError, match="without a config_json"):
        _ = st.config
