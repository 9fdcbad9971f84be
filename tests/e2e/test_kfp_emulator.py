"""The emulator itself: DAG order, dsl.If, dsl.ParallelFor + dsl.Collected, artifacts through S3 only.

(No `from __future__ import annotations`: kfp reads the component annotations as types.)
"""


from typing import List

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
        import os

        assert not os.path.exists("/s3/emu-bucket/root/marker"), "a file of another pod is visible"
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
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="k",
                     aws_secret_access_key="s").create_bucket(Bucket="emu-bucket")

        class Cluster:
            launcher_s3 = {"endpoint_url": url, "access_key": "k", "secret_key": "s"}
            service_account: dict = {}

            @staticmethod
            def pod_env(spec):
                return {}

        import sys

        run = Emulator(ir, Cluster, "s3://emu-bucket/root", sys.executable, tmp_path / "pods").run({"n": 4})
        assert run.task("gather").parameters["Output"] == 0 + 1 + 4 + 9
        assert len(run.task("for-loop-1").artifacts["pipelinechannel--square-out"]) == 4
        assert run.task("condition-2").state == "SKIPPED"  # never() did not run


@pytest.mark.parametrize("expr,params,want", [
    ("inputs.parameter_values['pipelinechannel--x'] == true", {"pipelinechannel--x": True}, True),
    ("inputs.parameter_values['pipelinechannel--x'] == true", {"pipelinechannel--x": False}, False),
    ("inputs.parameter_values['a'] != 'b'", {"a": "b"}, False),
    ("inputs.parameter_values['a'] == 3", {"a": 3}, True),
])
def test_conditions(expr, params, want):
    assert evaluate_condition(expr, params) is want


def test_unsupported_condition_is_refused():
    with pytest.raises(ValueError, match="unsupported triggerPolicy"):
        evaluate_condition("size(inputs.parameter_values['a']) > 2", {"a": "xyz"})
