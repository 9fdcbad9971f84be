"""A loopback HTTP server speaking the Kubeflow Pipelines v2beta1 REST endpoints kfct uses.

Not a mock of our client: it is a small, stateful KFP API (pipelines, versions,
experiments, runs, recurring runs) that the real `kfp.Client` (kfp 2.17, generated
`kfp_server_api`) talks to over HTTP. It checks what the real API server checks for
these calls (a parseable pipeline spec in uploads, unique version names, run parameters
declared by the pipeline, 6-field cron, known ids, bearer token) and records every
request so tests can assert the contract.

Multi-user mode (`FakeKfpServer(users={token: {namespaces}})`) follows kubeflow/pipelines
2.17.0 (commit 7b70c7b9): pipelines belong to a namespace or are shared (namespace "");
`ListPipelines` returns the pipelines of exactly the namespace asked for, shared ones when
none is given (server/pipeline_server.go `listPipelines`, FilterContext on the namespace),
and reads of shared pipelines are never authorized (`canAccessPipeline`: Get/List on an empty
namespace return nil). The multipart upload endpoints authorize only namespaced pipelines:
server/pipeline_upload_server.go `canUploadVersionedPipeline` returns nil when the pipeline's
namespace is empty, so ANY authenticated user may upload a shared pipeline or add a version
to one; for a namespaced one the caller needs `create` on pipelines in that namespace (a
failure answers HTTP 400 "Failed to create a pipeline[ version]", as upstream writes it).
Pipeline names are unique per namespace.

    with FakeKfpServer(token="t0k3n") as kfp:
        ... kfp.url ... kfp.requests ... kfp.state ...
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

API = "/apis/v2beta1"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None  # parsed JSON body
    files: dict[str, bytes] = field(default_factory=dict)  # multipart uploads
    status: int = 0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _State:
    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}  # pipeline_id -> versions (oldest first)
        self.specs: dict[str, dict] = {}  # version id -> pipeline spec
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self.lock = threading.Lock()

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self.ids):04d}"


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_GRPC_CODE = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13}


def _authorize(server: _Server, namespace: str, token: str | None, verb: str) -> None:
    """SubjectAccessReview in a namespace (multi-user only; shared objects are handled by the caller)."""
    if not server.users:
        return
    if namespace not in server.users.get(token or "", set()):
        raise ApiError(403, f"PermissionDenied: user cannot {verb} pipelines in namespace {namespace!r}")


def _filter_name(query: dict[str, str]) -> str | None:
    """The display_name EQUALS predicate kfp.Client sends to look things up by name."""
    raw = query.get("filter")
    if not raw:
        return None
    for p in json.loads(raw).get("predicates", []):
        if p.get("key") in ("display_name", "name") and p.get("operation") in ("EQUALS", 1):
            return p.get("stringValue") or p.get("string_value")
    return None


def _parse_spec(data: bytes) -> dict:
    try:
        docs = [d for d in yaml.safe_load_all(data.decode("utf-8")) if d]
    except Exception as exc:
        raise ApiError(400, f"Failed to parse the pipeline spec: {exc}") from exc
    if not docs or not isinstance(docs[0], dict) or "pipelineInfo" not in docs[0] or "root" not in docs[0]:
        raise ApiError(400, "Invalid pipeline spec: missing pipelineInfo or root")
    return docs[0]


def _stored_spec(data: bytes) -> dict:
    """The struct the API keeps and returns as `pipeline_spec` (api_util.go YamlStringToPipelineSpecStruct):
    the pipeline spec alone, or {pipeline_spec, platform_spec} when the package has a platform spec."""
    docs = [d for d in yaml.safe_load_all(data.decode("utf-8")) if d]
    platform = [d for d in docs[1:] if isinstance(d, dict) and "platforms" in d]
    if platform:
        return {"pipeline_spec": docs[0], "platform_spec": platform[0]}
    return docs[0]


def _check_cron(cron: str) -> None:
    fields = cron.split()
    if len(fields) != 6:
        raise ApiError(400, f"Invalid cron expression {cron!r}: expected 6 fields (seconds first)")
    for f in fields:
        if not re.fullmatch(r"[0-9A-Za-z*?/,\-LW#]+", f):
            raise ApiError(400, f"Invalid cron expression {cron!r}: bad field {f!r}")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    # -- plumbing -------------------------------------------------------------
    def _read(self) -> tuple[Any, dict[str, bytes]]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
            files = {}
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                files[name] = part.get_payload(decode=True) or b""
            return None, files
        if raw:
            try:
                return json.loads(raw), {}
            except ValueError:
                return raw.decode("utf-8", "replace"), {}
        return None, {}

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body, files = self._read()
        rec = Recorded(method, url.path, query, {k.lower(): v for k, v in self.headers.items()}, body, files)
        self.server.recorded.append(rec)
        try:
            if self.server.fail_status:
                raise ApiError(self.server.fail_status, "forced failure")
            auth = self.headers.get("Authorization") or ""
            self.server.caller.token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
            if self.server.users:
                if self.server.caller.token not in self.server.users:
                    raise ApiError(401, "Unauthorized: missing or invalid bearer token")
            elif self.server.token is not None and auth != f"Bearer {self.server.token}":
                raise ApiError(401, "Unauthorized: missing or invalid bearer token")
            with self.server.state.lock:
                status, payload = self.server.route(method, url.path, query, body, files)
        except ApiError as err:
            status, payload = (
                err.status,
                {"error": err.message, "code": _GRPC_CODE.get(err.status, 2), "message": err.message, "details": []},
            )
        rec.status = status
        self._send(status, payload)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, token: str | None, users: dict[str, set[str]] | None = None):
        super().__init__(addr, _Handler)
        self.token = token
        self.users = {k: set(v) for k, v in (users or {}).items()}  # multi-user: token -> namespaces it may use
        self.caller = threading.local()
        self.state = _State()
        self.recorded: list[Recorded] = []
        self.fail_status: int | None = None

    # -- the API --------------------------------------------------------------
    def route(self, method: str, path: str, q: dict, body: Any, files: dict) -> tuple[int, dict]:
        """Dispatch to the handler of the first (method, path pattern) in `_ROUTES` that matches."""
        if not path.startswith(API):
            raise ApiError(404, f"no route {path}")
        p = path[len(API) :]
        for methods, pattern, handler in _ROUTES:
            m = re.fullmatch(pattern, p)
            if m and method in methods:
                return handler(self, self.state, q, body, files, *m.groups(), method=method)
        raise ApiError(404, f"no route {method} {path}")

    # -- one handler per endpoint (signature: self, state, query, body, files, *path groups, method) --
    def _healthz(self, st, q, body, files, method):
        return 200, {"multi_user": bool(self.users), "pipeline_store": "database"}

    def _upload_pipeline(self, st, q, body, files, method):
        name = q.get("name") or q.get("display_name")
        if not name:
            raise ApiError(400, "pipeline name is required")
        ns = q.get("namespace", "") if self.users else ""
        if ns:  # canUploadVersionedPipeline: a shared pipeline ("") is not authorized at all
            try:
                _authorize(self, ns, self.caller.token, "create")
            except ApiError as exc:
                raise ApiError(400, "Failed to create a pipeline") from exc
        if any(x["display_name"] == name and x["namespace"] == ns for x in st.pipelines.values()):
            raise ApiError(409, f"Failed to create a pipeline: pipeline {name!r} already exists")
        spec = _parse_spec(files.get("uploadfile", b""))
        pid = st.new_id("pipeline")
        pipe = {
            "pipeline_id": pid,
            "display_name": name,
            "name": name,
            "description": q.get("description", ""),
            "created_at": _now(),
            "namespace": ns,
        }
        st.pipelines[pid] = pipe
        self._add_version(pid, name, spec, q.get("description", ""), _stored_spec(files["uploadfile"]))
        return 200, pipe

    def _upload_version(self, st, q, body, files, method):
        pid = q.get("pipelineid")
        if pid not in st.pipelines:
            raise ApiError(404, f"pipeline {pid!r} not found")
        if st.pipelines[pid]["namespace"]:  # the pipeline's namespace; shared: no authorization upstream
            try:
                _authorize(self, st.pipelines[pid]["namespace"], self.caller.token, "create")
            except ApiError as exc:
                raise ApiError(400, "Failed to create a pipeline version") from exc
        name = q.get("name") or q.get("display_name")
        if not name:
            raise ApiError(400, "pipeline version name is required")
        if any(v["display_name"] == name for v in st.versions[pid]):
            raise ApiError(409, f"pipeline version {name!r} already exists")
        spec = _parse_spec(files.get("uploadfile", b""))
        return 200, self._add_version(pid, name, spec, q.get("description", ""), _stored_spec(files["uploadfile"]))

    def _list_pipelines(self, st, q, body, files, method):
        name = _filter_name(q)
        ns = q.get("namespace", "") if self.users else ""
        if ns:
            _authorize(self, ns, self.caller.token, "list")
        items = [
            x
            for x in st.pipelines.values()
            if (name is None or x["display_name"] == name) and (not self.users or x["namespace"] == ns)
        ]
        return 200, ({"pipelines": items, "total_size": len(items)} if items else {})

    def _list_versions(self, st, q, body, files, pid, method):
        if pid not in st.pipelines:
            raise ApiError(404, f"pipeline {pid!r} not found")
        if st.pipelines[pid]["namespace"]:
            _authorize(self, st.pipelines[pid]["namespace"], self.caller.token, "list")
        items = list(st.versions[pid])
        if q.get("sort_by", "").replace("%20", " ") == "created_at desc":
            items = items[::-1]
        size = int(q.get("page_size") or 0)
        items = items[:size] if size > 0 else items
        return 200, {"pipeline_versions": items, "total_size": len(st.versions[pid])}

    def _get_version(self, st, q, body, files, pid, vid, method):
        if pid not in st.pipelines:
            raise ApiError(404, f"pipeline {pid!r} not found")
        if st.pipelines[pid]["namespace"]:
            _authorize(self, st.pipelines[pid]["namespace"], self.caller.token, "get")
        for v in st.versions[pid]:
            if v["pipeline_version_id"] == vid:
                return 200, v
        raise ApiError(404, f"pipeline version {vid!r} of pipeline {pid!r} not found")

    def _list_experiments(self, st, q, body, files, method):
        name = _filter_name(q)
        ns = q.get("namespace") or ""
        items = [
            e for e in st.experiments.values() if (name is None or e["display_name"] == name) and (not ns or e["namespace"] == ns)
        ]
        return 200, ({"experiments": items, "total_size": len(items)} if items else {})

    def _create_experiment(self, st, q, body, files, method):
        if not isinstance(body, dict) or not body.get("display_name"):
            raise ApiError(400, "experiment display_name is required")
        eid = st.new_id("experiment")
        exp = {
            "experiment_id": eid,
            "display_name": body["display_name"],
            "description": body.get("description") or "",
            "namespace": body.get("namespace") or "",
            "created_at": _now(),
            "storage_state": "AVAILABLE",
        }
        st.experiments[eid] = exp
        return 200, exp

    def _create_run(self, st, q, body, files, method):
        run = self._check_job(body, "run")
        rid = st.new_id("run")
        run.update({"run_id": rid, "state": "PENDING", "created_at": _now(), "storage_state": "AVAILABLE"})
        st.runs[rid] = run
        return 200, run

    def _get_run(self, st, q, body, files, rid, method):
        if rid not in st.runs:
            raise ApiError(404, f"run {rid!r} not found")
        return 200, st.runs[rid]

    def _create_recurring(self, st, q, body, files, method):
        job = self._check_job(body, "recurring run")
        trigger = body.get("trigger") or {}
        cron = (trigger.get("cron_schedule") or {}).get("cron")
        periodic = (trigger.get("periodic_schedule") or {}).get("interval_second")
        if not cron and not periodic:
            raise ApiError(400, "a recurring run needs a cron or periodic trigger")
        if cron:
            _check_cron(cron)
        mc = int(body.get("max_concurrency") or 0)
        if not 1 <= mc <= 10:
            raise ApiError(400, f"max_concurrency must be in [1, 10], got {mc}")
        rid = st.new_id("recurring")
        job.update(
            {
                "recurring_run_id": rid,
                "created_at": _now(),
                "updated_at": _now(),
                "status": "ENABLED" if body.get("mode", "ENABLE") == "ENABLE" else "DISABLED",
            }
        )
        st.recurring_runs[rid] = job
        return 200, job

    def _list_recurring(self, st, q, body, files, method):
        eid = q.get("experiment_id")
        items = [r for r in st.recurring_runs.values() if not eid or r.get("experiment_id") == eid]
        # kfp_server_api maps ListRecurringRunsResponse.recurring_runs to the JSON key "recurringRuns".
        return 200, ({"recurringRuns": items, "total_size": len(items)} if items else {})

    def _recurring(self, st, q, body, files, rid, method):
        if rid not in st.recurring_runs:
            raise ApiError(404, f"recurring run {rid!r} not found")
        if method == "DELETE":
            del st.recurring_runs[rid]
            return 200, {}
        return 200, st.recurring_runs[rid]

    def _add_version(self, pid: str, name: str, spec: dict, description: str, stored: dict | None = None) -> dict:
        st = self.state
        vid = st.new_id("version")
        ver = {
            "pipeline_id": pid,
            "pipeline_version_id": vid,
            "display_name": name,
            "name": name,
            "description": description,
            "created_at": _now(),
            "pipeline_spec": stored or spec,
        }
        st.versions.setdefault(pid, []).append(ver)
        st.specs[vid] = spec
        return ver

    def _check_job(self, body: Any, what: str) -> dict:
        """What the API server validates when a run / recurring run references a pipeline."""
        st = self.state
        if not isinstance(body, dict):
            raise ApiError(400, f"{what}: JSON body required")
        if not body.get("display_name"):
            raise ApiError(400, f"{what}: display_name is required")
        eid = body.get("experiment_id")
        if eid and eid not in st.experiments:
            raise ApiError(404, f"experiment {eid!r} not found")
        ref = body.get("pipeline_version_reference") or {}
        if body.get("pipeline_spec"):
            spec = body["pipeline_spec"]
            spec = spec.get("pipeline_spec", spec)
        elif ref:
            pid, vid = ref.get("pipeline_id"), ref.get("pipeline_version_id")
            if (
                pid not in st.pipelines
                or vid not in st.specs
                or not any(v["pipeline_version_id"] == vid for v in st.versions[pid])
            ):
                raise ApiError(404, f"pipeline version {pid}/{vid} not found")
            spec = st.specs[vid]
        else:
            raise ApiError(400, f"{what}: pipeline_spec or pipeline_version_reference required")
        declared = set(((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {})
        given = set((body.get("runtime_config") or {}).get("parameters") or {})
        unknown = given - declared
        if unknown:
            raise ApiError(400, f"{what}: parameters not declared by the pipeline: {sorted(unknown)}")
        return dict(body)


class FakeKfpServer:
    """Start/stop the fake API on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, token: str | None = None, users: dict[str, set[str]] | None = None):
        self._srv = _Server(("127.0.0.1", 0), token, users)
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._srv.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[Recorded]:
        return self._srv.recorded

    @property
    def state(self) -> _State:
        return self._srv.state

    def fail_with(self, status: int | None) -> None:
        """Answer every request with this HTTP status (None: back to normal)."""
        self._srv.fail_status = status

    def calls(self, method: str, path_suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == API + path_suffix]

    def start(self) -> FakeKfpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> FakeKfpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# (methods, path under /apis/v2beta1, handler): the first match answers.
_ROUTES = (
    (("GET",), r"/healthz", _Server._healthz),
    (("POST",), r"/pipelines/upload", _Server._upload_pipeline),
    (("POST",), r"/pipelines/upload_version", _Server._upload_version),
    (("GET",), r"/pipelines", _Server._list_pipelines),
    (("GET",), r"/pipelines/([^/]+)/versions", _Server._list_versions),
    (("GET",), r"/pipelines/([^/]+)/versions/([^/]+)", _Server._get_version),
    (("GET",), r"/experiments", _Server._list_experiments),
    (("POST",), r"/experiments", _Server._create_experiment),
    (("POST",), r"/runs", _Server._create_run),
    (("GET",), r"/runs/([^/:]+)", _Server._get_run),
    (("POST",), r"/recurringruns", _Server._create_recurring),
    (("GET",), r"/recurringruns", _Server._list_recurring),
    (("GET", "DELETE"), r"/recurringruns/([^/:]+)", _Server._recurring),
)


def point_kfct_at(monkeypatch, host: str, token: str | None, home) -> None:
    """kfct's KFP settings for a test: the API at `host` with `token` (None: no token), HOME under the
    test's temp dir (kfp.Client reads ~/.config/kfp/context.json), none of the variables that would make
    kfp.Client pick an in-cluster endpoint of its own; settings re-read."""
    from kfct.runtime.settings import reset_settings

    monkeypatch.setenv("KFCT_KFP_HOST", host)
    if token is None:
        monkeypatch.delenv("KFCT_KFP_TOKEN", raising=False)
    else:
        monkeypatch.setenv("KFCT_KFP_TOKEN", token)
    monkeypatch.setenv("HOME", str(home))
    for var in ("KUBERNETES_SERVICE_HOST", "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    reset_settings()
