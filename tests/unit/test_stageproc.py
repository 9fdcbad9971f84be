"""A kfp task process tunes its collector for one stage; any other process keeps Python's defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = r"""
import gc, json
from kfct.runtime.stagefail import audit_failure
before = gc.get_threshold()[0]
with audit_failure("probe"):
    inside = {"threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}
print(json.dumps({"before": before, "inside": inside, "after_frozen": gc.get_freeze_count()}))
"""


def _probe(kfp_runtime: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "_KFP_RUNTIME"}
    if kfp_runtime is not None:
        env["_KFP_RUNTIME"] = kfp_runtime
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_a_kfp_task_process_freezes_the_heap_and_raises_the_young_threshold():
    from kfct.runtime.stageproc import YOUNG_THRESHOLD

    r = _probe("true")
    assert r["before"] == 700
    assert r["inside"]["threshold"] == YOUNG_THRESHOLD and r["inside"]["frozen"] > 0
    assert r["after_frozen"] > 0  # still frozen at the end: shutdown has nothing to collect


def test_any_other_process_keeps_the_default_collector():
    for value in (None, "false"):
        r = _probe(value)
        assert r["inside"] == {"threshold": 700, "frozen": 0} and r["after_frozen"] == 0


def test_the_heap_is_frozen_even_when_the_stage_fails(tmp_path):
    code = (
        "import gc, json\nfrom kfct.runtime.stagefail import audit_failure\n"
        "try:\n    with audit_failure('probe'):\n        raise RuntimeError('boom')\n"
        "except RuntimeError:\n    print(json.dumps({'frozen': gc.get_freeze_count()}))\n"
    )
    env = {**os.environ, "_KFP_RUNTIME": "true", "KFCT_HOME": str(tmp_path)}  # its stage_failed entry
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1])["frozen"] > 0


EXIT_PROBE = r"""
import sys
from kfct.runtime.stagefail import audit_failure


class Torn:
    def __del__(self):  # runs in module teardown, the phase a successful task process skips
        sys.stdout.write(" teardown")


torn = Torn()
with audit_failure("probe"):
    if sys.argv[1] == "stage-fails":
        raise RuntimeError("boom in the stage")
sys.stdout.write("stage done")  # no newline: still buffered when the process leaves
if sys.argv[1] == "fails-after":
    raise OSError("kfp could not write the executor output")
"""


def _exit_probe(mode: str, tmp_path, kfp_runtime: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "_KFP_RUNTIME"}
    env["KFCT_HOME"] = str(tmp_path)  # a failing stage's stage_failed entry
    if kfp_runtime:
        env["_KFP_RUNTIME"] = "true"
    return subprocess.run([sys.executable, "-c", EXIT_PROBE, mode], env=env, capture_output=True, text=True, timeout=120)


def test_a_successful_task_process_flushes_and_leaves_before_native_teardown(tmp_path):
    """pyarrow's thread pools can abort the process in teardown (SIGABRT) after a stage did its work."""
    p = _exit_probe("ok", tmp_path)
    assert (p.returncode, p.stdout) == (0, "stage done"), p.stderr


def test_a_failure_keeps_the_interpreters_own_exit_and_status(tmp_path):
    failed = _exit_probe("stage-fails", tmp_path)
    assert failed.returncode == 1 and "boom in the stage" in failed.stderr
    after = _exit_probe("fails-after", tmp_path)  # the stage returned, then the output could not be written
    assert after.returncode == 1 and "could not write" in after.stderr and after.stdout.startswith("stage done")


def test_any_other_process_tears_down_as_usual(tmp_path):
    p = _exit_probe("ok", tmp_path, kfp_runtime=False)
    assert (p.returncode, p.stdout) == (0, "stage done teardown"), p.stderr
