"""What crashed runs leave behind is settled and audited (issue 9 #14), on a real MLflow store."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from kfct.config import load_config
from tests.registrykit import log_tiny_model, versions

NAME = "rec-model"


@pytest.fixture
def store(kfct_home):
    from kfct.governance import registry

    registry.setup()
    return kfct_home


def test_run_is_dead_rules():
    from kfct.governance.reconcile import process_tags, run_is_dead

    me = process_tags()
    assert run_is_dead(me, int(time.time() * 1000), 60) is None  # this very process
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = {**me, "kfct.pid": gone.stdout.strip()}
    assert "is gone" in run_is_dead(dead, int(time.time() * 1000), 60)
    assert "rebooted" in run_is_dead({**me, "kfct.boot_id": "other"}, None, 60)
    elsewhere = {"kfct.host": "some-other-pod", "kfct.pid": "1"}
    assert run_is_dead(elsewhere, int((time.time() - 30) * 1000), 60) is None
    assert "lease 60 s" in run_is_dead(elsewhere, int((time.time() - 120) * 1000), 60)


def test_orphans_are_marked_and_audited(store):
    """A dead RUNNING run with a PENDING model, an orphan pending version, a pending one with an alias."""
    from kfct.governance import audit, registry
    from kfct.governance.reconcile import process_tags, reconcile

    # A training process killed mid-logging: run RUNNING, logged model PENDING, process gone.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    c = registry.client()
    exp_id = c.get_experiment_by_name("kfct-ct").experiment_id
    run = c.create_run(exp_id, tags={**process_tags(), "kfct.pid": gone.stdout.strip()})
    pending = c.create_logged_model(exp_id, name="model", source_run_id=run.info.run_id)
    # A live run of another host, recent: must be left alone.
    live = c.create_run(exp_id, tags={"kfct.host": "another-pod", "kfct.pid": "1"})

    uri, rid = log_tiny_model("orphan")
    registry.register_once(uri, NAME, {registry.REG_TAG: "pending"}, rid)  # v1: no alias
    uri2, rid2 = log_tiny_model("aliased")
    v2, _ = registry.register_once(uri2, NAME, {registry.REG_TAG: "pending"}, rid2)  # v2: alias moved, then crash
    registry.set_alias(NAME, "champion", v2)

    found = reconcile(NAME)
    kinds = sorted(e["event"] for e in found)
    assert kinds == ["orphan_version_found", "pending_model_marked", "registration_interrupted", "stale_run_marked"]
    c = registry.client()
    assert c.get_run(run.info.run_id).info.status == "KILLED"
    assert c.get_run(live.info.run_id).info.status == "RUNNING"
    assert str(c.get_logged_model(pending.model_id).status).endswith("FAILED")
    assert c.get_model_version(NAME, "1").tags[registry.REG_TAG] == "abandoned"
    assert c.get_model_version(NAME, "2").tags[registry.REG_TAG] == "complete"
    assert registry.aliases(NAME) == {"champion": "2"}
    assert reconcile(NAME) == []  # settled once, then quiet
    assert audit.verify().ok
    assert versions(NAME) == [1, 2]


def test_own_pending_version_is_resumed_not_abandoned(store):
    from kfct.components.register import register_version
    from kfct.governance import registry

    uri, rid = log_tiny_model("retry")
    registry.register_once(uri, NAME, {registry.REG_TAG: "pending", registry.GATED_TAG: ""}, rid)  # crashed try
    cfg = load_config(overrides={"rollout": {"enabled": False}})
    out = register_version(
        {"mlflow_run_id": rid, "model_uri": uri},
        {"deploy": True, "reasons": [], "metrics": {}},
        cfg,
        NAME,
        "d",
        "sha",
        "run-1",
        "c",
    )
    assert out["version"] == "1" and versions(NAME) == [1]
    assert registry.client().get_model_version(NAME, "1").tags[registry.REG_TAG] == "complete"
    assert registry.aliases(NAME) == {"champion": "1"}
