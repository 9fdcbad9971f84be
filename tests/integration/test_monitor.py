"""The loop closed end to end on this machine: drift -> a new gated CT run -> a new champion only if
it passes the gate; the cooldown holds; a forced retrain on biased data is stopped by the fairness gate.

Real parts throughout: the CT pipeline under kfp.local (`kfct.pipelines.local.run_ct`), MLflow on
SQLite, Evidently, the audit trail. Small data (6k rows) keeps it to a few minutes; at that size
TPR/FPR gaps between groups wobble by +-0.1 from sampling alone, so these runs set
`fairness.significance_level` (a gap must exceed the limit *and* be significant).
"""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MODEL = "churn-monitor-test"
INITIAL = "generate://6000?seed=1"
UNDRIFTED = "generate://5000?seed=2"
DRIFTED = "generate://6000?seed=5&drift=1.0"
BIASED = "generate://6000?seed=5&drift=1.0&bias=1.0"
# After the retrain, the champion knows the drifted population: the old one is now the drift.
BACK = "generate://6000?seed=8"


@pytest.fixture(scope="module")
def env(tmp_path_factory, seed_mlflow_store):
    from kfct.config import load_config
    from kfct.runtime.settings import reset_settings

    home = seed_mlflow_store(tmp_path_factory.mktemp("monitor") / "kfct-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KFCT_HOME", str(home))
        for var in ("KFCT_MLFLOW_TRACKING_URI", "KFCT_CONFIG", "KFCT_S3_ENDPOINT", "KFCT_KFP_HOST"):
            mp.delenv(var, raising=False)
        reset_settings()
        cfg = load_config(overrides={"fairness": {"significance_level": 0.05}, "register": {"model_name": MODEL}})
        from kfct.pipelines.local import run_ct

        first = run_ct(INITIAL, cfg=cfg, model_name=MODEL)
        assert first["registered"]["version"] == "1", first.get("decision", {}).get("reasons")
        yield {"home": home, "cfg": cfg}
    reset_settings()


@pytest.fixture(scope="module")
def undrifted(env):
    """A window like the champion's training data, checked while v1 is the champion (before any retrain)."""
    from kfct.pipelines.monitoring import run_monitor

    champion_before, n_trig = _champion(), len(_events("retrain_triggered"))
    out = run_monitor(current_uri=UNDRIFTED, cfg=env["cfg"])
    return {"out": out, "champion_before": champion_before, "new_triggers": len(_events("retrain_triggered")) - n_trig}


@pytest.fixture(scope="module")
def retrained(env, undrifted):
    """The drifted window: a gated CT run through the monitor (starts the cooldown)."""
    from kfct.pipelines.monitoring import run_monitor

    n_trig = len(_events("retrain_triggered"))
    out = run_monitor(current_uri=DRIFTED, cfg=env["cfg"])
    return {"out": out, "new_triggers": _events("retrain_triggered")[n_trig:]}


@pytest.fixture(scope="module")
def held(env, retrained):
    """The next drifted window within the cooldown."""
    from kfct.pipelines.monitoring import run_monitor

    champion_before, n_trig = _champion(), len(_events("retrain_triggered"))
    out = run_monitor(current_uri=BACK, cfg=env["cfg"])
    return {"out": out, "champion_before": champion_before, "new_triggers": len(_events("retrain_triggered")) - n_trig}


def _champion():
    from kfct.governance import registry

    registry.setup()
    return registry.alias_version(MODEL, "champion")


def _events(name=None):
    from kfct.governance import audit

    return [e for e in audit.read() if name is None or e["event"] == name]


def test_1_undrifted_window_does_not_retrain(undrifted):
    out = undrifted["out"]
    assert out["drift"]["retrain"] is False and out["decision"]["action"] == "none"
    assert out["drift"]["severity"] == "low"
    assert out["drift"]["performance"]["reference_source"] == "held-out metrics of the model"
    assert undrifted["champion_before"] == "1" and out["champion_version"] == "1"
    assert undrifted["new_triggers"] == 0
    checked = [e for e in _events("drift_checked") if e["mlflow_run_id"] == out["mlflow_run_id"]]
    assert len(checked) == 1 and checked[0]["retrain_needed"] is False and checked[0]["version"] == "1"
    html = Path(out["reports"]["html"]).read_text()
    assert "Value Drift for column frustration_index" in html
    # The drift run and its reports are in MLflow too.
    import mlflow

    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(out["mlflow_run_id"], "drift")}
    assert {"drift/drift_report.html", "drift/drift_report.json", "drift/drift_summary.json"} <= arts


def test_2_drift_triggers_a_gated_ct_run_and_a_new_champion_only_if_it_passes(retrained):
    from kfct.governance import registry

    out = retrained["out"]
    d, dec = out["drift"], out["decision"]
    assert d["retrain"] is True and d["severity"] == "critical"
    assert dec["action"] == "retrain" and dec["triggered"] and dec["mode"] == "local"
    assert dec["data_uri"] == DRIFTED  # the labelled batch is what the new run trains on
    ct = dec["ct"]
    assert ct["validation_passed"] is True
    champion = _champion()
    if ct["deploy"]:
        assert ct["registered"]["alias"] == "champion" and champion == ct["registered"]["version"] == "2"
    else:
        assert champion == "1" and not ct.get("registered")
    assert ct["deploy"] is True, ct["reasons"]  # with these seeds the retrained model wins
    # The run says why it ran, in MLflow and in the audit trail.
    run = registry.client().get_run(ct["mlflow_run_id"])
    assert run.data.tags["run_reason"].startswith("drift (critical): drift share")
    trig = retrained["new_triggers"]
    assert len(trig) == 1 and trig[0]["severity"] == "critical" and trig[0]["model_name"] == MODEL
    fin = [e for e in _events("retrain_finished") if e["run_name"] == ct["run_name"]]
    assert len(fin) == 1 and fin[0]["deploy"] is True and fin[0]["version"] == "2"


def test_3_cooldown_holds_back_the_next_trigger(held):
    out = held["out"]
    assert out["drift"]["retrain"] is True
    assert out["decision"]["action"] == "cooldown" and out["decision"]["triggered"] is False
    assert out["decision"]["cooldown_remaining_s"] > 23 * 3600
    assert held["new_triggers"] == 0
    assert _events("retrain_held")
    assert out["champion_version"] == held["champion_before"]


def test_4_forced_retrain_on_biased_data_is_stopped_by_the_fairness_gate(env):
    from kfct.governance import registry
    from kfct.pipelines.monitoring import run_monitor

    before = _champion()
    aliases_before = registry.aliases(MODEL)
    n_trig = len(_events("retrain_triggered"))
    out = run_monitor(current_uri=DRIFTED, ct_data_uri=BIASED, force=True, cfg=env["cfg"])
    dec = out["decision"]
    assert dec["action"] == "retrain" and dec["reason"].startswith("forced by operator")
    ct = dec["ct"]
    assert ct["deploy"] is False and not ct.get("registered")
    fair = [r for r in ct["reasons"] if r.startswith("fairness age_group: demographic parity difference")]
    assert fair and "> 0.1" in fair[0] and "18_35" in fair[0]
    assert _champion() == before and registry.aliases(MODEL) == aliases_before
    assert len(_events("retrain_triggered")) == n_trig + 1


def test_5_audit_chain_intact_and_history_shows_the_loop(env, held, capsys):
    from kfct.cli import main

    assert main(["audit", "verify"]) == 0
    assert "hash chain intact" in capsys.readouterr().out
    assert main(["audit", "show", "--model", MODEL, "--json"]) == 0
    events = [e["event"] for e in json.loads(capsys.readouterr().out)]
    for name in (
        "gate_decision",
        "model_registered",
        "alias_moved",
        "drift_checked",
        "retrain_triggered",
        "retrain_finished",
        "retrain_held",
    ):
        assert name in events, name


def test_6_monitor_cli_dry_run_and_monitoring_pipeline_under_kfp_local(env, retrained, capsys):
    from kfct.cli import main
    from kfct.pipelines.monitoring import run_monitor

    n_trig = len(_events("retrain_triggered"))
    assert main(["monitor", "--current", BACK, "--dry-run", "--force", "--model-name", MODEL]) == 0
    out = capsys.readouterr().out
    assert "severity    critical" in out and "dry run: nothing started" in out
    # The same stages as a KFP pipeline, executed by kfp.local (dry run: decides, starts nothing).
    res = run_monitor(current_uri=BACK, dry_run=True, cfg=env["cfg"], via_kfp=True)
    assert res["drift"]["retrain"] is True and res["decision"]["action"] == "cooldown"
    assert res["champion_version"] == _champion()
    assert "Value Drift for column recency_days" in Path(res["reports"]["html"]).read_text()
    assert len(_events("retrain_triggered")) == n_trig


def test_7_missing_current_data_is_one_clear_error(env):
    from kfct.cli import main

    assert main(["monitor", "--current", "/nonexistent/batch.parquet", "--model-name", MODEL]) == 2
    assert main(["monitor", "--model-name", MODEL]) == 2  # empty prediction log


def test_8_serving_prediction_log_is_the_default_window(env, retrained):
    import time

    from kfct.data.datagen import generate
    from kfct.governance import registry
    from kfct.pipelines.monitoring import run_monitor
    from kfct.serving.prediction_log import PredictionLogger

    champ = registry.load_version(MODEL, alias="champion")
    df = generate(3000, seed=9)  # the pre-drift population, now unlike the champion's training data
    records = df.drop(columns=["churned"]).to_dict("records")
    proba = champ.model.predict_positive(df)
    labels = (proba >= champ.model.threshold).astype(int)
    logger = PredictionLogger(flush_seconds=60)
    now = time.time()
    for i in range(0, 3000, 500):  # requests of 500 instances
        logger.log(
            now,
            f"r{i}",
            MODEL,
            champ.version,
            "champion",
            records[i : i + 500],
            proba[i : i + 500],
            labels[i : i + 500],
            champ.model.threshold,
        )
    logger.log(now, "s0", MODEL, "1", "shadow", records[:500], proba[:500], labels[:500], 0.5)
    logger.close()
    out = run_monitor(dry_run=True, cfg=env["cfg"])
    assert out["current"].startswith("prediction log since")
    d = out["drift"]
    assert d["rows"]["current"] == 3000  # shadow rows left out
    assert d["has_labels"] is False and d["performance"] is None
    assert d["churn_rate"]["current"] == pytest.approx(labels.mean())  # from the logged probabilities
    assert d["retrain"] is True and out["decision"]["action"] == "cooldown"
