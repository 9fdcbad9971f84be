"""A CT run whose stage process is SIGKILLed (as an OOMKill or an eviction ends a pod) under kfp.local.

kfp 2.17's local runner runs `dsl.ExitHandler` exit tasks after the body, whatever its outcome,
with a `PipelineTaskFinalStatus` of the body (kfp/local/orchestrator/enhanced_dag_orchestrator.py,
orchestrator_utils.py `task_final_status`). The killed stage cannot write `stage_failed`; the
exit task writes `run_failed` for the run, once, and the registry stays as it was.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _kill_when_running(function: str, home: Path, stop: threading.Event, killed: list) -> None:
    """SIGKILL the kfp task process executing `function` for the run on `home` as soon as it exists (from
    outside, like a kubelet). Only that run's: the runner gives its task processes `KFCT_HOME`, and other
    xdist workers run CT pipelines of their own at the same time (killing one of theirs failed two tests)."""
    needle = f"--function_to_execute\x00{function}\x00".encode()
    ours = f"\x00KFCT_HOME={home}\x00".encode()
    while not stop.is_set():
        for pid in (p.name for p in Path("/proc").iterdir() if p.name.isdigit()):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                env = b"\x00" + Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if needle in cmd + b"\x00" and ours in env:
                time.sleep(0.5)  # the stage is past its imports: a kill mid-work
                try:
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                except ProcessLookupError:
                    continue
                return
        time.sleep(0.05)


def test_a_stage_killed_from_outside_leaves_run_failed(kfct_home, tmp_path):
    from kfct.data.datagen import generate, write_frame
    from kfct.governance import audit
    from kfct.pipelines.runner import run_pipeline

    data = write_frame(generate(3000, seed=5), tmp_path / "d.parquet")
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_when_running, args=("train_model", kfct_home, stop, killed), daemon=True)
    killer.start()
    try:
        run = run_pipeline("kfct.pipelines.ct:build_ct_pipeline", {}, {"data_uri": str(data)}, kfct_home, prefix="ct")
    finally:
        stop.set()
        killer.join(5)
    assert killed, "the train stage never started"
    assert run.error is not None
    entries = list(audit.read(kfct_home / "audit" / "audit.jsonl"))
    assert not [e for e in entries if e["event"] == "stage_failed"], "a SIGKILLed stage cannot record itself"
    failed = [e for e in entries if e["event"] == "run_failed"]
    assert len(failed) == 1, entries
    assert failed[0]["run_id"] == run.run_id and failed[0]["state"] == "FAILED"
    assert failed[0]["pipeline_run"] and failed[0]["pipeline_run"] != run.run_name
    assert not [e for e in entries if e["event"] in ("model_registered", "alias_set", "model_deployed")]
    # the validation entry of the same run names it by the same uuid the exit task saw
    validation = [e for e in entries if e["event"] == "validation"]
    assert validation and validation[0]["pipeline_run"] == failed[0]["pipeline_run"]
