"""Shared fixtures: an isolated KFCT_HOME per test, small generated datasets, a trained model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

ROOT = Path(__file__).resolve().parents[1]
# What MLflow 3 makes in the working directory when a process uses it with no tracking URI set.
MLFLOW_DEFAULT_STORES = ("mlflow.db", "mlruns")


def _cwd() -> Path:
    try:
        return Path.cwd()
    except FileNotFoundError:  # a test left its working directory behind in a removed temp dir
        return ROOT


def default_mlflow_stores(folders) -> set[Path]:
    return {f / name for f in folders for name in MLFLOW_DEFAULT_STORES if (f / name).exists()}


@pytest.fixture(autouse=True)
def _no_default_mlflow_store():
    """Every MLflow use goes through kfct.registry.setup (the store under KFCT_HOME, or the server
    the settings name). One that does not falls back to MLflow's default, ./mlflow.db in the working
    directory, where it outlives the test and once got committed: fail the test that made it
    (or whose subprocess did), wherever it runs from."""
    folders = {_cwd(), ROOT}
    before = default_mlflow_stores(folders)
    yield
    stray = default_mlflow_stores(folders | {_cwd()}) - before
    assert not stray, (f"MLflow used without kfct.registry.setup: it made {sorted(map(str, stray))} "
                       "(its default tracking store in the working directory)")


@pytest.fixture
def kfct_home(tmp_path, monkeypatch):
    """Point every setting at a fresh temp dir (MLflow store, audit, pipeline root)."""
    from kfct.settings import reset_settings

    home = tmp_path / "kfct-home"
    monkeypatch.setenv("KFCT_HOME", str(home))
    for var in ("KFCT_MLFLOW_TRACKING_URI", "KFCT_CONFIG", "KFCT_S3_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    reset_settings()
    yield home
    reset_settings()


@pytest.fixture(scope="session")
def cfg():
    from kfct.config import load_config

    return load_config()


@pytest.fixture(scope="session")
def small_df():
    from kfct.datagen import generate

    return generate(8000, seed=11)


@pytest.fixture(scope="session")
def trained(small_df, cfg):
    """(model, train, val, test) trained once per session on 8k rows."""
    from kfct.components.featurize import featurize_core
    from kfct.components.train import train_core

    tr, va, te, enc = featurize_core(small_df, cfg)
    model, *_ = train_core(tr, va, cfg, encoder=enc)
    return model, tr, va, te
