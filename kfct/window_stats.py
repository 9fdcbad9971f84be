"""What one model version did over a time window: the figures a canary rollout compares.

A contract between the layers: the local model server computes it per version
(`kfct.serving.metrics.VersionStats.window`, served on `GET /kfct/stats`), a
Prometheus query builds the same figures on a cluster, and the rollout stage judges
canary against champion on it. It lives in the library layer so that the rollout
does not depend on the server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class WindowStats:
    """One version over a time window: what the rollout compares."""

    version: str
    requests: int = 0
    instances: int = 0
    client_errors: int = 0
    server_errors: int = 0
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
