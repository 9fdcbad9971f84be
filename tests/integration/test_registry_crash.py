"""kill -9 at four moments, and two runs racing at the gate (issue 9 #12, #13, #14).

Real processes run the pipeline's component functions (`tests.crashkit`) against one real
MLflow SQLite store; a `KFCT_TEST_PAUSE_AT` point stops a process at an exact moment and the
test SIGKILLs its whole process group there. Afterwards the next run (and the server) must
find and settle what was left: nothing RUNNING or PENDING forever, no approved version
without a decision, serving on what the aliases say, and the registry lock never stuck.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
NAME = "churn-classifier"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory, seed_mlflow_store):
    """A home with an initialised store and a lenient gate (every run passes it)."""
    import os as _os

    from kfct.runtime.settings import reset_settings

    base = tmp_path_factory.mktemp("crash")
    home = seed_mlflow_store(base / "home")
    cfg = base / "cfg.yaml"
    cfg.write_text("gate:\n  min_improvement: -1.0\n")
    from kfct.data.datagen import generate, write_frame

    data = write_frame(generate(3000, seed=42), base / "customers.parquet")
    e = {
        **_os.environ,
        "KFCT_HOME": str(home),
        "KFCT_CONFIG": str(cfg),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": str(ROOT),
    }
    for k in ("KFCT_MLFLOW_TRACKING_URI", "KFCT_S3_ENDPOINT", "KFCT_TEST_PAUSE_AT"):
        e.pop(k, None)
    old = {k: _os.environ.get(k) for k in ("KFCT_HOME", "KFCT_CONFIG")}
    _os.environ.update(KFCT_HOME=str(home), KFCT_CONFIG=str(cfg))
    reset_settings()
    from kfct.governance import registry

    registry.setup()  # the store exists before runs start (its first creation is another item)
    yield {"base": base, "home": home, "data": str(data), "env": e}
    for k, v in old.items():
        if v is None:
            _os.environ.pop(k, None)
        else:
            _os.environ[k] = v
    reset_settings()


def start(env, tag: str, pause: str | None = None) -> tuple[subprocess.Popen, Path]:
    pause_dir = env["base"] / f"pause-{tag}"
    e = dict(env["env"], KFCT_TEST_PAUSE_DIR=str(pause_dir))
    if pause:
        e["KFCT_TEST_PAUSE_AT"] = pause
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crashkit", str(env["base"] / f"work-{tag}"), env["data"]],
        cwd=ROOT,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return proc, pause_dir


def wait_reached(proc, pause_dir: Path, point: str, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while not (pause_dir / f"{point}.reached").exists():
        if proc.poll() is not None:
            pytest.fail(f"run ended before reaching {point}:\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"run did not reach {point} in {timeout} s")
        time.sleep(0.1)


def kill9(proc) -> None:
    os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
    proc.wait(30)


def finish(proc, timeout: float = 400) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("CRASHKIT ")]
    assert proc.returncode == 0 and lines, out[-4000:]
    return json.loads(lines[-1][len("CRASHKIT ") :])


def events(kind: str) -> list[dict]:
    from kfct.governance import audit

    return [e for e in audit.read() if e["event"] == kind]


def test_kill_during_training_then_kill_between_registration_and_alias(env):
    from kfct.governance import registry

    # 1. killed inside the training run: MLflow run RUNNING, logged model PENDING.
    p1, d1 = start(env, "train", "during_training")
    wait_reached(p1, d1, "during_training")
    c = registry.client()
    exp = c.get_experiment_by_name("kfct-ct").experiment_id
    running = [r.info.run_id for r in c.search_runs([exp], "attributes.status = 'RUNNING'")]
    assert len(running) == 1
    kill9(p1)

    # 2. the next run settles it (in its evaluate stage), then is killed between
    #    model_registered and alias_moved.
    p2, d2 = start(env, "registered", "after_model_registered")
    wait_reached(p2, d2, "after_model_registered")
    assert c.get_run(running[0]).info.status == "KILLED"
    marked = events("stale_run_marked")
    assert [e["mlflow_run_id"] for e in marked] == running and "is gone" in marked[0]["reason"]
    assert [e["mlflow_run_id"] for e in events("pending_model_marked")] == running
    kill9(p2)
    assert registry.aliases(NAME) == {}
    orphan = c.get_model_version(NAME, "1")
    assert orphan.tags[registry.REG_TAG] == "pending"

    # 3. a normal run: the orphan is marked (not served, not re-registered), audited; the run
    #    registers its own model as champion.
    out = finish(start(env, "after-orphan")[0])
    assert out["version"] == "2" and registry.aliases(NAME) == {"champion": "2"}
    assert c.get_model_version(NAME, "1").tags[registry.REG_TAG] == "abandoned"
    assert [e["version"] for e in events("orphan_version_found")] == ["1"]
    assert len(c.search_model_versions(f"name='{NAME}' and run_id='{orphan.run_id}'")) == 1


def test_two_runs_racing_at_the_gate(env):
    """Both gated against the same champion; one moves it, the other re-gates against the new one."""
    from kfct.governance import registry

    before = registry.alias_version(NAME, "champion")
    procs = [start(env, f"race-{i}", "after_gate") for i in range(2)]
    for p, d in procs:
        wait_reached(p, d, "after_gate")
    for _, d in procs:  # both decided against `before`; now let them race for the registry
        (d / "after_gate.release").write_text("go")
    outs = [finish(p) for p, _ in procs]
    assert all(o["gated_against"] == before for o in outs)
    versions = sorted(int(o["version"]) for o in outs)
    first, second = str(versions[0]), str(versions[1])
    regated = [e for e in events("gate_decision") if e.get("regate")]
    assert len(regated) == 1 and regated[0]["champion_version"] == first
    assert regated[0]["reasons"][0] == f"champion moved from v{before} to v{first} since the gate: re-gated against v{first}"
    moves = [(e["previous"], e["version"]) for e in events("alias_moved") if e["alias"] == "champion"][-2:]
    assert moves == [(before, first), (first, second)]  # each move compared with the one before it
    assert registry.aliases(NAME) == {"champion": second}  # no stray challenger
    mv = registry.client().get_model_version(NAME, second)
    assert mv.tags[registry.GATED_TAG] == first


def test_kill_holding_the_registry_lock_then_after_alias_moved_before_deploy(env):
    from kfct.contracts.split_state import read_state, state_path
    from kfct.governance import audit, registry

    spath = state_path(NAME, env["home"])
    served_before = read_state(spath).champion_version
    assert served_before == registry.alias_version(NAME, "champion")

    # 4. killed while holding the registry lock: the kernel releases an flock with its holder.
    p4, d4 = start(env, "locked", "registry_locked")
    wait_reached(p4, d4, "registry_locked")
    kill9(p4)

    # 5. the next run takes the lock (no deadlock), moves the alias, and is killed before deploy.
    p5, d5 = start(env, "predeploy", "before_deploy")
    wait_reached(p5, d5, "before_deploy")
    kill9(p5)
    new = registry.alias_version(NAME, "champion")
    assert new != served_before and read_state(spath).champion_version == served_before  # split file stale

    # Serving converges on the aliases when it starts (writing nothing shared) ...
    from kfct.serving.server import start_in_thread

    with start_in_thread(model_name=NAME, port=0, wait_for_model=True, log_predictions=False) as srv:
        assert srv.router.route.champion.loaded_version == new
        # ... and on watch: an alias move reaches the running server without any file write.
        srv.watcher.alias_poll_seconds = 0.2
        registry.client().set_registered_model_alias(NAME, "champion", served_before)
        deadline = time.monotonic() + 60
        while srv.router.route.champion.loaded_version != served_before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert srv.router.route.champion.loaded_version == served_before
        registry.client().set_registered_model_alias(NAME, "champion", new)
    assert read_state(spath).champion_version == served_before
    # ... and every deploy makes the split file follow them, audited.
    from kfct.components.deploy import converge_serving

    conv = converge_serving(NAME, "local", reason="test")
    assert conv["changes"] == {"champion_version": new}
    assert read_state(spath).champion_version == new
    assert events("serving_converged")[-1]["changes"] == {"champion_version": new}
    assert audit.verify().ok
