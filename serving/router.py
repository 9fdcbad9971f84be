"""The local canary router: one KServe model name, champion + canary behind it.

Requests to `/v1/models/<name>:predict` or `/v2/models/<name>/infer` are split by
percent (`kfct.serving.routing`: sticky by customer id); a request mixing customers is
split per instance and every prediction names the version that produced it.

Shadow mode: the champion answers everything; the challenger scores the same
records on a background thread (`kfct.serving.shadow`), and both go to metrics and
the prediction log.

The split comes from `kfct.contracts.split_state` (a JSON file the deploy stage and
`kfct rollout` write); `kfct.serving.split_watcher.SplitWatcher` loads new versions
off the request path and swaps them in.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from kfct.cluster import kserve_sdk
from kfct.contracts.split_state import SplitState
from kfct.serving import predictor as predictor_module
from kfct.serving.metrics import CLIENT_ERROR, SERVER_ERROR, PairedMetrics, VersionMetrics, VersionStats, prometheus
from kfct.serving.predictor import OUTPUT_NAMES, fetch_version, score_loaded, v1_response, v2_response
from kfct.serving.routing import BUCKETS, Route, assign, bucket, customer_key, to_canary  # noqa: F401
from kfct.serving.schemas import BadRequest, check_records_text, check_text, requested_outputs, v1_records, v2_records
from kfct.serving.shadow import ShadowWorker
from kfct.serving.split_watcher import SplitWatcher  # noqa: F401

if TYPE_CHECKING:
    from kserve import InferRequest, InferResponse
    from kserve.model import InferenceVerb

    from kfct.serving.prediction_log import PredictionLogger
    from kfct.serving.predictor import ChurnPredictor, Scores

T = TypeVar("T")
_Payload = TypeVar("_Payload")

kserve = kserve_sdk.LazyKServe()

if TYPE_CHECKING:  # the real bases, for type checkers; at run time they join in __getattr__ below
    from kserve import Model as _KServeModel
else:
    _KServeModel = object
log = logging.getLogger("kfct.serving.router")


# Set by `kfct.serving.app.LatencyMiddleware` for each prediction request: a list the router
# appends its window-stats commits to, so they are recorded with the latency the client saw.
pending_stats: contextvars.ContextVar[list[Callable[[float], None]] | None] = contextvars.ContextVar(
    "kfct_pending_stats", default=None
)


def _timed(fn: Callable[..., T], *args: Any) -> tuple[float, T]:
    """(seconds, result) of fn(*args)."""
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


class _Job:
    __slots__ = ("customer", "protocol", "records", "request", "request_id", "t0")

    def __init__(
        self,
        t0: float,
        protocol: str,
        records: list[dict[str, Any]],
        request: InferRequest | None,
        request_id: str | None,
        customer: int = 0,
    ) -> None:
        self.t0 = t0
        self.protocol = protocol
        self.records = records
        self.request = request
        self.request_id = request_id
        self.customer = customer


class _ChurnRouter(_KServeModel):
    """KServe model that routes to a champion and an optional canary/shadow predictor."""

    def __init__(
        self,
        name: str,
        champion: ChurnPredictor,
        id_column: str | None = "customer_id",
        prediction_log: PredictionLogger | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(name, return_response_headers=True)
        self.id_column = id_column
        self.prediction_log = prediction_log
        self._rng = rng or random.Random()
        self._route = Route(champion, None, 0.0, "canary", "")
        self._stats: dict[str, VersionStats] = {}
        self._metrics: dict[str, VersionMetrics] = {}
        self._unattributed = VersionStats("none")
        self._unattributed_metrics: VersionMetrics | None = None
        self._shadow_worker = ShadowWorker(self._shadow_one)
        # The canary's fate is judged against the champion on the same requests: this share of the
        # canary's requests is scored by the champion too, off the request path (trees cost
        # microseconds per row), and both answers go to the canary's paired window stats.
        self.pair_fraction = 1.0
        self._pair_worker = ShadowWorker(self._pair_one, maxsize=2_000, max_rows=20_000, name="kfct-pairs")
        self._pair_flip = False
        # A canary pod on a cluster serves one version; the deploy stage names the champion it is judged
        # against (KFCT_PAIRED_REFERENCE_VERSION): loaded here as `reference`, it scores the same share of
        # this pod's requests, exported as kfct_paired_* for the rollout's Prometheus queries.
        self.reference: ChurnPredictor | None = None
        self._paired_metrics: dict[tuple[str, str], PairedMetrics] = {}
        self.applied_generation = 0
        self.follows_aliases = False  # set by a SplitWatcher that converges on the registry aliases
        self.failed_generation = 0
        self.last_error: str | None = None
        self.next_retry = 0.0  # monotonic time of the watcher's next load attempt (0: none planned)
        self._apply_lock = threading.Lock()
        self._info_labels: list[Any] = []
        from kserve.metrics import PREDICT_HIST_TIME, get_labels

        self._kserve_predict_hist = PREDICT_HIST_TIME.labels(**get_labels(name))
        self._publish()

    # -- readiness ---------------------------------------------------------------------------
    @property
    def route(self) -> Route:
        return self._route

    def start(self) -> None:  # KServe's default would mark us ready before any model is loaded
        pass

    async def healthy(self) -> bool:
        champ = self._route.champion
        return bool(champ is not None and champ.current is not None)

    @property
    def load_error(self) -> str | None:
        """Why the last load / apply failed (None once one succeeded)."""
        champ = self._route.champion
        return self.last_error or (champ.last_error if champ is not None else None)

    def not_ready_reason(self) -> str | None:
        """None when serving; else one line: reason code, the loader's error, when it retries."""
        champ = self._route.champion
        if champ is not None and champ.current is not None:
            return None
        from kfct.serving.readiness import describe

        retry_in = max(0.0, self.next_retry - time.monotonic()) if self.next_retry else None
        return describe(self.load_error, retry_in)

    def publish_readiness(self) -> None:
        from kfct.serving.readiness import publish

        champ = self._route.champion
        publish(self.name, bool(champ is not None and champ.current is not None), self.load_error)

    def _set_route(self, route: Route) -> None:
        self._route = route
        self.ready = bool(route.champion is not None and route.champion.current is not None)
        for p in (route.champion, route.canary):
            if p is not None and p.current is not None:
                self._ensure_version(p.current.version)
        self._publish()
        self.publish_readiness()

    def _publish(self) -> None:
        r = self._route
        try:
            m = prometheus()
            m.canary_percent.labels(self.name).set(r.percent if r.splitting else 0.0)
            for labels in self._info_labels:
                with contextlib.suppress(KeyError):
                    m.model_info.remove(*labels)
            self._info_labels = []
            for role, p in (("champion", r.champion), ("canary" if r.mode == "canary" else "shadow", r.canary)):
                if p is not None and p.current is not None:
                    labels = (self.name, p.current.version, role, p.current.sha256)
                    m.model_info.labels(*labels).set(1)
                    self._info_labels.append(labels)
        except Exception:  # noqa: BLE001  # pragma: no cover - metrics must never break routing
            pass

    def _ensure_version(self, version: str) -> None:
        if version not in self._stats:
            self._stats[version] = VersionStats(version)
            self._metrics[version] = VersionMetrics(self.name, version)

    # -- KServe handlers -------------------------------------------------------------------------
    async def __call__(
        self, body: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None, verb: InferenceVerb | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """KServe's Model.__call__ (preprocess -> predict -> postprocess), minus its per-request
        overhead: three histogram contexts, four coroutine checks and six clock reads cost about
        as much as scoring one customer. KServe's `request_predict_seconds` is still observed."""
        from kserve.model import InferenceVerb

        if verb is not None and verb != InferenceVerb.PREDICT:
            answer: tuple[Any, dict[str, Any]] = await super().__call__(body, headers, verb)
            return answer
        response_headers: dict[str, Any] = {}
        t0 = time.perf_counter()
        result = await self.predict(self.preprocess(body, headers), headers, response_headers)
        self._kserve_predict_hist.observe(time.perf_counter() - t0)
        return result, response_headers

    def validate(self, payload: _Payload) -> _Payload:
        return payload

    def get_input_types(self) -> list[dict[str, Any]]:
        champ = self._route.champion
        return champ.get_input_types() if champ is not None else []

    def get_output_types(self) -> list[dict[str, Any]]:
        champ = self._route.champion
        return champ.get_output_types() if champ is not None else []

    def preprocess(self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None) -> _Job:
        t0 = time.perf_counter()
        try:
            if isinstance(payload, kserve.InferRequest):
                records, rid = v2_records(payload)
                check_records_text(records)
                check_text(rid, "id")  # before scoring and logging, not after
                requested_outputs(payload, OUTPUT_NAMES)  # an unknown output name is a 400 before scoring
                return _Job(
                    t0, "v2", records, payload, rid or (headers or {}).get("x-request-id"), customer_key(records, self.id_column)
                )
            records = v1_records(payload)
            check_records_text(records)
            return _Job(t0, "v1", records, None, (headers or {}).get("x-request-id"), customer_key(records, self.id_column))
        except BadRequest:
            self._unattributed_error(t0)
            raise

    async def predict(
        self, job: _Job, headers: dict[str, str] | None = None, response_headers: dict[str, Any] | None = None
    ) -> dict[str, Any] | InferResponse:
        """Score each group on its version's own executor thread, never on the event loop: a slow
        canary then delays only its own requests, not the champion's clients (nor health checks)."""
        route = self._route
        champ = route.champion
        if champ is None or champ.current is None:
            raise kserve.errors.ModelNotReady(self.name, "no champion loaded yet")
        records = job.records
        n = len(records)
        groups = self._assign(route, records)
        results = []
        now = time.time()
        loop = asyncio.get_running_loop()
        for role, predictor, idx in groups:
            recs = records if idx is None else [records[i] for i in idx.tolist()]
            s = await self._score_group(loop, predictor, recs, idx, job)
            results.append((role, idx, s, recs))
            ref = route.champion if role == "canary" else self.reference if role == "champion" else None
            if (
                ref is not None
                and ref is not predictor
                and (self.pair_fraction >= 1.0 or self._rng.random() < self.pair_fraction)
            ):
                self._pair_worker.submit(ref, predictor, recs, s, now, rows=len(recs))
        self._commit_results(results, job, now)
        if route.canary is not None and route.mode == "shadow":
            self._shadow(route.canary, job, now)
        if response_headers is not None:
            versions = {r[2].version for r in results}
            response_headers["x-kfct-model-version"] = versions.pop() if len(versions) == 1 else "mixed"
        grouped = [(idx, s) for _, idx, s, _ in results]
        if job.protocol == "v2":
            return v2_response(self.name, job.request, grouped, n, outputs=requested_outputs(job.request, OUTPUT_NAMES))
        return v1_response(self.name, grouped, n)

    async def _score_group(
        self,
        loop: asyncio.AbstractEventLoop,
        predictor: ChurnPredictor,
        recs: list[dict[str, Any]],
        idx: np.ndarray | None,
        job: _Job,
    ) -> Scores:
        """One group's scores: on the event loop when the version earned it (a small request to a version
        that has been fast: kfct.serving.inline_scoring), else on its version's own thread; a failure
        is counted against that version."""
        try:
            if predictor.scores_inline(len(recs)):  # a fast version's small request: no thread hop
                inline: Scores = predictor.score_timed(recs, inline=True)
                return inline
            return await loop.run_in_executor(predictor.executor, predictor.score_timed, recs)
        except BadRequest as exc:
            self._error(predictor, CLIENT_ERROR, job)
            if idx is not None and exc.index is not None:  # report the index in the caller's request
                exc.index = int(idx[exc.index])
            raise
        except kserve.errors.ModelNotReady:
            raise
        except Exception as exc:
            self._error(predictor, SERVER_ERROR, job)
            log.error("model %s v%s failed: %s: %s", self.name, predictor.loaded_version, type(exc).__name__, exc, exc_info=exc)
            raise kserve.errors.InferenceError(
                f"model {self.name} v{predictor.loaded_version} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _commit_results(self, results: list[Any], job: _Job, now: float) -> None:
        """Each group's stats and metrics (committed by the middleware with the client-seen latency when it
        is there), and its rows to the prediction log."""
        pending = pending_stats.get()
        handler_latency = time.perf_counter() - job.t0
        for role, _idx, s, recs in results:
            ver = s.version
            if ver not in self._metrics:
                self._ensure_version(ver)
            commit = self._ok_commit(ver, role, job, now, len(recs), s)
            if pending is not None:
                pending.append(commit)  # the middleware commits with the client-seen latency
            else:
                commit(handler_latency)
            if self.prediction_log is not None:
                self.prediction_log.log(now, job.request_id, self.name, ver, role, recs, s.probabilities, s.labels, s.threshold)

    def _ok_commit(self, ver: str, role: str, job: _Job, now: float, n: int, s: Scores) -> Callable[[float], None]:
        metrics, stats = self._metrics[ver], self._stats[ver]

        def commit(latency: float) -> None:
            pos = metrics.observe(role, job.protocol, latency, s.probabilities, s.labels)
            stats.ok(now, latency, n, pos, float(s.probabilities.sum()), job.customer)

        return commit

    # -- routing ---------------------------------------------------------------------------------
    def _assign(self, route: Route, records: list[dict[str, Any]]) -> list[tuple[str, ChurnPredictor | None, np.ndarray | None]]:
        """[(role, predictor, row indices or None for all)]"""
        return assign(route, records, self.id_column, self._rng)

    # -- errors, stats -----------------------------------------------------------------------------
    def _error(self, predictor: ChurnPredictor, kind: int, job: _Job) -> None:
        ver = predictor.loaded_version or "none"
        self._ensure_version(ver)
        self._stats[ver].error(time.time(), kind, time.perf_counter() - job.t0, job.customer)
        m = self._metrics[ver]
        (m.client_errors if kind == CLIENT_ERROR else m.server_errors).inc()

    def _unattributed_error(self, t0: float) -> None:
        self._unattributed.error(time.time(), CLIENT_ERROR, time.perf_counter() - t0)
        if self._unattributed_metrics is None:
            self._unattributed_metrics = VersionMetrics(self.name, "none")
        self._unattributed_metrics.client_errors.inc()

    def stats(self, since: float | None = None, pairs: bool = False) -> dict[str, Any]:
        """Window stats per version; `pairs`: each version's raw paired rows too, for a rollout that
        merges several replicas (`kfct.contracts.window_stats.merge_windows`)."""
        r = self._route
        versions = {v: st.window(since).to_json() for v, st in list(self._stats.items())}
        if pairs:
            for v, st in list(self._stats.items()):
                versions[v]["pairs"] = st.pairs_since(since)
        return {
            "model_name": self.name,
            "ready": bool(r.champion is not None and r.champion.current is not None),
            "champion": r.champion.current.describe() if r.champion and r.champion.current else None,
            "canary": r.canary.current.describe() if r.canary and r.canary.current else None,
            "canary_percent": r.percent if r.canary is not None else 0.0,
            "mode": r.mode,
            "applied_generation": self.applied_generation,
            "failed_generation": self.failed_generation,
            "last_error": self.last_error,
            "versions": versions,
            "unattributed": self._unattributed.window(since).to_json(),
            "prediction_log": self.prediction_log.status() if self.prediction_log is not None else None,
            "time": time.time(),
        }

    # -- shadow ----------------------------------------------------------------------------------
    def _shadow(self, predictor: ChurnPredictor, job: _Job, now: float) -> None:
        self._shadow_worker.submit(predictor, job.records, job.request_id, job.protocol, now)

    def _shadow_one(
        self, predictor: ChurnPredictor, records: list[dict[str, Any]], rid: str | None, protocol: str, ts: float
    ) -> None:
        lv = predictor.current
        if lv is None:
            return
        t0 = time.perf_counter()
        cust = customer_key(records, self.id_column)
        self._ensure_version(lv.version)
        try:
            s = score_loaded(lv, records)
        except BadRequest:
            self._stats[lv.version].error(time.time(), CLIENT_ERROR, time.perf_counter() - t0, cust)
            self._metrics[lv.version].client_errors.inc()
            return
        except Exception:
            log.exception("shadow model %s v%s failed", self.name, lv.version)
            self._stats[lv.version].error(time.time(), SERVER_ERROR, time.perf_counter() - t0, cust)
            self._metrics[lv.version].server_errors.inc()
            return
        latency = time.perf_counter() - t0
        pos = self._metrics[lv.version].observe("shadow", protocol, latency, s.probabilities.tolist(), s.labels)
        self._stats[lv.version].ok(time.time(), latency, len(records), pos, float(s.probabilities.sum()), cust)
        if self.prediction_log is not None:
            self.prediction_log.log(ts, rid, self.name, lv.version, "shadow", records, s.probabilities, s.labels, s.threshold)

    def drain_shadow(self, timeout: float = 10.0) -> bool:
        """Wait until queued shadow and paired scoring is done (tests, shutdown)."""
        return self._shadow_worker.drain(timeout) and self._pair_worker.drain(timeout)

    # -- paired scoring --------------------------------------------------------------------------
    def _pair_one(
        self, champion: ChurnPredictor, canary_predictor: ChurnPredictor, records: list[dict[str, Any]], canary: Scores, ts: float
    ) -> None:
        """Score a canary request's records with the champion; record the paired differences.

        Latency: both versions are timed here, back to back on this one thread, in alternating
        order: timed on different threads (the canary on its executor, under the event loop's and
        the other executors' GIL contention) a good canary's p99 per row read 52 ms vs 8.5 ms."""
        lv, lc = champion.current, canary_predictor.current
        if lv is None or lc is None or lv.version == canary.version or lc.version != canary.version:
            return
        self._pair_flip = not self._pair_flip
        try:
            if self._pair_flip:
                canary_s, _ = _timed(score_loaded, lc, records)
                champ_s, ref = _timed(score_loaded, lv, records)
            else:
                champ_s, ref = _timed(score_loaded, lv, records)
                canary_s, _ = _timed(score_loaded, lc, records)
        except Exception:  # noqa: BLE001 - the canary answered these records; a champion that cannot is no evidence
            return
        canary_model_s = canary_s
        self._ensure_version(canary.version)
        dl = float(np.asarray(canary.labels, dtype=np.float64).sum() - np.asarray(ref.labels, dtype=np.float64).sum())
        dp = float(np.asarray(canary.probabilities).sum() - np.asarray(ref.probabilities).sum())
        cust = customer_key(records, self.id_column)
        self._stats[canary.version].paired(ts, cust, len(records), dl, dp, canary_model_s, champ_s)
        key = (canary.version, lv.version)
        pm = self._paired_metrics.get(key)
        if pm is None:
            pm = self._paired_metrics[key] = PairedMetrics(self.name, *key)
        pm.observe(cust, canary.labels, ref.labels, canary.probabilities, ref.probabilities, canary_model_s, champ_s)

    # -- applying a split state -------------------------------------------------------------------
    def apply_state(self, state: SplitState) -> bool:
        """Load what the state names (off the request path) and switch routing; False keeps the old."""
        with self._apply_lock:
            try:
                route = self._build_route(state)
            except Exception as exc:  # noqa: BLE001 - a split that cannot be applied leaves routing unchanged
                self.failed_generation = state.generation
                self.last_error = f"generation {state.generation}: {type(exc).__name__}: {exc}"
                log.error("split state for %s not applied, routing unchanged: %s", self.name, self.last_error)
                self.publish_readiness()
                return False
            self.last_error = None
            self._set_route(route)
            self.applied_generation = state.generation
            import gc

            gc.freeze()  # a newly loaded version joins the heap the collector skips (server.tune_runtime)
            log.info(
                "model %s: champion v%s, canary %s (%s %.1f%%), generation %d",
                self.name,
                route.champion.loaded_version if route.champion else None,
                f"v{route.canary.loaded_version}" if route.canary else "none",
                route.mode,
                route.percent,
                state.generation,
            )
            return True

    def _predictor_for(self, version: str, reuse: list[Any]) -> ChurnPredictor:
        """A predictor for a registered version: one already loaded, or a fresh load."""
        for p in reuse:
            if p is not None and p.current is not None and p.current.version == str(version):
                return p
        base = self._route.champion
        p = predictor_module.ChurnPredictor(
            self.name,
            model_name=base.model_name if base else self.name,
            alias=None,
            version=str(version),
            id_column=self.id_column,
            fast=base.fast if base else True,
        )
        p.install(fetch_version(p.model_name, version=str(version), id_column=self.id_column, fast=p.fast))
        return p

    def _build_route(self, state: SplitState) -> Route:
        cur = self._route
        reuse = [cur.champion, cur.canary]
        if state.champion_version:
            champion = self._predictor_for(state.champion_version, reuse)
        elif cur.champion is not None and cur.champion.current is not None:
            champion = cur.champion  # the state does not pin one: keep what serves
        elif cur.champion is not None:
            if not cur.champion.reload():  # its configured alias / version / model_dir
                raise LookupError(cur.champion.last_error)
            champion = cur.champion
        else:
            raise LookupError(f"model {self.name}: no champion configured")
        canary_version = state.active_canary
        canary = None
        if canary_version and canary_version != champion.loaded_version:
            canary = self._predictor_for(canary_version, reuse)
        return Route(
            champion,
            canary,
            float(state.canary_percent) if canary else 0.0,
            state.mode if canary else "canary",
            salt=f"{self.name}:{canary_version or ''}",
        )

    def refresh(self) -> bool:
        """Re-fetch the champion as configured (its alias or version) from the registry; the token-
        guarded repository `load` calls this. A failed fetch keeps serving what is loaded."""
        with self._apply_lock:
            route = self._route
            if route.champion is None:
                return False
            # A server that follows the aliases serves whatever `champion` names now (its predictor
            # may carry the version a converged split pinned); a pinned server re-fetches its pin.
            alias = "champion" if self.follows_aliases and route.champion.model_dir is None else None
            if not route.champion.reload(alias=alias):
                return False
            self._set_route(route)
            return True

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self._shadow_worker.close()
        self._pair_worker.close()
        r = self._route
        for p in (r.champion, r.canary, self.reference):
            if p is not None:
                p.close()


_KSERVE_CLASSES = {"ChurnRouter": ("_ChurnRouter", "kserve:Model")}


def __getattr__(name: str) -> type:
    """PEP 562: the kserve-derived `ChurnRouter` is built on first use, so importing this
    module does not import kserve (seconds)."""
    if name in _KSERVE_CLASSES:
        body, base = _KSERVE_CLASSES[name]
        return kserve_sdk.subclass(globals(), name, globals()[body], base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
