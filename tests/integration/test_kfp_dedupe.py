"""Issue 14, finding 7: one upload per package, one recurring run per name, and a monitoring
schedule that says it is monitoring. Against the loopback KFP v2beta1 server (tests/fakes),
which returns each version's stored spec the way the API server does."""

# no `from __future__ import annotations`: kfp reads the component annotations as types.
import pytest
from fakes.kfp_server import FakeKfpServer, point_kfct_at  # tests/ is on sys.path (tests/conftest.py)

TOKEN = "dedupe-token"


def _compile(path, name="kfct-ct", suffix=""):
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def echo(data_uri: str, tune_trials: int) -> str:
        return f"{data_uri} {tune_trials}"

    @dsl.pipeline(name=name, description=f"test pipeline{suffix}")
    def pipe(data_uri: str = "generate://2000", tune_trials: int = 0):
        echo(data_uri=data_uri, tune_trials=tune_trials)

    compiler.Compiler().compile(pipe, str(path), type_check=True)
    return path


@pytest.fixture
def package(tmp_path):
    return _compile(tmp_path / "ct_pipeline.yaml")


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


def uploads(kfp_server):
    return kfp_server.calls("POST", "/pipelines/upload") + kfp_server.calls("POST", "/pipelines/upload_version")


def test_submit_then_schedule_uploads_the_package_once(kfp_env, kfp_server, package):
    from kfct.pipelines import kfp_client

    run = kfp_client.submit(package, params={"data_uri": "s3://kfct/datasets/a.parquet"})
    rr = kfp_client.schedule(package, params={"data_uri": "s3://kfct/datasets/a.parquet"})
    assert len(uploads(kfp_server)) == 1, "the same bytes were uploaded again as a new version"
    (versions,) = kfp_server.state.versions.values()
    assert len(versions) == 1
    assert rr.pipeline_version_id == run.pipeline_version_id == versions[0]["pipeline_version_id"]
    # and again after a second submit: still one version
    kfp_client.submit(package)
    assert len(uploads(kfp_server)) == 1


def test_a_version_uploaded_elsewhere_with_the_same_spec_is_reused(kfp_env, kfp_server, package, tmp_path):
    """e.g. uploaded in the Kubeflow UI under any name: compared by the spec the API stores."""
    from kfct.pipelines import kfp_client

    kfp_client.submit(package)
    other = _compile(tmp_path / "other.yaml", suffix=" v2")  # different bytes -> a new version
    kfp_client.submit(other)
    conn = kfp_client.connect()
    pid = conn.client.get_pipeline_id("kfct-ct")
    with package.open("rb"):
        conn.client.upload_pipeline_version(str(package), pipeline_version_name="renamed-in-the-ui", pipeline_id=pid)
    n = len(uploads(kfp_server))
    kfp_client.submit(package)
    assert len(uploads(kfp_server)) == n


def test_schedule_is_unique_by_name(kfp_env, kfp_server, package):
    from kfct.pipelines import kfp_client

    first = kfp_client.schedule(package, name="monthly")
    again = kfp_client.schedule(package, name="monthly")
    assert again.action == "unchanged" and again.recurring_run_id == first.recurring_run_id
    assert len(kfp_server.state.recurring_runs) == 1
    with pytest.raises(kfp_client.KfpError, match=r"a recurring run named 'monthly' already exists.*--replace"):
        kfp_client.schedule(package, name="monthly", cron="0 0 5 1 * *")
    assert len(kfp_server.state.recurring_runs) == 1
    swapped = kfp_client.schedule(package, name="monthly", cron="0 0 5 1 * *", replace=True)
    assert swapped.action == "replaced"
    (rr,) = kfp_server.state.recurring_runs.values()
    assert rr["trigger"]["cron_schedule"]["cron"] == "0 0 5 1 * *"
    other = kfp_client.schedule(package, name="second")  # another name is another schedule
    assert other.action == "created" and len(kfp_server.state.recurring_runs) == 2


@pytest.fixture(scope="module")
def real_packages(compiled_pipelines):
    """`kfct compile`'s output with default settings, once per session (tests/conftest.py)."""
    return {p.name: p for p in compiled_pipelines}


def test_monitoring_and_batch_schedules_say_what_they_are(kfp_env, kfp_server, real_packages, capsys):
    from kfct.cli import main
    from kfct.pipelines import batch_scoring, monitoring

    ct = kfp_server.state
    assert main(["schedule", "--package", str(real_packages["monitoring_pipeline.yaml"]), "--pipeline", "monitoring"]) == 0
    (rr,) = ct.recurring_runs.values()
    assert "monitoring" in rr["description"] and "CT run" not in rr["description"].split(":")[0]
    assert rr["trigger"]["cron_schedule"]["cron"] == monitoring.DEFAULT_CRON  # weekly, not the CT month
    assert rr["display_name"] == "kfct-monitoring schedule"
    assert (
        main(
            [
                "schedule",
                "--package",
                str(real_packages["batch_scoring_pipeline.yaml"]),
                "--pipeline",
                "batch",
                "--data-uri",
                "s3://kfct/datasets/x.parquet",
            ]
        )
        == 0
    )
    batch = [r for r in ct.recurring_runs.values() if r["display_name"] == "kfct-batch-scoring schedule"]
    assert batch and "batch scoring" in batch[0]["description"]
    assert batch[0]["trigger"]["cron_schedule"]["cron"] == batch_scoring.DEFAULT_CRON
    assert batch[0]["runtime_config"]["parameters"]["data_uri"] == "s3://kfct/datasets/x.parquet"
    assert main(["schedule", "--package", str(real_packages["ct_pipeline.yaml"]), "--name", "ct"]) == 0
    ct_rr = [r for r in ct.recurring_runs.values() if r["display_name"] == "ct"]
    assert "CT run" in ct_rr[0]["description"]
