"""A stage that raises leaves one `stage_failed` entry in the audit trail and re-raises its own error.

The component functions are called as kfp calls them (real artifacts on disk, real audit
trail under a temp KFCT_HOME); only the data or the config is bad.
"""

from __future__ import annotations

import pytest


def _art(cls, path, **meta):
    a = cls(uri=str(path))
    a.metadata.update(meta)
    return a


def _failures(home):
    from kfct.governance import audit

    return [e for e in audit.read(home / "audit" / "audit.jsonl") if e["event"] == "stage_failed"]


@pytest.fixture()
def truncated(tmp_path, small_df):
    path = tmp_path / "truncated.parquet"
    small_df.head(200).to_parquet(path)
    path.write_bytes(path.read_bytes()[:2000])
    return path


def test_ingest_of_a_truncated_parquet_is_on_the_trail(kfct_home, tmp_path, truncated, monkeypatch):
    from kfp.dsl import Dataset

    from kfct.components.ingest import ingest_data
    from kfct.runtime.stagefail import recorded_for_run

    monkeypatch.setenv("KFCT_RUN_ID", "ct-test-1")
    with pytest.raises(Exception) as err:
        ingest_data(str(truncated), _art(Dataset, tmp_path / "snap.parquet"))
    [entry] = _failures(kfct_home)
    assert entry["stage"] == "ingest-data" and entry["data_uri"] == str(truncated) and entry["run_id"] == "ct-test-1"
    assert entry["error_type"] == type(err.value).__name__ and "\n" not in entry["error"] and entry["error"]
    assert recorded_for_run("ct-test-1", kfct_home / "audit" / "audit.jsonl")
    assert not recorded_for_run("ct-other", kfct_home / "audit" / "audit.jsonl")


def test_validate_of_a_truncated_snapshot_names_model_and_run(kfct_home, tmp_path, truncated, cfg):
    from kfp.dsl import HTML, Artifact, Dataset, Markdown

    from kfct.components.validate import validate_data
    from kfct.config import config_to_json

    with pytest.raises(Exception) as err:
        validate_data(
            _art(Dataset, truncated, sha256="abc"),
            config_to_json(cfg),
            "tumours",
            "run-7",
            _art(HTML, tmp_path / "r.html"),
            _art(Artifact, tmp_path / "r.json"),
            _art(Markdown, tmp_path / "r.md"),
            _art(Artifact, tmp_path / "docs"),
        )
    [entry] = _failures(kfct_home)
    assert (entry["stage"], entry["model_name"], entry["pipeline_run"]) == ("validate-data", "tumours", "run-7")
    assert entry["error_type"] == type(err.value).__name__


def test_featurize_with_a_bad_config_is_on_the_trail(kfct_home, tmp_path, small_df):
    from kfp.dsl import Dataset, Model

    from kfct.components.featurize import featurize_split

    data = tmp_path / "data.parquet"
    small_df.head(200).to_parquet(data)
    bad = '{"dataset": {"label": "churned"}, "gate": {"min_improvment": 0.1}}'
    outs = [_art(Dataset, tmp_path / f"{n}.parquet") for n in ("tr", "va", "te")]
    with pytest.raises(Exception) as err:
        featurize_split(_art(Dataset, data), bad, *outs, _art(Model, tmp_path / "pre.joblib"))
    [entry] = _failures(kfct_home)
    assert entry["stage"] == "featurize-split" and entry["error_type"] == type(err.value).__name__
    assert "min_improvment" in entry["error"]


def test_an_unwritable_trail_never_hides_the_stage_error(kfct_home, tmp_path, caplog):
    from kfct.runtime.stagefail import audit_failure

    kfct_home.mkdir(parents=True, exist_ok=True)  # kfct_home holds the seeded MLflow store
    (kfct_home / "audit").write_text("a file where the trail's folder should be")
    with pytest.raises(ZeroDivisionError), audit_failure("train-model", model_name="m"):
        raise ZeroDivisionError("the stage's own error")
    assert "could not record" in caplog.text


def test_success_writes_nothing_and_the_error_line_is_short(kfct_home):
    from kfct.runtime.stagefail import audit_failure, first_line

    with audit_failure("deploy-model", model_name="m"):
        pass
    assert _failures(kfct_home) == []
    assert first_line(ValueError("x" * 30_000 + "\nsecond")).endswith("…")
    assert len(first_line(ValueError("x" * 30_000))) == 300 and first_line(ValueError("a\nb")) == "a"


def test_every_component_function_audits_its_failures():
    from kfct.pipelines.batch_scoring import make_components as batch
    from kfct.pipelines.ct import make_components as ct
    from kfct.pipelines.monitoring import make_components as monitoring

    funcs = {name: c.python_func for name, c in {**ct(), **monitoring(), **batch()}.items()}
    # kfct.runtime.stage.stage enters audit_failure (tests/unit/test_stage_prologue.py shows a failing body audited)
    missing = sorted(name for name, fn in funcs.items() if "stage" not in fn.__code__.co_names)
    assert len(funcs) >= 17 and not missing, f"component functions outside kfct.runtime.stage.stage: {missing}"


def test_a_shard_that_cannot_be_scored_names_the_resolved_model(kfct_home, tmp_path):
    import json

    from kfp.dsl import Artifact, Dataset

    from kfct.components.batch_score import score_shard

    champion = tmp_path / "champion.json"
    champion.write_text(json.dumps({"model_name": "tumours", "version": "3"}))
    with pytest.raises(Exception) as err:
        score_shard(_art(Dataset, tmp_path / "no-shards"), 2, _art(Artifact, champion), _art(Dataset, tmp_path / "out"))
    [entry] = _failures(kfct_home)
    assert (entry["stage"], entry["shard"], entry["model_name"], entry["version"]) == ("score-shard", 2, "tumours", "3")
    assert entry["error_type"] == type(err.value).__name__
