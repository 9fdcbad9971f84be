"""`kfct run` on a fresh home builds the MLflow store beside the first stages (kfct.registry)."""

from __future__ import annotations

import sqlite3

from kfct.registry import prepare_store_in_background
from kfct.settings import Settings


def test_a_fresh_home_gets_its_store_built_in_the_background(tmp_path):
    s = Settings(home=tmp_path / "home")
    proc = prepare_store_in_background(s)
    assert proc is not None and proc.wait(timeout=300) == 0
    db = tmp_path / "home" / "mlflow.db"
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")}
    assert {"experiments", "runs", "registered_models", "model_versions", "alembic_version"} <= tables
    assert prepare_store_in_background(s) is None  # built: nothing more to do


def test_a_server_store_is_left_to_its_server(tmp_path):
    s = Settings(home=tmp_path / "home", mlflow_tracking_uri="http://127.0.0.1:9")
    assert prepare_store_in_background(s) is None
    assert not (tmp_path / "home").exists()
