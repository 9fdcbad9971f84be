"""The decision halves of rollout, retrain trigger, scoring and deploy, on plain values.

Each `plan_*` / `choose_*` function decides from values its adapter read beforehand and
returns what to do; the adapter performs it. These tests give them plain dicts and
windows. The registry and the audit trail are made to fail if touched (`_no_effects`),
so a decision function that reached for either would fail here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kfct.config import load_config
from kfct.contracts.window_stats import WindowStats as Window

CFG = load_config(
    overrides={
        "rollout": {"steps": [10, 50, 100]},
        "drift": {
            "drift_share_threshold": 0.2,
            "prediction_shift_threshold": 0.1,
            "performance_drop_threshold": 0.05,
            "cooldown_hours": 24,
        },
    }
)
NOW = datetime(2025, 3, 3, 4, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_effects(monkeypatch):
    """Any registry or audit call from a pure function fails the test."""
    from kfct.governance import audit, registry

    def touched(*_a, **_k):
        raise AssertionError("a pure decision function touched the registry or the audit trail")

    for mod, names in (
        (
            registry,
            ("setup", "client", "alias_version", "aliases", "set_alias", "delete_alias", "set_version_tag", "load_version"),
        ),
        (audit, ("record", "read")),
    ):
        for name in names:
            monkeypatch.setattr(mod, name, touched)


# -- rollout ----------------------------------------------------------------------------------------


def _thr(**kw):
    from kfct.components.rollout import Thresholds

    return Thresholds(**{"min_requests": 200, **kw})


def _win(version, requests, errors=0, positives=None, p99=0.004):
    """A window; a canary's (any with traffic) carries paired figures: a good canary's, the champion's equal."""
    pos = requests // 4 if positives is None else positives
    paired = min(requests, 64)
    return Window(
        str(version),
        requests=requests,
        instances=requests,
        server_errors=errors,
        positives=pos,
        p99_latency_s=p99,
        paired_requests=paired,
        paired_rows=paired,
        paired_customers=paired,
        paired_p99_instance_s=2e-5,
        paired_champion_p99_instance_s=2e-5,
    )


def test_plan_versions_takes_what_is_given_else_the_aliases():
    from kfct.components.rollout import RolloutError, plan_versions

    assert plan_versions("m", "5", "4", "9", "8") == ("5", "4")
    assert plan_versions("m", None, None, "2", "1") == ("2", "1")
    for args, msg in (
        ((None, None, None, "1"), "no version has alias 'challenger'"),
        ((None, None, "2", None), "no champion to compare v2 with"),
        (("3", None, None, "3"), "v3 is already the champion"),
    ):
        with pytest.raises(RolloutError, match=msg):
            plan_versions("m", *args)


def test_a_healthy_step_passes_only_once_baked():
    from kfct.components.rollout import PASS, plan_rollout_step

    champ, can = _win(1, 5000), _win(2, 500)
    early = plan_rollout_step(champ, can, _thr(), None, elapsed=10.0, bake_seconds=60.0, max_wait_factor=3.0)
    assert not early.done and early.verdict == PASS
    baked = plan_rollout_step(champ, can, _thr(), None, elapsed=60.0, bake_seconds=60.0, max_wait_factor=3.0)
    assert baked.done and baked.verdict == PASS and "server error rate 0.00%" in baked.reasons[0]


def test_a_clearly_worse_canary_fails_at_once_without_waiting_out_the_bake():
    from kfct.components.rollout import FAIL, plan_rollout_step

    d = plan_rollout_step(
        _win(1, 5000), _win(2, 500, errors=100), _thr(), None, elapsed=1.0, bake_seconds=60.0, max_wait_factor=3.0
    )
    assert d.done and d.verdict == FAIL and d.reasons[0].startswith("server error rate 20.00%")


def test_too_little_traffic_waits_then_fails_at_the_deadline():
    from kfct.components.rollout import FAIL, WAIT, plan_rollout_step

    champ, thin = _win(1, 5000), _win(2, 3)
    waiting = plan_rollout_step(champ, thin, _thr(), None, elapsed=179.0, bake_seconds=60.0, max_wait_factor=3.0)
    assert not waiting.done and waiting.verdict == WAIT and "3 of 200" in waiting.reasons[0]
    late = plan_rollout_step(champ, thin, _thr(), None, elapsed=180.0, bake_seconds=60.0, max_wait_factor=3.0)
    assert late.done and late.verdict == FAIL
    assert late.reasons == ["not enough traffic to judge within 180 s: canary v2 has 3 of 200 requests needed"]


def test_at_full_traffic_the_canary_is_judged_against_the_earlier_champion_window():
    from kfct.components.rollout import PASS, WAIT, plan_rollout_step

    idle_champ, can, earlier = _win(1, 0), _win(2, 5000), _win(1, 5000)
    assert plan_rollout_step(idle_champ, can, _thr(), None, 60.0, 60.0, 3.0).verdict == WAIT
    d = plan_rollout_step(idle_champ, can, _thr(), earlier, 60.0, 60.0, 3.0)
    assert d.done and d.verdict == PASS


def test_plan_promotion_moves_the_champion_unless_gated_against_another():
    from kfct.components.rollout import plan_promotion

    p = plan_promotion("m", "2", "1", [10, 50, 100], gated="1", seconds=12.5)
    assert p.conflict is None and p.outcome == "promoted" and p.reasons == ["canary passed 10%, 50%, 100%"]
    assert p.tags == {"rollout_status": "promoted"} and p.challenger_reason == "promoted to champion"
    assert p.audit_event == "rollout_promoted"
    assert p.audit_fields == {
        "model_name": "m",
        "version": "2",
        "previous": "1",
        "reason": "canary passed 10%, 50%, 100%",
        "seconds": 12.5,
    }
    assert plan_promotion("m", "2", "1", [100], gated=None, seconds=0.0).conflict is None  # unrecorded
    assert plan_promotion("m", "3", "2", [100], gated="1", seconds=0.0).conflict == "v3 was gated against v1, not the champion v2"
    assert (
        plan_promotion("m", "3", "2", [100], gated="", seconds=0.0).conflict == "v3 was gated against vNone, not the champion v2"
    )


def test_plan_rollback_rejects_the_canary_with_every_reason():
    from kfct.components.rollout import plan_rollback

    p = plan_rollback("m", "2", "1", ["step 10%: a", "step 10%: b"], seconds=3.0)
    assert p.outcome == "rolled_back" and p.reasons == ["step 10%: a", "step 10%: b"] and p.conflict is None
    assert p.tags == {"rejected": "true", "rollout_status": "rejected", "rejected_reason": "step 10%: a; step 10%: b"}
    assert p.challenger_reason == "rolled back: step 10%: a; step 10%: b"
    assert p.audit_event == "rollout_rolled_back"
    assert p.audit_fields == {
        "model_name": "m",
        "version": "2",
        "champion": "1",
        "reason": "step 10%: a; step 10%: b",
        "seconds": 3.0,
    }
    long = plan_rollback("m", "2", "1", ["x" * 5000], seconds=0.0)
    assert len(long.tags["rejected_reason"]) == 4000 and len(long.challenger_reason) == 4000
    assert len(long.audit_fields["reason"]) == 5000  # the audit trail keeps all of it


def test_plan_expiry_rolls_back_only_a_deferred_canary_past_its_deadline():
    from kfct.components.rollout import plan_expiry
    from kfct.contracts.split_state import SplitState

    deadline = NOW.timestamp()
    st = SplitState(model_name="m", champion_version="1", canary_version="2", canary_percent=10.0, canary_deadline=deadline)
    assert plan_expiry(st, now=deadline - 1) is None
    assert plan_expiry(st, now=deadline) == (
        "deferred rollout of v2 passed its deadline 2025-03-03T04:00:00Z without a judgement"
    )
    assert plan_expiry(None, now=deadline) is None
    assert plan_expiry(SplitState(model_name="m", champion_version="1", canary_deadline=deadline), now=deadline) is None
    assert plan_expiry(SplitState(model_name="m", champion_version="1", canary_version="2"), now=deadline) is None


# -- retrain trigger --------------------------------------------------------------------------------

DRIFT = {"retrain": True, "reason": "drift share 0.667 > 0.2", "severity": "critical", "has_labels": True}


def _triggered(hours_ago, model="m"):
    return {"event": "retrain_triggered", "model_name": model, "ts": (NOW - timedelta(hours=hours_ago)).isoformat()}


def test_drift_without_a_recent_trigger_starts_a_run_on_the_current_batch():
    from kfct.components.retrain_policy import plan_trigger

    p = plan_trigger(DRIFT, [_triggered(30)], NOW, CFG, "m", current_uri="batch.parquet")
    assert p.held is None and p.out["action"] == "retrain" and not p.out["triggered"]
    assert p.launch == {
        "run_reason": "drift (critical): drift share 0.667 > 0.2",
        "data_uri": "batch.parquet",
        "severity": "critical",
    }
    assert p.audit == {
        "model_name": "m",
        "severity": "critical",
        "reason": "drift share 0.667 > 0.2",
        "data_uri": "batch.parquet",
        "forced": False,
    }
    assert p.out["data_uri"] == "batch.parquet" and p.out["run_reason"] == p.launch["run_reason"]


def test_the_run_data_is_the_given_uri_else_a_labelled_batch_else_the_default():
    from kfct.components.retrain_policy import plan_trigger

    given = plan_trigger(DRIFT, [], NOW, CFG, "m", current_uri="batch.parquet", ct_data_uri="s3://kfct/ct.parquet")
    assert given.launch["data_uri"] == "s3://kfct/ct.parquet"
    unlabelled = plan_trigger({**DRIFT, "has_labels": False}, [], NOW, CFG, "m", current_uri="batch.parquet")
    assert unlabelled.launch["data_uri"] == "" and unlabelled.out["data_uri"] == "(CT pipeline default)"


def test_drift_within_the_cooldown_is_held_back_and_audited_unless_a_dry_run():
    from kfct.components.retrain_policy import plan_trigger

    p = plan_trigger(DRIFT, [_triggered(2)], NOW, CFG, "m")
    assert p.out["action"] == "cooldown" and p.launch is None
    assert p.held == {"model_name": "m", "severity": "critical", "reason": p.out["reason"], "cooldown_remaining_s": 22 * 3600}
    dry = plan_trigger(DRIFT, [_triggered(2)], NOW, CFG, "m", dry_run=True)
    assert dry.out["action"] == "cooldown" and dry.held is None and dry.launch is None and dry.out["dry_run"]


def test_forced_runs_ignore_the_cooldown_and_say_so():
    from kfct.components.retrain_policy import plan_trigger

    p = plan_trigger(DRIFT, [_triggered(2)], NOW, CFG, "m", force=True)
    assert p.launch is not None and p.held is None and p.audit["forced"] is True
    assert p.out["reason"] == "forced by operator; drift share 0.667 > 0.2"


def test_no_drift_or_a_dry_run_starts_nothing_and_records_nothing():
    from kfct.components.retrain_policy import plan_trigger

    calm = plan_trigger({"retrain": False, "reason": "drift share 0.05 <= 0.2", "severity": "low"}, [], NOW, CFG, "m")
    assert calm.out["action"] == "none" and calm.launch is None and calm.held is None and calm.audit == {}
    dry = plan_trigger(DRIFT, [], NOW, CFG, "m", dry_run=True)
    assert dry.out["action"] == "retrain" and dry.launch is None and dry.held is None


def test_plan_finished_reports_the_local_run():
    from kfct.components.retrain_policy import plan_finished

    summary = {
        "run_name": "ct-1",
        "total_seconds": 9.0,
        "validation": {"passed": True},
        "mlflow_run_id": "r",
        "decision": {"deploy": True, "reasons": ["better"]},
        "registered": {"version": "3", "alias": "challenger"},
    }
    finished, ct = plan_finished("m", summary)
    assert finished == {
        "model_name": "m",
        "run_name": "ct-1",
        "validation_passed": True,
        "deploy": True,
        "version": "3",
        "alias": "challenger",
    }
    assert ct == {
        "run_name": "ct-1",
        "total_seconds": 9.0,
        "registered": {"version": "3", "alias": "challenger"},
        "mlflow_run_id": "r",
        "log": None,
        "validation_passed": True,
        "deploy": True,
        "reasons": ["better"],
    }
    finished, ct = plan_finished("m", {"validation": {"passed": False}, "registered": None})
    assert finished["version"] is None and ct["deploy"] is None and ct["reasons"] == []


# -- scoring ----------------------------------------------------------------------------------------


def test_a_pinned_version_wins_over_the_alias():
    from kfct.components.score import ModelChoice, choose_model

    assert choose_model("champion", "7") == ModelChoice(None, "7", "v7")
    assert choose_model("champion", None) == ModelChoice("champion", None, "alias 'champion'")
    assert choose_model("challenger", "") == ModelChoice("challenger", None, "alias 'challenger'")


def test_the_batch_job_fixes_the_aliased_version_and_its_hash():
    from kfct.components.batch_score import BatchScoringError, plan_resolve

    assert plan_resolve("m", "champion", "4", {"model_sha256": "ab"}) == {"version": "4", "model_sha256": "ab"}
    assert plan_resolve("m", "champion", "4", None) == {"version": "4", "model_sha256": ""}
    for unset in (None, ""):
        with pytest.raises(BatchScoringError, match="'m' has no version with alias 'champion'"):
            plan_resolve("m", "champion", unset, None)


# -- deploy -----------------------------------------------------------------------------------------


def test_only_a_version_overtaken_by_a_newer_champion_is_superseded():
    from kfct.components.deploy import is_superseded

    assert is_superseded("1", {"champion": "2"})
    assert not is_superseded("1", {"champion": "2", "challenger": "1"})  # still holds an alias
    assert not is_superseded("3", {"champion": "2"})  # newer than the champion
    assert not is_superseded("1", {})  # no champion yet
    assert not is_superseded("1", {"champion": "x"})


def _effects(version, champion, challenger=None, shadow=False, percent=None):
    from kfct.components.deploy import plan_deploy, plan_deploy_effects

    plan = plan_deploy("m", version, champion, False, CFG, "local", canary_percent=percent, shadow=shadow)
    return plan_deploy_effects(version, plan, shadow, challenger)


def test_the_first_model_becomes_champion_and_the_champion_itself_moves_no_alias():
    first = _effects("1", None)
    assert first.alias_move == ("champion", "1", "first model: no champion to compare with")
    assert first.split == {
        "champion_version": "1",
        "canary_version": None,
        "canary_percent": 0.0,
        "mode": "canary",
        "reason": "deploy v1 as champion",
    }
    assert first.report == {"alias": "champion", "canary_percent": 100.0, "mode": "direct"}
    again = _effects("3", "3")
    assert again.alias_move is None and again.split["champion_version"] == "3" and again.report["mode"] == "direct"


def test_a_new_version_becomes_the_challenger_at_the_first_step():
    canary = _effects("4", "3", challenger="2")
    assert canary.alias_move == ("challenger", "4", "deployed as canary at 10%")
    assert canary.split == {
        "champion_version": "3",
        "canary_version": "4",
        "canary_percent": 10.0,
        "mode": "canary",
        "reason": "deploy v4 as canary at 10%",
    }
    assert canary.report == {"alias": "challenger", "canary_percent": 10.0}
    assert _effects("4", "3", challenger="4").alias_move is None  # already there
    shadow = _effects("4", "3", shadow=True)
    assert shadow.alias_move == ("challenger", "4", "deployed as shadow")
    assert shadow.split["mode"] == "shadow" and shadow.split["canary_percent"] == 0.0
    assert _effects("4", "3", percent=25).split["reason"] == "deploy v4 as canary at 25%"


def test_the_cluster_plan_follows_the_deployment_mode():
    from kfct.components.deploy import SERVERLESS, STANDARD, plan_cluster_deploy

    assert plan_cluster_deploy("4", "3", False, 10.0, SERVERLESS, exists=False) == [("apply", "3", None), ("apply", "4", 10.0)]
    assert plan_cluster_deploy("4", "3", False, 10.0, SERVERLESS, exists=True) == [("apply", "4", 10.0)]
    assert plan_cluster_deploy("4", "4", True, 10.0, SERVERLESS, exists=True) == [("apply", "4", 100)]
    assert plan_cluster_deploy("4", "3", False, 10.0, STANDARD, exists=True) == [("canary", "4", 10.0)]
    assert plan_cluster_deploy("4", "3", False, 10.0, STANDARD, exists=False) == [("apply", "3", None), ("canary", "4", 10.0)]
    assert plan_cluster_deploy("1", None, True, 10.0, STANDARD, exists=False) == [("apply", "1", None), ("drop_canary",)]


def test_a_function_named_core_touches_no_registry_audit_or_mlflow():
    """'core' means side-effect-free: a `*_core` that reads or writes the registry or the trail is misnamed."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "components"
    offenders = []
    for path in sorted(root.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_core"):
                names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                names |= {
                    a.name.split(".")[0] for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names
                }
                touched = names & {"registry", "audit", "mlflow"}
                if touched:
                    offenders.append(f"{path.name}:{node.name} uses {sorted(touched)}")
    assert not offenders, offenders
    assert len([p for p in root.glob("*.py")]) > 10  # the folder was found
