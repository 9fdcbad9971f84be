"""What the server counts: Prometheus series per model version, and an in-memory window.

Prometheus (`GET /metrics`, the KServe ModelServer's own endpoint and registry):

- `kfct_requests_total{model_name, model_version, role, protocol}`
- `kfct_request_errors_total{model_name, model_version, kind}` (kind: client | server; the
  rollout judges server errors only, each customer once: `WindowStats.failure_counts`)
- `kfct_request_latency_seconds{model_name, model_version}` histogram (sub-ms buckets), timed at
  the ASGI boundary (`kfct.serving.app.LatencyMiddleware`), so queueing on the event loop counts
- `kfct_prediction_probability{model_name, model_version}` histogram (prediction distribution)
- `kfct_predictions_total{model_name, model_version, label}`
- `kfct_model_info{model_name, model_version, role, sha256}` gauge, `kfct_canary_percent{model_name}`
- `kfct_prediction_log_rows_total`, `kfct_prediction_log_dropped_total`

The rollout on a cluster queries these through Prometheus. Locally it asks the
router's `GET /kfct/stats?since=T`, computed from `VersionStats`: a bounded deque
of per-request events per version, so a rollout step can look at exactly the
requests made since it changed the split (Prometheus counters cannot be windowed
that precisely without a Prometheus).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

LATENCY_BUCKETS = (0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01,
                   0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))

_lock = threading.Lock()
_metrics = None


class _Metrics:
    def __init__(self):
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter("kfct_requests", "Prediction requests answered, per model version and role",
                                ["model_name", "model_version", "role", "protocol"])
        self.errors = Counter("kfct_request_errors", "Requests that failed (client: bad input, server: model error)",
                              ["model_name", "model_version", "kind"])
        self.latency = Histogram("kfct_request_latency_seconds",
                                 "Request latency as the client sees it: ASGI request start to last "
                                 "response byte, queueing included",
                                 ["model_name", "model_version"], buckets=LATENCY_BUCKETS)
        self.probability = Histogram("kfct_prediction_probability", "Predicted positive-class probability",
                                     ["model_name", "model_version"], buckets=PROBABILITY_BUCKETS)
        self.predictions = Counter("kfct_predictions", "Predictions by label", ["model_name", "model_version", "label"])
        self.model_info = Gauge("kfct_model_info", "Loaded model versions (1 = serving in this role)",
                                ["model_name", "model_version", "role", "sha256"])
        self.canary_percent = Gauge("kfct_canary_percent", "Share of traffic routed to the canary", ["model_name"])
        self.log_rows = Counter("kfct_prediction_log_rows", "Rows written to the prediction log")
        self.log_dropped = Counter("kfct_prediction_log_dropped", "Prediction log rows dropped (queue full)")


def prometheus() -> _Metrics:
    """Process-wide metric objects, created on first use (prometheus_client forbids duplicates)."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _Metrics()
    return _metrics


class VersionMetrics:
    """Pre-bound Prometheus children for one (model, version): no label lookups per request."""

    def __init__(self, model_name: str, version: str):
        m = prometheus()
        self.model_name = model_name
        self.version = version
        self._m = m
        self._requests: dict[tuple[str, str], object] = {}
        self.client_errors = m.errors.labels(model_name, version, "client")
        self.server_errors = m.errors.labels(model_name, version, "server")
        self.latency = m.latency.labels(model_name, version)
        self.probability = m.probability.labels(model_name, version)
        self.positive = m.predictions.labels(model_name, version, "1")
        self.negative = m.predictions.labels(model_name, version, "0")

    def request(self, role: str, protocol: str):
        key = (role, protocol)
        child = self._requests.get(key)
        if child is None:
            child = self._m.requests.labels(self.model_name, self.version, role, protocol)
            self._requests[key] = child
        return child

    def observe(self, role: str, protocol: str, latency: float, probs, labels) -> int:
        """Count one answered request; returns the number of positive labels."""
        self.request(role, protocol).inc()
        self.latency.observe(latency)
        if len(probs) > 8:
            observe_many(self.probability, probs)
        else:
            obs = self.probability.observe
            for p in probs:
                obs(p)
        pos = int(labels.sum()) if len(labels) > 1 else int(labels[0])
        if pos:
            self.positive.inc(pos)
        if len(labels) - pos:
            self.negative.inc(len(labels) - pos)
        return pos


def observe_many(hist_child, values) -> None:
    """Histogram.observe for many values at once: one bucket increment per bucket, not per value.

    Uses the histogram child's bucket list (prometheus_client 0.26, pinned); falls back
    to observing one by one if that layout ever changes.
    """
    bounds = getattr(hist_child, "_upper_bounds", None)
    buckets = getattr(hist_child, "_buckets", None)
    total = getattr(hist_child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for v in values:
            hist_child.observe(v)
        return
    arr = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(np.asarray(bounds, dtype=np.float64), arr, side="left")  # first bound >= value
    counts = np.bincount(idx, minlength=len(bounds))
    for i in np.flatnonzero(counts[: len(bounds)]).tolist():
        buckets[i].inc(int(counts[i]))
    total.inc(float(arr.sum()))


@dataclass
class WindowStats:
    """One version over a time window: what the rollout compares."""

    version: str
    requests: int = 0
    instances: int = 0
    client_errors: int = 0
    server_errors: int = 0
    customers: int = 0  # distinct senders (requests without an id count one each)
    error_customers: int = 0  # distinct senders with at least one server error
    positives: int = 0
    mean_probability: float = 0.0
    p50_latency_s: float = 0.0
    p99_latency_s: float = 0.0

    @property
    def errors(self) -> int:
        return self.client_errors + self.server_errors

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def failure_counts(self) -> tuple[int, int]:
        """(failures, trials) the rollout judges: server-side failures only (a client's bad
        input is refused the same way by any version), each customer counted once, so one
        sender cannot dominate a window. Without per-customer data (Prometheus), per request."""
        if self.customers:
            return self.error_customers, self.customers
        return self.server_errors, self.requests

    @property
    def server_error_rate(self) -> float:
        x, n = self.failure_counts
        return x / n if n else 0.0

    @property
    def positive_rate(self) -> float:
        return self.positives / self.instances if self.instances else 0.0

    def summary(self) -> dict:
        return {"version": self.version, "requests": self.requests, "error_rate": round(self.error_rate, 5),
                "p99_latency_ms": round(self.p99_latency_s * 1e3, 3), "positive_rate": round(self.positive_rate, 5)}

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(error_rate=self.error_rate, positive_rate=self.positive_rate)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "WindowStats":
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in keys})


# event kinds
OK, CLIENT_ERROR, SERVER_ERROR = 0, 1, 2


class VersionStats:
    """Bounded per-request event history of one version (wall-clock timestamps, so another
    process on the machine, such as `kfct rollout`, can ask for "since T")."""

    def __init__(self, version: str, maxlen: int = 200_000):
        self.version = version
        self.events: deque = deque(maxlen=maxlen)  # (t, kind, latency, instances, positives, prob_sum, customer)

    def ok(self, t: float, latency: float, instances: int, positives: int, prob_sum: float,
           customer: int = 0) -> None:
        self.events.append((t, OK, latency, instances, positives, prob_sum, customer))

    def error(self, t: float, kind: int, latency: float, customer: int = 0) -> None:
        self.events.append((t, kind, latency, 0, 0, 0.0, customer))

    def window(self, since: float | None = None, until: float | None = None) -> WindowStats:
        ev = list(self.events)  # deque snapshot (appends from the event loop thread are atomic)
        if since is not None:
            ev = [e for e in ev if e[0] >= since]
        if until is not None:
            ev = [e for e in ev if e[0] <= until]
        out = WindowStats(self.version)
        if not ev:
            return out
        arr = np.asarray(ev, dtype=np.float64)
        kind = arr[:, 1]
        out.requests = len(ev)
        out.client_errors = int((kind == CLIENT_ERROR).sum())
        out.server_errors = int((kind == SERVER_ERROR).sum())
        cust = arr[:, 6]
        out.customers = int(len(np.unique(cust)))
        out.error_customers = int(len(np.unique(cust[kind == SERVER_ERROR])))
        out.instances = int(arr[:, 3].sum())
        out.positives = int(arr[:, 4].sum())
        out.mean_probability = float(arr[:, 5].sum() / out.instances) if out.instances else 0.0
        lat = arr[:, 2]
        out.p50_latency_s = float(np.percentile(lat, 50))
        out.p99_latency_s = float(np.percentile(lat, 99))
        return out


def now() -> float:
    return time.time()
