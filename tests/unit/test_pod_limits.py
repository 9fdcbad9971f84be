"""`kfct run --pod-limits`: each local task process, and each local training worker, is held to the
memory limit the compiled pipeline gives its pod (a cgroup v1 memory group); over it, the kernel
kills it (137), as an OOM-killed pod.

The two kfp 2.17 seams the local runner wraps (kfp/local/task_dispatcher.py
`run_single_task_implementation`, kfp/local/subprocess_task_handler.py `run_local_subprocess`)
are pinned here. The held runs need root and the cgroup v1 memory controller (skipped otherwise).
"""

import inspect
import json
import os
import sys
from pathlib import Path

import pytest

from kfct.runtime import memgroup

needs_cgroup = pytest.mark.skipif(not memgroup.available(), reason="needs root and the cgroup v1 memory controller")


def build_hog_pipeline(limit: str = "300Mi"):
    """Two tasks under `limit`: one fits (40 MiB), one does not (700 MiB, touched)."""
    from kfp import dsl

    from kfct.pipelines.task_config import _LOCAL_LIMITS

    @dsl.component(base_image="python:3.11")
    def hold(mib: int) -> int:
        data = b"x" * (mib * 2**20)  # written, so resident
        return len(data) // 2**20

    @dsl.pipeline(name="hog")
    def hog():
        fits = hold(mib=40)
        over = hold(mib=700).after(fits)
        for t in (fits, over):
            t.set_caching_options(enable_caching=False)
            if _LOCAL_LIMITS.get():  # as apply_task_config does for a local build under --pod-limits
                t.set_memory_limit(limit)

    return hog


def test_the_kfp_seams_the_runner_wraps_are_there():
    from kfp.local import subprocess_task_handler, task_dispatcher
    from kfp.local.orchestrator import task_executor

    params = list(inspect.signature(task_dispatcher.run_single_task_implementation).parameters)
    assert params[:4] == ["pipeline_resource_name", "component_name", "component_spec", "executor_spec"]
    assert list(inspect.signature(subprocess_task_handler.run_local_subprocess).parameters) == ["full_command", "env_vars"]
    # Called through the module attribute (so the wrapper is seen), not bound at import.
    assert "task_dispatcher.run_single_task_implementation(" in inspect.getsource(task_executor)
    assert "return_code = run_local_subprocess(" in inspect.getsource(subprocess_task_handler.SubprocessTaskHandler.run)


def test_a_local_build_under_pod_limits_carries_the_clusters_memory_limits():
    from kfct.config import load_config
    from kfct.pipelines.task_config import apply_task_config, local_limits, target

    class Task:
        state = None

        def __init__(self):
            self.calls = {}

        def set_caching_options(self, **kw):
            self.calls["caching"] = kw

        def set_memory_request(self, v):
            self.calls["memory_request"] = v

        def set_memory_limit(self, v):
            self.calls["memory_limit"] = v

    cfg = load_config()
    with target("local"):
        plain = apply_task_config(Task(), "train", cfg)
        with local_limits():
            held = apply_task_config(Task(), "train", cfg)
            part = apply_task_config(Task(), "validate_part", cfg)
    assert "memory_limit" not in plain.calls
    assert held.calls["memory_limit"] == "8Gi" and part.calls["memory_limit"] == "2Gi"


def test_memory_quantities():
    assert memgroup.quantity_bytes("2Gi") == 2 * 2**30
    assert memgroup.quantity_bytes("500M") == 500 * 10**6
    assert memgroup.quantity_bytes("1024") == 1024
    with pytest.raises(ValueError, match="not a Kubernetes memory quantity: '2 gigs'"):
        memgroup.quantity_bytes("2 gigs")


@pytest.mark.slow  # runs a task process in a memory cgroup
@needs_cgroup
@pytest.mark.parametrize("held", [True, False])
def test_a_task_over_its_pods_limit_is_killed_and_recorded(tmp_path, monkeypatch, held):
    from kfct.pipelines.runner import run_pipeline

    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the driver imports this module as tests.unit.*
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path.cwd()), *sys.path]))
    run = run_pipeline("tests.unit.test_pod_limits:build_hog_pipeline", {}, {}, tmp_path, prefix="hog", pod_limits=held)
    record = run.run_dir.parent / "memory.jsonl" if run.run_dir else None
    if not held:  # kfp.local alone: nothing is held, the 700 MiB task runs to the end
        assert run.error is None, run.error
        assert record is None or not record.exists()
        return
    assert run.error is not None
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(r["task"], r["exit"], r["limit_mib"]) for r in rows] == [("comp-hold", 0, 300), ("comp-hold-2", 137, 300)]
    assert rows[0]["peak_rss_mib"] < 300 and rows[1]["oom_killed"] is True
    assert not (memgroup.CGROUP_V1_MEMORY / "kfct" / run.run_id).exists()  # the run's groups are removed


@needs_cgroup
def test_each_local_worker_is_held_to_the_per_worker_limit(tmp_path, monkeypatch):
    from kfct.components.train_distributed import TrainJobError, run_local_workers

    # A stand-in "python" for the workers: rank 0 stays small, rank 1 goes past 200 MiB.
    fake = tmp_path / "python"
    fake.write_text(
        f"#!{sys.executable}\nimport os, time\n"
        "n = 20 if os.environ['DMLC_TASK_ID'] == '0' else 600\n"
        "data = b'x' * (n * 2**20)\nprint('peak RSS', n, 'MiB', flush=True)\ntime.sleep(1)\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv(memgroup.ENV_PARENT, memgroup.group_name("kfct-test", str(os.getpid())))
    monkeypatch.setenv(memgroup.ENV_RECORD, str(tmp_path / "memory.jsonl"))
    try:
        with pytest.raises(
            TrainJobError,
            match=r"local worker 1 of 2 failed \(exit 137\) \(killed at its memory "
            r"limit, as an OOM-killed pod\)",
        ):
            run_local_workers("unused-spec", 2, 120, tmp_path / "logs", python=str(fake), memory_limit=200 * 2**20)
    finally:
        memgroup.remove_tree(os.environ[memgroup.ENV_PARENT])
    rows = {r["process"]: r for r in map(json.loads, (tmp_path / "memory.jsonl").read_text().splitlines())}
    assert rows["worker 1 of 2"]["exit"] == 137 and rows["worker 1 of 2"]["limit_mib"] == 200
    assert rows["worker 0 of 2"]["cgroup_peak_mib"] < 200


def test_pod_limits_without_the_controller_is_refused_before_any_stage(tmp_path, monkeypatch):
    from kfct.errors import StageError
    from kfct.pipelines.local import run_ct

    monkeypatch.setattr(memgroup, "CGROUP_V1_MEMORY", tmp_path / "no-cgroup")
    monkeypatch.setenv("KFCT_HOME", str(tmp_path / "home"))
    with pytest.raises(StageError, match=r"--pod-limits needs root and the cgroup v1 memory controller at .*no-cgroup"):
        run_ct(data_uri="generate://1000?seed=1", pod_limits=True)
    assert not (tmp_path / "home" / "pipeline_root").exists()


def test_a_workers_peak_is_its_own_not_its_forking_parents():
    """Linux keeps ru_maxrss across execve: a worker forked (preexec_fn) from a large parent would report
    the parent's size. The worker reports VmHWM, which starts afresh at exec."""
    import subprocess

    ballast = b"x" * (400 * 2**20)  # this process: > 400 MiB resident
    code = (
        "import resource; from kfct.components.train_worker import peak_rss_mib; "
        "print(peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, preexec_fn=lambda: None
    ).stdout.split()
    own, inherited = float(out[0]), float(out[1])
    assert len(ballast) and inherited > 400 and own < 200, (own, inherited)
