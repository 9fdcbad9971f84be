"""What one model version did over a time window: the figures a canary rollout compares.

A contract between the layers: the local model server computes it per version
(`kfct.serving.metrics.VersionStats.window`, served on `GET /kfct/stats`), a
Prometheus query builds the same figures on a cluster, and the rollout stage judges
canary against champion on it. It lives in the library layer so that the rollout
does not depend on the server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


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
    # The canary against the champion on the same requests (local server: a sample of the
    # canary's requests is scored by the champion too, `kfct.serving.router`). Each customer
    # weighs one: the shifts are means over customers of each customer's mean paired difference.
    paired_requests: int = 0
    paired_rows: int = 0
    paired_customers: int = 0  # customers judged (a dominating one excluded)
    label_shift: float = 0.0  # mean over customers of mean(label_canary - label_champion)
    label_shift_se: float = 0.0  # its standard error, from the spread across customers
    probability_shift: float = 0.0
    probability_shift_se: float = 0.0
    paired_p99_instance_s: float = 0.0  # model time per row, canary, on the paired requests
    paired_champion_p99_instance_s: float = 0.0  # the champion's, on the same requests
    paired_slower: int = 0  # paired requests on which the canary's model time exceeded the champion's
    top_customer_share: float = 0.0  # the largest customer's share of the paired rows
    dominated: bool = False  # that customer held more than half: reported, excluded from the judgement

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
        out = {
            "version": self.version,
            "requests": self.requests,
            "error_rate": round(self.error_rate, 5),
            "p99_latency_ms": round(self.p99_latency_s * 1e3, 3),
            "positive_rate": round(self.positive_rate, 5),
        }
        if self.paired_requests:
            out.update(
                paired_requests=self.paired_requests,
                paired_rows=self.paired_rows,
                paired_customers=self.paired_customers,
                label_shift=round(self.label_shift, 5),
                label_shift_se=round(self.label_shift_se, 5),
                probability_shift=round(self.probability_shift, 5),
                paired_p99_us_per_row=round(self.paired_p99_instance_s * 1e6, 2),
                champion_paired_p99_us_per_row=round(self.paired_champion_p99_instance_s * 1e6, 2),
                paired_slower=self.paired_slower,
                top_customer_share=round(self.top_customer_share, 4),
                dominated=self.dominated,
            )
        return out

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(error_rate=self.error_rate, positive_rate=self.positive_rate)
        return d

    @classmethod
    def from_json(cls, d: dict) -> WindowStats:
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in keys})


MAX_CUSTOMER_SHARE = 0.5
# On a cluster the canary's pods export paired figures per customer shard (crc32 of the id, mod this),
# not per customer: a Prometheus label per customer would be unbounded. Each shard then weighs one in
# the judgement, as each customer does locally; a customer's weight is capped at its shard's.
CUSTOMER_SHARDS = 64


def customer_shard(customer: int) -> int:
    """The shard of a customer key (`kfct.serving.routing.customer_key`; anonymous keys are negative)."""
    return abs(int(customer)) % CUSTOMER_SHARDS


def paired_window(out: WindowStats, arr: np.ndarray) -> None:
    """Fill `out`'s paired figures from rows of `VersionStats.pairs`.

    Each customer weighs one (`paired_groups`). Latency is model time per row on the same requests
    for both versions, so the batch sizes a client picks weigh on both alike."""
    import numpy as np

    cust, rows = arr[:, 1], arr[:, 2]
    out.paired_requests = len(arr)
    _keys, inv = np.unique(cust, return_inverse=True)
    paired_groups(out, np.bincount(inv, weights=rows), np.bincount(inv, weights=arr[:, 3]), np.bincount(inv, weights=arr[:, 4]))
    per_row = np.maximum(rows, 1)
    out.paired_p99_instance_s = float(np.percentile(arr[:, 5] / per_row, 99))
    out.paired_champion_p99_instance_s = float(np.percentile(arr[:, 6] / per_row, 99))
    out.paired_slower = int((arr[:, 5] > arr[:, 6]).sum())


def paired_groups(out: WindowStats, rows: np.ndarray, label_diff: np.ndarray, prob_diff: np.ndarray) -> None:
    """The paired shifts from per-group sums: a group is a customer (local server) or a customer shard
    (a cluster's Prometheus, `CUSTOMER_SHARDS`); both paths judge through this one function.

    Each group weighs one: its own mean paired difference, then the mean over groups and its standard
    error from their spread (a customer's rows are not independent draws: one sender's 3,000 high-risk
    rows are one piece of evidence). A group holding more than half of the paired rows is reported
    (`top_customer_share`, `dominated`) and left out."""
    import numpy as np

    rows = np.asarray(rows, dtype=np.float64)
    out.paired_rows = round(rows.sum())
    if not len(rows):
        return
    share = rows / rows.sum() if rows.sum() else rows
    top = int(np.argmax(share))
    out.top_customer_share = float(share[top])
    keep = np.ones(len(rows), dtype=bool)
    if int((rows > 0).sum()) > 1 and share[top] > MAX_CUSTOMER_SHARE:
        out.dominated = True
        keep[top] = False
    ok = keep & (rows > 0)
    if ok.any():
        label_c = np.asarray(label_diff, dtype=np.float64)[ok] / rows[ok]
        prob_c = np.asarray(prob_diff, dtype=np.float64)[ok] / rows[ok]
        k = int(ok.sum())
        out.paired_customers = k
        out.label_shift, out.probability_shift = float(label_c.mean()), float(prob_c.mean())
        if k > 1:
            out.label_shift_se = float(label_c.std(ddof=1) / np.sqrt(k))
            out.probability_shift_se = float(prob_c.std(ddof=1) / np.sqrt(k))


def merge_windows(version: str, parts: list[dict]) -> WindowStats:
    """One version's window over several replicas (`GET /kfct/stats?pairs=1` of each).

    Counts add up; customers add up (a sticky customer stays on one arm, but may reach several
    replicas: an upper bound); p50/p99 take the worst replica (a slow replica is not averaged
    away); the paired figures are recomputed from every replica's raw paired rows, so each
    customer still weighs one across the fleet."""
    import numpy as np

    out = WindowStats(version)
    add = ("requests", "instances", "client_errors", "server_errors", "customers", "error_customers", "positives")
    prob_sum = 0.0
    pairs: list = []
    for d in parts:
        w = WindowStats.from_json({**d, "version": version})
        for f in add:
            setattr(out, f, getattr(out, f) + getattr(w, f))
        prob_sum += w.mean_probability * w.instances
        out.p50_latency_s = max(out.p50_latency_s, w.p50_latency_s)
        out.p99_latency_s = max(out.p99_latency_s, w.p99_latency_s)
        pairs.extend(d.get("pairs") or [])
    out.mean_probability = prob_sum / out.instances if out.instances else 0.0
    if pairs:
        paired_window(out, np.asarray(pairs, dtype=np.float64))
    return out
