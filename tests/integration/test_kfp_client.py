"""`kfct submit` / `kfct schedule` against a loopback server speaking KFP's v2beta1 REST API.

The real `kfp.Client` (generated kfp_server_api) does the HTTP; the fake server
(tests/fakes/kfp_server.py) keeps state and validates like the API server does. We
assert the recorded requests: pipeline upload, version upload, experiment, run with
typed parameters, recurring run with cron / max concurrency / no catch-up, list and
delete, and the one-line errors for an unreachable host and a 401.
"""

# no `from __future__ import annotations`: kfp reads the component annotations as types.
import json

import pytest
from fakes.kfp_server import FakeKfpServer, point_kfct_at  # tests/ is on sys.path (tests/conftest.py)

from tests.faultkit.servers import free_port

TOKEN = "t0k3n-for-tests"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A small real compiled pipeline with typed parameters (kfp Compiler, type checking on)."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def echo(data_uri: str, tune_trials: int, threshold: float, use_gpu: bool) -> str:
        return f"{data_uri} {tune_trials} {threshold} {use_gpu}"

    @dsl.pipeline(name="kfct-ct", description="test pipeline")
    def pipe(data_uri: str = "generate://2000", tune_trials: int = 0, threshold: float = 0.5, use_gpu: bool = False):
        echo(data_uri=data_uri, tune_trials=tune_trials, threshold=threshold, use_gpu=use_gpu)

    out = tmp_path_factory.mktemp("build") / "ct_pipeline.yaml"
    compiler.Compiler().compile(pipe, str(out), type_check=True)
    return out


@pytest.fixture
def kfp_server():
    with FakeKfpServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def kfp_env(kfp_server, monkeypatch, tmp_path):
    from kfct.runtime.settings import get_settings, reset_settings

    monkeypatch.setenv("KFCT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KFCT_KFP_EXPERIMENT", "kfct-tests")
    point_kfct_at(monkeypatch, kfp_server.url, TOKEN, tmp_path)
    yield get_settings()
    reset_settings()


def test_submit_uploads_pipeline_creates_experiment_and_run(kfp_env, kfp_server, package):
    from kfct.pipelines import kfp_client

    info = kfp_client.submit(
        package,
        params={"data_uri": "s3://kfct/datasets/abc.parquet", "tune_trials": "5", "threshold": "0.7", "use_gpu": "true"},
        run_name="ct run 1",
    )
    st = kfp_server.state
    # pipeline uploaded under the name from the compiled spec, with the package as multipart file
    (up,) = kfp_server.calls("POST", "/pipelines/upload")
    assert up.query["name"] == "kfct-ct"
    assert up.files["uploadfile"] == package.read_bytes()
    assert up.headers["authorization"] == f"Bearer {TOKEN}"
    # experiment looked up by name, then created
    (exp_post,) = kfp_server.calls("POST", "/experiments")
    assert exp_post.body["display_name"] == "kfct-tests"
    # run of that pipeline version, parameters converted to the declared types
    (run_post,) = kfp_server.calls("POST", "/runs")
    body = run_post.body
    pipeline_id = next(iter(st.pipelines))
    version_id = st.versions[pipeline_id][0]["pipeline_version_id"]
    assert body["pipeline_version_reference"] == {"pipeline_id": pipeline_id, "pipeline_version_id": version_id}
    assert body["experiment_id"] == next(iter(st.experiments)) == info.experiment_id
    assert body["display_name"] == "ct run 1"
    assert body["runtime_config"]["parameters"] == {
        "data_uri": "s3://kfct/datasets/abc.parquet",
        "tune_trials": 5,
        "threshold": 0.7,
        "use_gpu": True,
    }
    assert body["service_account"] == "kfct-pipeline-runner"
    assert "pipeline_spec" not in body or body["pipeline_spec"] is None  # runs the uploaded version
    assert info.run_id in st.runs
    assert info.url == f"{kfp_server.url}/#/runs/details/{info.run_id}"
    assert (info.pipeline_id, info.pipeline_version_id) == (pipeline_id, version_id)
    # every call carried the token; nothing failed
    assert all(r.status == 200 for r in kfp_server.requests)
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in kfp_server.requests)


def test_second_submit_adds_a_version_and_reuses_the_experiment(kfp_env, kfp_server, package, tmp_path):
    from kfct.pipelines import kfp_client

    first = kfp_client.submit(package)
    changed = tmp_path / "ct_pipeline.yaml"
    changed.write_text(package.read_text().replace("test pipeline", "test pipeline v2"))
    second = kfp_client.submit(changed)
    third = kfp_client.submit(changed)  # identical package: no new version

    assert len(kfp_server.calls("POST", "/pipelines/upload")) == 1
    (ver,) = kfp_server.calls("POST", "/pipelines/upload_version")
    assert ver.query["pipelineid"] == first.pipeline_id
    assert ver.files["uploadfile"] == changed.read_bytes()
    assert second.pipeline_id == first.pipeline_id
    assert second.pipeline_version_id != first.pipeline_version_id
    assert third.pipeline_version_id == second.pipeline_version_id
    assert len(kfp_server.calls("POST", "/experiments")) == 1
    assert first.experiment_id == second.experiment_id == third.experiment_id
    assert len(kfp_server.state.runs) == 3


def test_schedule_list_and_delete(kfp_env, kfp_server, package):
    from kfct.pipelines import kfp_client

    sched = kfp_client.schedule(package, params={"tune_trials": "2"})
    (post,) = kfp_server.calls("POST", "/recurringruns")
    body = post.body
    assert body["trigger"]["cron_schedule"]["cron"] == kfp_client.DEFAULT_CRON == "0 0 3 1 * *"
    assert int(body["max_concurrency"]) == 1
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["runtime_config"]["parameters"] == {"tune_trials": 2}
    assert body["pipeline_version_reference"]["pipeline_version_id"] == sched.pipeline_version_id
    assert sched.cron == "0 0 3 1 * *" and sched.max_concurrency == 1 and sched.no_catchup is True

    weekly = kfp_client.schedule(package, cron="30 2 * * 1", name="weekly")  # 5-field crontab accepted
    assert weekly.cron == "0 30 2 * * 1"

    listed = kfp_client.list_schedules()
    assert {s.recurring_run_id for s in listed} == {sched.recurring_run_id, weekly.recurring_run_id}
    assert kfp_server.calls("GET", "/recurringruns")[-1].query["experiment_id"] == next(iter(kfp_server.state.experiments))

    kfp_client.delete_schedule(sched.recurring_run_id)
    assert kfp_server.calls("DELETE", f"/recurringruns/{sched.recurring_run_id}")
    assert [s.recurring_run_id for s in kfp_client.list_schedules()] == [weekly.recurring_run_id]

    from kfct.pipelines.kfp_client import KfpError

    with pytest.raises(KfpError, match="HTTP 404"):
        kfp_client.delete_schedule(sched.recurring_run_id)


def test_trigger_run_uses_latest_version(kfp_env, kfp_server, package, tmp_path):
    from kfct.pipelines import kfp_client
    from kfct.pipelines.kfp_client import KfpError

    with pytest.raises(KfpError, match="pipeline 'kfct-ct' not found"):
        kfp_client.trigger_run("kfct-ct", {"data_uri": "s3://kfct/x.parquet"})
    kfp_client.submit(package)
    changed = tmp_path / "p.yaml"
    changed.write_text(package.read_text().replace("test pipeline", "v2"))
    latest = kfp_client.submit(changed)
    info = kfp_client.trigger_run("kfct-ct", {"data_uri": "s3://kfct/x.parquet"}, run_name="drift retrain")
    run = kfp_server.state.runs[info.run_id]
    assert run["pipeline_version_reference"]["pipeline_version_id"] == latest.pipeline_version_id
    assert run["display_name"] == "drift retrain"
    assert run["runtime_config"]["parameters"] == {"data_uri": "s3://kfct/x.parquet"}


def test_bad_parameters_and_cron_fail_before_any_request(kfp_env, kfp_server, package, tmp_path):
    from kfct.pipelines import kfp_client
    from kfct.pipelines.kfp_client import KfpError

    with pytest.raises(KfpError, match=r"unknown pipeline parameter 'nope'.*data_uri"):
        kfp_client.submit(package, params={"nope": "1"})
    with pytest.raises(KfpError, match="'tune_trials' expects NUMBER_INTEGER"):
        kfp_client.submit(package, params={"tune_trials": "many"})
    with pytest.raises(KfpError, match="bad cron"):
        kfp_client.schedule(package, cron="every month")
    with pytest.raises(KfpError, match="compiled pipeline not found"):
        kfp_client.submit(tmp_path / "missing.yaml")
    assert kfp_server.requests == []


def test_server_side_rejection_is_one_line(kfp_env, kfp_server, package):
    """What the API server refuses (here: a parameter the uploaded version does not declare)."""
    from kfct.pipelines import kfp_client
    from kfct.pipelines.kfp_client import KfpError

    kfp_client.submit(package)
    with pytest.raises(KfpError, match=r"HTTP 400: run: parameters not declared by the pipeline: \['extra'\]") as err:
        kfp_client.trigger_run("kfct-ct", {"extra": 1})
    assert "\n" not in str(err.value)


def test_401_gives_one_clear_error(kfp_env, kfp_server, package, monkeypatch):
    from kfct.pipelines import kfp_client
    from kfct.pipelines.kfp_client import KfpError
    from kfct.runtime.settings import reset_settings

    monkeypatch.setenv("KFCT_KFP_TOKEN", "wrong")
    reset_settings()
    with pytest.raises(KfpError, match=r"rejected the credentials \(HTTP 401\): check KFCT_KFP_TOKEN") as err:
        kfp_client.submit(package)
    assert "\n" not in str(err.value) and "wrong" not in str(err.value)
    assert len(kfp_server.requests) == 1  # refused at the probe: no retries, nothing uploaded

    monkeypatch.delenv("KFCT_KFP_TOKEN")
    reset_settings()
    with pytest.raises(KfpError, match="set KFCT_KFP_TOKEN"):
        kfp_client.list_schedules()


def test_401_in_the_middle_of_a_submit(kfp_env, kfp_server, package, monkeypatch):
    """A token that expires after the probe still ends in one KfpError line."""
    from kfct.pipelines import kfp_client
    from kfct.pipelines.kfp_client import KfpError

    real_probe = kfp_client._probe

    def probe_then_fail(host, token):
        health = real_probe(host, token)
        kfp_server.fail_with(401)
        return health

    monkeypatch.setattr(kfp_client, "_probe", probe_then_fail)
    with pytest.raises(KfpError, match="rejected the credentials"):
        kfp_client.submit(package)
    kfp_server.fail_with(None)
    assert kfp_server.state.runs == {}


def test_unreachable_or_unconfigured_host(kfp_env, package, monkeypatch):
    from kfct.pipelines import kfp_client
    from kfct.pipelines.kfp_client import KfpError
    from kfct.runtime.settings import reset_settings

    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("KFCT_KFP_HOST", dead)
    reset_settings()
    with pytest.raises(KfpError, match=rf"Kubeflow Pipelines at {dead} unreachable \(ConnectionError") as err:
        kfp_client.submit(package)
    assert "\n" not in str(err.value)

    monkeypatch.delenv("KFCT_KFP_HOST")
    reset_settings()
    with pytest.raises(KfpError, match="host not configured: set KFCT_KFP_HOST"):
        kfp_client.list_schedules()


def test_not_a_kfp_api(kfp_env, monkeypatch, package):
    """A host that answers, but is not the KFP API (e.g. a login page redirect)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from kfct.pipelines import kfp_client
    from kfct.pipelines.kfp_client import KfpError
    from kfct.runtime.settings import reset_settings

    class Login(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "/dex/auth")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Login)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        monkeypatch.setenv("KFCT_KFP_HOST", f"127.0.0.1:{srv.server_address[1]}")  # no scheme: http on loopback
        reset_settings()
        with pytest.raises(KfpError, match=r"redirected to /dex/auth \(HTTP 302"):
            kfp_client.submit(package)
    finally:
        srv.shutdown()
        srv.server_close()


def test_pure_helpers():
    from kfct.pipelines.kfp_client import KfpError, normalise_cron, normalise_host, parse_param_args

    assert normalise_cron("0 3 1 * *") == "0 0 3 1 * *"
    assert normalise_cron(" 0 0 3 1 * * ") == "0 0 3 1 * *"
    for bad in ("", "* * *", "0 0 3 1 * * * *", "0 0 3 1 * $"):
        with pytest.raises(KfpError):
            normalise_cron(bad)
    assert normalise_host("localhost:8888/") == "http://localhost:8888"
    assert normalise_host("kfp.example.com") == "https://kfp.example.com"
    assert parse_param_args(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(KfpError, match="NAME=VALUE"):
        parse_param_args(["novalue"])
    assert json.loads(json.dumps(parse_param_args([]))) == {}


def test_in_cluster_service_account_token(kfp_env, kfp_server, package, monkeypatch, tmp_path):
    """In a pod without KFCT_KFP_TOKEN: the projected KFP service-account token is the credential."""
    from kfct.pipelines import kfp_client
    from kfct.runtime.settings import get_settings, reset_settings

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("KFCT_KFP_TOKEN")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    reset_settings()
    info = kfp_client.submit(package)
    assert info.run_id in kfp_server.state.runs
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in kfp_server.requests)

    monkeypatch.delenv("KFCT_KFP_HOST")
    reset_settings()
    host, token, use_sa = kfp_client._resolve_auth(get_settings())
    assert host == kfp_client.IN_CLUSTER_HOST and token == TOKEN and use_sa


# ----------------------------------------------------------------------------- through the CLI
def test_cli_submit_schedule_list_delete(kfp_env, kfp_server, package, capsys):
    from kfct.cli import main

    rc = main(
        [
            "submit",
            "--package",
            str(package),
            "--data-uri",
            "s3://kfct/datasets/abc.parquet",
            "--param",
            "tune_trials=3",
            "--run-name",
            "from cli",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    (run_id,) = kfp_server.state.runs
    assert f"{kfp_server.url}/#/runs/details/{run_id}" in out
    params = kfp_server.state.runs[run_id]["runtime_config"]["parameters"]
    assert params == {"data_uri": "s3://kfct/datasets/abc.parquet", "tune_trials": 3}

    assert main(["schedule", "--package", str(package), "--cron", "0 3 1 * *", "--name", "monthly"]) == 0
    (rr_id,) = kfp_server.state.recurring_runs
    rr = kfp_server.state.recurring_runs[rr_id]
    assert rr["trigger"]["cron_schedule"]["cron"] == "0 0 3 1 * *" and int(rr["max_concurrency"]) == 1
    assert rr["no_catchup"] is True
    capsys.readouterr()
    assert main(["schedule", "--list"]) == 0
    listed = capsys.readouterr().out
    assert rr_id in listed and "0 0 3 1 * *" in listed
    assert main(["schedule", "--delete", rr_id]) == 0
    assert kfp_server.state.recurring_runs == {}


def test_cli_errors_are_one_line(kfp_env, package, monkeypatch, capsys, tmp_path):
    from kfct.cli import main
    from kfct.runtime.settings import reset_settings

    rc = main(["submit", "--package", str(package), "--data-uri", str(tmp_path / "local.parquet")])
    err = capsys.readouterr().err
    assert rc == 2 and "kfct data push" in err and len(err.strip().splitlines()) == 1

    monkeypatch.setenv("KFCT_KFP_HOST", f"http://127.0.0.1:{free_port()}")
    reset_settings()
    rc = main(["schedule", "--list"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("kfct: error: Kubeflow Pipelines at") and "unreachable" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_images_dry_run_and_missing_docker(kfp_env, monkeypatch, capsys, tmp_path):
    from kfct.cli import main

    assert main(["images", "--dry-run", "--push"]) == 0
    out = capsys.readouterr().out.splitlines()
    builds = [ln for ln in out if ln.startswith("docker build")]
    pushes = [ln for ln in out if ln.startswith("docker push")]
    assert len(builds) == 3 and len(pushes) == 3
    assert any("--target component" in b for b in builds) and any("-f Dockerfile.gpu" in b for b in builds)

    monkeypatch.setenv("PATH", str(tmp_path))  # no docker binary here
    rc = main(["images"])
    err = capsys.readouterr().err
    assert rc == 2 and "docker not found" in err

    # a docker CLI whose engine is down (as on this machine class): the daemon error, one line
    docker = tmp_path / "docker"
    docker.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\nexit 1\n")
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    rc = main(["images"])
    err = capsys.readouterr().err
    assert rc == 2 and "Docker engine unavailable: Cannot connect to the Docker daemon" in err
