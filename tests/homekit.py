"""KFCT_HOME helpers for tests: a migrated MLflow store to copy, a home copied whole, a CT run's record,
the pipelines compiled once.

The fixtures that use them are in tests/conftest.py (`mlflow_store_template`, `seed_mlflow_store`,
`kfct_home`, `ct_run`, `compiled_pipelines`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MLFLOW_DB = "mlflow.db"  # kfct.runtime.settings: the local store is <KFCT_HOME>/mlflow.db


def off_the_stack(func, /, *args, **kwargs):
    """`func(*args, **kwargs)` on a thread of its own: its value, or its exception raised here.

    For building or compiling kfp pipelines in a test process. kfp 2.17 calls `inspect.stack()`
    for every resource or env var a task sets (`PipelineTask._ensure_container_spec_exists`, to
    name the caller in an error message); `inspect` maps each frame to its module, and a frame
    whose file does not exist makes it scan `sys.modules`. A pytest-xdist worker's stack starts
    in execnet's exec'd `<string>` code (a plain pytest's in `<frozen runpy>`), so each call
    scans thousands of modules: `compile_all` costs ~5 s of CPU there and ~0.45 s on a new
    thread, whose stack starts in threading.py. The pipeline compiled is the same: the thread runs
    in a copy of the caller's context (kfct.pipelines.task_config's target is a ContextVar)."""
    import contextvars
    import threading

    out: dict = {}
    context = contextvars.copy_context()

    def run() -> None:
        try:
            out["value"] = context.run(func, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, raised there
            out["error"] = exc

    worker = threading.Thread(target=run, name=f"off-the-stack-{getattr(func, '__name__', 'call')}")
    worker.start()
    worker.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


@contextlib.contextmanager
def _locked(folder: Path):
    """Hold `folder`/template.lock: under pytest-xdist the workers share `folder`, one builds in it."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "template.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def migrated_store(folder: Path) -> Path:
    """An empty MLflow SQLite store with every migration applied, made once per folder.

    What MLflow's SqlAlchemyStore does to a new database (`_initialize_tables`), and no more:
    the Default experiment is left for the first real open to create, with that store's own
    artifact location. Under pytest-xdist the workers share `folder`; a lock makes one build it."""
    db = folder / MLFLOW_DB
    with _locked(folder):
        if not db.exists():
            import sqlalchemy
            from mlflow.store.db.utils import _initialize_tables

            part = folder / f"{MLFLOW_DB}.{os.getpid()}.part"
            engine = sqlalchemy.create_engine(f"sqlite:///{part}")
            try:
                _initialize_tables(engine)
            finally:
                engine.dispose()
            part.replace(db)
    return db


def compiled_once(folder: Path, **settings) -> list[Path]:
    """`compile_all` into `folder`/ir, once per folder, with no KFCT_* variable set and
    `Settings(**settings)` (the defaults when none): the paths it returned, in its order. The
    files are for reading; a test that changes the IR compiles its own."""
    index = folder / "compiled.json"
    with _locked(folder):
        if not index.exists():
            from kfct.pipelines.compile import compile_all
            from kfct.runtime.settings import Settings, reset_settings

            saved = {v: os.environ.pop(v) for v in [v for v in os.environ if v.startswith("KFCT_")]}
            try:
                reset_settings()
                paths = off_the_stack(compile_all, folder / "ir", settings=Settings(**settings) if settings else None)
            finally:
                os.environ.update(saved)
                reset_settings()
            part = folder / f"compiled.json.{os.getpid()}.part"
            part.write_text(json.dumps([p.name for p in paths]))
            part.replace(index)
    return [folder / "ir" / name for name in json.loads(index.read_text())]


@dataclass(frozen=True)
class CtRun:
    """One finished CT pipeline run: its home (KFCT_HOME), its dataset and `run_ct`'s summary."""

    home: Path
    data: Path
    summary: dict


def copy_home(src: Path, dst: Path) -> Path:
    """A KFCT_HOME copied whole (registry, audit trail, split files, pipeline root) to write on.

    MLflow records absolute artifact locations: the copy reads the models and artifacts of
    `src`, and the runs it makes store their artifacts beside them, under new run ids that
    nothing in `src` refers to."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock"))
    return dst
