"""The one local-run helper (`kfct.pipelines.runner`) on tiny real pipelines under kfp.local.

Two tiny lightweight components (written to a temp module the driver process imports)
keep this fast while everything real runs: the driver process, kfp's SubprocessRunner,
one subprocess per task, executor outputs on disk.
"""

import os
import sys
import textwrap
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BUILDERS = '''
from kfp import dsl
from kfp.dsl import Artifact, Output


def double(x: int, note: Output[Artifact]) -> int:
    from kfct.runtime.stageclock import StageClock

    clock = StageClock()
    import os
    import time

    time.sleep(0.3)
    with open(note.path, "w") as fh:
        fh.write(os.environ.get("KFCT_HOME", ""))
    note.metadata["x"] = x
    clock.stamp(note.metadata)
    return 2 * x


def explode(x: int) -> int:
    raise ValueError(f"bad thing in explode at {x}")


def build_ok(prefix: str = ""):
    op = dsl.component(double, base_image="python:3.11")

    @dsl.pipeline(name=prefix + "tiny-ok")
    def tiny(x: int = 1):
        a = op(x=x)
        op(x=a.outputs["Output"])

    return tiny


def build_recording(out: str):
    """build_ok, writing down what the driver process had imported when it built the pipeline."""
    import json
    import os
    import sys

    with open(out, "w") as fh:
        json.dump({"kfp_client": "kfp.client" in sys.modules, "kfp_runtime": os.environ.get("_KFP_RUNTIME")}, fh)
    return build_ok("recording-")


def build_failing():
    op, bad = dsl.component(double, base_image="python:3.11"), dsl.component(explode, base_image="python:3.11")

    @dsl.pipeline(name="tiny-failing")
    def tiny(x: int = 1):
        a = op(x=x)
        bad(x=a.outputs["Output"])

    return tiny
'''


@pytest.fixture(scope="module")
def builders(tmp_path_factory):
    d = tmp_path_factory.mktemp("builders")
    (d / "tiny_pipelines.py").write_text(textwrap.dedent(BUILDERS))
    return {"PYTHONPATH": os.pathsep.join([str(d), *sys.path])}


def test_returns_each_tasks_outputs_and_own_durations_without_touching_this_process(tmp_path, builders, capfd):
    from kfct.pipelines.runner import run_pipeline

    env_before = dict(os.environ)
    run = run_pipeline("tiny_pipelines:build_ok", {}, {"x": 3}, tmp_path / "home", prefix="tiny", env=builders)
    assert run.error is None, run.log_path.read_text()[-2000:]
    assert dict(os.environ) == env_before
    assert capfd.readouterr().out == ""  # kfp's chatter went to the run's log, not to this process
    assert list(run.tasks) == ["double", "double-2"]  # ordered by each stage's own start stamp
    assert run.param("double") == 6 and run.param("double-2") == 12
    note = run.artifact("double-2", "note")
    assert note["metadata"]["x"] == 6
    assert Path(note["uri"]).read_text() == str((tmp_path / "home").resolve())  # the stages got this run's home
    for seconds in run.durations().values():
        assert seconds is not None and 0.3 <= seconds < 60
    assert run.run_dir.parent.name == run.run_id and run.run_dir.parent.parent == (tmp_path / "home" / "pipeline_root").resolve()
    assert "Executing task" in run.log_path.read_text()


def test_two_runs_at_once_in_one_process_each_get_their_own(tmp_path, builders):
    from kfct.pipelines.runner import run_pipeline

    runs = {}

    def go(x):
        runs[x] = run_pipeline(
            "tiny_pipelines:build_ok", {"prefix": f"p{x}-"}, {"x": x}, tmp_path / "home", prefix="tiny", env=builders
        )

    threads = [threading.Thread(target=go, args=(x,)) for x in (5, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert runs[5].error is None and runs[7].error is None
    assert runs[5].param("double-2") == 20 and runs[7].param("double-2") == 28
    assert runs[5].run_name.startswith("p5-tiny-ok") and runs[7].run_name.startswith("p7-tiny-ok")
    assert runs[5].run_id != runs[7].run_id and runs[5].log_path != runs[7].log_path


def test_a_failing_task_is_named_with_its_own_error(tmp_path, builders):
    from kfct.pipelines.runner import run_pipeline

    run = run_pipeline("tiny_pipelines:build_failing", {}, {"x": 2}, tmp_path / "home", prefix="tiny", env=builders)
    assert run.failed_task == "explode"
    assert run.error == "ValueError: bad thing in explode at 4"
    assert "double" in run.tasks and "explode" not in run.tasks


def test_verbose_streams_kfps_log_too(tmp_path, builders, capfd):
    from kfct.pipelines.runner import run_pipeline

    run = run_pipeline("tiny_pipelines:build_ok", {}, {"x": 1}, tmp_path / "home", prefix="tiny", env=builders, verbose=True)
    assert run.error is None
    shown = capfd.readouterr().out
    assert "Executing task" in shown and shown == run.log_path.read_text()


def test_the_driver_authors_without_kfps_rest_client_even_when_started_from_a_task(tmp_path, builders):
    """The driver imports kfp without `kfp.Client` (0.3 s before the first stage), and a run started from
    inside a task process (where `_KFP_RUNTIME=true`, as for a retrain launched by a monitoring stage)
    still gets kfp's authoring modules."""
    import json

    from kfct.pipelines.runner import run_pipeline

    seen = tmp_path / "driver.json"
    run = run_pipeline(
        "tiny_pipelines:build_recording",
        {"out": str(seen)},
        {"x": 2},
        tmp_path / "home",
        prefix="tiny",
        env={**builders, "_KFP_RUNTIME": "true"},
    )
    assert run.error is None, run.log_path.read_text()[-2000:]
    assert run.param("double-2") == 8
    assert json.loads(seen.read_text()) == {"kfp_client": False, "kfp_runtime": None}
