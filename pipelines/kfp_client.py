"""Kubeflow Pipelines API client: submit runs, manage recurring (scheduled) runs.

Thin layer over `kfp.Client` (kfp 2.17, KFP API v2beta1) that adds what the CLI and
the monitoring loop need:

- `submit(package, params)`: upload the compiled pipeline (a new *version* when a
  pipeline with that name exists; a package some version already holds, compared by
  sha256 and by the spec the API stores, is not uploaded again), get
  or create the experiment, create a run of that version, return its id and UI URL.
- `schedule(package, cron)`: the same upload, then a recurring run (default monthly,
  as in the case study), max concurrency 1, no catch-up; unique by name (an identical
  one is kept, a different one refused unless `replace`).
- `list_schedules()`, `delete_schedule(id)`.
- `trigger_run(pipeline_name, params)`: a run of the *pinned* version (used by drift
  monitoring to start retraining on the cluster): the version the last `submit` /
  `schedule` recorded in the audit trail (`pipeline_version_pinned`), never "the newest".

Multi-user Kubeflow: pipelines are uploaded into the profile namespace (`KFCT_KFP_NAMESPACE`),
never as shared pipelines. KFP 2.17's upload endpoints authorize nothing for a shared pipeline
(kubeflow/pipelines 2.17.0, backend/src/apiserver/server/pipeline_upload_server.go
`canUploadVersionedPipeline` returns nil for an empty namespace): any authenticated user could
add a version to a shared `kfct-ct`, and a retrain of "the newest version" would run it as
`kfct-pipeline-runner` with the S3 keys and InferenceService rights. A namespaced pipeline takes
versions only from users with `create` on pipelines in that namespace, and the retrain runs
the version id an operator pinned, checked to belong to that pipeline.

Connection from settings: `KFCT_KFP_HOST` (or `KF_PIPELINES_ENDPOINT`), in-cluster
service DNS when unset inside a pod; auth from `KFCT_KFP_TOKEN` or, in a pod, the
projected KFP service-account token. Before anything else the API's healthz endpoint is
probed once, so an unreachable host, a rejected token or a login redirect gives one
clear `KfpError` line instead of kfp's retries and tracebacks.

Two kfp.Client internals are overridden, for lack of a public option in kfp 2.17:
`_bound_requests` wraps the REST client all of a Client's services share (a timeout on every
call; kfp passes none) and `_client_class` answers `get_kfp_healthz` with the probe's answer
(kfp's own asks again, 5 tries 5 s apart). What they rely on (one ApiClient for every
*ServiceApi, `request(_request_timeout=)`, `pool_manager`, `__init__` calling
`get_kfp_healthz`) is pinned against kfp 2.17.0 by tests/unit/test_upstream_pins.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import warnings
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfct.errors import KfctError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from kfct.runtime.settings import Settings

# robfig/cron (used by the KFP backend) wants 6 fields, seconds first.
# The case study retrains on the 1st of each month at 03:00 UTC ('0 3 1 * *').
DEFAULT_CRON = "0 0 3 1 * *"
IN_CLUSTER_HOST = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
API = "/apis/v2beta1"


class KfpError(KfctError):
    """The Kubeflow Pipelines API cannot be reached, refused us, or rejected a request."""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    run_name: str
    url: str
    experiment_id: str
    pipeline_id: str | None = None
    pipeline_version_id: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ScheduleInfo:
    recurring_run_id: str
    name: str
    cron: str | None
    max_concurrency: int | None
    no_catchup: bool | None
    status: str | None
    pipeline_id: str | None = None
    pipeline_version_id: str | None = None
    url: str | None = None
    action: str = "listed"  # created | unchanged | replaced | listed

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- pure helpers
def normalise_cron(expr: str) -> str:
    """A 6-field cron for KFP; a classic 5-field expression gets seconds=0 prepended."""
    fields = (expr or "").split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise KfpError(
            f"bad cron {expr!r}: KFP expects 6 fields 'sec min hour day-of-month month day-of-week' "
            f"(e.g. {DEFAULT_CRON!r} = 03:00 on the 1st of each month) or a 5-field crontab"
        )
    for f in fields:
        if not re.fullmatch(r"[0-9A-Za-z*?/,\-LW#]+", f):
            raise KfpError(f"bad cron {expr!r}: field {f!r} has characters cron does not accept")
    return " ".join(fields)


def normalise_host(host: str) -> str:
    host = host.strip().rstrip("/")
    if not re.match(r"^https?://", host):
        bare = host.split("/", 1)[0].split(":", 1)[0]
        host = ("http://" if bare in ("localhost", "127.0.0.1", "::1") else "https://") + host
    return host


def read_package(package_path: str | Path) -> dict:
    """The pipeline spec (first YAML document) of a compiled package; clear error if absent/invalid."""
    import yaml

    path = Path(package_path)
    if not path.is_file():
        raise KfpError(f"compiled pipeline not found: {path} (run `kfct compile` / `make compile` first)")
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except Exception as exc:
        raise KfpError(f"cannot parse compiled pipeline {path}: {exc}") from exc
    if not docs or not isinstance(docs[0], dict) or "pipelineInfo" not in docs[0]:
        raise KfpError(f"{path} is not a compiled KFP pipeline (no pipelineInfo)")
    return docs[0]


_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def coerce_params(spec: dict, params: dict | None) -> dict:
    """Check params against the pipeline's declared inputs and convert CLI strings to their types."""
    declared = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    out = {}
    for name, value in (params or {}).items():
        if name not in declared:
            raise KfpError(f"unknown pipeline parameter {name!r}; the pipeline takes: {', '.join(sorted(declared))}")
        kind = declared[name].get("parameterType", "STRING")
        if not isinstance(value, str) or kind == "STRING":
            out[name] = value
            continue
        try:
            if kind == "NUMBER_INTEGER":
                out[name] = int(value)
            elif kind == "NUMBER_DOUBLE":
                out[name] = float(value)
            elif kind == "BOOLEAN":
                out[name] = _BOOL[value.strip().lower()]
            elif kind in ("STRUCT", "LIST"):
                out[name] = json.loads(value)
            else:
                out[name] = value
        except (ValueError, KeyError) as exc:
            raise KfpError(f"pipeline parameter {name!r} expects {kind}, got {value!r}") from exc
    return out


def parse_param_args(items: list[str] | None) -> dict[str, str]:
    """`["k=v", ...]` from the command line -> dict (values stay strings until coerced)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise KfpError(f"bad --param {item!r}: expected NAME=VALUE")
        out[key.strip()] = value
    return out


def package_sha256(package_path: str | Path) -> str:
    return hashlib.sha256(Path(package_path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- connection
@dataclass
class Connection:
    """A connected kfp.Client plus what we learned when probing the API."""

    client: Any
    host: str
    ui: str
    namespace: str | None  # None on a single-user KFP (namespaces do not apply)
    multi_user: bool


def _timeout() -> tuple[float, float]:
    """(connect, read) timeouts of KFP API requests, from Settings."""
    from kfct.runtime.settings import get_settings

    s = get_settings()
    return (s.net_connect_timeout_seconds, s.net_timeout_seconds)


def _resolve_auth(settings: Settings) -> tuple[str, str | None, bool]:
    """(host, bearer token or None, in_cluster_sa) from settings / environment."""
    host = settings.kfp_host or settings.kf_pipelines_endpoint
    in_pod = settings.in_cluster
    if not host:
        if not in_pod:
            raise KfpError(
                "Kubeflow Pipelines host not configured: set KFCT_KFP_HOST "
                "(e.g. http://localhost:8888 after `kubectl -n kubeflow port-forward svc/ml-pipeline 8888`)"
            )
        host = IN_CLUSTER_HOST
    token = settings.kfp_token.get_secret_value() if settings.kfp_token else None
    sa_path = settings.kf_pipelines_sa_token_path or SA_TOKEN_PATH
    use_sa = token is None and in_pod and Path(sa_path).is_file()
    if use_sa:
        token = Path(sa_path).read_text().strip()
    return normalise_host(host), token, use_sa


def _probe(host: str, token: str | None) -> dict:
    """GET healthz once (no redirects, short timeout) and turn every failure into one line."""
    import requests

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{host}{API}/healthz"
    try:
        resp = requests.get(url, headers=headers, timeout=_timeout(), allow_redirects=False)
    except requests.exceptions.RequestException as exc:
        reason = type(exc).__name__
        detail = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise KfpError(f"Kubeflow Pipelines at {host} unreachable ({reason}: {detail})") from exc
    if resp.status_code in (401, 403):
        raise KfpError(
            f"Kubeflow Pipelines at {host} rejected the credentials (HTTP {resp.status_code}): "
            + ("check KFCT_KFP_TOKEN" if token else "set KFCT_KFP_TOKEN to a bearer token")
        )
    if 300 <= resp.status_code < 400:
        raise KfpError(
            f"Kubeflow Pipelines at {host} redirected to {resp.headers.get('Location', '?')} "
            f"(HTTP {resp.status_code}, a login page?): set KFCT_KFP_TOKEN or use the ml-pipeline API port"
        )
    if resp.status_code != 200:
        raise KfpError(
            f"Kubeflow Pipelines at {host} answered HTTP {resp.status_code} on {API}/healthz: "
            "is KFCT_KFP_HOST the KFP API endpoint?"
        )
    try:
        body = resp.json()
    except ValueError as exc:
        raise KfpError(f"{host} answered {API}/healthz with non-JSON content: is KFCT_KFP_HOST the KFP API endpoint?") from exc
    return body if isinstance(body, dict) else {}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """kfp.Client prints links and warns about its own version; our CLI prints its own line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def connect(settings: Settings | None = None) -> Connection:
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    host, token, use_sa = _resolve_auth(s)
    health = _probe(host, token)
    multi_user = bool(health.get("multi_user"))
    namespace = s.kfp_namespace if multi_user else None
    kwargs: dict = {"host": host}
    if use_sa:
        kwargs["credentials"] = kfp_client_module().ServiceAccountTokenVolumeCredentials()
    elif token:
        kwargs["existing_token"] = token
    if namespace:
        kwargs["namespace"] = namespace
    with _quiet(), _api("connecting", host):
        client = _client_class(health)(**kwargs)
    _bound_requests(client)
    ui = normalise_host(s.kf_pipelines_ui_endpoint or host)
    return Connection(client=client, host=host, ui=ui, namespace=namespace, multi_user=multi_user)


def _bound_requests(client: Any) -> None:
    """Give every API call kfp.Client makes the Settings timeouts (`_timeout()`).

    kfp.Client never passes `_request_timeout`, and kfp_server_api's REST layer then hands
    urllib3 `timeout=None` on every request, overriding any pool default: a KFP API server
    that accepts and never answers would hold `kfct submit` (or a drift-triggered retrain)
    forever. We default the per-request timeout at the one place every call goes through,
    and stop urllib3 from re-sending a request whose answer timed out (a POST that may have
    been applied; a GET gains nothing from waiting the same timeout again).
    """
    import functools

    import urllib3

    rest = client._run_api.api_client.rest_client
    request = rest.request

    @functools.wraps(request)
    def bounded(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return request(*args, _request_timeout=_request_timeout or _timeout(), **kwargs)

    rest.request = bounded
    rest.pool_manager.connection_pool_kw["retries"] = urllib3.Retry(total=1, read=0, backoff_factor=0.2)


def kfp_client_module() -> Any:
    """`kfp.client`, importable inside a pipeline pod too.

    KFP's launcher runs components with `_KFP_RUNTIME=true`, under which `kfp.dsl` skips its
    authoring modules; a plain `import kfp.client` (the drift-triggered retrain, in the
    monitoring pipeline's pod) then dies in a circular import (pipeline_context before
    component_factory). Importing component_factory first restores kfp.dsl's usual order.
    """
    # The order is the fix (component_factory before kfp.client): an import sorter must keep it.
    # isort: off
    import kfp.dsl.component_factory
    import kfp.client
    # isort: on

    return kfp.client


def _client_class(health: dict) -> type:
    """kfp.Client whose constructor reuses our probe's healthz answer.

    kfp.Client() asks healthz again on single-user installs and retries 5 times with
    5 s sleeps on any HTTP error; the probe already answered, so that would only turn
    a token expiring a moment later into 25 s of silence.
    """
    import kfp_server_api

    answer = kfp_server_api.V2beta1GetHealthzResponse(
        multi_user=bool(health.get("multi_user")), pipeline_store=health.get("pipeline_store")
    )

    client_base: Any = kfp_client_module().Client  # a class only known at run time (kfp is imported lazily)

    class _ProbedClient(client_base):
        def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
            return answer

    return _ProbedClient


@contextlib.contextmanager
def _api(what: str, host: str) -> Iterator[None]:
    """Map kfp_server_api / urllib3 errors from one API call to a KfpError line."""
    from kfp_server_api.exceptions import ApiException

    try:
        yield
    except KfctError:
        raise
    except Exception as exc:
        status = getattr(exc, "status", None)
        if isinstance(exc, ApiException) and status:
            message = _api_message(getattr(exc, "body", None)) or getattr(exc, "reason", "") or ""
            if status in (401, 403):
                raise KfpError(
                    f"{what}: Kubeflow Pipelines at {host} rejected the credentials (HTTP {status}): check KFCT_KFP_TOKEN"
                ) from exc
            raise KfpError(f"{what}: Kubeflow Pipelines answered HTTP {status}: {message}"[:400]) from exc
        if isinstance(exc, ValueError):  # kfp.Client's own checks (duplicate names, ...)
            raise KfpError(f"{what}: {exc}") from exc
        reason = getattr(exc, "reason", None)
        cause = reason if isinstance(reason, Exception) else exc  # urllib3 MaxRetryError
        name = type(cause).__name__
        if "Timeout" in name:
            connect, read = _timeout()
            raise KfpError(
                f"{what}: Kubeflow Pipelines at {host} unreachable ({name}: no answer within "
                f"{connect:g} s connect / {read:g} s read, KFCT_NET_CONNECT_TIMEOUT_SECONDS / "
                "KFCT_NET_TIMEOUT_SECONDS)"
            ) from exc
        detail = str(cause).splitlines()[0][:160] if str(cause) else ""
        raise KfpError(f"{what}: Kubeflow Pipelines at {host} unreachable ({name}: {detail})") from exc


def _api_message(body: Any) -> str:
    if not body:
        return ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return str(body).strip().splitlines()[0][:200] if str(body).strip() else ""
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error") or data)[:200]
    return str(data)[:200]


# --------------------------------------------------------------------------- operations
def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def _find_experiment_id(conn: Connection, name: str) -> str | None:
    """The experiment's id, or None where the server has no experiment of that name."""
    with _quiet(), _api(f"looking up experiment {name!r}", conn.host):
        try:
            return conn.client.get_experiment(experiment_name=name, namespace=conn.namespace).experiment_id
        except ValueError as exc:
            if not str(exc).startswith("No experiment is found"):
                raise
    return None


def _experiment_id(conn: Connection, name: str) -> str:
    """The experiment's id, creating the experiment on first use."""
    found = _find_experiment_id(conn, name)
    if found is not None:
        return found
    with _quiet(), _api(f"creating experiment {name!r}", conn.host):
        return conn.client.create_experiment(name=name, namespace=conn.namespace).experiment_id


def _versions_newest_first(conn: Connection, pipeline_id: str, page_size: int = 1) -> list:
    with _quiet(), _api(f"listing versions of pipeline {pipeline_id}", conn.host):
        resp = conn.client.list_pipeline_versions(pipeline_id=pipeline_id, sort_by="created_at desc", page_size=page_size)
    return list(resp.pipeline_versions or [])


def spec_fingerprint(spec: Any) -> str:
    """sha256 of a pipeline spec as the KFP API returns it (canonical JSON, whole floats as ints).

    The API stores a package as one struct: the pipeline spec alone, or
    `{"pipeline_spec": ..., "platform_spec": ...}` when the package carries a platform spec
    (backend/src/apiserver/server/api_util.go YamlStringToPipelineSpecStruct).
    """

    def canon(x: Any) -> Any:
        if isinstance(x, dict):
            return {str(k): canon(v) for k, v in x.items()}
        if isinstance(x, list):
            return [canon(v) for v in x]
        if isinstance(x, float) and x.is_integer():
            return int(x)
        return x

    return hashlib.sha256(json.dumps(canon(spec), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def package_fingerprint(package_path: str | Path) -> str:
    """`spec_fingerprint` of a compiled package, in the shape the API stores it."""
    import yaml

    docs = [d for d in yaml.safe_load_all(Path(package_path).read_text()) if d]
    if len(docs) > 1 and isinstance(docs[1], dict) and "platforms" in docs[1]:
        return spec_fingerprint({"pipeline_spec": docs[0], "platform_spec": docs[1]})
    return spec_fingerprint(docs[0])


def _same_package(version: Any, digest: str, fingerprint: str) -> bool:
    """A version holds this package: its name/description carry our digest, or its stored spec is ours."""
    if digest in (getattr(version, "display_name", None) or "") or digest in (getattr(version, "description", None) or ""):
        return True
    spec = getattr(version, "pipeline_spec", None)
    return bool(spec) and spec_fingerprint(spec) == fingerprint


PIN_EVENT = "pipeline_version_pinned"


def find_pipeline(conn: Connection, name: str) -> str | None:
    """The id of pipeline `name` in our namespace (multi-user) or among shared pipelines (single-user).

    KFP lists the pipelines of exactly the namespace asked for (pipeline_server.go `listPipelines`):
    a shared pipeline of the same name is never picked up in multi-user mode."""
    if not conn.namespace:
        with _quiet(), _api(f"looking up pipeline {name!r}", conn.host):
            return conn.client.get_pipeline_id(name)
    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    with _quiet(), _api(f"looking up pipeline {name!r} in namespace {conn.namespace!r}", conn.host):
        resp = conn.client.list_pipelines(filter=flt, namespace=conn.namespace, page_size=10)
    hits = [
        p
        for p in (resp.pipelines or [])
        if p.display_name == name and (getattr(p, "namespace", None) or conn.namespace) == conn.namespace
    ]
    if len(hits) > 1:
        raise KfpError(f"{len(hits)} pipelines named {name!r} in namespace {conn.namespace!r} on {conn.host}")
    return hits[0].pipeline_id if hits else None


def pin_version(conn: Connection, name: str, pipeline_id: str, version_id: str, package_path: str | Path) -> None:
    """Record the version retrains run from now on (the operator's deliberate upload)."""
    from kfct.governance import audit

    audit.record(
        PIN_EVENT,
        pipeline=name,
        pipeline_id=pipeline_id,
        pipeline_version_id=version_id,
        namespace=conn.namespace or "",
        package_sha256=package_sha256(package_path),
    )


def pinned_version(pipeline_id: str) -> str | None:
    """The version id last pinned for this pipeline (audit trail, mirror included), or None.

    A pod starts with an empty local trail: it finds the operator's pin only in the S3 mirror
    (`KFCT_AUDIT_S3_URI`), which every pod and an operator with the ConfigMap's env write to."""
    from kfct.governance import audit

    pins = [e for e in audit.read() if e.get("event") == PIN_EVENT and e.get("pipeline_id") == pipeline_id]
    return pins[-1].get("pipeline_version_id") if pins else None


def upload(
    conn: Connection, package_path: str | Path, pipeline_name: str | None = None, version_name: str | None = None
) -> tuple[str, str]:
    """Upload the package unless a version already holds it. Returns (pipeline_id, version_id).

    Versions are named and described by the package's sha256; versions uploaded another
    way (the first one, which `upload_pipeline` names after the pipeline, or one from the
    UI) are compared by the spec the API stores. So `submit` then `schedule` of the same
    compile upload it once.
    """
    spec = read_package(package_path)
    name = pipeline_name or spec["pipelineInfo"]["name"]
    full_digest = package_sha256(package_path)
    digest = full_digest[:12]
    fingerprint = package_fingerprint(package_path)
    c = conn.client
    pipeline_id = find_pipeline(conn, name)
    if pipeline_id is None:
        where = f" in namespace {conn.namespace!r}" if conn.namespace else ""
        with _quiet(), _api(f"uploading pipeline {name!r}{where}", conn.host):
            pipe = c.upload_pipeline(
                str(package_path),
                pipeline_name=name,
                namespace=conn.namespace,
                description=spec["pipelineInfo"].get("description") or "kfct pipeline",
            )
        versions = _versions_newest_first(conn, pipe.pipeline_id)
        if not versions:
            raise KfpError(f"pipeline {name!r} was uploaded but the API lists no version for it")
        return pipe.pipeline_id, versions[0].pipeline_version_id
    for v in _versions_newest_first(conn, pipeline_id, page_size=100):
        if _same_package(v, digest, fingerprint):
            return pipeline_id, v.pipeline_version_id
    vname = version_name or f"{name}-{_timestamp()}-{digest}"
    with _quiet(), _api(f"uploading a new version of pipeline {name!r}", conn.host):
        ver = c.upload_pipeline_version(
            str(package_path), pipeline_version_name=vname, pipeline_id=pipeline_id, description=f"package sha256 {full_digest}"
        )
    return pipeline_id, ver.pipeline_version_id


def _service_account(settings: Settings, service_account: str | None) -> str | None:
    sa = service_account if service_account is not None else getattr(settings, "kfp_service_account", None)
    return sa or None


def _create_run(
    conn: Connection,
    experiment_id: str,
    run_name: str,
    pipeline_id: str,
    version_id: str,
    params: dict,
    service_account: str | None,
) -> RunInfo:
    with _quiet(), _api(f"creating run {run_name!r}", conn.host):
        run = conn.client.run_pipeline(
            experiment_id=experiment_id,
            job_name=run_name,
            params=params,
            pipeline_id=pipeline_id,
            version_id=version_id,
            service_account=service_account,
        )
    return RunInfo(
        run_id=run.run_id,
        run_name=run_name,
        url=f"{conn.ui}/#/runs/details/{run.run_id}",
        experiment_id=experiment_id,
        pipeline_id=pipeline_id,
        pipeline_version_id=version_id,
    )


def submit(
    package_path: str | Path,
    params: dict | None = None,
    run_name: str | None = None,
    pipeline_name: str | None = None,
    experiment: str | None = None,
    settings: Settings | None = None,
    service_account: str | None = None,
) -> RunInfo:
    """Upload (or add a version) and start a run with `params`; returns run id and UI URL."""
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    spec = read_package(package_path)
    typed = coerce_params(spec, params)
    conn = connect(s)
    pipeline_id, version_id = upload(conn, package_path, pipeline_name)
    pin_version(conn, pipeline_name or spec["pipelineInfo"]["name"], pipeline_id, version_id, package_path)
    exp_id = _experiment_id(conn, experiment or s.kfp_experiment)
    name = run_name or f"{pipeline_name or spec['pipelineInfo']['name']} {_timestamp()}"
    return _create_run(conn, exp_id, name, pipeline_id, version_id, typed, _service_account(s, service_account))


def trigger_run(
    pipeline_name: str,
    params: dict | None = None,
    run_name: str | None = None,
    experiment: str | None = None,
    settings: Settings | None = None,
    service_account: str | None = None,
    version_id: str | None = None,
) -> RunInfo:
    """Run the pinned version of `pipeline_name` (e.g. retraining triggered by drift); see the module doc.

    `version_id` overrides the pin; either way the version must belong to our (namespaced) pipeline."""
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    conn = connect(s)
    where = f" in namespace {conn.namespace!r}" if conn.namespace else ""
    pipeline_id = find_pipeline(conn, pipeline_name)
    if pipeline_id is None:
        raise KfpError(f"pipeline {pipeline_name!r} not found{where} on {conn.host}: upload it first (`kfct submit`)")
    pinned = version_id or pinned_version(pipeline_id)
    if not pinned:
        raise KfpError(
            f"no pinned version of pipeline {pipeline_name!r} ({pipeline_id}){where}: `kfct submit` or "
            f"`kfct schedule` pins the version it uploads (audit event {PIN_EVENT}; pods read the "
            "trail's S3 mirror, so run them with KFCT_AUDIT_S3_URI set); a retrain never runs whatever "
            "version was uploaded last"
        )
    try:
        with _quiet(), _api(f"reading version {pinned} of pipeline {pipeline_name!r}", conn.host):
            conn.client.get_pipeline_version(pipeline_id=pipeline_id, pipeline_version_id=pinned)
    except KfpError as exc:
        raise KfpError(
            f"pinned version {pinned} is not a version of pipeline {pipeline_name!r} ({pipeline_id}){where}: {exc}"
        ) from exc
    exp_id = _experiment_id(conn, experiment or s.kfp_experiment)
    name = run_name or f"{pipeline_name} {_timestamp()}"
    return _create_run(conn, exp_id, name, pipeline_id, pinned, dict(params or {}), _service_account(s, service_account))


def _schedule_info(conn: Connection, rr: Any, action: str = "listed") -> ScheduleInfo:
    trig = getattr(rr, "trigger", None)
    cron = trig.cron_schedule.cron if trig is not None and trig.cron_schedule is not None else None
    ref = getattr(rr, "pipeline_version_reference", None)
    mc = getattr(rr, "max_concurrency", None)
    return ScheduleInfo(
        recurring_run_id=rr.recurring_run_id,
        name=rr.display_name,
        cron=cron,
        max_concurrency=int(mc) if mc not in (None, "") else None,
        no_catchup=rr.no_catchup,
        status=str(rr.status) if rr.status is not None else None,
        pipeline_id=ref.pipeline_id if ref is not None else None,
        pipeline_version_id=ref.pipeline_version_id if ref is not None else None,
        url=f"{conn.ui}/#/recurringrun/details/{rr.recurring_run_id}",
        action=action,
    )


def schedule_description(pipeline_name: str, cron6: str) -> str:
    """What a recurring run does, in the words the KFP UI shows next to it."""
    from kfct.pipelines import batch_scoring, ct, monitoring

    what = {
        ct.PIPELINE_NAME: "recurring CT run: ingest, validate, train, gate, register",
        monitoring.PIPELINE_NAME: "recurring monitoring run: drift check of the serving window; "
        "starts a CT run only when drift passes the configured limits",
        batch_scoring.PIPELINE_NAME: "recurring batch scoring: the champion scores the whole dataset",
    }.get(pipeline_name, f"recurring run of {pipeline_name}")
    return f"kfct {what} ({cron6})"


def _recurring_runs(conn: Connection, experiment_id: str) -> list:
    out: list = []
    token = ""
    while True:
        with _quiet(), _api("listing recurring runs", conn.host):
            resp = conn.client.list_recurring_runs(page_token=token, page_size=100, experiment_id=experiment_id)
        out.extend(resp.recurring_runs or [])
        token = resp.next_page_token or ""
        if not token:
            return out


def _same_schedule(rr: Any, version_id: str, cron6: str, params: dict, max_concurrency: int, no_catchup: bool) -> bool:
    info_ref = getattr(rr, "pipeline_version_reference", None)
    trig = getattr(rr, "trigger", None)
    cron = trig.cron_schedule.cron if trig is not None and trig.cron_schedule is not None else None
    rc = getattr(rr, "runtime_config", None)
    old_params = dict(getattr(rc, "parameters", None) or {}) if rc is not None else {}
    mc = getattr(rr, "max_concurrency", None)
    return (
        info_ref is not None
        and info_ref.pipeline_version_id == version_id
        and cron == cron6
        and old_params == dict(params)
        and mc not in (None, "")
        and int(mc) == max_concurrency
        and bool(rr.no_catchup) == bool(no_catchup)
    )


def schedule(
    package_path: str | Path,
    cron: str = DEFAULT_CRON,
    params: dict | None = None,
    name: str | None = None,
    pipeline_name: str | None = None,
    experiment: str | None = None,
    settings: Settings | None = None,
    max_concurrency: int = 1,
    no_catchup: bool = True,
    service_account: str | None = None,
    replace: bool = False,
) -> ScheduleInfo:
    """Upload (unless a version holds the package) and create a recurring run: cron, one at a time, no backfill.

    Recurring runs are unique by name in the experiment: the same name with the same
    version, cron and parameters is left as it is ("unchanged"); with anything different
    it is refused unless `replace` (then the old one is deleted first: the KFP API cannot
    update a recurring run in place). Two schedules of one pipeline need two names.
    """
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    cron6 = normalise_cron(cron)
    if not isinstance(max_concurrency, int) or not 1 <= max_concurrency <= 10:
        raise KfpError(f"max_concurrency must be between 1 and 10, got {max_concurrency!r}")
    spec = read_package(package_path)
    typed = coerce_params(spec, params)
    pname = pipeline_name or spec["pipelineInfo"]["name"]
    conn = connect(s)
    pipeline_id, version_id = upload(conn, package_path, pipeline_name)
    pin_version(conn, pname, pipeline_id, version_id, package_path)
    exp_id = _experiment_id(conn, experiment or s.kfp_experiment)
    job = name or f"{pname} schedule"
    action = "created"
    same_name = [rr for rr in _recurring_runs(conn, exp_id) if rr.display_name == job]
    for rr in same_name:
        if _same_schedule(rr, version_id, cron6, typed, max_concurrency, no_catchup):
            return _schedule_info(conn, rr, action="unchanged")
    if same_name:
        if not replace:
            ids = ", ".join(rr.recurring_run_id for rr in same_name)
            raise KfpError(
                f"a recurring run named {job!r} already exists ({ids}) with another version, cron or "
                f"parameters: pass --replace to swap it, or --name for a second schedule"
            )
        for rr in same_name:
            with _quiet(), _api(f"deleting recurring run {rr.recurring_run_id!r}", conn.host):
                conn.client.delete_recurring_run(recurring_run_id=rr.recurring_run_id)
        action = "replaced"
    with _quiet(), _api(f"creating recurring run {job!r}", conn.host):
        rr = conn.client.create_recurring_run(
            experiment_id=exp_id,
            job_name=job,
            description=schedule_description(pname, cron6),
            cron_expression=cron6,
            max_concurrency=max_concurrency,
            no_catchup=no_catchup,
            params=typed,
            pipeline_id=pipeline_id,
            version_id=version_id,
            enabled=True,
            service_account=_service_account(s, service_account),
        )
    return _schedule_info(conn, rr, action=action)


def list_schedules(settings: Settings | None = None, experiment: str | None = None) -> list[ScheduleInfo]:
    """Recurring runs in the kfct experiment (all pages)."""
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    conn = connect(s)
    exp_id = _find_experiment_id(conn, experiment or s.kfp_experiment)
    if exp_id is None:
        return []
    return [_schedule_info(conn, rr) for rr in _recurring_runs(conn, exp_id)]


def delete_schedule(recurring_run_id: str, settings: Settings | None = None) -> None:
    from kfct.runtime.settings import get_settings

    if not recurring_run_id or not recurring_run_id.strip():
        raise KfpError("delete_schedule needs a recurring run id (see `kfct schedule --list`)")
    conn = connect(settings or get_settings())
    with _quiet(), _api(f"deleting recurring run {recurring_run_id!r}", conn.host):
        conn.client.delete_recurring_run(recurring_run_id=recurring_run_id)
