"""Serving test kit: a temp MLflow registry holding good and deliberately bad versions,
feature records, a traffic generator, and loopback fakes of the cluster APIs.

The bad canaries are real registered models whose estimator misbehaves in one way:
- `FaultyEstimator` raises on about a third of single-row calls (a canary that errors),
- `SlowEstimator` sleeps before answering (a slow canary),
- `FlippedEstimator` returns 1 - p (a canary that flips predictions).
They are pickled by value (cloudpickle) so any process can load them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.faultkit.servers import free_port

MODEL_NAME = "churn-classifier"
ROLES = ("good_a", "good_b", "faulty", "slow", "flipped")


class FaultyEstimator:
    """Fails on single-row calls whose content hashes to 0 mod 3 (deterministic, ~1/3 of requests)."""

    def __init__(self, booster):
        self.booster = booster

    def predict_proba(self, X):
        if X.shape[0] == 1 and int(abs(float(X.sum())) * 1000) % 3 == 0:
            raise RuntimeError("injected fault: this canary fails")
        p = np.asarray(self.booster.inplace_predict(X), dtype=np.float64)
        return np.column_stack([1 - p, p])


class SlowEstimator:
    def __init__(self, booster, delay: float = 0.06):
        self.booster = booster
        self.delay = delay

    def predict_proba(self, X):
        time.sleep(self.delay)
        p = np.asarray(self.booster.inplace_predict(X), dtype=np.float64)
        return np.column_stack([1 - p, p])


class FlippedEstimator:
    def __init__(self, booster):
        self.booster = booster

    def predict_proba(self, X):
        p = 1.0 - np.asarray(self.booster.inplace_predict(X), dtype=np.float64)
        return np.column_stack([1 - p, p])


def small_cfg():
    from kfct.config import load_config

    return load_config(overrides={"train": {"xgboost": {"n_estimators": 120}}})


def train_small(seed: int, rows: int = 3000):
    """A real ChurnModel from the lead's featurize/train cores on generated data."""
    from kfct.components.featurize import featurize_core
    from kfct.components.train import train_core
    from kfct.data.datagen import generate

    cfg = small_cfg()
    tr, va, te, enc = featurize_core(generate(rows, seed=seed), cfg)
    model, *_ = train_core(tr, va, cfg, encoder=enc)
    return model, te


def make_models() -> tuple[dict, object]:
    """{role: ChurnModel}, plus an input example frame."""
    from kfct.data.datagen import generate
    from kfct.evidence.model import ChurnModel

    good_a, te = train_small(seed=101)
    good_b, _ = train_small(seed=202)
    ref = generate(4000, seed=303).drop(columns=["churned"])
    # A good canary decides at the same rate as the champion: match its positive share.
    share = float((good_a.predict_positive(ref) >= good_a.threshold).mean())
    good_b.threshold = float(np.quantile(good_b.predict_positive(ref), 1.0 - share))
    booster = good_a.estimator
    models = {
        "good_a": good_a,
        "good_b": good_b,
        "faulty": ChurnModel(good_a.encoder, FaultyEstimator(booster), good_a.threshold),
        "slow": ChurnModel(good_a.encoder, SlowEstimator(booster), good_a.threshold),
        "flipped": ChurnModel(good_a.encoder, FlippedEstimator(booster), good_a.threshold),
    }
    return models, te.drop(columns=["churned"])


@dataclass
class ServingRegistry:
    home: Path
    versions: dict
    model_name: str = MODEL_NAME
    thresholds: dict = field(default_factory=dict)


def build_registry(home: Path) -> ServingRegistry:
    """Register every role in a temp MLflow SQLite store under `home` (KFCT_HOME must point there)."""
    import cloudpickle
    import mlflow

    import tests.servingkit as kit
    from kfct.governance import registry

    cloudpickle.register_pickle_by_value(kit)
    models, example = make_models()
    exp = registry.setup()
    versions = {}
    for role in ROLES:
        with mlflow.start_run(experiment_id=exp, run_name=f"serving-test-{role}"):
            info = registry.log_model(models[role], example)
        versions[role] = registry.register(
            info["model_uri"], MODEL_NAME, {"model_sha256": info["model_sha256"], "test_role": role}
        )
    registry.set_alias(MODEL_NAME, "champion", versions["good_a"], reason="test setup")
    return ServingRegistry(home, versions, thresholds={r: models[r].threshold for r in ROLES})


def reset_registry(reg: ServingRegistry) -> None:
    """Champion back to good_a, no challenger, no rejection tags (tests move them)."""
    from kfct.governance import registry

    registry.setup()
    c = registry.client()
    if registry.alias_version(reg.model_name, "champion") != reg.versions["good_a"]:
        registry.set_alias(reg.model_name, "champion", reg.versions["good_a"], reason="test reset")
    registry.delete_alias(reg.model_name, "challenger", reason="test reset")
    for v in reg.versions.values():
        tags = c.get_model_version(reg.model_name, v).tags or {}
        for key in ("rejected", "rejected_reason", "rollout_status"):
            if key in tags:
                c.delete_model_version_tag(reg.model_name, v, key)


_BUILT: dict = {}


@pytest.fixture(scope="session")
def serving_registry(tmp_path_factory, seed_mlflow_store):
    """Built once per test session (test modules import this fixture, so pytest sees one
    definition per module; the cache keeps it to one registry)."""
    from kfct.runtime.settings import reset_settings

    if "registry" in _BUILT:
        return _BUILT["registry"]
    home = seed_mlflow_store(tmp_path_factory.mktemp("serving-registry") / "kfct-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KFCT_HOME", str(home))
        for var in ("KFCT_MLFLOW_TRACKING_URI", "KFCT_CONFIG", "KFCT_S3_ENDPOINT"):
            mp.delenv(var, raising=False)
        reset_settings()
        reg = build_registry(home)
    reset_settings()
    _BUILT["registry"] = reg
    return reg


@pytest.fixture
def serving_env(serving_registry, monkeypatch):
    """KFCT_HOME at the shared registry, aliases reset; yields the ServingRegistry."""
    from kfct.runtime.settings import reset_settings

    monkeypatch.setenv("KFCT_HOME", str(serving_registry.home))
    for var in ("KFCT_MLFLOW_TRACKING_URI", "KFCT_CONFIG", "KFCT_S3_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    reset_settings()
    reset_registry(serving_registry)
    default_split = serving_registry.home / "serving" / serving_registry.model_name / "split.json"
    default_split.unlink(missing_ok=True)  # each test starts without a canary
    yield serving_registry
    default_split.unlink(missing_ok=True)
    reset_settings()


# -- request helpers ---------------------------------------------------------------------------


def records(n: int, seed: int = 7) -> list[dict]:
    """Feature records (with customer_id) as a JSON client would send them: NaN -> null."""
    from kfct.data.datagen import generate

    df = generate(max(n, 2), seed=seed).drop(columns=["churned"]).head(n)
    out = []
    for rec in df.to_dict("records"):
        clean = {}
        for k, v in rec.items():
            if isinstance(v, (np.integer,)):
                v = int(v)
            elif isinstance(v, (np.floating, float)):
                v = None if np.isnan(v) else float(v)
            clean[k] = v
        out.append(clean)
    return out


def v2_body(recs: list[dict], types: dict | None = None) -> dict:
    """Columnar V2 request: one input per feature."""
    inputs = []
    for k in recs[0]:
        vals = [r[k] for r in recs]
        sample = next((v for v in vals if v is not None), None)
        dt = (types or {}).get(k) or ("BYTES" if isinstance(sample, str) else "INT64" if isinstance(sample, int) else "FP64")
        inputs.append({"name": k, "shape": [len(vals)], "datatype": dt, "data": vals})
    return {"inputs": inputs}


class Client:
    """Minimal keep-alive JSON client (http.client), cheap enough to generate load in tests."""

    def __init__(self, url: str, timeout: float = 10.0):
        from urllib.parse import urlparse

        u = urlparse(url)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body=None, raw: bytes | None = None, headers=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json", **(headers or {})}
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=h)
                resp = self.conn.getresponse()
                payload = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                try:
                    parsed = json.loads(payload) if payload else None
                except ValueError:
                    parsed = payload.decode(errors="replace")
                return resp.status, parsed, dict(resp.getheaders())
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                if attempt:
                    raise

    def predict(self, model: str, instances: list[dict], headers=None):
        return self.request("POST", f"/v1/models/{model}:predict", {"instances": instances}, headers=headers)

    def close(self):
        self.conn.close()


class Traffic:
    """Background single-instance V1 traffic with fresh customer ids; counts answers per version."""

    def __init__(self, url: str, model: str = MODEL_NAME, seed: int = 5, pool: int = 400):
        self.url, self.model = url, model
        self.pool = records(pool, seed=seed)
        self.rng = random.Random(seed)
        self.by_version: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="test-traffic")

    def _run(self):
        c = Client(self.url)
        try:
            while not self._stop.is_set():
                rec = dict(self.rng.choice(self.pool))
                rec["customer_id"] = f"T-{self.rng.getrandbits(48):012x}"
                status, body, _ = c.predict(self.model, [rec])
                self.sent += 1
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 200:
                    v = body["predictions"][0]["model_version"]
                    self.by_version[v] = self.by_version.get(v, 0) + 1
        finally:
            c.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def wait_for(cond, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        val = cond()
        if val:
            return val
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@dataclass
class ServerProcess:
    """A model server in a process of its own: its client while it runs, its output once stopped."""

    proc: subprocess.Popen
    client: Client
    output: bytes = b""


@contextlib.contextmanager
def server_process(args: list[str], home: Path, what: str):
    """`python -m ARGS --port <free port>` on the registry under `home`, yielded once it answers
    /v2/health/ready; stopped with SIGTERM on the way out (as a pod is), so the caller can check
    its exit code and `output` after the block."""
    port = free_port()
    env = dict(os.environ, KFCT_HOME=str(home), PYTHONPATH=str(Path.cwd()))
    proc = subprocess.Popen(
        [sys.executable, "-m", *args, "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    server = ServerProcess(proc, Client(f"http://127.0.0.1:{port}"))
    try:

        def ready():
            try:
                return server.client.request("GET", "/v2/health/ready")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout=90, interval=0.2, what=what)
        yield server
        server.client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            server.output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            server.output, _ = proc.communicate()


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")
