"""Shared fixtures: an isolated KFCT_HOME per test, small generated datasets, a trained model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


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
