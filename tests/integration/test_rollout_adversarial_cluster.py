"""Issue 22, item 1, on the cluster path: no client can steer a rollout judged through Prometheus.

A cluster rollout (`ClusterBackend`) used to judge each arm's predicted churn rate and p99 over
whatever rows the arm received, read from Prometheus: a client chooses both. Now the canary's
predictor pod also loads the champion (KFCT_PAIRED_REFERENCE_VERSION, written by the deploy stage's
`build_canary` / `build_inference_service`) and scores its requests with it too, exporting
`kfct_paired_*` per customer shard; `PrometheusMetrics.paired` reads them with PromQL and the decision
core judges them with the same `paired_groups` / `_judge_paired` as the local path.

Real parts: two `python -m kfct.serving` processes (the ServingRuntime's command), the champion pod
and the canary pod (its env taken from the deploy's own `build_canary`), on the serving test registry;
the loopback Prometheus (tests/e2e/prometheus.py, Prometheus v3.x query API and PromQL semantics)
scraping their real /metrics with the `service` label the ServiceMonitor relabels in; the real
`ClusterBackend.windows` and `rollout_version`.

Emulated (the InferenceService side is held by tests/e2e/test_canary_path.py): the split. KServe
0.20.0 (kserve/kserve aaac4e294, pkg/controller/v1beta1/inferenceservice/reconcilers/knative/
ksvc_reconciler.go, lines 134-158) gives the latest revision `canaryTrafficPercent` and the previous
rolled-out one the rest as Knative traffic targets, which Knative's ingress splits by weight per
request (not sticky by any id): `Split.pick`. The attacker gets more than that split gives it: every
one of its requests reaches the canary pod directly (as if it retried until `x-kfct-model-version`
named the canary).

Attackers (tests/integration/test_rollout_adversarial.py's, aimed at the canary pod): `pinned` (one
id, 1,000 high-risk rows a request), `batches` (1,000-row batches), `dilution` (the riskiest rows, one
id, against a canary that under-predicts churn). A good canary must be promoted, a bad one (`flipped`,
`timid`) rolled back; the suite counts wrong decisions and asserts there are none.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.e2e.prometheus import LoopbackPrometheus
from tests.integration.test_rollout_adversarial import _TIMID, _by_risk, _timid_version
from tests.servingkit import MODEL_NAME, Client, free_port, records, serving_env, serving_registry, wait_for  # noqa: F401

pytestmark = pytest.mark.slow

# Longer bakes than the local suite's: every figure here travels through scrapes (0.5 s apart, slower
# on a loaded machine) and `increase()` needs two samples of a series inside the step's range.
CFG = {
    "rollout": {
        "steps": [20, 50, 100],
        "bake_seconds": 8.0,
        "poll_seconds": 1.0,
        "min_requests": 30,
        "min_customers": 20,
        "max_error_rate_increase": 0.02,
        "max_p99_latency_ratio": 1.5,
        "min_p99_latency_delta_ms": 20,
        "max_churn_rate_shift": 0.10,
    }
}
RUNS = [
    ("pinned", "good_b"),
    ("pinned", "flipped"),
    ("batches", "good_b"),
    ("batches", "flipped"),
    ("dilution", "good_b"),
    ("dilution", "timid"),
]
CHAMPION_SVC = f"{MODEL_NAME}-predictor"
PACE = 0.01  # seconds an honest client waits between its requests


def canary_svc(version: str) -> str:
    from kfct.cluster.kserve_isvc import canary_name, predictor_workload

    return predictor_workload(MODEL_NAME, canary_name(version))


def canary_pod_env(version: str, champion: str) -> dict[str, str]:
    """The env the deploy stage gives a Standard-mode canary's predictor (`build_canary`)."""
    from kfct.cluster.kserve_isvc import build_canary

    spec = build_canary(
        MODEL_NAME, version, 20, storage_uri=f"s3://models/{version}", sha256="0" * 64, reference_version=champion
    )
    return {e.name: e.value for e in spec.predictor.model.env if e.name == "KFCT_PAIRED_REFERENCE_VERSION"}


class Pod:
    """A predictor pod's process: `python -m kfct.serving --version V` with the pod's env."""

    def __init__(self, home, version: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = dict(os.environ, KFCT_HOME=str(home), PYTHONPATH=str(Path.cwd()), **(env or {}))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kfct.serving",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--version",
                version,
                "--no-prediction-log",
            ],
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.client = Client(self.url)

    def ready(self) -> None:
        def up():
            try:
                return self.client.request("GET", "/v2/health/ready")[0] == 200
            except OSError:
                return False

        wait_for(up, timeout=120, interval=0.25, what=f"pod {self.url}")

    def stop(self) -> str:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out.decode(errors="replace")


class Split:
    """Knative's weighted traffic targets (see the module docstring): per request, the canary with
    probability canaryTrafficPercent / 100."""

    def __init__(self):
        self.percent = 0.0
        self.rng = random.Random(3)
        self.lock = threading.Lock()

    def pick(self) -> str:
        with self.lock:
            return "canary" if self.rng.random() * 100 < self.percent else "champion"


class Honest:
    """Clients with fresh ids, one row a request, sent through the split, at most ~100 requests a
    second each (PACE): ~300 customers reach a 20 % canary in a step, ten times `min_customers`.
    Sent flat out (~270 a second each, measured) they spent a third of the test's CPU on requests
    no judgement needed, on a 2-core machine that other tests share."""

    def __init__(self, urls: dict[str, str], split: Split, seed: int):
        self.clients = {k: Client(u) for k, u in urls.items()}
        self.split, self.pool, self.rng = split, records(400, seed=seed), random.Random(seed)
        self.errors: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            rec = dict(self.rng.choice(self.pool), customer_id=f"T-{self.rng.getrandbits(48):012x}")
            status, body, _ = self.clients[self.split.pick()].predict(MODEL_NAME, [rec])
            self.sent += 1
            if status != 200:
                self.errors.append(f"{status}: {str(body)[:200]}")
            self._stop.wait(PACE)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        for c in self.clients.values():
            c.close()


class Attacker:
    """Sends `strategy`'s requests straight to the canary pod until stopped."""

    def __init__(self, url: str, strategy: str, rows: list[dict]):
        self.url, self.strategy, self.rows, self.sent = url, strategy, rows, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _batch(self) -> list[dict]:
        if self.strategy == "pinned":
            return [dict(r, customer_id="A-pinned") for r in self.rows[:1000]]
        if self.strategy == "batches":
            return [dict(r, customer_id=f"B-{i}") for i, r in enumerate(self.rows[1000:2000])]
        return [dict(r, customer_id="A-pinned") for r in self.rows[:600]]

    def _run(self):
        c = Client(self.url, timeout=30)
        try:
            while not self._stop.is_set():
                if c.predict(MODEL_NAME, self._batch())[0] == 200:
                    self.sent += 1
                self._stop.wait(0.1)
        finally:
            c.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)


def _backend(prom_url: str, split: Split, champion: str, canary: str):
    """The real `ClusterBackend` (its Prometheus windows, its paired judgement); only the InferenceService
    calls are replaced by the split above (test_canary_path holds those against the emulated API)."""
    from kfct.components.rollout import ClusterBackend

    class SplitBackend(ClusterBackend):
        def set_split(self, champion_version, canary_version, percent):
            split.percent = float(percent)

        def workloads(self, champion_version, canary_version):
            return f'service="{CHAMPION_SVC}"', f'service="{canary_svc(canary_version)}"'

        def promote(self, version):
            split.percent = 100.0

        def rollback(self, champion_version, canary_version):
            split.percent = 0.0

    return SplitBackend(MODEL_NAME, isvc_name=MODEL_NAME, namespace="kfct", prometheus_url=prom_url)


def _one(env, pods: dict, prom, strategy: str, role: str, rows: list[dict]) -> dict:
    from kfct.components.rollout import rollout_version
    from kfct.config import load_config
    from kfct.governance import registry
    from tests.servingkit import reset_registry

    reset_registry(env)
    version = _TIMID["v"] if role == "timid" else env.versions[role]
    c = registry.client()
    for key in ("rejected", "rejected_reason", "rollout_status"):
        if key in (c.get_model_version(MODEL_NAME, version).tags or {}):
            c.delete_model_version_tag(MODEL_NAME, version, key)
    registry.set_alias(MODEL_NAME, "challenger", version, reason="test: canary deployed")
    split = Split()
    urls = {"champion": pods["champion"].url, "canary": pods[role].url}
    with prom.lock:  # scrape the two pods of this rollout only (what a ServiceMonitor selects)
        prom.targets = {pods["champion"].url: {"service": CHAMPION_SVC}, pods[role].url: {"service": canary_svc(version)}}
    backend = _backend(prom.url, split, env.versions["good_a"], version)
    with Honest(urls, split, 5) as h1, Honest(urls, split, 6) as h2, Attacker(urls["canary"], strategy, rows) as att:
        res = rollout_version(MODEL_NAME, load_config(overrides=CFG), backend, canary_version=version)
    want = "promoted" if role == "good_b" else "rolled_back"
    return {
        "strategy": strategy,
        "canary": role,
        "want": want,
        "got": res.outcome,
        "wrong": res.outcome != want,
        "attacker_requests": att.sent,
        "honest_requests": h1.sent + h2.sent,
        "honest_errors": (h1.errors + h2.errors)[:3],
        "reasons": res.reasons,
        "steps": [{"percent": s["percent"], "verdict": s["verdict"], "canary": s["canary"]} for s in res.steps],
    }


def test_no_steering_strategy_decides_the_canary_on_the_cluster_path(serving_env, tmp_path):
    _timid_version(serving_env)
    rows = _by_risk(_TIMID["risk"])
    champion = serving_env.versions["good_a"]
    canaries = {"good_b": serving_env.versions["good_b"], "flipped": serving_env.versions["flipped"], "timid": _TIMID["v"]}
    pods: dict[str, Pod] = {"champion": Pod(serving_env.home, champion)}
    for role, v in canaries.items():
        env = canary_pod_env(v, champion)
        assert env == {"KFCT_PAIRED_REFERENCE_VERSION": champion}  # what the deploy stage writes
        pods[role] = Pod(serving_env.home, v, env)
    runs, logs = [], {}
    try:
        for p in pods.values():
            p.ready()
        with LoopbackPrometheus(interval=0.5) as prom:
            for strategy, role in RUNS:
                runs.append(_one(serving_env, pods, prom, strategy, role, rows))
            assert any("kfct_paired_label_flips_total" in q for q in prom.queries)
    finally:
        for role, p in pods.items():
            logs[role] = p.stop()[-2000:]
    wrong = [r for r in runs if r["wrong"]]
    report = {"runs": len(runs), "wrong_decisions": len(wrong), "detail": runs}
    (tmp_path / "rollout-adversarial-cluster.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\ncluster-path rollout adversarial suite: {len(runs)} rollouts, {len(wrong)} wrong decisions")
    for r in runs:
        print(
            f"  {r['strategy']:9s} {r['canary']:8s} want {r['want']:11s} got {r['got']:11s} "
            f"(attacker {r['attacker_requests']}, honest {r['honest_requests']} requests) {'; '.join(r['reasons'])[:260]}"
        )
    assert not wrong, (json.dumps(wrong, indent=1, default=str)[:6000], {k: v[-800:] for k, v in logs.items()})
