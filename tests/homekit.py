"""KFCT_HOME helpers for tests: a migrated MLflow store to copy, a home copied whole, a CT run's record.

The fixtures that use them are in tests/conftest.py (`mlflow_store_template`, `seed_mlflow_store`,
`kfct_home`, `ct_run`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MLFLOW_DB = "mlflow.db"  # kfct.runtime.settings: the local store is <KFCT_HOME>/mlflow.db


def migrated_store(folder: Path) -> Path:
    """An empty MLflow SQLite store with every migration applied, made once per folder.

    What MLflow's SqlAlchemyStore does to a new database (`_initialize_tables`), and no more:
    the Default experiment is left for the first real open to create, with that store's own
    artifact location. Under pytest-xdist the workers share `folder`; a lock makes one build it."""
    import fcntl

    db = folder / MLFLOW_DB
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "template.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
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
