"""Loopback stand-ins for the cluster APIs the serving code calls, recording every request.

- `FakeKubeApi`: the Kubernetes API paths `KServeClient` uses for InferenceServices
  (GET / POST / merge-PATCH under /apis/serving.kserve.io/v1beta1/...). With
  `controller=True` it also writes the status KServe's controller would: the deployment
  mode, Standard-mode `canaryStatuses`, Serverless-mode predictor revisions (a new one
  when the predictor spec other than canaryTrafficPercent changes); `ready=False` keeps
  canaries unready. It applies KServe's admission (`admit`: the defaulter's mode rewrite,
  `kserve_default_mode`, and the validator's checks, `kserve_validate`) and, in
  Standard mode with `gateway_api=True` (KServe's `enableGatewayApi`), writes the HTTPRoutes
  KServe's Gateway API reconciler writes (`kserve_http_routes`), served under
  /apis/gateway.networking.k8s.io/v1; `httproute_crd=False` is a cluster without the Gateway
  API CRDs, `canary_field=False` a KServe < 0.20 CRD (spec.canary pruned).
- `FakePrometheus`: `/api/v1/query` answering kfct_* PromQL from per-version figures.
- `s3_artifacts`, `restore_kube_default_config` (fixtures) and `client_for`: what every test
  of the cluster path against these fakes needs around it.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

# A rollout quick enough for loopback tests: three steps, sub-second bakes and polls.
FAST_ROLLOUT = {"rollout": {"steps": [20, 50, 100], "bake_seconds": 0.2, "poll_seconds": 0.05, "min_requests": 100}}


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class _Server:
    def __init__(self, handler_cls):
        self.requests: list[dict] = []
        outer = self

        class H(handler_cls):
            server_ref = outer

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


ROUTE_PATH = re.compile(r"^/apis/gateway\.networking\.k8s\.io/v1/namespaces/([^/]+)/httproutes(?:/([^/?]+))?$")
ISVC_PATH = re.compile(r"^/apis/serving\.kserve\.io/(v1beta1)/namespaces/([^/]+)/inferenceservices(?:/([^/?]+))?$")


class AdmissionDenied(Exception):
    """An admission webhook refused the object: the apiserver answers `status` with `body` (a Status)."""

    def __init__(self, status: int, body: dict) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


def admission_denial(exc: Exception) -> tuple[int, dict]:
    """(HTTP status, Status body) for a webhook's refusal. controller-runtime answers a validator's plain
    error with `admission.Denied` (403 Forbidden; sigs.k8s.io/controller-runtime pkg/webhook/admission/
    validator_custom.go), which the apiserver relays."""
    if isinstance(exc, AdmissionDenied):
        return exc.status, exc.body
    status = getattr(exc, "status", 500)
    return status, {"kind": "Status", "code": status, "reason": "Forbidden", "message": str(exc)}


class _KubeHandler(BaseHTTPRequestHandler):
    server_ref: FakeKubeApi

    def _send(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:  # noqa: C901 - the fake API server's routes, one branch per verb and path
        srv = self.server_ref
        path = urlparse(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        srv.requests.append(
            {
                "method": method,
                "path": path,
                "content_type": self.headers.get("Content-Type"),
                "auth": self.headers.get("Authorization"),
                "body": body,
            }
        )
        r = ROUTE_PATH.match(path)
        if r and method == "GET":
            return self._route(*r.groups())
        served = srv.serve_other(method, path, body)  # another API group this apiserver serves (a subclass's)
        if served is not None:
            return self._send(*served)
        m = ISVC_PATH.match(path)
        if not m:
            return self._send(404, {"kind": "Status", "code": 404, "message": f"no route {path}"})
        _, ns, name = m.groups()
        with srv.lock:
            if method == "POST" and name is None:
                key = (ns, body["metadata"]["name"])
                if key in srv.objects:
                    return self._send(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
                obj = copy.deepcopy(body)
                if not srv.canary_field:  # a structural schema drops fields it does not declare
                    (obj.get("spec") or {}).pop("canary", None)
                obj["metadata"].setdefault("generation", 1)
                obj["metadata"]["namespace"] = ns  # the apiserver takes it from the path
                try:
                    obj = srv.admit(None, obj)
                except Exception as exc:  # noqa: BLE001 - an admission webhook's denial, relayed by the API server
                    return self._send(*admission_denial(exc))
                srv.objects[key] = srv.reconcile(None, obj)
                return self._send(201, srv.objects[key])
            key = (ns, name)
            if key not in srv.objects:
                return self._send(
                    404,
                    {
                        "kind": "Status",
                        "code": 404,
                        "reason": "NotFound",
                        "message": f'inferenceservices.serving.kserve.io "{name}" not found',
                    },
                )
            if method == "GET":
                return self._send(200, srv.objects[key])
            if method == "PATCH":
                if self.headers.get("Content-Type") != "application/merge-patch+json":
                    return self._send(415, {"kind": "Status", "code": 415})
                obj = merge_patch(srv.objects[key], body)
                if not srv.canary_field:
                    (obj.get("spec") or {}).pop("canary", None)
                obj["metadata"]["generation"] = srv.objects[key]["metadata"].get("generation", 1) + 1
                try:
                    obj = srv.admit(srv.objects[key], obj)
                except Exception as exc:  # noqa: BLE001 - an admission webhook's denial, relayed by the API server
                    return self._send(*admission_denial(exc))
                srv.objects[key] = srv.reconcile(srv.objects[key], obj)
                return self._send(200, srv.objects[key])
        self._send(405, {"kind": "Status", "code": 405})

    def _route(self, ns: str, name: str | None) -> None:
        """HTTPRoutes as the apiserver answers: a resource that is not served is a 404 without
        `details` ("the server could not find the requested resource"); a missing object is a
        404 whose `details` name it (k8s.io/apimachinery/pkg/api/errors.NewNotFound)."""
        srv = self.server_ref
        if not srv.httproute_crd:
            return self._send(
                404,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 404,
                    "reason": "NotFound",
                    "details": {},
                    "message": "the server could not find the requested resource",
                },
            )
        with srv.lock:
            routes = srv.http_routes(ns)
        if name is None:
            return self._send(
                200, {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRouteList", "items": list(routes.values())}
            )
        if name not in routes:
            return self._send(
                404,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 404,
                    "reason": "NotFound",
                    "details": {"name": name, "group": "gateway.networking.k8s.io", "kind": "httproutes"},
                    "message": f'httproutes.gateway.networking.k8s.io "{name}" not found',
                },
            )
        return self._send(200, routes[name])

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_DELETE(self):
        self._handle("DELETE")


def _predictor_template(spec: dict) -> dict:
    """What makes a new Knative revision: the predictor spec less the traffic split."""
    pred = dict((spec or {}).get("predictor") or {})
    pred.pop("canaryTrafficPercent", None)
    return pred


# KServe's admission webhooks have one emulation in the tests, tests/e2e/kserve_admission.py (kserve/kserve
# aaac4e294, VERSION 0.20.0, pkg/apis/serving/v1beta1/inference_service_defaults.go and
# inference_service_validation.go); the two helpers below are this kit's interface to it.


def kserve_default_mode(obj: dict, default_mode: str = "Standard") -> str:
    """The defaulter's rewrite of `obj`'s annotation, in place (`kserve_admission.default`); returns the mode."""
    from tests.e2e import kserve_admission as KA

    obj["metadata"] = KA.default(obj, default_mode)["metadata"]
    return KA.parse_mode((obj["metadata"].get("annotations") or {}).get(KA.ANNOTATION, ""), default_mode)


def predictor_service_name(isvc: str, predictor: str | None = None) -> str:
    """kserve v0.20 pkg/constants/constants.go `PredictorServiceName`."""
    return f"{isvc}-{predictor}-predictor" if predictor else f"{isvc}-predictor"


def kserve_http_routes(isvc: dict, ingress_domain: str = "example.com") -> list[dict]:
    """The HTTPRoutes of a Standard-mode InferenceService whose predictor is ready, as KServe v0.20
    (kserve/kserve aaac4e294) pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/
    httproute_reconciler.go writes them: `createRawTopLevelHTTPRoute` (named after the service, host
    from the default domainTemplate `{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}`) and
    `createRawPredictorHTTPRoute` (`<isvc>-predictor`: a stable name across promotions), one rule
    with one backendRef to the stable predictor Service on port 80; with `spec.canary`,
    `applyCanaryWeights` gives the stable backend `100 - sum(ready canaries)` and appends one
    weighted backendRef `<isvc>-<canary name>-predictor` per canary that
    `status.canaryStatuses` reports ready (an unready canary gets no backend at all)."""
    meta, spec, status = isvc["metadata"], isvc.get("spec") or {}, isvc.get("status") or {}
    name, ns = meta["name"], meta["namespace"]
    stable = predictor_service_name(name, (spec.get("predictor") or {}).get("name"))
    ready = {c["name"]: c.get("ready") for c in status.get("canaryStatuses") or []}
    canaries = [c for c in spec.get("canary") or [] if ready.get(c["predictor"]["name"])]
    refs = [{"kind": "Service", "name": stable, "namespace": ns, "port": 80}]
    if spec.get("canary"):
        refs[0]["weight"] = 100 - sum(c.get("trafficPercent", 0) for c in canaries)
        refs += [
            {
                "kind": "Service",
                "name": predictor_service_name(name, c["predictor"]["name"]),
                "namespace": ns,
                "port": 80,
                "weight": c.get("trafficPercent", 0),
            }
            for c in canaries
        ]
    routes = []
    for route_name, host_name in ((name, name), (predictor_service_name(name), predictor_service_name(name))):
        routes.append(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": route_name, "namespace": ns, "labels": dict(meta.get("labels") or {})},
                "spec": {
                    "hostnames": [f"{host_name}-{ns}.{ingress_domain}"],
                    "parentRefs": [
                        {
                            "group": "gateway.networking.k8s.io",
                            "kind": "Gateway",
                            "namespace": "kserve",
                            "name": "kserve-ingress-gateway",
                        }
                    ],
                    "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": copy.deepcopy(refs)}],
                },
            }
        )
    return routes


def kserve_validate(old: dict | None, new: dict) -> str | None:
    """What KServe's validating webhook rejects of `new` (CREATE when `old` is None), or None
    (`kserve_admission.validate` / `validate_update`)."""
    from tests.e2e import kserve_admission as KA

    try:
        if old is None:
            KA.validate(new)
        else:
            KA.validate_update(old, new)
    except KA.Denied as exc:
        return str(exc)
    return None


class FakeKubeApi(_Server):
    def __init__(
        self,
        controller: bool = False,
        ready: bool = True,
        gateway_api: bool = True,
        httproute_crd: bool = True,
        canary_field: bool = True,
    ):
        self.objects: dict[tuple[str, str], dict] = {}
        self.lock = threading.Lock()
        self.controller = controller
        self.ready = ready
        self.gateway_api = gateway_api
        self.httproute_crd = httproute_crd
        self.canary_field = canary_field
        self.denials: list[str] = []
        super().__init__(_KubeHandler)

    def admit(self, old: dict | None, obj: dict) -> dict:
        """KServe's admission (with `controller=True`): the defaulter's mode rewrite, then the
        validator. Returns the object to store; a denial raises `AdmissionDenied` carrying the
        Status the apiserver returns for a webhook's refusal (subclasses add other webhooks)."""
        if not self.controller:
            return obj
        kserve_default_mode(obj)
        why = kserve_validate(old, obj)
        if why is None:
            return obj
        self.denials.append(why)
        raise AdmissionDenied(
            403,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": 403,
                "reason": "Forbidden",
                "message": f'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: {why}',
            },
        )

    def serve_other(self, method: str, path: str, body: dict | None) -> tuple[int, dict] | None:
        """(status, body) for a request of another API group a subclass serves (e.g. Trainer's
        trainjobs in the e2e); None: not one of them."""
        return None

    def http_routes(self, namespace: str) -> dict[str, dict]:
        """The HTTPRoutes KServe's controller keeps for the namespace's Standard-mode services."""
        if not (self.controller and self.gateway_api):
            return {}
        out: dict[str, dict] = {}
        for (ns, _), obj in self.objects.items():
            if ns == namespace and (obj.get("status") or {}).get("deploymentMode") == "Standard":
                out.update({r["metadata"]["name"]: r for r in kserve_http_routes(obj)})
        return out

    def reconcile(self, old: dict | None, obj: dict) -> dict:
        """The status KServe's controller would write (only with controller=True)."""
        if not self.controller:
            return obj
        name = obj["metadata"]["name"]
        mode = kserve_default_mode(obj)
        status = copy.deepcopy((old or {}).get("status") or {})
        status["deploymentMode"] = mode
        status["observedGeneration"] = obj["metadata"]["generation"]
        if mode == "Standard":
            if self.gateway_api:  # createRawURL: the top-level host, served by the gateway
                status["url"] = f"http://{name}-{obj['metadata']['namespace']}.example.com"
            status["canaryStatuses"] = [
                {"name": c["predictor"]["name"], "ready": self.ready, "trafficPercent": c.get("trafficPercent", 0)}
                for c in (obj.get("spec") or {}).get("canary") or []
            ]
        else:
            pred = (status.setdefault("components", {})).setdefault("predictor", {})
            if old is None or _predictor_template(old.get("spec")) != _predictor_template(obj.get("spec")):
                rev = f"{name}-predictor-{obj['metadata']['generation']:05d}"
                if pred.get("latestCreatedRevision"):
                    pred["previousRolledoutRevision"] = pred.get("latestReadyRevision")
                pred["latestCreatedRevision"] = rev
                if self.ready:
                    pred["latestReadyRevision"] = rev
        obj["status"] = status
        return obj

    def kubeconfig(self, namespace: str = "kfct") -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester", "namespace": namespace}}],
            "current-context": "fake",
        }


SELECTOR = re.compile(r'(\w+)="([^"]*)"')


class _PromHandler(BaseHTTPRequestHandler):
    server_ref: FakePrometheus

    def do_GET(self):
        srv = self.server_ref
        u = urlparse(self.path)
        q = parse_qs(u.query).get("query", [""])[0]
        srv.requests.append({"path": u.path, "query": q})
        if u.path != "/api/v1/query":
            self.send_response(404)
            self.end_headers()
            return
        labels = dict(SELECTOR.findall(q))
        version = labels.get("model_version")
        figures = srv.figures.get(version, {})
        if q.startswith("sum by (shard)"):  # the canary's paired series, per customer shard
            return self._vector(_paired_shards(q, labels, figures))
        if "kfct_paired_seconds_per_row" in q:
            value = figures.get("p99_per_row", 2e-5)
        elif "histogram_quantile" in q:
            value = figures.get("p99", 0.0)
        elif "kfct_request_errors_total" in q:
            value = figures.get(f"{labels.get('kind')}_errors", 0.0)
        elif "kfct_predictions_total" in q:
            value = figures.get("positives" if labels.get("label") == "1" else "instances", 0.0)
        elif "kfct_requests_total" in q:
            value = figures.get("ok", 0.0)
        else:
            value = float("nan")
        srv.seen_ranges.update(re.findall(r"\[(\d+)s\]", q))
        self._vector([{"metric": {}, "value": [0, str(value)]}])

    def _vector(self, result: list) -> None:
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _paired_shards(q: str, labels: dict, figures: dict) -> list[dict]:
    """The canary's kfct_paired_* per shard: `paired_shards` shards (32) of 10 rows each, every row
    shifted by the canary's `label_shift` (0: a canary that agrees with the champion)."""
    shift, rows = float(figures.get("label_shift", 0.0)), 10.0
    metric = q.split("increase(", 1)[1].split("{", 1)[0]
    if metric in ("kfct_paired_requests_total", "kfct_paired_rows_total"):
        value = rows
    else:
        value = rows * max(shift if labels.get("direction") == "up" else -shift, 0.0)
    return [
        {"metric": {"shard": str(i)}, "value": [0, str(value)]}
        for i in range(int(figures.get("paired_shards", 32 if figures else 0)))
    ]


class FakePrometheus(_Server):
    """`figures[version] = {"ok", "client_errors", "server_errors", "instances", "positives", "p99",
    "label_shift", "paired_shards", "p99_per_row"}` (the last three: the canary's paired series)."""

    def __init__(self, figures: dict | None = None):
        self.figures = figures or {}
        self.seen_ranges: set[str] = set()
        super().__init__(_PromHandler)


@pytest.fixture
def s3_artifacts(monkeypatch):
    """The serving test registry keeps artifacts on local disk (file://), which a deploy to a
    cluster rightly refuses (KServe's storage initializer cannot read it). Against the loopback
    Kubernetes API nothing downloads the model, so the cluster tests point each version at the
    s3:// location a cluster's MLflow (artifact root in MinIO) would give it."""
    from kfct.cluster import kserve_isvc

    monkeypatch.setattr(
        kserve_isvc, "model_storage_uri", lambda name, version: f"s3://kfct/mlflow/models/{name}-v{version}/artifacts"
    )


@pytest.fixture
def restore_kube_default_config():
    """KServeClient loads the kubeconfig into the kubernetes client's global default: undo it, so
    no later test talks to a loopback API that is gone."""
    from kubernetes import client

    saved = client.Configuration.get_default_copy()
    yield
    client.Configuration.set_default(saved)


def client_for(kube: FakeKubeApi):
    """The kserve SDK's KServeClient, configured from the loopback API's kubeconfig as deploy builds it."""
    from kfct.components.deploy import kserve_client

    return kserve_client(config_dict=kube.kubeconfig())
