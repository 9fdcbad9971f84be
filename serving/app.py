"""The KServe ModelServer with kfct's additions, as a FastAPI app.

Kept from KServe: `ModelServer`, its `ModelRepository`, `DataPlane`, the V1 and V2
REST endpoints (`/v1/models/<name>:predict`, `/v2/models/<name>/infer`, health,
metadata), its exception handlers and `/metrics` on the default Prometheus registry.

Changed, and why:
- a fresh FastAPI app per server instead of KServe's module-level one, so a process
  (a test, a benchmark) can run several servers, and so the server can bind
  127.0.0.1 (KServe's RESTServer always binds 0.0.0.0);
- no per-request timing log line and no access log by default: each costs more than
  the prediction (kfct's own Prometheus histograms keep the timings);
- V1 bodies that orjson rejects are parsed again with NaN/Infinity allowed, so a
  non-finite feature gets a 400 naming the field instead of "Unrecognized request format";
- server readiness (`/v2/health/ready`) is false until every model is loaded, and the
  503 says why (registry or store unreachable, no model yet, ...: `kfct.serving.readiness`);
- a body-size limit (`KFCT_MAX_REQUEST_BYTES`, 413) and 400s that name the field;
- `GET /kfct/stats?since=T` (per-version window the local rollout reads) and
  `GET /kfct/split` (the split the server applies);
- KServe's model-repository endpoints (`/v2/repository/models/<name>/load|unload`) are
  not routed: one unauthenticated `unload` took the serving model down. With
  `KFCT_MODEL_REPOSITORY_TOKEN` set, `load` (re-fetch what the registry says) answers
  to `Authorization: Bearer <token>`; `unload` of the serving model is always refused;
- V2 binary-extension bodies are parsed by `kfct.serving.v2_binary` (every malformed
  part a 400), and anything that fails while decoding a request is the request's fault: 400;
- KServe's error handlers log a full ERROR traceback for every 404/503/501; ours log
  one line at a level that fits (404 debug, 503/501 warning; 500 error with traceback);
- `GET /v1/models/<name>:predict` is a 405 (KServe's `GET /v1/models/<name>` route
  swallowed it as a model named "<name>:predict" and answered 404);
- client-seen latency: `LatencyMiddleware` times each request at the ASGI boundary
  (queueing on the event loop included) and hands it to the router's window stats.

Overrides of KServe internals, and why they stay: kserve 0.21 has no public hook for any of
the above. Its RESTServer always serves the module-level `kserve.model_server:app`, binds
0.0.0.0 and registers the repository routes with the rest; ModelServer builds that RESTServer
itself in `start()`. So: `_KfctDataPlane` (ready/model_ready/decode), `_KfctRESTServer` (its
`__init__` skips `super()`, which would build a uvicorn.Config on 0.0.0.0 around the global
app; it sets every attribute the inherited methods read), the `Collect` stand-in for the app
in KServe's `register_v1_endpoints`/`register_v2_endpoints` (only `include_router` is used, so
routes are filtered before they reach the app) and `_KfctModelServer`. What each relies on
(signatures, attributes read, the registration calls) is pinned against kserve 0.21.0 by
tests/unit/test_upstream_pins.py: an upgrade that changes it fails there, not in production.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from fastapi.routing import APIRoute

from kfct.cluster import kserve_sdk
from kfct.serving.schemas import BadRequest, parse_json_body
from kfct.serving.v2_binary import HEADER as BINARY_HEADER
from kfct.serving.v2_binary import parse_binary_request

log = logging.getLogger("kfct.serving")
kserve = kserve_sdk.LazyKServe()  # imported on first use

if TYPE_CHECKING:
    from pathlib import Path

    import uvicorn
    from kserve import InferRequest
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from kfct.serving.router import _ChurnRouter as ChurnRouter

if TYPE_CHECKING:  # the real bases, for type checkers; at run time they join in __getattr__ below
    from kserve.model_server import ModelServer
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.rest.server import RESTServer
else:
    DataPlane = RESTServer = ModelServer = object


class _KfctDataPlane(DataPlane):
    async def ready(self) -> bool:
        """Server readiness = every registered model is loaded (KServe's default is always True).
        Not ready is a 503 whose body says why (`kfct.serving.readiness`)."""
        models = self.model_registry.get_models()
        if not models:
            return False
        for name in models:
            if not await self.model_registry.is_model_ready(name):
                raise kserve.errors.ServerNotReady(_reason(models[name]))
        return True

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        ready: bool = await super().model_ready(model_name, disable_predictor_health_check)
        if not ready:
            raise kserve.errors.ModelNotReady(model_name, _reason(self.model_registry.get_model(model_name)))
        return ready

    def decode(
        self,
        body: bytes | dict[str, Any],
        headers: dict[str, str] | None,
        protocol_version: str = "v1",
        model_name: str | None = None,
    ) -> tuple[dict[str, Any] | InferRequest, dict[str, Any]]:
        """Decoding happens before any model sees the request: whatever fails here is the
        request's fault, so it is a 400 (never a 500 counted against a model version)."""
        try:
            return self._decode(body, headers, protocol_version, model_name)
        except (BadRequest, kserve.errors.InvalidInput):
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError, MemoryError) as exc:
            raise BadRequest(f"request cannot be decoded: {type(exc).__name__}: {str(exc)[:200]}", field="body") from None

    def _decode(
        self, body: bytes | dict[str, Any], headers: dict[str, str] | None, protocol_version: str, model_name: str | None
    ) -> tuple[dict[str, Any] | InferRequest, dict[str, Any]]:
        v1 = protocol_version.lower() == "v1"
        if isinstance(body, (bytes, bytearray)) and v1 and not any(k.startswith("ce-") for k in (headers or {})):
            try:
                return orjson.loads(body), {}
            except orjson.JSONDecodeError:
                return parse_json_body(body), {}  # NaN/Infinity, big ints: the model names the field
        if isinstance(body, (bytes, bytearray)) and not v1:
            req = parse_binary_request(bytes(body), (headers or {}).get(BINARY_HEADER))
            from kserve.protocol.rest.v2_datamodels import InferenceRequest

            return kserve.InferRequest.from_inference_request(InferenceRequest.model_validate(req), model_name), {}
        decoded: tuple[dict[str, Any] | InferRequest, dict[str, Any]] = super().decode(
            body, headers, protocol_version, model_name
        )
        return decoded


def _reason(model: object) -> str | None:
    fn = getattr(model, "not_ready_reason", None)
    try:
        return fn() if callable(fn) else None
    except Exception:  # noqa: BLE001  # pragma: no cover - a reason must never turn a 503 into a 500
        return None


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The request's content-length (ValueError when it is not a number), None when it has none."""
    for k, v in headers:
        if k == b"content-length":
            return int(v)
    return None


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413 before any parsing (pure ASGI, no copies)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        try:
            length = _content_length(scope["headers"])
        except ValueError:
            return await self._reject(send, 400, "content-length header is not a number")
        if length is not None:
            if length > self.max_bytes:
                await self._drain(receive, limit=64 * self.max_bytes)
                return await self._reject(send, 413, self._message(length))
            return await self.app(scope, receive, send)
        return await self._buffered(scope, receive, send)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send) -> None:
        """No content-length (chunked): buffer up to the limit, then replay to the app."""
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            more = msg.get("more_body", False)
            if size > self.max_bytes:
                if more:
                    await self._drain(receive, limit=64 * self.max_bytes)
                return await self._reject(send, 413, self._message(size, at_least=more))
            chunks.append(body)
        data = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _message(self, size: int, at_least: bool = False) -> str:
        return (
            f"request body of {'more than ' if at_least else ''}{size} bytes exceeds the limit of "
            f"{self.max_bytes} bytes (KFCT_MAX_REQUEST_BYTES)"
        )

    @staticmethod
    async def _drain(receive: Receive, limit: int) -> None:
        """Read (and drop) the rest of the body so the client gets our answer, not a reset."""
        seen = 0
        while seen <= limit:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            seen += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                return

    @staticmethod
    async def _reject(send: Send, status: int, message: str) -> None:
        body = orjson.dumps({"error": message, "field": "body"})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def bad_request_handler(_request: Request, exc: BadRequest) -> ORJSONResponse:
    log.debug("400: %s", exc)
    return ORJSONResponse(status_code=400, content=exc.to_json())


def _one_line(status: int, level: int) -> Callable[[Request, Exception], Awaitable[ORJSONResponse]]:
    """An exception handler answering `status` with `{"error": str(exc)}`, logging one line."""

    async def handler(request: Request, exc: Exception) -> ORJSONResponse:
        log.log(level, "%d %s %s: %s", status, request.method, request.url.path, str(exc)[:300])
        return ORJSONResponse(status_code=status, content={"error": str(exc)})

    return handler


async def server_error_handler(request: Request, exc: Exception) -> ORJSONResponse:
    """A genuine server fault: the one case that deserves a traceback."""
    log.error("500 %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc, exc_info=exc)
    return ORJSONResponse(status_code=500, content={"error": f"{type(exc).__name__}: {exc}"})


async def inference_error_handler(request: Request, exc: Exception) -> ORJSONResponse:
    """Model failures: the router already logged the traceback and counted it; one line here."""
    log.warning("500 %s %s: %s", request.method, request.url.path, str(exc)[:300])
    return ORJSONResponse(status_code=500, content={"error": str(exc)})


async def method_not_allowed(request: Request) -> ORJSONResponse:
    return ORJSONResponse(
        status_code=405,
        headers={"allow": "POST"},
        content={"error": f"{request.method} {request.url.path}: method not allowed, use POST"},
    )


async def no_explainer(model_name: str) -> ORJSONResponse:
    return ORJSONResponse(status_code=404, content={"error": f"model {model_name} has no explainer on this server"})


def add_exception_handlers(app: FastAPI) -> None:
    e = kserve.errors
    # starlette types a handler's exception as `Exception`; it calls this one only with a BadRequest
    app.add_exception_handler(BadRequest, bad_request_handler)  # type: ignore[arg-type]
    app.add_exception_handler(e.InvalidInput, _one_line(400, logging.DEBUG))
    app.add_exception_handler(e.InferenceError, inference_error_handler)
    app.add_exception_handler(e.ModelNotFound, _one_line(404, logging.DEBUG))
    app.add_exception_handler(e.ModelNotReady, _one_line(503, logging.WARNING))
    app.add_exception_handler(e.ServerNotReady, _one_line(503, logging.WARNING))
    app.add_exception_handler(e.ServerNotLive, _one_line(503, logging.WARNING))
    app.add_exception_handler(NotImplementedError, _one_line(501, logging.WARNING))
    app.add_exception_handler(e.UnsupportedProtocol, _one_line(501, logging.WARNING))
    # Starlette types every handler as taking any Exception; this one is registered for its own class only.
    app.add_exception_handler(RequestValidationError, validation_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, server_error_handler)


class LatencyMiddleware:
    """Times prediction requests where the client sees them: from the first ASGI event to the
    last body byte sent, including time queued behind other work on the event loop. The router
    commits each request's window-stats event with this latency (see `ChurnRouter.predict`)."""

    def __init__(self, app: ASGIApp, router: ChurnRouter | None = None) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if self.router is None or not (path.endswith(":predict") or path.endswith("/infer")):
            return await self.app(scope, receive, send)
        import time as _time

        from kfct.serving.router import pending_stats

        t0 = _time.perf_counter()
        pending: list[Any] = []
        token = pending_stats.set(pending)

        async def timed_send(msg: Message) -> None:
            await send(msg)
            if msg["type"] == "http.response.body" and not msg.get("more_body", False) and pending:
                latency = _time.perf_counter() - t0
                for commit in pending:
                    commit(latency)
                pending.clear()

        try:
            await self.app(scope, receive, timed_send)
        finally:
            pending_stats.reset(token)
            if pending:  # response never completed (client gone): commit with the time so far
                latency = _time.perf_counter() - t0
                for commit in pending:
                    commit(latency)


async def validation_error_handler(_request: Request, exc: RequestValidationError) -> ORJSONResponse:
    """FastAPI's V2 body validation: 400 naming the first offending location."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or "body"
    return ORJSONResponse(status_code=400, content={"error": f"{field}: {first.get('msg', 'invalid request')}", "field": field})


def _dropped(route: BaseRoute) -> bool:
    """KServe routes this server does not offer: the model repository (see the module docstring),
    `:explain` (no explainer: KServe answered 501) and `/versions/<v>/...` (versions are chosen by
    the registry aliases, not by clients: KServe answered 501 "not supported yet")."""
    path = getattr(route, "path", "")
    if isinstance(route, APIRoute) and path.endswith(":explain") and "POST" in (route.methods or ()):
        return True
    return path.startswith("/v2/repository/") or "/versions/{model_version}" in path


class _KfctRESTServer(RESTServer):
    """KServe's REST server, on our own app object and host."""

    def __init__(
        self,
        dataplane: _KfctDataPlane,
        model_repository_extension: ModelRepositoryExtension,
        host: str,
        port: int,
        max_request_bytes: int,
        extra_routes: Callable[[FastAPI], None] | None = None,
        access_log: bool = False,
        repository_token: str | None = None,
        router: ChurnRouter | None = None,
    ) -> None:
        self.repository_token = repository_token or None
        self.router = router
        self.dataplane = dataplane
        self.model_repository_extension = model_repository_extension
        self.access_log_format = None
        self.host = host
        self.port = port
        self.max_request_bytes = max_request_bytes
        self.extra_routes = extra_routes
        self.access_log = access_log
        self.app: FastAPI | None = None

    def create_application(self) -> FastAPI:
        app = FastAPI(
            title="kfct model server (KServe ModelServer)", docs_url=None, redoc_url=None, default_response_class=ORJSONResponse
        )
        for path in ("/v1/models/{model_name}:predict",):
            # before KServe's GET /v1/models/{model_name}, which would take "<name>:predict" as a name
            app.add_api_route(path, method_not_allowed, methods=["GET", "PUT", "DELETE", "PATCH"], include_in_schema=False)
        app.add_api_route("/v1/models/{model_name}:explain", no_explainer, methods=["POST"], include_in_schema=False)
        self._register_kserve_routes(app)  # KServe's V1/V2/health/metrics routes, minus the repository
        if self.repository_token:
            self._register_repository(app)
        add_exception_handlers(app)  # one line per client error, field-naming 400s
        if self.extra_routes is not None:
            self.extra_routes(app)
        app.add_middleware(LatencyMiddleware, router=self.router)
        app.add_middleware(BodyLimitMiddleware, max_bytes=self.max_request_bytes)
        self.app = app
        return app

    def _register_kserve_routes(self, app: FastAPI) -> None:
        """KServe's own endpoint functions, registered through its own helpers, filtered by `_dropped`
        (FastAPI includes routers lazily, so the filtering happens before they reach the app)."""
        from fastapi.routing import APIRouter
        from kserve.protocol.rest.server import metrics_handler
        from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
        from kserve.protocol.rest.v2_endpoints import register_v2_endpoints

        class Collect:
            def __init__(self) -> None:
                self.routers: list[APIRouter] = []

            def include_router(self, router: APIRouter, **_kw: object) -> None:
                self.routers.append(router)

        root = APIRouter()
        root.add_api_route(r"/", self.dataplane.live)
        root.add_api_route(r"/metrics", metrics_handler, methods=["GET"])
        got = Collect()
        register_v1_endpoints(got, self.dataplane, self.model_repository_extension)
        register_v2_endpoints(got, self.dataplane, self.model_repository_extension)
        for router in [root, *got.routers]:
            router.routes[:] = [r for r in router.routes if not _dropped(r)]
            app.include_router(router)

    def _register_repository(self, app: FastAPI) -> None:
        """Token-guarded repository: `load` re-fetches from the registry; `unload` is always refused."""
        import hmac

        token = self.repository_token
        dataplane = self.dataplane

        def authorized(request: Request) -> bool:
            got = request.headers.get("authorization", "")
            return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

        async def load(model_name: str, request: Request) -> ORJSONResponse | dict[str, Any]:
            if not authorized(request):
                return ORJSONResponse(status_code=401, content={"error": "model repository: bad or missing token"})
            model = dataplane.model_registry.get_model(model_name)
            if model is None:
                raise kserve.errors.ModelNotFound(model_name)
            import asyncio

            ok = await asyncio.get_running_loop().run_in_executor(None, getattr(model, "refresh", model.load))
            if not ok:
                return ORJSONResponse(
                    status_code=503, content={"error": f"model {model_name}: load failed, still serving what was loaded"}
                )
            return {"name": model_name, "load": True}

        async def unload(model_name: str, request: Request) -> ORJSONResponse:
            if not authorized(request):
                return ORJSONResponse(status_code=401, content={"error": "model repository: bad or missing token"})
            return ORJSONResponse(
                status_code=409,
                content={
                    "error": f"model {model_name} is serving and cannot be unloaded; what serves follows the "
                    "registry aliases (kfct deploy / kfct rollout)"
                },
            )

        # response_model=None: the return annotations are for mypy, not a response model for FastAPI to build
        app.add_api_route("/v2/repository/models/{model_name}/load", load, methods=["POST"], response_model=None)
        app.add_api_route("/v2/repository/models/{model_name}/unload", unload, methods=["POST"], response_model=None)

    def uvicorn_config(self, **kw: Any) -> uvicorn.Config:
        import uvicorn

        app = self.app if self.app is not None else self.create_application()
        from kfct.serving.http_limits import BoundedHttpToolsProtocol

        # httptools (fast) with a bound on the request's head: 431 past 16 KiB (kfct.serving.http_limits)
        return uvicorn.Config(
            app,
            host=self.host,
            port=self.port,
            log_config=None,
            access_log=self.access_log,
            loop="uvloop",
            http=BoundedHttpToolsProtocol,
            timeout_keep_alive=65,
            lifespan="off",
            **kw,
        )


class _KfctModelServer(ModelServer):
    """`kserve.ModelServer` configured for kfct: REST only, one worker, no per-request log lines."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        http_port: int = 8080,
        max_request_bytes: int = 1_000_000,
        access_log: bool = False,
        extra_routes: Callable[[FastAPI], None] | None = None,
        repository_token: str | None = None,
        router: ChurnRouter | None = None,
    ) -> None:
        # KServe's V1 endpoint answers with FastAPI's ORJSONResponse, deprecated in FastAPI 0.16x;
        # silenced when a server is built, not when this module is imported.
        warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
        super().__init__(http_port=http_port, workers=1, enable_grpc=False, enable_docs_url=False, enable_latency_logging=False)
        self.dataplane = __getattr__("KfctDataPlane")(model_registry=self.registered_models)
        self.host = host
        self.max_request_bytes = max_request_bytes
        self.rest = __getattr__("KfctRESTServer")(
            self.dataplane,
            self.model_repository_extension,
            host,
            http_port,
            max_request_bytes,
            extra_routes=extra_routes,
            access_log=access_log,
            repository_token=repository_token,
            router=router,
        )

    def register_models(self, models: list[ChurnRouter]) -> None:
        """Register without KServe's "at least one ready" check: readiness is reported, not required."""
        for m in models:
            self.register_model(m)
            m.enable_latency_logging = False

    def build_app(self) -> FastAPI:
        app: FastAPI = self.rest.create_application()
        return app

    def start(self, models: list[ChurnRouter]) -> None:
        """Blocking serve in the calling (main) thread; Ctrl-C / SIGTERM stop it."""
        import uvicorn

        self.register_models(models)
        server = uvicorn.Server(self.rest.uvicorn_config())
        server.run()


def add_kfct_routes(router: ChurnRouter, state_path: str | Path | None = None) -> Callable[[FastAPI], None]:
    """Routes for the local router: window stats for the rollout, the applied split."""

    def register(app: FastAPI) -> None:
        @app.get("/kfct/stats", response_model=None)  # the annotation is for mypy; no response model built
        async def stats(since: float | None = None, pairs: bool = False) -> dict[str, Any]:
            return router.stats(since, pairs)

        @app.get("/kfct/split", response_model=None)
        async def split() -> dict[str, Any]:
            from kfct.contracts.split_state import read_state

            st = read_state(state_path) if state_path else None
            return {
                "file": str(state_path) if state_path else None,
                "state": st.to_json() if st else None,
                "applied_generation": router.applied_generation,
                "failed_generation": router.failed_generation,
                "last_error": router.last_error,
            }

    return register


_KSERVE_CLASSES = {
    "KfctDataPlane": ("_KfctDataPlane", "kserve.protocol.dataplane:DataPlane"),
    "KfctRESTServer": ("_KfctRESTServer", "kserve.protocol.rest.server:RESTServer"),
    "KfctModelServer": ("_KfctModelServer", "kserve.model_server:ModelServer"),
}


def __getattr__(name: str) -> type:
    """PEP 562: the kserve-derived classes are built on first use, so importing this module
    does not import kserve (seconds)."""
    if name in _KSERVE_CLASSES:
        body, base = _KSERVE_CLASSES[name]
        return kserve_sdk.subclass(globals(), name, globals()[body], base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
