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
  `GET /kfct/split` (the split the server applies).
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse

from kfct import kserve_sdk
from kfct.serving.schemas import BadRequest, parse_json_body

log = logging.getLogger("kfct.serving")
kserve = kserve_sdk.LazyKServe()  # imported on first use

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
        ready = await super().model_ready(model_name, disable_predictor_health_check)
        if not ready:
            raise kserve.errors.ModelNotReady(model_name, _reason(self.model_registry.get_model(model_name)))
        return ready

    def decode(self, body, headers, protocol_version: str = "v1", model_name: str | None = None):
        is_v1_bytes = isinstance(body, (bytes, bytearray)) and protocol_version.lower() == "v1"
        if is_v1_bytes and not any(k.startswith("ce-") for k in (headers or {})):
            try:
                return orjson.loads(body), {}
            except orjson.JSONDecodeError:
                return parse_json_body(body), {}  # NaN/Infinity allowed: the model names the field
        return super().decode(body, headers, protocol_version, model_name)


def _reason(model) -> str | None:
    fn = getattr(model, "not_ready_reason", None)
    try:
        return fn() if callable(fn) else None
    except Exception:  # pragma: no cover - a reason must never turn a 503 into a 500
        return None


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413 before any parsing (pure ASGI, no copies)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        length = None
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    return await self._reject(send, 400, "content-length header is not a number")
                break
        if length is not None:
            if length > self.max_bytes:
                await self._drain(receive, limit=64 * self.max_bytes)
                return await self._reject(send, 413, self._message(length))
            return await self.app(scope, receive, send)
        # No content-length (chunked): buffer up to the limit, then replay to the app.
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

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _message(self, size: int, at_least: bool = False) -> str:
        return (f"request body of {'more than ' if at_least else ''}{size} bytes exceeds the limit of "
                f"{self.max_bytes} bytes (KFCT_MAX_REQUEST_BYTES)")

    @staticmethod
    async def _drain(receive, limit: int) -> None:
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
    async def _reject(send, status: int, message: str) -> None:
        body = orjson.dumps({"error": message, "field": "body"})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def bad_request_handler(_request, exc: BadRequest):
    log.debug("400: %s", exc)
    return ORJSONResponse(status_code=400, content=exc.to_json())


async def validation_error_handler(_request, exc: RequestValidationError):
    """FastAPI's V2 body validation: 400 naming the first offending location."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or "body"
    return ORJSONResponse(status_code=400, content={"error": f"{field}: {first.get('msg', 'invalid request')}",
                                                     "field": field})


class _KfctRESTServer(RESTServer):
    """KServe's REST server, on our own app object and host."""

    def __init__(self, dataplane, model_repository_extension, host: str, port: int, max_request_bytes: int,
                 extra_routes=None, access_log: bool = False):
        self.dataplane = dataplane
        self.model_repository_extension = model_repository_extension
        self.access_log_format = None
        self.host = host
        self.port = port
        self.max_request_bytes = max_request_bytes
        self.extra_routes = extra_routes
        self.access_log = access_log
        self.app = None

    def create_application(self) -> FastAPI:
        app = FastAPI(title="kfct model server (KServe ModelServer)", docs_url=None, redoc_url=None,
                      default_response_class=ORJSONResponse)
        self._register_endpoints(app)  # KServe's V1/V2/health/metrics routes
        self._add_exception_handlers(app)  # KServe's handlers...
        app.add_exception_handler(BadRequest, bad_request_handler)  # ...plus field-naming 400s
        app.add_exception_handler(RequestValidationError, validation_error_handler)
        if self.extra_routes is not None:
            self.extra_routes(app)
        app.add_middleware(BodyLimitMiddleware, max_bytes=self.max_request_bytes)
        self.app = app
        return app

    def uvicorn_config(self, **kw):
        import uvicorn

        if self.app is None:
            self.create_application()
        return uvicorn.Config(self.app, host=self.host, port=self.port, log_config=None, access_log=self.access_log,
                              loop="uvloop", http="httptools", timeout_keep_alive=65, lifespan="off", **kw)


class _KfctModelServer(ModelServer):
    """`kserve.ModelServer` configured for kfct: REST only, one worker, no per-request log lines."""

    def __init__(self, host: str = "127.0.0.1", http_port: int = 8080, max_request_bytes: int = 1_000_000,
                 access_log: bool = False, extra_routes=None):
        # KServe's V1 endpoint answers with FastAPI's ORJSONResponse, deprecated in FastAPI 0.16x;
        # silenced when a server is built, not when this module is imported.
        warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
        super().__init__(http_port=http_port, workers=1, enable_grpc=False, enable_docs_url=False,
                         enable_latency_logging=False)
        self.dataplane = __getattr__("KfctDataPlane")(model_registry=self.registered_models)
        self.host = host
        self.max_request_bytes = max_request_bytes
        self.rest = __getattr__("KfctRESTServer")(self.dataplane, self.model_repository_extension, host, http_port,
                                   max_request_bytes, extra_routes=extra_routes, access_log=access_log)

    def register_models(self, models) -> None:
        """Register without KServe's "at least one ready" check: readiness is reported, not required."""
        for m in models:
            self.register_model(m)
            m.enable_latency_logging = False

    def build_app(self) -> FastAPI:
        return self.rest.create_application()

    def start(self, models) -> None:
        """Blocking serve in the calling (main) thread; Ctrl-C / SIGTERM stop it."""
        import uvicorn

        self.register_models(models)
        server = uvicorn.Server(self.rest.uvicorn_config())
        server.run()


def add_kfct_routes(router, state_path=None):
    """Routes for the local router: window stats for the rollout, the applied split."""

    def register(app: FastAPI) -> None:
        @app.get("/kfct/stats")
        async def stats(since: float | None = None):
            return router.stats(since)

        @app.get("/kfct/split")
        async def split():
            from kfct.split_state import read_state

            st = read_state(state_path) if state_path else None
            return {"file": str(state_path) if state_path else None,
                    "state": st.to_json() if st else None,
                    "applied_generation": router.applied_generation,
                    "failed_generation": router.failed_generation,
                    "last_error": router.last_error}

    return register


_KSERVE_CLASSES = {"KfctDataPlane": ("_KfctDataPlane", "kserve.protocol.dataplane:DataPlane"),
                   "KfctRESTServer": ("_KfctRESTServer", "kserve.protocol.rest.server:RESTServer"),
                   "KfctModelServer": ("_KfctModelServer", "kserve.model_server:ModelServer")}


def __getattr__(name: str):
    """PEP 562: the kserve-derived classes are built on first use, so importing this module
    does not import kserve (seconds)."""
    if name in _KSERVE_CLASSES:
        body, base = _KSERVE_CLASSES[name]
        return kserve_sdk.subclass(globals(), name, globals()[body], base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
