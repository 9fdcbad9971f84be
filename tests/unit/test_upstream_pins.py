"""What kfct's overrides of KServe 0.21 and kfp 2.17 internals rely on, pinned: an upgrade that
changes any of it fails here, not in production.

KServe 0.21 (`.venv/.../kserve/`, upstream python/kserve/kserve at v0.21.0) offers no public hook
for what serving/app.py needs: its RESTServer always builds the module-level
`kserve.model_server:app`, binds 0.0.0.0 and registers the repository (load/unload) routes with
the rest; ModelServer builds that RESTServer itself in `start()`. So kfct keeps four overrides
(listed in serving/app.py's docstring): a DataPlane subclass (ready/model_ready/decode), a
RESTServer subclass whose __init__ does not call super() (it would build a uvicorn.Config bound to
0.0.0.0 around the global app), a collector standing in for the app in KServe's
`register_v1_endpoints`/`register_v2_endpoints` (to drop routes before they reach the app) and a
ModelServer subclass. kfp 2.17: `pipelines/kfp_client.py` wraps the one REST client every
kfp.Client service shares, and overrides `Client.get_kfp_healthz`.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _self_attrs(fn, ctx: type[ast.expr_context]) -> set[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.ctx, ctx) and isinstance(n.value, ast.Name) and n.value.id == "self"
    }


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_the_pinned_versions_are_the_ones_installed():
    # A new version: re-read the upstream code named in this module's docstring, then move the pins.
    assert metadata.version("kserve") == "0.21.0"
    assert metadata.version("kfp") == "2.17.0"


# -- KServe ---------------------------------------------------------------------------------------


def test_restserver_reads_only_what_our_init_sets():
    """_KfctRESTServer.__init__ skips RESTServer.__init__; every attribute the inherited methods read
    must be one our __init__ sets (or a method)."""
    from kserve.protocol.rest.server import RESTServer

    from kfct.serving.app import _KfctRESTServer

    assert _params(RESTServer.__init__) == [
        "self",
        "app",
        "data_plane",
        "model_repository_extension",
        "http_port",
        "access_log_format",
        "workers",
        "grace_period",
        "event_loop",
        "timeout_keep_alive",
        "ssl_certfile",
        "ssl_keyfile",
    ]
    ours = _self_attrs(_KfctRESTServer.__init__, ast.Store)
    overridden = {n for n, v in vars(_KfctRESTServer).items() if callable(v)}
    # start/stop/run drive RESTServer's own uvicorn server (self.config, self._server), which kfct never
    # builds: serving runs `uvicorn_config()` itself and never calls them.
    never_called = {"start", "stop", "run"}
    for path in (ROOT / "serving").glob("*.py"):
        assert not re.search(r"\.rest\.(start|stop|run)\(|_rest_server", path.read_text()), path
    inherited = [f for n, f in vars(RESTServer).items() if callable(f) and n != "__init__" and n not in overridden | never_called]
    read = set().union(*(_self_attrs(f, ast.Load) for f in inherited))
    methods = {n for n in dir(RESTServer) if callable(getattr(RESTServer, n))}
    assert read - methods <= ours, f"RESTServer methods read {sorted(read - methods - ours)}, which we never set"


class _OnlyIncludeRouter:
    """Stands in for the FastAPI app the way `_register_kserve_routes`'s collector does: any other use fails."""

    def __init__(self):
        self.routers = []

    def include_router(self, router, **_kw):
        self.routers.append(router)

    def __getattr__(self, name):
        raise AssertionError(f"KServe's endpoint registration now uses app.{name}: the collector must learn it")


def test_kserve_registers_its_endpoints_through_include_router_only():
    from unittest import mock

    from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
    from kserve.protocol.rest.v2_endpoints import register_v2_endpoints

    app = _OnlyIncludeRouter()
    register_v1_endpoints(app, mock.MagicMock(), mock.MagicMock())
    register_v2_endpoints(app, mock.MagicMock(), mock.MagicMock())
    paths = {r.path for router in app.routers for r in router.routes}
    assert {
        "/v1/models/{model_name}:predict",
        "/v2/models/{model_name}/infer",
        "/v2/health/ready",
        "/v2/repository/models/{model_name}/load",
        "/v2/repository/models/{model_name}/unload",
    } <= paths


def test_dataplane_methods_we_override_keep_their_signatures():
    from kserve.protocol.dataplane import DataPlane

    assert _params(DataPlane.__init__) == ["self", "model_registry"]
    assert _params(DataPlane.ready) == ["self"]
    assert _params(DataPlane.model_ready) == ["self", "model_name", "disable_predictor_health_check"]
    assert _params(DataPlane.decode)[:5] == ["self", "body", "headers", "protocol_version", "model_name"] or _params(
        DataPlane.decode
    )[:4] == ["self", "body", "headers", "model_name"]
    assert isinstance(inspect.getattr_static(DataPlane, "model_registry"), property)


def test_modelserver_builds_what_our_subclass_replaces():
    from kserve.model_server import ModelServer

    params = _params(ModelServer.__init__)
    for name in ("http_port", "workers", "enable_grpc", "enable_docs_url", "enable_latency_logging"):
        assert name in params, name
    assigned = _self_attrs(ModelServer.__init__, ast.Store)
    assert {"registered_models", "model_repository_extension", "dataplane"} <= assigned
    assert _params(ModelServer.register_model)[:2] == ["self", "model"]


def test_the_kserve_names_serving_uses_exist():
    import kserve
    import kserve.errors as e
    from kserve.protocol.rest import server
    from kserve.protocol.rest.v2_datamodels import InferenceRequest

    for name in ("InvalidInput", "InferenceError", "ModelNotFound", "ModelNotReady", "ServerNotReady", "ServerNotLive"):
        assert issubclass(getattr(e, name), Exception), name
    assert callable(kserve.InferRequest.from_inference_request) and callable(server.metrics_handler)
    assert "inputs" in InferenceRequest.model_fields


# -- kfp ------------------------------------------------------------------------------------------


def test_every_kfp_client_service_shares_one_api_client():
    """`_bound_requests` wraps `client._run_api.api_client.rest_client.request` once for all calls:
    that holds while Client.__init__ hands the same ApiClient to every *ServiceApi."""
    from kfct.pipelines.kfp_client import kfp_client_module

    client = kfp_client_module().Client
    tree = ast.parse(textwrap.dedent(inspect.getsource(client.__init__)))
    services = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "attr", "").endswith("ServiceApi")
        ):
            target = node.targets[0]
            services[getattr(target, "attr", "?")] = [ast.unparse(a) for a in node.value.args]
    assert "_run_api" in services and len(services) >= 5
    assert {tuple(a) for a in services.values()} == {("api_client",)}, services


def test_the_rest_client_takes_a_request_timeout_and_has_a_pool_manager():
    from kfp_server_api.rest import RESTClientObject

    assert "_request_timeout" in _params(RESTClientObject.request)
    assert "pool_manager" in _self_attrs(RESTClientObject.__init__, ast.Store)


def test_client_init_asks_get_kfp_healthz_which_we_answer():
    from kfct.pipelines.kfp_client import kfp_client_module

    client = kfp_client_module().Client
    assert _params(client.get_kfp_healthz) == ["self", "sleep_duration"]
    assert "self.get_kfp_healthz(" in inspect.getsource(client.__init__)


@pytest.mark.parametrize("module", ["kfct.serving.app", "kfct.pipelines.kfp_client"])
def test_the_overrides_name_their_pins(module):
    import importlib

    doc = importlib.import_module(module).__doc__ or ""
    assert "tests/unit/test_upstream_pins.py" in doc
