"""Disk full under KFCT_HOME / the pipeline root (issue 12, item 5 for the pipeline).

A real small filesystem (tmpfs, `tests/faultkit/servers.tiny_disk`; needs root and mount,
skipped elsewhere) holds KFCT_HOME: pipeline root, run logs, audit trail, MLflow store. The CT
pipeline runs under kfp's local runner on generated data too big for it. The run fails
closed — the stage that cannot write stops the DAG, nothing is registered, no alias moves —
with one line that says the disk is full and where (before: a library's errno text, or a
bare OSError traceback when the home was already full).
"""

from __future__ import annotations

import json

import pytest

from tests.faultkit.servers import fill, tiny_disk, tmpfs_available

pytestmark = pytest.mark.slow  # runs the CT pipeline: make test, not make test-fast

needs_tmpfs = pytest.mark.skipif(not tmpfs_available(), reason="needs root to mount a tmpfs (real ENOSPC)")


@pytest.fixture
def small_home(tmp_path, monkeypatch):
    from kfct.runtime.settings import reset_settings

    home = tmp_path / "home"
    try:
        ctx = tiny_disk(home, "512k")
        ctx.__enter__()
    except OSError as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("KFCT_HOME", str(home))
    for var in ("KFCT_MLFLOW_TRACKING_URI", "KFCT_CONFIG", "KFCT_S3_ENDPOINT", "KFCT_AUDIT_S3_URI"):
        monkeypatch.delenv(var, raising=False)
    reset_settings()
    try:
        yield home
    finally:
        reset_settings()
        ctx.__exit__(None, None, None)


def _audit_events(home) -> list[str]:
    trail = home / "audit" / "audit.jsonl"
    return [json.loads(line)["event"] for line in trail.read_text().splitlines()] if trail.exists() else []


@needs_tmpfs
def test_pipeline_root_filling_up_fails_the_run_closed_with_one_line(small_home):
    from kfct.errors import StageError
    from kfct.pipelines.local import run_ct

    with pytest.raises(StageError) as err:
        run_ct(data_uri="generate://40000")  # ~1 MB of parquet into a 512 KiB pipeline root
    line = str(err.value)
    assert "\n" not in line, line
    assert f"disk full under {small_home}" in line, line
    # fail closed: the DAG stopped at the stage that could not write; nothing was registered
    task_dirs = {p.name for p in (small_home / "pipeline_root").glob("*/*/*") if p.is_dir()}
    assert task_dirs and not any(t.startswith(("train", "evaluate", "register", "deploy")) for t in task_dirs), task_dirs
    assert not any(e in ("model_registered", "alias_moved", "gate_decision") for e in _audit_events(small_home))
    assert not (small_home / "mlflow.db").exists()


@needs_tmpfs
def test_full_home_fails_before_any_stage_with_one_line(small_home):
    from kfct.errors import StageError
    from kfct.pipelines.local import run_ct

    fill(small_home)
    with pytest.raises(StageError) as err:
        run_ct(data_uri="generate://1000")
    line = str(err.value)
    assert "\n" not in line and line.startswith("cannot start the pipeline run: disk full under"), line
    assert not (small_home / "pipeline_root").exists() or not any((small_home / "pipeline_root").rglob("*.json"))


def test_enospc_at_run_start_is_one_line_everywhere(tmp_path, monkeypatch):
    """Simulated ENOSPC at the file layer (runs without root): the run's request cannot be written."""
    import errno
    from pathlib import Path

    from kfct.errors import StageError
    from kfct.pipelines.runner import run_pipeline

    real = Path.write_text

    def full(self, *a, **k):
        if self.name == "request.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(StageError) as err:
        run_pipeline("kfct.pipelines.ct:build_ct_pipeline", {}, {}, tmp_path / "home")
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"cannot start the pipeline run: disk full under {tmp_path / 'home'}")
    assert not any((tmp_path / "home" / "pipeline_root").iterdir())  # no half-made run folder
