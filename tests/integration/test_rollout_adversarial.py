"""Issue 22, item 1: a rollout no client can steer. An adversarial suite.

A client that knows the system (the README says the split is sticky by `customer_id`, and
`x-kfct-model-version` says which arm answered) used to decide the canary's fate: one id
pinned to the canary with 3,000 high-risk rows got a good canary rolled back ("churn rate
52 % vs 23 %"), 1,000-row batches sent only to the canary failed it on p99, and diluting a
bad canary's rows carried it through. The rollout now judges the canary against the
champion on the same requests (the server scores the canary's requests with the champion
too), per row, each customer weighing one, a dominating customer reported and left out.

For each steering strategy, under honest background traffic (fresh customer ids), a good
canary must be promoted and a bad one rolled back, over REPEATS runs; the suite writes its
report (`rollout-adversarial.json` in the test's tmp dir, and stdout) counting wrong decisions,
and asserts there are none.

Attackers (each a thread sending while the rollout runs):
- `pinned`: one customer id that the sticky split puts on the canary, batches of high-risk rows;
- `batches`: 1,000-row batches, every id on the canary arm (the canary answers all of them);
- `dilution`: rows chosen so the canary's own positive rate matches the champion's (high-risk
  rows for a canary that under-predicts churn), pinned to the canary.
The bad canaries: `flipped` (1 - p) and `timid` (the champion's trees with a threshold that
calls ~40 % of the champion's churners: ~10 % churn where the champion says ~25 %).
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from tests.servingkit import MODEL_NAME, Client, Traffic, records, serving_env, serving_registry, wait_for  # noqa: F401

pytestmark = pytest.mark.slow

REPEATS = 2
CFG = {
    "rollout": {
        "steps": [20, 50, 100],
        "bake_seconds": 1.5,
        "poll_seconds": 0.25,
        "min_requests": 40,
        "min_customers": 20,
        "max_error_rate_increase": 0.02,
        "max_p99_latency_ratio": 1.5,
        "min_p99_latency_delta_ms": 20,
        "max_churn_rate_shift": 0.10,
    }
}
STRATEGIES = {"pinned": ("flipped",), "batches": ("flipped",), "dilution": ("timid",)}

_TIMID: dict = {}


def _timid_version(serving_env) -> str:
    """Register (once per session) a canary that under-predicts churn: the champion's own model
    with a threshold raised so that it calls ~40 % of the champion's churners."""
    if "v" in _TIMID:
        return _TIMID["v"]
    import mlflow

    from kfct.data.datagen import generate
    from kfct.evidence.model import ChurnModel
    from kfct.governance import registry

    champ = registry.load_version(MODEL_NAME, version=serving_env.versions["good_a"]).model
    ref = generate(4000, seed=404).drop(columns=["churned"])
    p = champ.predict_positive(ref)
    share = float((p >= champ.threshold).mean())
    timid = ChurnModel(champ.encoder, champ.estimator, float(np.quantile(p, 1.0 - 0.4 * share)))
    exp = registry.setup()
    with mlflow.start_run(experiment_id=exp, run_name="serving-test-timid"):
        info = registry.log_model(timid, ref.head(5))
    _TIMID["v"] = registry.register(info["model_uri"], MODEL_NAME, {"model_sha256": info["model_sha256"], "test_role": "timid"})
    _TIMID["risk"] = champ  # to rank rows by risk
    return _TIMID["v"]


def _by_risk(champ, n: int = 3000) -> list[dict]:
    import pandas as pd

    recs = records(n, seed=909)
    p = champ.predict_positive(pd.DataFrame(recs).drop(columns=["customer_id"]))
    return [recs[i] for i in np.argsort(-p)]  # riskiest first


class Attacker:
    """Sends `strategy`'s requests until stopped; counts what it sent."""

    def __init__(self, url: str, strategy: str, canary_version: str, rows: list[dict]):
        from kfct.serving.routing import to_canary

        self.url, self.strategy, self.rows = url, strategy, rows
        salt = f"{MODEL_NAME}:{canary_version}"
        # an id the sticky split keeps on the canary from the first step (20 %) on
        self.pinned = next(f"A-{i}" for i in range(100_000) if to_canary(f"A-{i}", 20.0, salt))
        self.canary_ids = [f"B-{i}" for i in range(200_000) if to_canary(f"B-{i}", 20.0, salt)][:1000]
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"attacker-{strategy}")

    def _batch(self) -> list[dict]:
        if self.strategy == "pinned":
            return [dict(r, customer_id=self.pinned) for r in self.rows[:1000]]  # high-risk, one id
        if self.strategy == "batches":
            return [dict(r, customer_id=cid) for r, cid in zip(self.rows[1000:2000], self.canary_ids)]
        return [dict(r, customer_id=self.pinned) for r in self.rows[:600]]  # dilution: the riskiest rows

    def _run(self):
        c = Client(self.url, timeout=30)
        try:
            while not self._stop.is_set():
                if c.predict(MODEL_NAME, self._batch())[0] == 200:
                    self.sent += 1
                self._stop.wait(0.05)
        finally:
            c.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)


def _one(serving_env, tmp_path, strategy: str, role: str, rows: list[dict]) -> dict:
    from kfct.components.deploy import deploy_version
    from kfct.components.rollout import LocalRouterBackend, rollout_version
    from kfct.config import load_config
    from kfct.serving.server import start_in_thread
    from tests.servingkit import reset_registry

    reset_registry(serving_env)
    version = _TIMID["v"] if role == "timid" else serving_env.versions[role]
    if role == "timid":
        from kfct.governance import registry

        c = registry.client()
        for key in ("rejected", "rejected_reason", "rollout_status"):
            if key in (c.get_model_version(MODEL_NAME, version).tags or {}):
                c.delete_model_version_tag(MODEL_NAME, version, key)
    split = tmp_path / f"split-{strategy}-{role}-{time.monotonic_ns()}.json"
    srv = start_in_thread(port=0, state_path=str(split), log_predictions=False, poll_seconds=0.1)
    try:
        cfg = load_config(overrides=CFG)
        deploy_version(MODEL_NAME, version, cfg, target="local", state_path=srv.state_path)
        wait_for(
            lambda: srv.router.route.canary is not None and srv.router.route.canary.loaded_version == version,
            what="canary loaded",
        )
        backend = LocalRouterBackend(MODEL_NAME, srv.url, state_path=srv.state_path)
        with Traffic(srv.url), Traffic(srv.url, seed=6), Attacker(srv.url, strategy, version, rows) as att:
            res = rollout_version(MODEL_NAME, cfg, backend)
        want = "promoted" if role == "good_b" else "rolled_back"
        return {
            "strategy": strategy,
            "canary": role,
            "want": want,
            "got": res.outcome,
            "wrong": res.outcome != want,
            "attacker_requests": att.sent,
            "reasons": res.reasons,
            "steps": [{"percent": s["percent"], "verdict": s["verdict"], "canary": s["canary"]} for s in res.steps],
        }
    finally:
        srv.stop()


def test_no_steering_strategy_decides_the_canary(serving_env, tmp_path):
    _timid_version(serving_env)
    rows = _by_risk(_TIMID["risk"])
    runs = []
    for _ in range(REPEATS):
        for strategy, bad_roles in STRATEGIES.items():
            for role in ("good_b", *bad_roles):
                runs.append(_one(serving_env, tmp_path, strategy, role, rows))
    wrong = [r for r in runs if r["wrong"]]
    report = {"runs": len(runs), "wrong_decisions": len(wrong), "detail": runs}
    (tmp_path / "rollout-adversarial.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\nrollout adversarial suite: {len(runs)} rollouts, {len(wrong)} wrong decisions")
    for r in runs:
        print(
            f"  {r['strategy']:9s} {r['canary']:8s} want {r['want']:11s} got {r['got']:11s} "
            f"(attacker {r['attacker_requests']} requests) {'; '.join(r['reasons'])[:220]}"
        )
    assert not wrong, json.dumps(wrong, indent=1, default=str)[:6000]
