"""Batch scoring with the registered champion, the CLI commands, and `python -m kfct.serving` as a process."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.servingkit import MODEL_NAME, free_port, records, server_process, serving_env, serving_registry  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture
def customers(tmp_path):
    from kfct.data.datagen import generate

    df = generate(20000, seed=41)
    path = tmp_path / "customers.parquet"
    df.to_parquet(path, index=False)
    return df, path


def test_score_core_matches_the_model_and_is_audited(serving_env, customers, tmp_path):
    from kfct.components.score import score_registered
    from kfct.governance import audit, registry

    df, path = customers
    out = tmp_path / "scores.parquet"
    s = score_registered(path, out, MODEL_NAME, chunk_rows=6000)  # several chunks, last one partial
    assert s.rows == 20000 and s.model_version == serving_env.versions["good_a"]
    scored = pd.read_parquet(out)
    assert list(scored.columns) == ["customer_id", "probability", "label", "model_version"]
    assert scored["customer_id"].tolist() == df["customer_id"].tolist()
    model = registry.load_version(MODEL_NAME, alias="champion").model
    np.testing.assert_allclose(scored["probability"], model.predict_positive(df), atol=1e-6)
    assert (scored["label"] == (scored["probability"] >= model.threshold)).all()
    assert set(scored["model_version"].astype(str)) == {serving_env.versions["good_a"]}
    assert s.positives == int(scored["label"].sum())
    assert any(e["event"] == "batch_scored" and e["rows"] == 20000 for e in audit.read())


def test_score_rejects_bad_inputs_without_writing(serving_env, customers, tmp_path):
    from kfct.components.score import ScoringError, score_registered

    df, _ = customers
    out = tmp_path / "scores.parquet"
    missing = tmp_path / "missing_col.parquet"
    df.drop(columns=["frustration_index"]).to_parquet(missing, index=False)
    with pytest.raises(ScoringError, match="frustration_index"):
        score_registered(missing, out, MODEL_NAME)
    unknown = tmp_path / "unknown_cat.parquet"
    bad = df.copy()
    bad.loc[15000, "contract_type"] = "lifetime"
    bad.to_parquet(unknown, index=False)
    with pytest.raises(ScoringError, match="lifetime"):
        score_registered(unknown, out, MODEL_NAME, chunk_rows=6000)
    with pytest.raises(ScoringError, match="not found"):
        score_registered(tmp_path / "nope.parquet", out, MODEL_NAME)
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_kfct_score_and_deploy_commands(serving_env, customers, tmp_path, capsys):
    from kfct.cli import main

    _, path = customers
    out = tmp_path / "cli_scores.parquet"
    assert main(["score", "--input", str(path), "--output", str(out)]) == 0
    assert "scored 20,000 rows" in capsys.readouterr().out and len(pd.read_parquet(out)) == 20000
    assert main(["score", "--input", str(tmp_path / "nope.parquet"), "--output", str(out)]) != 0
    assert "input file not found" in capsys.readouterr().err
    assert main(["serve", "--canary-percent", "10"]) != 0
    assert "--canary-version" in capsys.readouterr().err
    assert main(["rollout", "--url", f"http://127.0.0.1:{free_port()}"]) != 0
    assert "no kfct model server" in capsys.readouterr().err


def test_python_m_serving_process(serving_env, tmp_path):
    """The subprocess entry the benchmarks use: host/port arguments, SIGTERM stops it cleanly."""
    with server_process(
        ["kfct.serving", "--host", "127.0.0.1", "--no-prediction-log"], serving_env.home, "python -m kfct.serving to come up"
    ) as srv:
        status, body, _ = srv.client.predict(MODEL_NAME, records(3))
        assert status == 200 and body["model_version"] == serving_env.versions["good_a"]
    assert srv.proc.returncode == 0, srv.output.decode(errors="replace")[-2000:]
    assert b"serving churn-classifier on http://127.0.0.1" in srv.output
