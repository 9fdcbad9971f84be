"""Where a rollout's numbers come from and where its split goes: the two backends.

`LocalRouterBackend`: the local KServe ModelServer's split file and `GET /kfct/stats`.
`ClusterBackend`: the InferenceService patched through the kserve SDK in its own deployment
mode, the figures from Prometheus' HTTP API (`PrometheusMetrics`) narrowed to each version's pods.
"""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kfct.components.rollout_decision import RolloutError, Window

if TYPE_CHECKING:
    import httpx
    from kserve import KServeClient  # kserve ships no types: Any to mypy, named for the reader

    from kfct.config import RunConfig
    from kfct.runtime.settings import Settings


class RolloutBackend(Protocol):
    def set_split(self, champion_version: str, canary_version: str, percent: float) -> None: ...

    def windows(self, champion_version: str, canary_version: str, since: float) -> tuple[Window, Window]: ...

    def promote(self, version: str) -> None: ...

    def rollback(self, champion_version: str, canary_version: str) -> None: ...

    def now(self) -> float: ...


class KeptClient:
    """One `httpx.Client` for a backend's whole rollout, made on first use.

    A rollout polls every `poll_seconds` for minutes. `httpx.get` builds a new client per call, and
    with it an SSL context that loads the CA bundle (~15 ms of CPU) and a new TCP connection: on
    the cluster path's adversarial suite those contexts were 29 % of the test process's py-spy
    samples, and one kept client took its CPU from 67 s to 44 s. Kept, the client also keeps its
    connections alive between polls."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._client: httpx.Client | None = None

    def get(self, url: str, params: dict[str, Any] | None = None) -> "httpx.Response":
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.timeout)
        return self._client.get(url, params=params)


class LocalRouterBackend:
    """Local KServe ModelServers: writes their split file, reads `GET /kfct/stats?since=T` of each.

    Every replica that serves traffic must be seen, as Prometheus sees every pod on a cluster:
    `urls` names them all (`kfct rollout --url A --url B`, or discovered through the home:
    `discover_replicas`). A split counts as applied once every replica applied it; a step's
    window is the replicas' windows merged (`kfct.contracts.window_stats.merge_windows`)."""

    def __init__(
        self,
        model_name: str,
        url: str | list[str],
        state_path: str | Path | None = None,
        apply_timeout: float = 60.0,
        http_timeout: float | None = None,
    ) -> None:
        from kfct.contracts.split_state import state_path as default_path
        from kfct.runtime.settings import get_settings

        http_timeout = get_settings().net_timeout_seconds if http_timeout is None else http_timeout

        self.model_name = model_name
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise RolloutError("no model server to roll out on")
        self.urls = [u.rstrip("/") for u in urls]
        self.url = self.urls[0]
        self.state_path = state_path or default_path(model_name)
        self.apply_timeout = apply_timeout
        self.http_timeout = http_timeout
        self._http = KeptClient(http_timeout)

    def _get(self, path: str, params: dict[str, Any] | None = None, url: str | None = None) -> dict[str, Any]:
        import httpx

        base = url or self.url
        try:
            r = self._http.get(f"{base}{path}", params=params)
        except httpx.HTTPError as exc:
            raise RolloutError(f"model server {base} unreachable: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            raise RolloutError(f"model server {base}{path} answered {r.status_code}: {r.text[:200]}")
        body: dict[str, Any] = r.json()
        return body

    def reachable(self) -> bool:
        try:
            for u in self.urls:
                self._get("/kfct/stats", {"since": time.time()}, url=u)
            return True
        except RolloutError:
            return False

    def now(self) -> float:
        return time.time()

    def _write_and_wait(self, **changes: Any) -> None:
        from kfct.contracts.split_state import update_state

        st = update_state(self.model_name, self.state_path, **changes)
        deadline = time.monotonic() + self.apply_timeout
        waiting = list(self.urls)
        while waiting:
            u = waiting[0]
            s = self._get("/kfct/stats", {"since": time.time()}, url=u)
            if int(s.get("applied_generation", 0)) >= st.generation:
                waiting.pop(0)
                continue
            if int(s.get("failed_generation", 0)) >= st.generation:
                raise RolloutError(f"model server {u} could not apply split generation {st.generation}: {s.get('last_error')}")
            if time.monotonic() > deadline:
                raise RolloutError(
                    f"model server {u} did not apply split generation {st.generation} within {self.apply_timeout:.0f} s"
                )
            time.sleep(0.05)

    def set_split(self, champion_version: str, canary_version: str, percent: float) -> None:
        self._write_and_wait(
            champion_version=champion_version,
            canary_version=canary_version,
            canary_percent=float(percent),
            mode="canary",
            reason=f"rollout step {percent:g}%",
            canary_deadline=None,
        )  # this rollout owns the canary now

    def windows(self, champion_version: str, canary_version: str, since: float) -> tuple[Window, Window]:
        from kfct.contracts.window_stats import merge_windows

        stats = [self._get("/kfct/stats", {"since": since, "pairs": "true"}, url=u) for u in self.urls]
        out = []
        for version in (str(champion_version), str(canary_version)):
            parts = [(s.get("versions") or {}).get(version) for s in stats]
            out.append(merge_windows(version, [p for p in parts if p]))
        return out[0], out[1]

    def promote(self, version: str) -> None:
        self._write_and_wait(
            champion_version=str(version),
            canary_version=None,
            canary_percent=0.0,
            mode="canary",
            reason=f"rollout promoted v{version}",
            canary_deadline=None,
        )

    def rollback(self, champion_version: str, canary_version: str) -> None:
        self._write_and_wait(
            champion_version=champion_version,
            canary_version=None,
            canary_percent=0.0,
            mode="canary",
            reason=f"rollout rolled back v{canary_version}",
            canary_deadline=None,
        )


class PrometheusMetrics:
    """Per-version windows from Prometheus' HTTP API (`/api/v1/query`) over kfct_* series."""

    def __init__(self, url: str, model_name: str, timeout: float | None = None, extra_selector: str = "") -> None:
        from kfct.runtime.settings import get_settings

        timeout = get_settings().net_timeout_seconds if timeout is None else timeout
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.timeout = timeout
        self.extra = extra_selector
        self._http = KeptClient(timeout)

    def _sel(self, version: str, more: str = "") -> str:
        parts = [f'model_name="{self.model_name}"', f'model_version="{version}"']
        if self.extra:
            parts.append(self.extra)
        if more:
            parts.append(more)
        return "{" + ",".join(parts) + "}"

    def query(self, promql: str) -> float:
        """The first sample of an instant query's vector (0 for an empty vector or NaN)."""
        result = self.query_vector(promql)
        if not result:
            return 0.0
        value = float(result[0]["value"][1])
        return 0.0 if value != value else value  # NaN (no samples) -> 0

    def query_vector(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector: [{"metric": {labels}, "value": [t, "v"]}, ...]."""
        import httpx

        try:
            r = self._http.get(f"{self.url}/api/v1/query", params={"query": promql})
        except httpx.HTTPError as exc:
            raise RolloutError(f"Prometheus {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200:
            raise RolloutError(f"Prometheus answered {r.status_code} to {promql!r}: {r.text[:200]}")
        body = r.json()
        if body.get("status") != "success":
            raise RolloutError(f"Prometheus query {promql!r} failed: {body.get('error')}")
        result: list[dict[str, Any]] = body.get("data", {}).get("result", [])
        return result

    def by_shard(self, promql: str) -> dict[int, float]:
        """{shard: value} of a `sum by (shard) (...)` query (NaN counted as 0)."""
        out: dict[int, float] = {}
        for r in self.query_vector(promql):
            v = float(r["value"][1])
            out[int(r["metric"].get("shard", 0))] = 0.0 if v != v else v
        return out

    def paired(self, out: Window, reference: str, seconds: float, workload: str = "") -> None:
        """Fill `out` (the canary's window) with its paired figures against `reference` (the champion)
        from the canary pods' kfct_paired_* series: per customer shard, so that the rollout judges them
        with the same `kfct.contracts.window_stats.paired_groups` (each shard weighing one, a dominating shard
        reported and left out) as a local server's per-customer pairs."""
        import numpy as np

        from kfct.contracts.window_stats import CUSTOMER_SHARDS, paired_groups

        rng = f"[{max(1, round(seconds))}s]"
        base = ",".join(x for x in (f'reference_version="{reference}"', workload) if x)

        def shards(metric: str, more: str = "") -> np.ndarray:
            sel = self._sel(out.version, ",".join(x for x in (base, more) if x))
            got = self.by_shard(f"sum by (shard) (increase({metric}{sel}{rng}))")
            arr = np.zeros(CUSTOMER_SHARDS)
            for k, v in got.items():
                arr[k % CUSTOMER_SHARDS] += v
            return arr

        out.paired_requests = round(shards("kfct_paired_requests_total").sum())
        rows = shards("kfct_paired_rows_total")
        label = shards("kfct_paired_label_flips_total", 'direction="up"') - shards(
            "kfct_paired_label_flips_total", 'direction="down"'
        )
        prob = shards("kfct_paired_probability_shift_total", 'direction="up"') - shards(
            "kfct_paired_probability_shift_total", 'direction="down"'
        )
        paired_groups(out, rows, label, prob)

        def p99(arm: str) -> float:
            sel = self._sel(out.version, ",".join((base, f'arm="{arm}"')))
            bucket = f"kfct_paired_seconds_per_row_bucket{sel}{rng}"
            return self.query(f"histogram_quantile(0.99, sum by (le) (rate({bucket})))")

        out.paired_p99_instance_s, out.paired_champion_p99_instance_s = p99("canary"), p99("champion")
        slower = self._sel(out.version, base)
        out.paired_slower = round(self.query(f"sum(increase(kfct_paired_slower_requests_total{slower}{rng}))"))

    def window(self, version: str, seconds: float, workload: str = "") -> Window:
        """Figures of `version` over the last `seconds`; `workload` narrows them to the pods of one
        predictor (a label selector such as `service="churn-classifier-v7-predictor"`)."""
        rng = f"[{max(1, round(seconds))}s]"
        q = self.query

        def sel(more: str = "") -> str:
            return self._sel(version, ",".join(x for x in (workload, more) if x))

        every, client = sel(), sel('kind="client"')
        server, positive = sel('kind="server"'), sel('label="1"')
        req = q(f"sum(increase(kfct_requests_total{every}{rng}))")
        cerr = q(f"sum(increase(kfct_request_errors_total{client}{rng}))")
        serr = q(f"sum(increase(kfct_request_errors_total{server}{rng}))")
        pos = q(f"sum(increase(kfct_predictions_total{positive}{rng}))")
        inst = q(f"sum(increase(kfct_predictions_total{every}{rng}))")
        p99 = q(f"histogram_quantile(0.99, sum by (le) (rate(kfct_request_latency_seconds_bucket{every}{rng})))")
        return Window(
            version=str(version),
            requests=round(req + cerr + serr),
            instances=round(inst),
            client_errors=round(cerr),
            server_errors=round(serr),
            positives=round(pos),
            p99_latency_s=p99,
        )


class ClusterBackend:
    """An InferenceService patched through the kserve SDK in its own deployment mode; metrics from Prometheus.

    Serverless (Knative): the split is `canaryTrafficPercent`; the two versions are the
    predictor's previous and latest revisions, told apart in Prometheus by the
    `revision` label (pod label serving.knative.dev/revision). Standard: the split is
    the `spec.canary` entry's `trafficPercent`; the two versions are two Deployments,
    told apart by the `service` label (`{isvc}-predictor` or `{isvc}-{name}-predictor`).
    Both labels are what manifests/base/serving/servicemonitor.yaml relabels in. Each step
    waits until the canary's own status says it is ready before the bake time starts.
    """

    def __init__(
        self,
        model_name: str,
        isvc_name: str,
        namespace: str,
        prometheus_url: str,
        kserve_client: "KServeClient | None" = None,
        settings: "Settings | None" = None,
        cfg: "RunConfig | None" = None,
        ready_timeout: float = 600.0,
        ready_poll: float = 5.0,
    ) -> None:
        self.model_name = model_name
        self.isvc_name = isvc_name
        self.namespace = namespace
        self.metrics = PrometheusMetrics(prometheus_url, model_name=isvc_name)
        self.client = kserve_client
        self.settings = settings
        self.cfg = cfg
        self.ready_timeout = ready_timeout
        self.ready_poll = ready_poll

    def now(self) -> float:
        return time.time()

    def _client(self) -> "KServeClient":
        if self.client is None:
            from kfct.cluster.kserve_isvc import kserve_client

            self.client = kserve_client()
        return self.client

    def _isvc(self) -> dict[str, Any] | None:
        from kfct.cluster.kserve_isvc import get_inference_service

        return get_inference_service(self._client(), self.isvc_name, self.namespace)

    def mode(self, isvc: dict[str, Any] | None = None) -> str:
        from kfct.cluster.kserve_isvc import detect_mode
        from kfct.runtime.settings import get_settings

        s = self.settings or get_settings()
        return detect_mode(isvc if isvc is not None else self._isvc(), s.kserve_deployment_mode)

    def set_split(self, champion_version: str, canary_version: str, percent: float) -> None:
        from kfct.cluster.kserve_isvc import SERVERLESS, DeployError, patch_traffic, set_canary_traffic, wait_canary_ready

        client = self._client()
        mode = self.mode()
        try:
            if mode == SERVERLESS:
                patch_traffic(client, self.isvc_name, self.namespace, percent)
            else:
                set_canary_traffic(client, self.isvc_name, self.namespace, canary_version, percent)
            wait_canary_ready(
                client, self.isvc_name, self.namespace, mode, canary_version, timeout=self.ready_timeout, poll=self.ready_poll
            )
        except DeployError as exc:
            raise RolloutError(str(exc)) from exc

    def workloads(self, champion_version: str, canary_version: str) -> tuple[str, str]:
        """Prometheus label selectors for the champion's and the canary's pods, as each mode labels them."""
        from kfct.cluster.kserve_isvc import SERVERLESS, canary_name, predictor_workload

        isvc = self._isvc() or {}
        if self.mode(isvc) == SERVERLESS:
            pred = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
            champ_rev = pred.get("previousRolledoutRevision") or pred.get("latestRolledoutRevision")
            canary_rev = pred.get("latestCreatedRevision")
            return (f'revision="{champ_rev}"' if champ_rev else "", f'revision="{canary_rev}"' if canary_rev else "")
        stable = ((isvc.get("spec") or {}).get("predictor") or {}).get("name")
        return (
            f'service="{predictor_workload(self.isvc_name, stable)}"',
            f'service="{predictor_workload(self.isvc_name, canary_name(canary_version))}"',
        )

    def windows(self, champion_version: str, canary_version: str, since: float) -> tuple[Window, Window]:
        seconds = max(1.0, time.time() - since)
        champ_sel, canary_sel = self.workloads(champion_version, canary_version)
        canary = self.metrics.window(canary_version, seconds, canary_sel)
        # judged against the champion on the same requests, scored in the canary's own pods
        self.metrics.paired(canary, str(champion_version), seconds, canary_sel)
        return self.metrics.window(champion_version, seconds, champ_sel), canary

    def promote(self, version: str) -> None:
        from kfct.cluster.kserve_isvc import SERVERLESS, patch_traffic, promote_canary

        if self.mode() == SERVERLESS:
            patch_traffic(self._client(), self.isvc_name, self.namespace, 100)
        else:
            promote_canary(self._client(), self.isvc_name, self.namespace, version)

    def rollback(self, champion_version: str, canary_version: str) -> None:
        """Traffic back to the champion at once; Serverless then puts the spec back to the champion."""
        from kfct.cluster.kserve_isvc import (
            SERVERLESS,
            apply_inference_service,
            build_inference_service,
            patch_traffic,
            remove_canary,
        )

        client = self._client()
        mode = self.mode()
        if mode != SERVERLESS:
            remove_canary(client, self.isvc_name, self.namespace)
            return
        patch_traffic(client, self.isvc_name, self.namespace, 0)
        isvc = build_inference_service(
            self.model_name,
            champion_version,
            name=self.isvc_name,
            namespace=self.namespace,
            canary_percent=100,
            settings=self.settings,
            mode=mode,
        )
        apply_inference_service(client, isvc, self.isvc_name, self.namespace)


def make_backend(
    model_name: str,
    target: str,
    settings: "Settings",
    cfg: "RunConfig | None" = None,
    server_url: str | list[str] = "",
    prometheus_url: str = "",
    isvc: str = "",
    namespace: str = "",
) -> "LocalRouterBackend | ClusterBackend":
    """The one place a rollout backend is built (the pipeline stage and `kfct rollout`).

    cluster: the InferenceService `isvc` (default: the model name) in `namespace` (default:
    settings.kfp_namespace), metrics from `prometheus_url`, else settings.prometheus_url
    (KFCT_PROMETHEUS_URL). local: the model servers at `server_url` (one URL or a list), else every live
    replica registered under the home (`kfct.contracts.replicas`), else settings' host:port.
    """
    if target == "cluster":
        return ClusterBackend(
            model_name,
            isvc_name=isvc or model_name,
            namespace=namespace or settings.kfp_namespace,
            prometheus_url=prometheus_url or settings.prometheus_url,
            settings=settings,
            cfg=cfg,
        )
    if target != "local":
        raise RolloutError(f"rollout target must be 'local' or 'cluster', got {target!r}")
    urls = [server_url] if isinstance(server_url, str) and server_url else list(server_url or [])
    if not urls:
        from kfct.contracts.replicas import discover

        urls = discover(model_name, settings.home) or [f"http://{settings.serving_host}:{settings.serving_port}"]
    return LocalRouterBackend(model_name, urls)
