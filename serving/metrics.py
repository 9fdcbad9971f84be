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
- `kfct_model_ready{model_name}`, `kfct_model_load_failing{model_name, reason}` (why not ready, or why
  the last reload failed: registry_unreachable | store_unreachable | no_model | integrity | load_failed)
- paired scoring (a canary's requests scored by the champion too, `kfct.serving.router`), per
  `{model_name, model_version, reference_version}` (the version judged, the champion it is judged
  against) and customer `shard` (`kfct.contracts.window_stats.customer_shard`: a bounded label, so each shard
  weighs one in the rollout's judgement as each customer does locally):
  `kfct_paired_requests_total{shard}`, `kfct_paired_rows_total{shard}`,
  `kfct_paired_label_flips_total{shard, direction}` (up: the canary says 1 where the champion says 0;
  down: the reverse; the label shift's sum is up - down, as counters never decrease),
  `kfct_paired_probability_shift_total{shard, direction}` (sums of the positive / negative parts of
  canary - champion probability), `kfct_paired_seconds_per_row{arm}` histogram (arm: canary |
  champion, model time per row on the same requests) and `kfct_paired_slower_requests_total` (requests
  on which the canary took longer than the champion)
- `kfct_prediction_log_rows_total`, `kfct_prediction_log_dropped_total{reason}`,
  `kfct_prediction_log_backlog_rows`, `kfct_prediction_log_store_up`, `kfct_prediction_log_spill_disk_full`

The rollout on a cluster queries these through Prometheus. Locally it asks the
router's `GET /kfct/stats?since=T`, computed from `VersionStats`: a bounded deque
of per-request events per version, so a rollout step can look at exactly the
requests made since it changed the split (Prometheus counters cannot be windowed
that precisely without a Prometheus).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from kfct.contracts.window_stats import WindowStats, paired_window

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
# model time per row: microseconds for trees, up to a slow model's tens of milliseconds
PER_ROW_BUCKETS = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
PAIRED_LABELS = ["model_name", "model_version", "reference_version"]

_lock = threading.Lock()
_metrics = None


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(
            "kfct_requests",
            "Prediction requests answered, per model version and role",
            ["model_name", "model_version", "role", "protocol"],
        )
        self.errors = Counter(
            "kfct_request_errors",
            "Requests that failed (client: bad input, server: model error)",
            ["model_name", "model_version", "kind"],
        )
        self.latency = Histogram(
            "kfct_request_latency_seconds",
            "Request latency as the client sees it: ASGI request start to last response byte, queueing included",
            ["model_name", "model_version"],
            buckets=LATENCY_BUCKETS,
        )
        self.probability = BulkHistogram(
            "kfct_prediction_probability",
            "Predicted positive-class probability",
            ["model_name", "model_version"],
            buckets=PROBABILITY_BUCKETS,
        )
        self.predictions = Counter("kfct_predictions", "Predictions by label", ["model_name", "model_version", "label"])
        self.model_info = Gauge(
            "kfct_model_info",
            "Loaded model versions (1 = serving in this role)",
            ["model_name", "model_version", "role", "sha256"],
        )
        self.canary_percent = Gauge("kfct_canary_percent", "Share of traffic routed to the canary", ["model_name"])
        self.model_ready = Gauge("kfct_model_ready", "1 when a champion is loaded and answering", ["model_name"])
        self.model_load_failing = Gauge(
            "kfct_model_load_failing",
            "1 on the reason the last model load / reload failed (0 after a success)",
            ["model_name", "reason"],
        )
        self.paired_requests = Counter(
            "kfct_paired_requests", "Requests scored by this version and the champion", [*PAIRED_LABELS, "shard"]
        )
        self.paired_rows = Counter("kfct_paired_rows", "Rows scored by this version and the champion", [*PAIRED_LABELS, "shard"])
        self.paired_label_flips = Counter(
            "kfct_paired_label_flips",
            "Rows whose label differs from the champion's (up: 1 where it says 0)",
            [*PAIRED_LABELS, "shard", "direction"],
        )
        self.paired_probability_shift = Counter(
            "kfct_paired_probability_shift",
            "Sum of the positive (up) / negative (down, absolute) parts of probability minus the champion's",
            [*PAIRED_LABELS, "shard", "direction"],
        )
        self.paired_slower = Counter(
            "kfct_paired_slower_requests",
            "Paired requests on which this version's model time exceeded the champion's",
            PAIRED_LABELS,
        )
        self.paired_seconds_per_row = Histogram(
            "kfct_paired_seconds_per_row",
            "Model time per row on the paired requests (arm: canary | champion)",
            [*PAIRED_LABELS, "arm"],
            buckets=PER_ROW_BUCKETS,
        )
        self.log_rows = Counter("kfct_prediction_log_rows", "Rows written to the prediction log")
        self.log_dropped = Counter(
            "kfct_prediction_log_dropped", "Prediction log rows dropped (reason: queue_full | spill_full)", ["reason"]
        )
        self.log_backlog_rows = Gauge(
            "kfct_prediction_log_backlog_rows", "Prediction log rows waiting for the store (spilled to disk or in memory)"
        )
        self.log_store_up = Gauge(
            "kfct_prediction_log_store_up", "1 when the last prediction log write reached the store, 0 while it fails"
        )
        self.log_spill_disk_full = Gauge(
            "kfct_prediction_log_spill_disk_full", "1 while the prediction log spill directory refuses writes (disk full)"
        )


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

    def request(self, role: str, protocol: str) -> Any:
        key = (role, protocol)
        child = self._requests.get(key)
        if child is None:
            child = self._m.requests.labels(self.model_name, self.version, role, protocol)
            self._requests[key] = child
        return child

    def observe(self, role: str, protocol: str, latency: float, probs: np.ndarray, labels: np.ndarray) -> int:
        """Count one answered request; returns the number of positive labels."""
        self.request(role, protocol).inc()
        self.latency.observe(latency)
        self.probability.observe_many(probs)
        pos = int(labels.sum()) if len(labels) > 1 else int(labels[0])
        if pos:
            self.positive.inc(pos)
        if len(labels) - pos:
            self.negative.inc(len(labels) - pos)
        return pos


class PairedMetrics:
    """Prometheus side of paired scoring: one version judged against one reference (the champion).

    Every shard's series exist (at 0) from the start: `increase()` over a range sees a series only
    from its second sample on, so a shard first counted mid-window would lose its first request."""

    def __init__(self, model_name: str, version: str, reference: str):
        from kfct.contracts.window_stats import CUSTOMER_SHARDS

        m = prometheus()
        lab = (model_name, version, reference)
        self._shards = [
            (
                m.paired_requests.labels(*lab, str(i)),
                m.paired_rows.labels(*lab, str(i)),
                m.paired_label_flips.labels(*lab, str(i), "up"),
                m.paired_label_flips.labels(*lab, str(i), "down"),
                m.paired_probability_shift.labels(*lab, str(i), "up"),
                m.paired_probability_shift.labels(*lab, str(i), "down"),
            )
            for i in range(CUSTOMER_SHARDS)
        ]
        self._canary_s = m.paired_seconds_per_row.labels(*lab, "canary")
        self._champion_s = m.paired_seconds_per_row.labels(*lab, "champion")
        self._slower = m.paired_slower.labels(*lab)
        self._slower.inc(0)

    def observe(
        self,
        customer: int,
        canary_labels: np.ndarray,
        champion_labels: np.ndarray,
        canary_probs: np.ndarray,
        champion_probs: np.ndarray,
        canary_s: float,
        champion_s: float,
    ) -> None:
        from kfct.contracts.window_stats import customer_shard

        requests, rows, flips_up, flips_down, shift_up, shift_down = self._shards[customer_shard(customer)]
        n = len(canary_labels)
        requests.inc()
        rows.inc(n)
        dl = np.asarray(canary_labels, dtype=np.int64) - np.asarray(champion_labels, dtype=np.int64)
        dp = np.asarray(canary_probs, dtype=np.float64) - np.asarray(champion_probs, dtype=np.float64)
        flips_up.inc(int((dl > 0).sum()))
        flips_down.inc(int((dl < 0).sum()))
        shift_up.inc(float(dp[dp > 0].sum()))
        shift_down.inc(float(-dp[dp < 0].sum()))
        if canary_s > champion_s:
            self._slower.inc()
        per_row = max(n, 1)
        self._canary_s.observe(canary_s / per_row)
        self._champion_s.observe(champion_s / per_row)


class BulkHistogram:
    """A labelled Prometheus histogram that takes a whole request's values in one call.

    prometheus_client's `Histogram` observes one value at a time (a lock and a bucket
    search per value, 256 per batch request) and has no public bulk call; writing into its
    private bucket fields would break on any upgrade. This collector keeps the counts
    itself (numpy, one `bincount` per request) and is exported through prometheus_client's
    public custom-collector API, with exactly the series a `Histogram` would have
    (`_bucket{le}`, `_count`, `_sum`; no `_created`).
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float], registry: Any = None):
        from prometheus_client import REGISTRY

        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = [float(b) for b in buckets if float(b) != float("inf")] + [float("inf")]
        self._children: dict[tuple[str, ...], BulkHistogramChild] = {}
        self._lock = threading.Lock()
        (REGISTRY if registry is None else registry).register(self)

    def labels(self, *values: str) -> BulkHistogramChild:
        key = tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(self.labelnames)} label values expected, got {len(key)}")
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = BulkHistogramChild(self.bounds)
        return child

    def describe(self) -> list[Any]:
        from prometheus_client.core import HistogramMetricFamily

        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            children = list(self._children.items())
        for key, child in children:
            counts, total = child.snapshot()
            cumulative = np.cumsum(counts).tolist()
            family.add_metric(
                list(key), [(floatToGoString(b), float(c)) for b, c in zip(self.bounds, cumulative)], sum_value=total
            )
        yield family


class BulkHistogramChild:
    """One label set of a `BulkHistogram`: per-bucket counts and the sum, under a lock."""

    def __init__(self, bounds: list[float]):
        self._bounds = bounds
        self._np_bounds = np.asarray(bounds, dtype=np.float64)
        self._counts = np.zeros(len(bounds), dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self._bounds, float(value))  # first bound >= value (Prometheus' `le`)
        with self._lock:
            self._counts[i] += 1
            self._sum += float(value)

    def observe_many(self, values: Any) -> None:
        """`observe` for every value, in one bucket pass (a 1- or 2-row request takes `observe`)."""
        if len(values) <= 2:
            for v in values:
                self.observe(v)
            return
        arr = np.asarray(values, dtype=np.float64)
        counts = np.bincount(np.searchsorted(self._np_bounds, arr, side="left"), minlength=len(self._bounds))
        total = float(arr.sum())
        with self._lock:
            self._counts += counts[: len(self._bounds)]
            self._sum += total

    def snapshot(self) -> tuple[np.ndarray, float]:
        with self._lock:
            return self._counts.copy(), self._sum


# event kinds
OK, CLIENT_ERROR, SERVER_ERROR = 0, 1, 2


class VersionStats:
    """Bounded per-request event history of one version (wall-clock timestamps, so another
    process on the machine, such as `kfct rollout`, can ask for "since T")."""

    def __init__(self, version: str, maxlen: int = 200_000):
        self.version = version
        self.events: deque = deque(maxlen=maxlen)  # (t, kind, latency, instances, positives, prob_sum, customer)
        # (t, customer, rows, label_diff_sum, prob_diff_sum, model_s, champion_model_s): this version
        # against the champion on the same records (`paired`)
        self.pairs: deque = deque(maxlen=maxlen)

    def paired(
        self,
        t: float,
        customer: int,
        rows: int,
        label_diff_sum: float,
        prob_diff_sum: float,
        model_s: float,
        champion_model_s: float,
    ) -> None:
        self.pairs.append((t, customer, rows, label_diff_sum, prob_diff_sum, model_s, champion_model_s))

    def ok(self, t: float, latency: float, instances: int, positives: int, prob_sum: float, customer: int = 0) -> None:
        self.events.append((t, OK, latency, instances, positives, prob_sum, customer))

    def error(self, t: float, kind: int, latency: float, customer: int = 0) -> None:
        self.events.append((t, kind, latency, 0, 0, 0.0, customer))

    def pairs_since(self, since: float | None = None) -> list:
        """The raw paired rows (for a rollout that merges several replicas' windows)."""
        return [list(e) for e in list(self.pairs) if since is None or e[0] >= since]

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
        out.customers = len(np.unique(cust))
        out.error_customers = len(np.unique(cust[kind == SERVER_ERROR]))
        out.instances = int(arr[:, 3].sum())
        out.positives = int(arr[:, 4].sum())
        out.mean_probability = float(arr[:, 5].sum() / out.instances) if out.instances else 0.0
        lat = arr[kind != CLIENT_ERROR, 2]  # a refused bad input says nothing about this version's speed
        if len(lat):
            out.p50_latency_s = float(np.percentile(lat, 50))
            out.p99_latency_s = float(np.percentile(lat, 99))
        pairs = [e for e in list(self.pairs) if (since is None or e[0] >= since) and (until is None or e[0] <= until)]
        if pairs:
            paired_window(out, np.asarray(pairs, dtype=np.float64))
        return out


def now() -> float:
    return time.time()
