"""The rollout loop on an injected clock, against a real MLflow registry (SQLite, fresh home).

A scripted backend stands in for the serving side (traffic and rollback behaviour are
what is under test); the registry, its aliases and tags and the audit trail are real.
"""

import pytest

from kfct.components.rollout import RolloutError, Thresholds, run_rollout
from kfct.serving.metrics import WindowStats as Window

MODEL = "rollout-loop-test"


class FakeTime:
    """`sleep` advances `clock`: a 60 s bake takes no real time. Bounded so a loop that ignores it fails, not hangs."""

    def __init__(self, max_sleeps: int = 10_000):
        self.now, self.sleeps, self.max_sleeps = 1000.0, 0, max_sleeps

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.sleeps > self.max_sleeps:
            raise AssertionError(f"rollout loop still waiting after {self.sleeps} sleeps: it ignores the injected clock")
        self.now += seconds


class ScriptedBackend:
    def __init__(self, canary_requests: int, rollback_error: Exception | None = None):
        self.canary_requests = canary_requests
        self.rollback_error = rollback_error
        self.splits, self.rollbacks, self.promotions = [], [], []

    def now(self) -> float:
        return 0.0

    def set_split(self, champion_version, canary_version, percent):
        self.splits.append(percent)

    def windows(self, champion_version, canary_version, since):
        paired = min(self.canary_requests, 64)  # a good canary: no shift against the champion
        return (
            Window(str(champion_version), requests=5000),
            Window(
                str(canary_version),
                requests=self.canary_requests,
                paired_requests=paired,
                paired_rows=paired,
                paired_customers=paired,
            ),
        )

    def promote(self, version):
        self.promotions.append(version)

    def rollback(self, champion_version, canary_version):
        self.rollbacks.append(canary_version)
        if self.rollback_error is not None:
            raise self.rollback_error


@pytest.fixture
def registry_two_versions(kfct_home):
    """v1 champion, v2 challenger (versions without model files: the loop only reads and moves aliases/tags)."""
    from mlflow import MlflowClient

    from kfct.governance import registry

    registry.setup()
    c = MlflowClient()
    c.create_registered_model(MODEL)
    for _ in range(2):
        c.create_model_version(MODEL, source=(kfct_home / "nowhere").as_uri())
    c.set_registered_model_alias(MODEL, "champion", "1")
    c.set_registered_model_alias(MODEL, "challenger", "2")
    return c


def _tags(c, version):
    return c.get_model_version(MODEL, version).tags


def test_not_enough_traffic_within_the_wait_rolls_back_on_the_injected_clock(registry_two_versions):
    from kfct.governance import audit, registry

    t = FakeTime(max_sleeps=1000)
    backend = ScriptedBackend(canary_requests=3)
    res = run_rollout(
        MODEL,
        backend,
        Thresholds(min_requests=200),
        [10, 50, 100],
        bake_seconds=60.0,
        poll_seconds=1.0,
        sleep=t.sleep,
        clock=t.clock,
    )
    assert res.outcome == "rolled_back"
    assert "not enough traffic to judge within 180 s" in res.reasons[0] and "3 of 200" in res.reasons[0]
    assert backend.splits == [10] and backend.rollbacks == ["2"]
    assert res.steps[0]["seconds"] == 180.0 and t.sleeps == 180
    assert registry.aliases(MODEL) == {"champion": "1"}
    assert _tags(registry_two_versions, "2")["rejected"] == "true"
    assert [e["event"] for e in audit.read() if e["event"].startswith("rollout_")][-1] == "rollout_rolled_back"


def test_a_rollback_that_raises_leaves_the_registry_as_it_was(registry_two_versions):
    from kfct.governance import audit, registry

    t = FakeTime(max_sleeps=1000)
    backend = ScriptedBackend(canary_requests=0, rollback_error=ConnectionError("kserve API unreachable"))
    with pytest.raises(RolloutError) as err:
        run_rollout(
            MODEL, backend, Thresholds(min_requests=200), [10], bake_seconds=5.0, poll_seconds=1.0, sleep=t.sleep, clock=t.clock
        )
    msg = str(err.value)
    assert "rolling v2 back failed" in msg and "kserve API unreachable" in msg and "\n" not in msg
    # The rollback did not happen: nothing may claim it did.
    assert registry.aliases(MODEL) == {"champion": "1", "challenger": "2"}
    tags = _tags(registry_two_versions, "2")
    assert "rejected" not in tags and "rollout_status" not in tags
    events = [e for e in audit.read() if e["event"].startswith("rollout_")]
    assert events[-1]["event"] == "rollout_rollback_failed" and "kserve API unreachable" in events[-1]["error"]
    assert not any(e["event"] == "rollout_rolled_back" for e in events)


def test_enough_traffic_promotes_after_the_bake_time(registry_two_versions):
    from kfct.governance import registry

    t = FakeTime()
    backend = ScriptedBackend(canary_requests=5000)
    res = run_rollout(
        MODEL, backend, Thresholds(min_requests=200), [50, 100], bake_seconds=30.0, poll_seconds=2.0, sleep=t.sleep, clock=t.clock
    )
    assert res.outcome == "promoted", res.reasons
    assert [s["seconds"] for s in res.steps] == [30.0, 30.0] and res.seconds == 60.0
    assert registry.aliases(MODEL) == {"champion": "2"} and backend.promotions == ["2"]


def test_a_rollback_records_its_evidence_and_an_operator_can_retry(registry_two_versions):
    """Issue 22, item 1: a rollback records the figures it judged on (audit `evidence`), and a version a
    rollout rejected can be rolled out again by an operator (`kfct rollout --retry`, audited) instead of
    being refused forever by `kfct deploy --version`."""
    from kfct.components.rollout import retry_rejected
    from kfct.governance import audit, registry

    class Shifted(ScriptedBackend):
        def windows(self, champion_version, canary_version, since):
            champ = Window(str(champion_version), requests=5000, customers=5000)
            can = Window(
                str(canary_version),
                requests=5000,
                customers=5000,
                paired_requests=5000,
                paired_rows=5000,
                paired_customers=5000,
                label_shift=0.3,
                label_shift_se=0.01,
            )
            return champ, can

    t = FakeTime()
    res = run_rollout(
        MODEL, Shifted(5000), Thresholds(min_requests=200), [10], bake_seconds=5.0, poll_seconds=1.0, sleep=t.sleep, clock=t.clock
    )
    assert res.outcome == "rolled_back" and "predicted churn rate shift +30.00%" in res.reasons[0]
    ev = [e for e in audit.read() if e["event"] == "rollout_rolled_back"][-1]
    assert ev["evidence"]["canary"]["label_shift"] == 0.3 and ev["evidence"]["canary"]["paired_customers"] == 5000
    assert ev["evidence"]["percent"] == 10 and ev["evidence"]["verdict"] == "fail"
    assert _tags(registry_two_versions, "2")["rejected"] == "true"

    with pytest.raises(RolloutError, match="is not rejected"):
        retry_rejected(MODEL, "1")
    out = retry_rejected(MODEL, "2", operator="ops")
    assert "predicted churn rate shift" in out["previous_reason"]
    tags = _tags(registry_two_versions, "2")
    assert tags["rejected"] == "false" and tags["rollout_status"] == "retry" and "rejected_reason" not in tags
    assert registry.aliases(MODEL) == {"champion": "1", "challenger": "2"}
    ev = [e for e in audit.read() if e["event"] == "rollout_retry"][-1]
    assert ev["operator"] == "ops" and ev["version"] == "2"
    res = run_rollout(
        MODEL,
        ScriptedBackend(5000),
        Thresholds(min_requests=200),
        [100],
        bake_seconds=5.0,
        poll_seconds=1.0,
        sleep=t.sleep,
        clock=t.clock,
    )
    assert res.outcome == "promoted" and registry.aliases(MODEL) == {"champion": "2"}


class _Unrouted(ScriptedBackend):
    """The split cannot be applied: the route lost the canary's weight (as `ClusterBackend.set_split`
    raises when `wait_canary_ready` finds no HTTPRoute weight)."""

    def set_split(self, champion_version, canary_version, percent):
        super().set_split(champion_version, canary_version, percent)
        raise RolloutError("canary v2 of kfct/m gets no traffic: no HTTPRoute carries its weight")


class _NoFigures(ScriptedBackend):
    def windows(self, champion_version, canary_version, since):
        raise RolloutError("Prometheus http://127.0.0.1:9 unreachable: ConnectError")


@pytest.mark.parametrize("backend_cls,why", [(_Unrouted, "gets no traffic"), (_NoFigures, "Prometheus")])
def test_an_infrastructure_failure_aborts_without_rejecting_the_model(registry_two_versions, backend_cls, why):
    """Sibling of issue 20, item 2: a rollout stopped by the infrastructure (route weight lost, figures
    unreachable) sends traffic back to the champion but does not tag the model `rejected`: alias
    `challenger` stays on it and the cause is audited as `rollout_aborted`. Before the fix the version
    was tagged rejected (route) or the loop raised with the canary still taking traffic (figures)."""
    from kfct.governance import audit, registry

    t = FakeTime(max_sleeps=1000)
    backend = backend_cls(canary_requests=5000)
    res = run_rollout(
        MODEL, backend, Thresholds(min_requests=200), [10, 100], bake_seconds=5.0, poll_seconds=1.0, sleep=t.sleep, clock=t.clock
    )
    assert res.outcome == "aborted" and why in res.reasons[0], res.reasons
    assert backend.rollbacks == ["2"] and backend.promotions == []  # traffic back to the champion all the same
    assert registry.aliases(MODEL) == {"champion": "1", "challenger": "2"}
    tags = _tags(registry_two_versions, "2")
    assert "rejected" not in tags and tags["rollout_status"] == "aborted"
    events = [e for e in audit.read() if e["event"].startswith("rollout_")]
    assert events[-1]["event"] == "rollout_aborted" and events[-1]["cause"] == "infrastructure"
    assert why in events[-1]["reason"] and not any(e["event"] == "rollout_rolled_back" for e in events)
