"""The emulator itself: DAG order, dsl.If, dsl.ParallelFor + dsl.Collected, artifacts through S3 only;
and what it emulates of KFP 2.17's driver (kubeflow/pipelines 2.17.0, commit 7b70c7b9,
backend/src/v2): the cache key (cacheutils/cache.go, driver/cache.go), exit handlers and
`taskFinalStatus` (driver/resolve.go), run placeholders (resolve.go), the executor input's
artifact fields and URI layout (driver.go `provisionOutputs`, metadata/converter.go), and the
pod's memory limit (cgroup v1) and uid.

(No `from __future__ import annotations`: kfp reads the component annotations as types.)
"""

import json
import re
from typing import ClassVar, List

import pytest

from tests.e2e.kfp_emulator import Emulator, evaluate_condition, unshare_available
from tests.faultkit.servers import moto_s3

pytestmark = pytest.mark.slow


def _pipeline():
    from kfp import dsl
    from kfp.dsl import Artifact, Input, Output

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def split(n: int) -> List[int]:
        return list(range(n))

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def square(i: int, out: Output[Artifact]):
        from pathlib import Path

        assert not Path("/s3/emu-bucket/root/marker").exists(), "a file of another pod is visible"
        with open(out.path, "w") as f:
            f.write(str(i * i))

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def gather(parts: Input[List[Artifact]]) -> int:
        return sum(int(open(p.path).read()) for p in parts)

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def never() -> str:
        raise SystemExit("the condition was false: this must not run")

    @dsl.pipeline(name="emu")
    def emu(n: int = 4):
        s = split(n=n)
        with dsl.ParallelFor(s.output, name="shards") as i:
            w = square(i=i)
        g = gather(parts=dsl.Collected(w.outputs["out"]))
        with dsl.If(g.output == 0, name="never"):
            never()

    return emu


def test_parallel_for_collected_and_conditions(tmp_path):
    why = unshare_available()
    if why:
        pytest.skip(why)
    import boto3
    from kfp import compiler

    ir = tmp_path / "emu.yaml"
    compiler.Compiler().compile(_pipeline(), str(ir))
    with moto_s3() as (host, port):
        url = f"http://{host}:{port}"
        boto3.client(
            "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
        ).create_bucket(Bucket="emu-bucket")

        class Cluster:
            launcher_s3: ClassVar[dict] = {"endpoint_url": url, "access_key": "k", "secret_key": "s"}
            service_account: ClassVar[dict] = {}

            @staticmethod
            def pod_env(spec):
                return {}

        import sys

        run = Emulator(ir, Cluster, "s3://emu-bucket/root", sys.executable, tmp_path / "pods").run({"n": 4})
        assert run.task("gather").parameters["Output"] == 0 + 1 + 4 + 9
        assert len(run.task("for-loop-1").artifacts["pipelinechannel--square-out"]) == 4
        assert run.task("condition-2").state == "SKIPPED"  # never() did not run


@pytest.mark.parametrize(
    "expr,params,want",
    [
        ("inputs.parameter_values['pipelinechannel--x'] == true", {"pipelinechannel--x": True}, True),
        ("inputs.parameter_values['pipelinechannel--x'] == true", {"pipelinechannel--x": False}, False),
        ("inputs.parameter_values['a'] != 'b'", {"a": "b"}, False),
        ("inputs.parameter_values['a'] == 3", {"a": 3}, True),
    ],
)
def test_conditions(expr, params, want):
    assert evaluate_condition(expr, params) is want


def test_unsupported_condition_is_refused():
    with pytest.raises(ValueError, match="unsupported triggerPolicy"):
        evaluate_condition("size(inputs.parameter_values['a']) > 2", {"a": "xyz"})


# --------------------------------------------------------------------- KFP driver semantics
class _Cluster:
    launcher_s3: ClassVar[dict] = {}
    service_account: ClassVar[dict] = {}

    @staticmethod
    def pod_env(spec):
        return {}


@pytest.fixture
def emu_env(tmp_path):
    why = unshare_available()
    if why:
        pytest.skip(why)
    import boto3

    with moto_s3() as (host, port):
        url = f"http://{host}:{port}"
        boto3.client(
            "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
        ).create_bucket(Bucket="emu-bucket")

        class Cluster(_Cluster):
            launcher_s3: ClassVar[dict] = {"endpoint_url": url, "access_key": "k", "secret_key": "s"}

        def make(pipeline, **kw):
            import sys

            from kfp import compiler

            ir = tmp_path / f"{pipeline.name}.yaml"
            compiler.Compiler().compile(pipeline, str(ir))
            return Emulator(ir, Cluster, "s3://emu-bucket/root", sys.executable, tmp_path / "pods", **kw)

        yield make


def _cache_pipeline():
    from kfp import dsl
    from kfp.dsl import Artifact, Input, Output

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def make(n: int, out: Output[Artifact]):
        with open(out.path, "w") as f:
            f.write(str(n))

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def pure(x: int) -> int:
        return x * 2

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def effect(a: Input[Artifact], x: int) -> int:
        return int(open(a.path).read()) + x

    @dsl.pipeline(name="cache-emu")
    def pipe(n: int = 1, x: int = 5):
        m = make(n=n)
        m.set_caching_options(False)
        pure(x=x)  # caching on (KFP's default)
        effect(a=m.outputs["out"], x=x)  # caching on, but its input artifact is new every run

    return pipe


def test_cache_key_as_the_driver_computes_it(emu_env):
    cache: dict = {}
    first = emu_env(_cache_pipeline(), cache=cache).run({"x": 5})
    again = emu_env(_cache_pipeline(), cache=cache).run({"x": 5})
    other = emu_env(_cache_pipeline(), cache=cache).run({"x": 6})
    assert first.task("pure").state == "SUCCEEDED"
    assert again.task("pure").state == "CACHED" and again.task("pure").parameters["Output"] == 10  # same inputs
    assert other.task("pure").state == "SUCCEEDED" and other.task("pure").parameters["Output"] == 12
    assert again.task("make").state == "SUCCEEDED"  # caching off: always runs
    # upstream artifacts are in the key by their MLMD id: a new `make` output is a miss for `effect`
    assert again.task("effect").state == "SUCCEEDED"


def test_cache_fingerprint_covers_inputs_artifact_ids_outputs_and_container():
    from tests.e2e.kfp_emulator import cache_fingerprint

    ex = {
        "inputs": {"parameterValues": {"x": 1}, "artifacts": {"a": {"artifacts": [{"name": "7", "uri": "s3://u"}]}}},
        "outputs": {
            "parameters": {"Output": {"outputFile": "/f"}},
            "artifacts": {"o": {"artifacts": [{"name": "o", "uri": "s3://run-1/o", "type": {"schemaTitle": "system.Artifact"}}]}},
        },
    }
    base = cache_fingerprint(ex, {"Output": "NUMBER_INTEGER"}, "img:1", ["python", "-m", "x"])
    moved = json.loads(json.dumps(ex))
    moved["outputs"]["artifacts"]["o"]["artifacts"][0]["uri"] = "s3://run-2/o"  # URIs are wiped from the key
    moved["inputs"]["artifacts"]["a"]["artifacts"][0]["uri"] = "s3://elsewhere"
    assert cache_fingerprint(moved, {"Output": "NUMBER_INTEGER"}, "img:1", ["python", "-m", "x"]) == base
    other_id = json.loads(json.dumps(ex))
    other_id["inputs"]["artifacts"]["a"]["artifacts"][0]["name"] = "8"
    for changed in (
        cache_fingerprint(other_id, {"Output": "NUMBER_INTEGER"}, "img:1", ["python", "-m", "x"]),
        cache_fingerprint(ex, {"Output": "NUMBER_INTEGER"}, "img:2", ["python", "-m", "x"]),
        cache_fingerprint(ex, {"Output": "STRING"}, "img:1", ["python", "-m", "x"]),
    ):
        assert changed != base


def _exit_pipeline():
    from kfp import dsl

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def work(seconds: float, run: str) -> str:
        import time

        time.sleep(seconds)
        return run

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def last(status: dsl.PipelineTaskFinalStatus, run: str, name: str) -> str:
        import json

        return json.dumps(
            {
                "state": status.state,
                "task": status.pipeline_task_name,
                "resource": status.pipeline_job_resource_name,
                "run": run,
                "name": name,
            }
        )

    @dsl.pipeline(name="exit-emu")
    def pipe(seconds: float = 0.0):
        final = last(run=dsl.PIPELINE_JOB_ID_PLACEHOLDER, name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
        final.set_caching_options(False)
        with dsl.ExitHandler(final, name="body"):
            w = work(seconds=seconds, run=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
            w.set_caching_options(False)

    return pipe


def test_exit_handler_runs_after_a_pod_killed_from_outside(emu_env):
    import signal

    run = emu_env(_exit_pipeline(), kill={"work": signal.SIGKILL}).run({"seconds": 30.0}, raise_on_failure=False)
    assert run.state == "FAILED"
    work = run.task("work")
    assert work.state == "FAILED" and work.exit_code == 137
    final = json.loads(run.task("last").parameters["Output"])
    assert final["state"] == "FAILED" and final["task"] == "exit-handler-1"
    assert final["resource"] == run.resource_name and final["run"] == run.run_id


def test_run_placeholders_display_name_is_not_unique_uuid_is(emu_env):
    emu = emu_env(_exit_pipeline())
    a, b = emu.run({}, job_name="weekly retrain"), emu.run({}, job_name="weekly retrain")
    fa, fb = (json.loads(r.task("last").parameters["Output"]) for r in (a, b))
    assert fa["name"] == fb["name"] == "weekly retrain"  # {{$.pipeline_job_name}}: the display name
    assert fa["run"] == a.run_id != fb["run"] == b.run_id  # {{$.pipeline_job_uuid}}: the run id
    assert fa["state"] == "COMPLETE" and a.task("work").parameters["Output"] == a.run_id


def _pod_pipeline(limit: str, allocate_mb: int):
    from kfp import dsl
    from kfp.dsl import Dataset, Input, Output

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def produce(out: Output[Dataset]) -> int:
        import os

        with open(out.path, "w") as f:
            f.write("x")
        return os.getuid()

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def consume(data: Input[Dataset], mb: int) -> str:
        import json
        import os

        block = bytearray(mb * 1024 * 1024)
        return json.dumps(
            {
                "uid": os.getuid(),
                "read": open(data.path).read(),
                "n": len(block),
                "name": data.name,
                "uri": data.uri,
                "schema": data.schema_version,
            }
        )

    @dsl.pipeline(name="pod-emu")
    def pipe(mb: int = allocate_mb):
        p = produce()
        c = consume(data=p.outputs["out"], mb=mb)
        c.set_memory_limit(limit)
        for t in (p, c):
            t.set_caching_options(False)

    return pipe


def test_pods_run_as_the_image_uid_with_the_driver_executor_input(emu_env):
    run = emu_env(_pod_pipeline("1Gi", 1), uid=10001).run({})
    assert run.task("produce").parameters["Output"] == 10001
    got = json.loads(run.task("consume").parameters["Output"])
    assert got["uid"] == 10001 and got["read"] == "x"
    # the input artifact is named by its MLMD id; its URI carries the task-level segment (<task>/<uuid>/<key>)
    assert got["name"].isdigit() and got["schema"] == "0.0.1"
    assert re.fullmatch(rf"s3://emu-bucket/root/pod-emu/{run.run_id}/produce/[0-9a-f-]{{36}}/out", got["uri"]), got


def test_a_pod_over_its_memory_limit_is_killed_with_137(emu_env):
    run = emu_env(_pod_pipeline("96Mi", 400), uid=10001).run({}, raise_on_failure=False)
    consume = run.task("consume")
    assert consume.state == "FAILED" and consume.exit_code == 137, consume.log[-2000:]
    assert "OOMKilled" in consume.log
