"""Serving follows the registry aliases (issue 9 #13): the pure rule, and deploy's split-file convergence."""

from __future__ import annotations

from kfct.governance.convergence import isvc_changes, split_changes


def test_stale_champion_pin_follows_the_alias():
    changes, reasons = split_changes("1", None, 0.0, "canary", {"champion": "2"})
    assert changes == {"champion_version": "2"} and "v1 -> v2" in reasons[0]


def test_agreeing_state_needs_nothing():
    assert split_changes("2", "3", 10.0, "canary", {"champion": "2", "challenger": "3"}) == ({}, [])
    assert split_changes("1", None, 0.0, "canary", {}) == ({}, [])  # nothing registered: the file stands


def test_canary_without_challenger_alias_is_closed():
    changes, reasons = split_changes("2", "3", 10.0, "canary", {"champion": "2", "challenger": "4"})
    assert changes == {"canary_version": None, "canary_percent": 0.0, "mode": "canary"}
    assert "holds no challenger alias" in reasons[0]
    changes, _ = split_changes("2", "3", 0.0, "shadow", {"champion": "2", "challenger": "5"})
    assert changes["canary_version"] is None
    assert split_changes("2", "3", 40.0, "canary", {"champion": "2"}) == ({}, [])  # opened by hand, no alias


def test_promoted_canary_is_closed_and_champion_follows():
    changes, _ = split_changes("2", "3", 50.0, "canary", {"champion": "3"})
    assert changes == {"champion_version": "3", "canary_version": None, "canary_percent": 0.0, "mode": "canary"}


def test_converge_core_rewrites_a_stale_split_file(kfct_home):
    from kfct.components.deploy import converge_serving
    from kfct.contracts.split_state import SplitState, read_state, state_path, write_state
    from kfct.governance import audit, registry
    from tests.registrykit import log_tiny_model

    registry.setup()
    for tag in ("a", "b"):
        uri, rid = log_tiny_model(tag)
        registry.register_once(uri, "conv", {}, rid)
    registry.set_alias("conv", "champion", "2")
    path = state_path("conv", kfct_home)
    write_state(SplitState(model_name="conv", champion_version="1", canary_version="2", canary_percent=10), path)
    out = converge_serving("conv", "local")
    st = read_state(path)
    assert (st.champion_version, st.canary_version, st.canary_percent) == ("2", None, 0.0)
    assert out["changes"]["champion_version"] == "2"
    assert next(e for e in audit.read() if e["event"] == "serving_converged")["aliases"] == {"champion": "2"}
    assert converge_serving("conv", "local")["changes"] == {}


def test_deploy_of_a_superseded_version_moves_nothing(kfct_home):
    """Run A registered v1, run B's v2 became champion since: A's deploy leaves no stray challenger."""
    from kfct.components.deploy import deploy_version
    from kfct.config import load_config
    from kfct.contracts.split_state import read_state, state_path
    from kfct.governance import registry
    from tests.registrykit import log_tiny_model

    registry.setup()
    for tag in ("a", "b"):
        uri, rid = log_tiny_model(tag)
        registry.register_once(uri, "sup", {}, rid)
    registry.set_alias("sup", "champion", "2")
    out = deploy_version("sup", "1", load_config(), target="local", require_alias=True)
    assert out["mode"] == "superseded" and out["alias"] is None
    assert registry.aliases("sup") == {"champion": "2"}
    assert read_state(state_path("sup", kfct_home)).champion_version == "2"


def _isvc(served: str | None, canary_percent: float | None = None) -> dict:
    predictor = {} if canary_percent is None else {"canaryTrafficPercent": canary_percent}
    return {"metadata": {"annotations": {"kfct/model-version": served} if served else {}}, "spec": {"predictor": predictor}}


def test_inference_service_follows_the_champion_alias():
    changes, reasons = isvc_changes(_isvc("1"), {"champion": "2"})
    assert changes == {"champion_version": "2"} and reasons == ["InferenceService served v1, alias champion is v2"]
    assert isvc_changes(None, {"champion": "2"})[0] == {"champion_version": "2"}  # none yet: create it
    assert isvc_changes(_isvc("2"), {"champion": "2"}) == ({}, [])
    assert isvc_changes(_isvc("1"), {}) == ({}, [])  # nothing registered: what serves stands


def test_inference_service_mid_canary_belongs_to_the_rollout():
    aliases = {"champion": "2", "challenger": "3"}
    assert isvc_changes(_isvc("3", canary_percent=10), aliases) == ({}, [])
    assert isvc_changes(_isvc("3", canary_percent=100), aliases)[0] == {"champion_version": "2"}  # promoted by hand
    assert isvc_changes(_isvc("3"), aliases)[0] == {"champion_version": "2"}  # no split: the challenger serves alone
    assert isvc_changes(_isvc("4", canary_percent=10), aliases)[0] == {"champion_version": "2"}  # not the challenger
