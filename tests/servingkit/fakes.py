"""Loopback stand-ins for the cluster APIs the serving code calls, recording every request.

- `FakeKubeApi`: the Kubernetes API paths `KServeClient` uses for InferenceServices
  (GET / POST / merge-PATCH under /apis/serving.kserve.io/v1beta1/...). With
  `controller=True` it also writes the status KServe's controller would: the deployment
  mode, Standard-mode `canaryStatuses`, Serverless-mode predictor revisions (a new one
  when the predictor spec other than canaryTrafficPercent changes); `ready=False` keeps
  canaries unready.
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
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

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


ISVC_PATH = re.compile(r"^/apis/serving\.kserve\.io/(v1beta1)/namespaces/([^/]+)/inferenceservices(?:/([^/?]+))?$")


class _KubeHandler(BaseHTTPRequestHandler):
    server_ref: "FakeKubeApi"

    def _send(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        srv = self.server_ref
        path = urlparse(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        srv.requests.append({"method": method, "path": path, "content_type": self.headers.get("Content-Type"),
                             "auth": self.headers.get("Authorization"), "body": body})
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
                obj["metadata"].setdefault("generation", 1)
                try:
                    obj = srv.admit(None, obj)
                except Exception as exc:  # an admission webhook's denial, relayed by the API server
                    return self._send(getattr(exc, "status", 500), {"kind": "Status", "code": getattr(exc, "status", 500),
                                                                    "reason": "Forbidden", "message": str(exc)})
                srv.objects[key] = srv.reconcile(None, obj)
                return self._send(201, srv.objects[key])
            key = (ns, name)
            if key not in srv.objects:
                return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound",
                                        "message": f'inferenceservices.serving.kserve.io "{name}" not found'})
            if method == "GET":
                return self._send(200, srv.objects[key])
            if method == "PATCH":
                if self.headers.get("Content-Type") != "application/merge-patch+json":
                    return self._send(415, {"kind": "Status", "code": 415})
                obj = merge_patch(srv.objects[key], body)
                obj["metadata"]["generation"] = srv.objects[key]["metadata"].get("generation", 1) + 1
                try:
                    obj = srv.admit(srv.objects[key], obj)
                except Exception as exc:  # an admission webhook's denial, relayed by the API server
                    return self._send(getattr(exc, "status", 500), {"kind": "Status", "code": getattr(exc, "status", 500),
                                                                    "reason": "Forbidden", "message": str(exc)})
                srv.objects[key] = srv.reconcile(srv.objects[key], obj)
                return self._send(200, srv.objects[key])
        self._send(405, {"kind": "Status", "code": 405})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PATCH(self):
        self._handle("PATCH")


def _predictor_template(spec: dict) -> dict:
    """What makes a new Knative revision: the predictor spec less the traffic split."""
    pred = dict((spec or {}).get("predictor") or {})
    pred.pop("canaryTrafficPercent", None)
    return pred


class FakeKubeApi(_Server):
    def __init__(self, controller: bool = False, ready: bool = True):
        self.objects: dict[tuple[str, str], dict] = {}
        self.lock = threading.Lock()
        self.controller = controller
        self.ready = ready
        super().__init__(_KubeHandler)

    def admit(self, old: dict | None, obj: dict) -> dict:
        """Admission webhooks (none here; the e2e's API applies KServe's: tests/e2e/kserve_admission.py)."""
        return obj

    def reconcile(self, old: dict | None, obj: dict) -> dict:
        """The status KServe's controller would write (only with controller=True)."""
        if not self.controller:
            return obj
        name = obj["metadata"]["name"]
        mode = (obj["metadata"].get("annotations") or {}).get("serving.kserve.io/deploymentMode", "Standard")
        mode = "Standard" if mode == "RawDeployment" else mode
        status = copy.deepcopy((old or {}).get("status") or {})
        status["deploymentMode"] = mode
        status["observedGeneration"] = obj["metadata"]["generation"]
        if mode == "Standard":
            status["canaryStatuses"] = [{"name": c["predictor"]["name"], "ready": self.ready,
                                         "trafficPercent": c.get("trafficPercent", 0)}
                                        for c in (obj.get("spec") or {}).get("canary") or []]
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
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester", "namespace": namespace}}],
            "current-context": "fake",
        }


SELECTOR = re.compile(r'(\w+)="([^"]*)"')


class _PromHandler(BaseHTTPRequestHandler):
    server_ref: "FakePrometheus"

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
        if "histogram_quantile" in q:
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
        body = json.dumps({"status": "success", "data": {"resultType": "vector",
                                                          "result": [{"metric": {}, "value": [0, str(value)]}]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FakePrometheus(_Server):
    """`figures[version] = {"ok", "client_errors", "server_errors", "instances", "positives", "p99"}`."""

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
    from kfct.components import deploy

    monkeypatch.setattr(deploy, "model_storage_uri",
                        lambda name, version: f"s3://kfct/mlflow/models/{name}-v{version}/artifacts")


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
