"""Severity levels, the retrain decision and the cooldown (pure policy)."""

from datetime import UTC, datetime, timedelta

import pytest

from kfct.components.retrain_policy import assess, cooldown_remaining, decide, last_trigger, severity, should_retrain
from kfct.config import load_config

CFG = load_config().drift.model_copy(
    update={
        "drift_share_threshold": 0.20,
        "prediction_shift_threshold": 0.30,
        "cooldown_hours": 24,
        "performance_drop_threshold": 0.05,
    }
)
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "share,shift,expected",
    [
        (0.0, None, "low"),
        (0.20, 0.0, "low"),  # threshold itself is not above it
        (0.21, None, "medium"),
        (0.30, 0.10, "medium"),
        (0.31, None, "high"),
        (0.10, 0.31, "high"),
        (0.50, 0.30, "high"),
        (0.51, None, "critical"),
        (0.00, 0.51, "critical"),
    ],
)
def test_severity_levels_as_in_the_case_study(share, shift, expected):
    assert severity(share, shift, 0.20) == expected


def test_should_retrain_names_each_crossed_threshold():
    ok, reasons = should_retrain(0.25, 0.40, CFG)
    assert ok and reasons == ["drift share 0.250 > 0.2", "predicted churn-rate shift 40.0% > 30%"]
    ok, reasons = should_retrain(0.05, 0.10, CFG)
    assert not ok and "drift share 0.050 <= 0.2" in reasons[0]
    assert should_retrain(0.05, None, CFG)[1][1] == "churn-rate shift not measured"


def test_performance_drop_triggers_when_over_threshold():
    assert should_retrain(0.0, 0.0, CFG, performance_drop=0.06)[0]
    assert not should_retrain(0.0, 0.0, CFG, performance_drop=0.04)[0]
    assert not should_retrain(0.0, 0.0, CFG.model_copy(update={"performance_drop_threshold": 0.1}), performance_drop=0.06)[0]


def test_assess_makes_a_triggered_retrain_at_least_medium():
    # A 25% churn shift with a 0.2 shift threshold retrains; the case study's levels alone would say low.
    a = assess(0.0, 0.25, CFG.model_copy(update={"prediction_shift_threshold": 0.2}))
    assert a["retrain"] and a["severity"] == "medium"
    assert assess(0.6, None, CFG)["severity"] == "critical"
    assert assess(0.1, 0.1, CFG) == {
        "severity": "low",
        "retrain": False,
        "reason": "drift share 0.100 <= 0.2; churn-rate shift 10.0% <= 30%",
    }


def test_bad_numbers_are_named():
    with pytest.raises(ValueError, match="drift_share must be a number"):
        severity("lots", None)
    with pytest.raises(ValueError, match="drift_share is required"):
        should_retrain(None, 0.1, CFG)


def test_cooldown_remaining():
    assert cooldown_remaining(None, NOW, 24) == 0
    assert cooldown_remaining(NOW - timedelta(hours=23), NOW, 24) == pytest.approx(3600)
    assert cooldown_remaining(NOW - timedelta(hours=25), NOW, 24) == 0
    assert cooldown_remaining(NOW - timedelta(hours=1), NOW, 0) == 0
    assert cooldown_remaining("2025-03-01T11:00:00Z", NOW, 2) == pytest.approx(3600)


def test_last_trigger_from_audit_entries():
    entries = [
        {"event": "retrain_triggered", "ts": "2025-02-27T10:00:00Z"},
        {"event": "drift_checked", "ts": "2025-03-01T10:00:00Z"},
        {"event": "retrain_triggered", "ts": "2025-02-28T09:30:00Z"},
    ]
    assert last_trigger(entries) == datetime(2025, 2, 28, 9, 30, tzinfo=UTC)
    assert last_trigger([{"event": "drift_checked", "ts": "2025-03-01T10:00:00Z"}]) is None


def test_decide_retrain_cooldown_none_and_force():
    need = {"retrain": True, "reason": "drift share 0.600 > 0.2"}
    calm = {"retrain": False, "reason": "drift share 0.010 <= 0.2"}
    assert decide(need, None, NOW, CFG)["action"] == "retrain"
    held = decide(need, NOW - timedelta(hours=2), NOW, CFG)
    assert held["action"] == "cooldown" and held["retrain_needed"]
    assert "22.0 h of 24 h left" in held["reason"]
    assert decide(need, NOW - timedelta(hours=30), NOW, CFG)["action"] == "retrain"
    assert decide(calm, None, NOW, CFG)["action"] == "none"
    forced = decide(calm, NOW - timedelta(hours=1), NOW, CFG, force=True)
    assert forced["action"] == "retrain" and forced["reason"].startswith("forced by operator")


def test_a_drift_share_that_is_not_a_number_is_refused_in_one_line():
    """NaN used to pass as 'not measured' and then fail in a comparison with a TypeError."""
    import pytest

    from kfct.components.retrain_policy import severity, should_retrain

    cfg = {"drift_share_threshold": 0.2, "prediction_shift_threshold": 0.1}
    for bad in (float("nan"), None):
        with pytest.raises(ValueError, match="drift_share is required"):
            severity(bad, 0.1)
        with pytest.raises(ValueError, match="drift_share is required"):
            should_retrain(bad, 0.1, cfg)
