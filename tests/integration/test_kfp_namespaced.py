"""Issue 20, item 5: on a multi-user KFP, kfct uploads namespaced pipelines and a retrain runs a pinned version.

The fake API (tests/fakes/kfp_server.py, multi-user mode) authorizes as kubeflow/pipelines
2.17.0 does (commit 7b70c7b9): backend/src/apiserver/server/pipeline_upload_server.go
`canUploadVersionedPipeline` authorizes nothing for a shared pipeline (namespace ""), so any
authenticated user may add a version to it; a namespaced pipeline takes uploads only from
users with `create` on pipelines in its namespace; `ListPipelines` (pipeline_server.go)
returns the pipelines of exactly the namespace asked for. The real `kfp.Client` talks to it.
"""

# no `from __future__ import annotations`: kfp reads the component annotations as types.
import pytest
from fakes.kfp_server import FakeKfpServer, point_kfct_at  # tests/ is on sys.path (tests/conftest.py)

OPERATOR = "operator-token"  # a member of the kfct profile
INTRUDER = "someone-else-token"  # any other authenticated user of the cluster
NS = "kfct-prod"


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def echo(data_uri: str) -> str:
        return data_uri

    def build(description):
        @dsl.pipeline(name="kfct-ct", description=description)
        def pipe(data_uri: str = "generate://2000", run_reason: str = "manual", model_name: str = "m"):
            echo(data_uri=data_uri)

        return pipe

    d = tmp_path_factory.mktemp("build")
    out = {}
    for what in ("good", "evil"):
        out[what] = d / f"{what}.yaml"
        compiler.Compiler().compile(build(f"{what} pipeline"), str(out[what]), type_check=True)
    return out


@pytest.fixture
def kfp(kfct_home, monkeypatch, tmp_path):
    from kfct.runtime.settings import reset_settings

    with FakeKfpServer(users={OPERATOR: {NS}, INTRUDER: {"someone-else"}}) as server:
        point_kfct_at(monkeypatch, server.url, OPERATOR, tmp_path)
        monkeypatch.setenv("KFCT_KFP_NAMESPACE", NS)
        reset_settings()
        yield server
    reset_settings()


def _client(server, token):
    from kfp import Client

    return Client(host=server.url, existing_token=token)


def test_submit_uploads_a_namespaced_pipeline(kfp, packages):
    from kfct.pipelines import kfp_client

    info = kfp_client.submit(packages["good"])
    pipe = kfp.state.pipelines[info.pipeline_id]
    assert pipe["namespace"] == NS, "a shared pipeline takes versions from any authenticated user"
    uploads = kfp.calls("POST", "/pipelines/upload")
    assert uploads[0].query.get("namespace") == NS


def test_nobody_outside_the_namespace_can_add_a_version(kfp, packages):
    from kfct.pipelines import kfp_client

    info = kfp_client.submit(packages["good"])
    with pytest.raises(Exception, match=r"400|Failed to create a pipeline version"):
        _client(kfp, INTRUDER).upload_pipeline_version(
            str(packages["evil"]), pipeline_version_name="evil", pipeline_id=info.pipeline_id
        )
    assert len(kfp.state.versions[info.pipeline_id]) == 1


def test_the_fake_lets_anyone_write_a_shared_pipeline_as_upstream_does(kfp, packages):
    """The hole itself, as KFP 2.17 has it: no authorization on shared uploads (why kfct never uses one)."""
    shared = _client(kfp, INTRUDER).upload_pipeline(str(packages["good"]), pipeline_name="kfct-ct")
    assert kfp.state.pipelines[shared.pipeline_id]["namespace"] == ""
    _client(kfp, OPERATOR).upload_pipeline_version(
        str(packages["evil"]), pipeline_version_name="evil-by-operator", pipeline_id=shared.pipeline_id
    )
    _client(kfp, INTRUDER).upload_pipeline_version(
        str(packages["evil"]), pipeline_version_name="evil", pipeline_id=shared.pipeline_id
    )
    assert len(kfp.state.versions[shared.pipeline_id]) == 3


def test_retrain_runs_the_pinned_version_not_the_newest(kfp, packages, cfg):
    """A member of the namespace (or a CI job) adds a newer version by hand: the retrain still runs what the
    operator pinned with `kfct submit`, and the audit trail names the version the run executes."""
    from kfct.governance import audit
    from kfct.pipelines import kfp_client
    from kfct.pipelines.ct import PIPELINE_NAME

    # a shared pipeline of the same name, planted first, is never picked up
    planted = _client(kfp, INTRUDER).upload_pipeline(str(packages["evil"]), pipeline_name=PIPELINE_NAME)
    info = kfp_client.submit(packages["good"])
    assert info.pipeline_id != planted.pipeline_id
    newer = _client(kfp, OPERATOR).upload_pipeline_version(
        str(packages["evil"]), pipeline_version_name="newer", pipeline_id=info.pipeline_id
    )
    pins = [e for e in audit.read() if e["event"] == "pipeline_version_pinned"]
    assert pins[-1]["pipeline_version_id"] == info.pipeline_version_id and pins[-1]["namespace"] == NS

    from kfct.components.retrain_policy import run_trigger

    drift = {"retrain": True, "severity": "critical", "reason": "drift share 0.7 > 0.2", "has_labels": True}
    out = run_trigger(drift, cfg, "m", current_uri="s3://kfct/w.parquet")
    run = kfp.state.runs[out["run"]["run_id"]]
    ref = run["pipeline_version_reference"]
    assert ref == {"pipeline_id": info.pipeline_id, "pipeline_version_id": info.pipeline_version_id}
    assert ref["pipeline_version_id"] != newer.pipeline_version_id
    trig = [e for e in audit.read() if e["event"] == "retrain_triggered"][-1]
    assert trig["pipeline_version_id"] == info.pipeline_version_id


def test_retrain_without_a_pin_or_with_a_foreign_pin_is_refused(kfp, packages, kfct_home):
    from kfct.governance import audit
    from kfct.pipelines import kfp_client
    from kfct.pipelines.kfp_client import KfpError

    with pytest.raises(KfpError, match="not found in namespace 'kfct-prod'"):
        kfp_client.trigger_run("kfct-ct", {})
    # uploaded by hand (no pin): refused, with what to do
    _client(kfp, OPERATOR).upload_pipeline(str(packages["good"]), pipeline_name="kfct-ct", namespace=NS)
    with pytest.raises(KfpError, match=r"no pinned version of pipeline 'kfct-ct'.*kfct submit"):
        kfp_client.trigger_run("kfct-ct", {})
    # a version id of another pipeline (a shared one) cannot be pinned into ours
    shared = _client(kfp, INTRUDER).upload_pipeline(str(packages["evil"]), pipeline_name="other")
    foreign = kfp.state.versions[shared.pipeline_id][0]["pipeline_version_id"]
    with pytest.raises(KfpError, match=f"pinned version {foreign} is not a version of pipeline 'kfct-ct'"):
        kfp_client.trigger_run("kfct-ct", {}, version_id=foreign)
    assert not kfp.state.runs
    assert not [e for e in audit.read() if e["event"] == "pipeline_version_pinned"]
