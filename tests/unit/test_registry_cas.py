"""Gate -> registration hand-off against a real MLflow store: compare-and-set, lock, idempotency.

Issue 9 #12: two challengers gated against v1 must not both move the champion; issue 12 #3:
a retried registration finds the version its run already made.
"""

from __future__ import annotations

import threading

import pytest

from kfct.config import load_config
from tests.registrykit import log_tiny_model, versions

NAME = "cas-model"


@pytest.fixture
def store(kfct_home):
    from kfct.governance import registry

    registry.setup()
    return kfct_home


def _champion_v1():
    from kfct.governance import registry

    uri, _rid = log_tiny_model("v1")
    v = registry.register(uri, NAME, {})
    registry.set_alias(NAME, "champion", v)
    return v


def test_compare_and_set_refuses_a_moved_alias(store):
    from kfct.governance import registry

    v1 = _champion_v1()
    uri, rid = log_tiny_model("v2")
    v2, _ = registry.register_once(uri, NAME, {}, rid)
    with registry.champion_lock(NAME) as lock:
        with pytest.raises(registry.AliasConflict, match=r"is v1 now, not vNone as gated"):
            registry.compare_and_set_alias(lock, NAME, "champion", None, v2)
        assert registry.alias_version(NAME, "champion") == v1
        registry.compare_and_set_alias(lock, NAME, "champion", v1, v2)
    assert registry.aliases(NAME) == {"champion": v2}


def test_register_once_is_idempotent_by_run_id(store):
    from kfct.governance import registry

    uri, rid = log_tiny_model("once")
    first = registry.register_once(uri, NAME, {"a": "1"}, rid)
    again = registry.register_once(uri, NAME, {"a": "1"}, rid)
    assert first == ("1", True) and again == ("1", False)
    assert versions(NAME) == [1]


def test_duplicate_version_of_one_run_is_removed(store):
    """What MLflow's own transport retry of a POST can leave: two versions of one run."""
    from kfct.governance import audit, registry

    uri, rid = log_tiny_model("dup")
    registry.register(uri, NAME, {})
    registry.register(uri, NAME, {})
    assert versions(NAME) == [1, 2]
    assert registry.register_once(uri, NAME, {}, rid) == ("1", False)
    assert versions(NAME) == [1]
    assert [e["version"] for e in audit.read() if e["event"] == "duplicate_version_removed"] == ["2"]


def test_threads_racing_at_the_gate_move_the_champion_once(store):
    """Four challengers, all gated against v1, register at once: one champion move, no strays."""
    from kfct.components.register import register_version
    from kfct.governance import audit

    v1 = _champion_v1()
    cfg = load_config(overrides={"rollout": {"enabled": False}, "gate": {"on_champion_moved": "block"}})
    runs = [log_tiny_model(f"c{i}") for i in range(4)]
    barrier = threading.Barrier(len(runs))
    results, errors = [], []

    def go(uri, rid):
        meta = {"mlflow_run_id": rid, "model_uri": uri, "model_sha256": "x"}
        decision = {"deploy": True, "reasons": ["ok"], "metrics": {}, "champion_version": v1}
        barrier.wait()
        try:
            results.append(register_version(meta, decision, cfg, NAME, "d", "sha", f"run-{rid[:6]}", "c"))
        except Exception as exc:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=r) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    moved = [r for r in results if r["version"]]
    blocked = [r for r in results if not r["version"]]
    assert len(moved) == 1 and len(blocked) == 3
    from kfct.governance import registry

    assert registry.aliases(NAME) == {"champion": moved[0]["version"]}
    assert versions(NAME) == [1, 2]  # blocked runs registered nothing
    for r in blocked:
        assert f"champion moved from v{v1} to v{moved[0]['version']} since the gate" in r["blocked"]
    events = [e["event"] for e in audit.read()]
    assert events.count("registration_blocked") == 3
    assert [e["version"] for e in audit.read() if e["event"] == "alias_moved"] == [v1, moved[0]["version"]]


def test_moved_champion_is_regated_against_the_new_one(store):
    from kfct.components.register import register_version
    from kfct.governance import registry

    v1 = _champion_v1()
    uri, rid = log_tiny_model("v2")
    v2, _ = registry.register_once(uri, NAME, {}, rid)
    registry.set_alias(NAME, "champion", v2)  # another run won the race
    cfg = load_config(overrides={"rollout": {"enabled": False}, "gate": {"on_champion_moved": "regate"}})
    seen = []

    def regate_fail(version):
        seen.append(version)
        return {"deploy": False, "reasons": ["roc_auc vs champion v2: worse"], "metrics": {}}

    uri3, rid3 = log_tiny_model("c3")
    meta = {"mlflow_run_id": rid3, "model_uri": uri3}
    decision = {"deploy": True, "reasons": [], "metrics": {}, "champion_version": v1}
    out = register_version(meta, decision, cfg, NAME, "d", "sha", "run-3", "c", regate=regate_fail)
    assert seen == [v2] and out["version"] == ""
    assert out["blocked"].startswith(f"champion moved from v{v1} to v{v2} since the gate: re-gated against v{v2}")
    assert registry.aliases(NAME) == {"champion": v2} and versions(NAME) == [1, 2]

    def regate_pass(version):
        return {"deploy": True, "reasons": ["better"], "metrics": {}, "champion_version": version}

    out = register_version(meta, decision, cfg, NAME, "d", "sha", "run-3", "c", regate=regate_pass)
    assert out["version"] == "3" and registry.aliases(NAME) == {"champion": "3"}
    mv = registry.client().get_model_version(NAME, "3")
    assert mv.tags[registry.GATED_TAG] == v2 and mv.tags[registry.REG_TAG] == "complete"


def test_rerun_of_a_finished_register_step_changes_nothing(store):
    from kfct.components.register import register_version
    from kfct.governance import registry

    cfg = load_config(overrides={"rollout": {"enabled": False}})
    uri, rid = log_tiny_model("first")
    meta = {"mlflow_run_id": rid, "model_uri": uri}
    decision = {"deploy": True, "reasons": [], "metrics": {}, "champion_version": None}
    a = register_version(meta, decision, cfg, NAME, "d", "sha", "run-1", "c")
    b = register_version(meta, decision, cfg, NAME, "d", "sha", "run-1", "c")
    assert a["version"] == b["version"] == "1" and b.get("resumed")
    assert versions(NAME) == [1] and registry.aliases(NAME) == {"champion": "1"}


def test_redacting_a_tracking_uri_without_a_host_keeps_it_usable():
    """A unix-socket database URI has credentials and no host: redaction raised TypeError
    (None + str), and `setup` redacts the tracking URI on every call (the retry's name)."""
    from kfct.governance.registry import _redact

    assert _redact("postgresql://kfct:s3cret@/mlflow?host=/run/postgresql") == "postgresql:///mlflow?host=/run/postgresql"
    assert _redact("http://kfct:s3cret@mlflow:5000/") == "http://mlflow:5000/"
