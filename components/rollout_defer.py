"""A rollout with no live traffic to judge by: the canary is left deployed with a deadline.

`defer_rollout` gives the canary an owner (a deadline in the split file, audited);
`expire_deferred` (run by the next rollout) rolls back one whose deadline passed.
"""

import time
from pathlib import Path
from typing import Any

from kfct.components.rollout_decision import plan_expiry


def defer_rollout(
    model_name: str,
    version: str,
    reason: str,
    deadline_seconds: float,
    state_path: str | Path | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """No live traffic to judge by: leave the canary deployed, but give it an owner. The split
    file gets a deadline; past it every server routes the canary no traffic (the server's own
    watcher enforces it) and `expire_deferred` (run by the next rollout) rolls it back."""
    from kfct.contracts.split_state import read_state, update_state
    from kfct.governance import audit

    now = time.time() if now is None else now
    deadline = now + float(deadline_seconds)
    st = read_state(state_path) if state_path else None
    if state_path is not None and st is not None and st.canary_version == str(version):
        update_state(
            model_name,
            state_path,
            canary_deadline=deadline,
            reason=f"rollout deferred: {reason}; rolled back after the deadline unless a rollout owns it",
        )
    audit.record(
        "rollout_deferred",
        model_name=model_name,
        version=version,
        reason=reason,
        deadline=deadline,
        deadline_seconds=float(deadline_seconds),
    )
    return {"outcome": "deferred", "reason": reason, "deadline": deadline}


def expire_deferred(model_name: str, state_path: str | Path | None = None, now: float | None = None) -> dict[str, Any] | None:
    """Roll back a deferred canary whose deadline passed (split to 0, version tagged `rejected`,
    `challenger` removed, audited). Returns what it did, or None when nothing had expired."""
    from kfct.contracts.split_state import read_state, update_state
    from kfct.contracts.split_state import state_path as default_path
    from kfct.governance import audit, registry

    path = state_path or default_path(model_name)
    st = read_state(path)
    reason = plan_expiry(st, now)
    if st is None or reason is None or not st.canary_version:
        return None
    version = st.canary_version
    update_state(model_name, path, canary_version=None, canary_percent=0.0, mode="canary", canary_deadline=None, reason=reason)
    registry.setup()
    registry.set_version_tag(model_name, version, "rejected", "true")
    registry.set_version_tag(model_name, version, "rollout_status", "rejected")
    registry.set_version_tag(model_name, version, "rejected_reason", reason)
    if registry.alias_version(model_name, "challenger") == version:
        registry.delete_alias(model_name, "challenger", reason=reason)
    audit.record(
        "rollout_rolled_back", model_name=model_name, version=version, champion=st.champion_version, reason=reason, seconds=0.0
    )
    return {"outcome": "rolled_back", "version": version, "reason": reason}
