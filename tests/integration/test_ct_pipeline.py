"""The CT pipeline under kfp's local SubprocessRunner, end to end, with a real MLflow store.

Run 1 registers the champion; run 2 on the same data is blocked by the gate and the
alias stays; a corrupted dataset stops at validation and the registry is untouched.
"""

import json

import pytest

from kfct.errors import DataSourceError, StageError, ValidationFailed
from tests.homekit import copy_home

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(ct_run, tmp_path_factory):
    """This module's KFCT_HOME: a copy of the session's CT run (`ct_run`, tests/conftest.py), made
    before any test here writes, so the later runs here (a blocked second run, failed validations,
    a challenger) leave the session's run as it was for the tests that only read it."""
    import os

    from kfct.runtime.settings import reset_settings

    home = copy_home(ct_run.home, tmp_path_factory.mktemp("ct-home") / "kfct-home")
    old = os.environ.get("KFCT_HOME")
    os.environ["KFCT_HOME"] = str(home)
    reset_settings()
    yield home
    if old is None:
        os.environ.pop("KFCT_HOME", None)
    else:
        os.environ["KFCT_HOME"] = old
    reset_settings()


@pytest.fixture(scope="module")
def data_path(ct_run):
    return ct_run.data


@pytest.fixture(autouse=True)
def _registry_read_here(home):
    """The stages ran in processes of their own, so nothing in this one has pointed MLflow at the store
    yet: each test reads the registry through kfct.governance.registry.setup. Without it a test run alone reads
    MLflow's default, a new ./mlflow.db in the working directory (and fails on an empty registry)."""
    from kfct.governance import registry

    registry.setup()


def _registry_state(name):
    from mlflow import MlflowClient

    from kfct.governance import registry

    registry.setup()
    versions = sorted(int(v.version) for v in MlflowClient().search_model_versions(f"name='{name}'"))
    return versions, registry.aliases(name)


@pytest.fixture(scope="module")
def first_run(ct_run, home):
    """The first run on this data: the session's, run once per test session (tests/conftest.py)."""
    return ct_run.summary


def test_first_run_registers_champion(first_run):
    s = first_run
    assert s["validation"]["passed"] and s["validation"]["n_expectations"] > 50 and s["validation"]["n_failed"] == 0
    assert s["decision"]["deploy"] is True
    assert any("no champion yet" in r for r in s["decision"]["reasons"])
    assert s["registered"] == {"version": "1", "alias": "champion"}
    assert set(s["stages"]) == {
        "ingest-data",
        "validate-data",
        "featurize-split",
        "train-model",
        "evaluate-model",
        "register-model",
        "deploy-model",
        "record-run-outcome",
    }
    assert _registry_state(s["model_name"]) == ([1], {"champion": "1"})
    assert s["deploy"]["mode"] == "direct" and s["deploy"]["canary_percent"] == 100.0


def test_registered_version_carries_lineage(first_run):
    from kfct.governance import registry

    lm = registry.load_version(first_run["model_name"], alias="champion")
    assert lm.tags["dataset_sha256"] == first_run["dataset"]["sha256"]
    # the run's uuid (KFP: {{$.pipeline_job_uuid}}), not its display name
    assert lm.tags["pipeline_run"] == first_run["pipeline_run"] and first_run["pipeline_run"] != first_run["run_name"]
    assert lm.tags["mlflow_run_id"] == first_run["mlflow_run_id"] == lm.run_id
    assert lm.tags["model_sha256"] == lm.sha256
    assert lm.tags["code_version"]
    assert float(lm.tags["threshold"]) == pytest.approx(lm.model.threshold, abs=1e-6)


def test_mlflow_run_has_metrics_plots_and_card(first_run):
    import mlflow

    run = mlflow.get_run(first_run["mlflow_run_id"])
    assert run.data.metrics["test_roc_auc"] == pytest.approx(first_run["decision"]["metrics"]["roc_auc"])
    assert run.data.tags["dataset_sha256"] == first_run["dataset"]["sha256"]
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/roc_curve.png", "evaluation/pr_curve.png", "evaluation/decision.json"} <= arts
    cards = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "model_card")}
    assert {"model_card/model_card.md", "model_card/model_card.html"} <= cards


def test_kfp_ui_artifacts_written(first_run):
    from pathlib import Path

    run_dir = Path(first_run["run_dir"])
    out = json.loads((run_dir / "evaluate-model" / "executor_output.json").read_text())
    arts = out["artifacts"]
    assert {"metrics", "classification", "report", "decision"} <= set(arts)
    metrics_meta = arts["metrics"]["artifacts"][0]["metadata"]
    assert metrics_meta["roc_auc"] == pytest.approx(first_run["decision"]["metrics"]["roc_auc"])
    cls_meta = arts["classification"]["artifacts"][0]["metadata"]
    assert "confidenceMetrics" in cls_meta and "confusionMatrix" in cls_meta


def test_second_run_on_same_data_is_blocked_and_alias_stays(first_run, data_path):
    from kfct.pipelines.local import run_ct

    before = _registry_state(first_run["model_name"])  # other tests of this module may have registered more
    assert before[1]["champion"] == "1"
    s = run_ct(data_uri=str(data_path))
    assert s["decision"]["deploy"] is False
    assert "registered" not in s
    assert any("vs champion v1" in r and "< min_improvement" in r for r in s["decision"]["reasons"])
    assert s["decision"]["comparison"]["champion_version"] == "1"
    assert _registry_state(s["model_name"]) == before


@pytest.mark.parametrize("kind", ["unknown_category", "missing_column"])
def test_corrupted_data_stops_at_validation(first_run, home, kind):
    from kfct.data.datagen import corrupt, generate, write_frame
    from kfct.pipelines.local import run_ct

    before = _registry_state(first_run["model_name"])
    bad = write_frame(corrupt(generate(5000, seed=3), kind), home / "data" / f"bad-{kind}.csv")
    with pytest.raises(ValidationFailed) as err:
        run_ct(data_uri=str(bad))
    msg = str(err.value)
    assert "validation failed" in msg
    assert ("contract_type" if kind == "unknown_category" else "frustration_index") in msg
    assert _registry_state(first_run["model_name"]) == before
    # the step's HTML artifact, as the local kfp runner kept it: GX's Data Docs page under kfct's lines
    import re
    from pathlib import Path

    page = Path(re.search(r"\(report: ([^)]+\.html)\)", msg).group(1)).read_text()
    assert "Expectation Validation Result" in page and '<section id="kfct-summary" class="bad">' in page


def test_audit_trail_records_the_decisions(first_run):
    from kfct.governance import audit

    assert audit.verify().ok
    events = [e["event"] for e in audit.read()]
    assert events[:4] == ["validation", "gate_decision", "model_registered", "alias_moved"]
    assert "gate_decision" in events[4:]


def test_with_rollout_configured_register_sets_challenger_and_deploy_opens_a_canary(first_run, data_path, home, cfg):
    """Registration no longer jumps to champion: the canary rollout decides (deferred here: no live server)."""
    import copy

    from kfct.contracts.split_state import read_state, state_path
    from kfct.pipelines.local import run_ct

    c = copy.deepcopy(cfg)
    c.rollout.enabled = True
    c.gate.min_improvement = -1.0  # let an equal model through the gate to exercise the canary path
    s = run_ct(data_uri=str(data_path), cfg=c, serving_url="http://127.0.0.1:9")
    assert s["registered"]["alias"] == "challenger"
    v = s["registered"]["version"]
    assert s["deploy"]["mode"] == "canary" and s["deploy"]["canary_percent"] == c.rollout.steps[0]
    assert s["rollout"]["outcome"] == "deferred"
    _versions, aliases = _registry_state(s["model_name"])
    assert aliases == {"champion": "1", "challenger": v}
    st = read_state(state_path(s["model_name"], home))
    assert (st.champion_version, st.canary_version, st.canary_percent) == ("1", v, c.rollout.steps[0])


def test_missing_file_is_one_clear_error(home):
    from kfct.pipelines.local import run_ct

    with pytest.raises(DataSourceError, match=r"dataset not found: .*nope.parquet"):
        run_ct(data_uri=str(home / "nope.parquet"))


def test_unreachable_s3_fails_in_ingest_with_one_line(home, monkeypatch):
    from kfct.pipelines.local import run_ct
    from kfct.runtime.settings import reset_settings

    monkeypatch.setenv("KFCT_S3_ENDPOINT", "127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("KFCT_S3_ACCESS_KEY", "x")
    monkeypatch.setenv("KFCT_S3_SECRET_KEY", "y")
    reset_settings()
    with pytest.raises(StageError) as err:
        run_ct(data_uri="s3://kfct/datasets/x.parquet")
    assert "ingest-data" in str(err.value) and "127.0.0.1:9" in str(err.value) and "unreachable" in str(err.value)
    reset_settings()
