"""A loopback Prometheus that scrapes the real serving processes' `/metrics` and answers the rollout's
queries through Prometheus' HTTP API.

What it follows (Prometheus v3.x, prometheus/prometheus):
- the response of `GET /api/v1/query` (docs/querying/api.md, "Instant queries" and "Expression query
  result formats"): `{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {...},
  "value": [<unix time>, "<value as string>"]}]}}`; an aggregation over no series is an empty vector;
  an unparsable query is HTTP 400 with `{"status": "error", "errorType": "bad_data", "error": ...}`;
- target labels: each scrape target's series get the labels the ServiceMonitor relabels in
  (manifests/base/serving/servicemonitor.yaml: `service`, `revision`), as a scrape config's
  relabelling adds them;
- `increase(v[d])` = last sample - first sample in the range for a counter without resets
  (promql/functions.go `extrapolatedRate`, here WITHOUT the extrapolation to the range's edges, so
  a figure is never more than what the processes counted), `rate` = increase / d;
- `histogram_quantile(φ, sum by (le) (...))` with the linear interpolation inside the bucket
  (promql/quantile.go `bucketQuantile`: the +Inf bucket's quantile is the upper bound of the
  second-highest bucket; a rank in the first bucket interpolates from 0);
- `sum by (L) (v)` (promql/engine.go `aggregation`, v3.x): one output series per distinct value of
  label L among the input series, carrying only that label (`{}` for series without it), its value the
  sum over that group; no input series, an empty vector.

Only the query shapes `kfct.components.rollout_backends.PrometheusMetrics` sends are parsed:
`sum(increase(M{sel}[Ns]))`, `sum by (L) (increase(M{sel}[Ns]))` and
`histogram_quantile(Q, sum by (le) (rate(M_bucket{sel}[Ns])))`.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

SUM_INCREASE = re.compile(r"^sum\(increase\((\w+)\{(.*)\}\[(\d+)s\]\)\)$")
SUM_BY_INCREASE = re.compile(r"^sum by \((\w+)\) \(increase\((\w+)\{(.*)\}\[(\d+)s\]\)\)$")
QUANTILE = re.compile(r"^histogram_quantile\(([\d.]+), sum by \(le\) \(rate\((\w+)\{(.*)\}\[(\d+)s\]\)\)\)$")
MATCHER = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class LoopbackPrometheus:
    """Scrapes `targets` (url -> extra labels) every `interval` s; serves `/api/v1/query` on 127.0.0.1."""

    def __init__(self, interval: float = 0.5, scrape_timeout: float = 10.0):
        self.interval = interval
        self.scrape_timeout = scrape_timeout  # Prometheus' default scrape_timeout (config/config.go: 10s)
        self.targets: dict[str, dict[str, str]] = {}
        self.samples: list[tuple[float, str, dict, float]] = []  # (t, name, labels, value)
        self.queries: list[str] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urlparse(self.path)
                if u.path != "/api/v1/query":
                    return self._send(404, {"status": "error", "errorType": "not_found", "error": u.path})
                q = (parse_qs(u.query).get("query") or [""])[0]
                outer.queries.append(q)
                try:
                    value = outer.evaluate(q)
                except ValueError as exc:
                    return self._send(400, {"status": "error", "errorType": "bad_data", "error": str(exc)})
                now = time.time()
                if isinstance(value, list):  # a vector of several series
                    result = [{"metric": labels, "value": [now, _fmt(v)]} for labels, v in value]
                else:
                    result = [] if value is None else [{"metric": {}, "value": [now, _fmt(value)]}]
                self._send(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        threading.Thread(target=self._scrape_loop, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_target(self, url: str, labels: dict[str, str]) -> None:
        with self.lock:
            self.targets[url.rstrip("/")] = dict(labels)

    def _scrape_loop(self) -> None:
        import requests
        from prometheus_client.parser import text_string_to_metric_families

        while not self._stop.is_set():
            with self.lock:
                targets = dict(self.targets)
            for url, extra in targets.items():
                try:
                    text = requests.get(f"{url}/metrics", timeout=self.scrape_timeout).text
                except requests.RequestException:
                    continue  # a target that is down has no samples this round, as in Prometheus
                t = time.time()
                rows = [
                    (t, s.name, {**s.labels, **extra}, float(s.value))
                    for fam in text_string_to_metric_families(text)
                    for s in fam.samples
                ]
                with self.lock:
                    self.samples.extend(rows)
            self._stop.wait(self.interval)

    def _increases(self, name: str, selector: str, seconds: int) -> dict[tuple, tuple[dict, float]]:
        want = dict(MATCHER.findall(selector))
        start = time.time() - seconds
        series: dict[tuple, list[tuple[float, dict, float]]] = {}
        with self.lock:
            for t, n, labels, v in self.samples:
                if n == name and t >= start and all(labels.get(k) == val for k, val in want.items()):
                    series.setdefault(tuple(sorted(labels.items())), []).append((t, labels, v))
        out = {}
        for key, pts in series.items():
            if len(pts) >= 2:  # Prometheus needs two samples in the range for a rate
                out[key] = (pts[-1][1], max(0.0, pts[-1][2] - pts[0][2]))
        return out

    def evaluate(self, q: str) -> float | list[tuple[dict, float]] | None:
        m = SUM_BY_INCREASE.match(q)
        if m:
            by, name, selector, seconds = m.group(1), m.group(2), m.group(3), int(m.group(4))
            groups: dict[str, float] = {}
            for labels, v in self._increases(name, selector, seconds).values():
                key = labels.get(by, "")
                groups[key] = groups.get(key, 0.0) + v
            return [({by: k} if k else {}, v) for k, v in sorted(groups.items())]
        m = SUM_INCREASE.match(q)
        if m:
            inc = self._increases(m.group(1), m.group(2), int(m.group(3)))
            return sum(v for _, v in inc.values()) if inc else None
        m = QUANTILE.match(q)
        if m:
            phi, seconds = float(m.group(1)), int(m.group(4))
            inc = self._increases(m.group(2), m.group(3), seconds)
            by_le: dict[float, float] = {}
            for labels, v in inc.values():
                by_le[float(labels["le"])] = by_le.get(float(labels["le"]), 0.0) + v / seconds
            return bucket_quantile(phi, sorted(by_le.items())) if by_le else None
        raise ValueError(f"query not understood by the loopback Prometheus: {q!r}")


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """promql/quantile.go bucketQuantile over cumulative (upper bound, count) buckets sorted by bound."""
    if not buckets or not math.isinf(buckets[-1][0]):
        return math.nan
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    i = next(i for i, (_, c) in enumerate(buckets) if c >= rank)
    if i == len(buckets) - 1:
        return buckets[-2][0] if len(buckets) > 1 else math.nan
    if i == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, prev = (0.0, 0.0) if i == 0 else (buckets[i - 1][0], buckets[i - 1][1])
    end, count = buckets[i][0], buckets[i][1] - prev
    return start + (end - start) * ((rank - prev) / count) if count else end


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    return repr(float(v))
