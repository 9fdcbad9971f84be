"""Online and batch accept the same records (issue 23 item 7): the schema keeps columns the
model does not read (free text, dates, the label of a training file); `kfct score` ignored
them while the server refused the user's own training rows with "unknown feature 'city'"."""

import numpy as np
import pandas as pd
import pytest

from kfct.components.featurize import featurize_core
from kfct.components.score import score_file
from kfct.components.train import train_core
from kfct.config import config_dict, load_config, validate_config
from kfct.data.datagen import generate
from kfct.serving.predictor import BadRequest, _prepare, score_loaded


@pytest.fixture(scope="module")
def trained():
    raw = config_dict(load_config())
    cols = raw["dataset"]["columns"]
    cols["city"] = {"dtype": "string", "nullable": False}
    cols["signup"] = {"dtype": "datetime", "nullable": False}
    raw["dataset"]["exclude_features"] = ["city"]
    raw["train"]["xgboost"]["n_estimators"] = 20
    cfg = validate_config(raw, "config")
    df = generate(3000, seed=2)
    df["city"] = np.random.default_rng(0).choice(["Rome", "Oslo", "Lima"], len(df))
    df["signup"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(len(df)), unit="h")
    train, val, test, enc = featurize_core(df, cfg)
    model, *_ = train_core(train, val, cfg, encoder=enc)
    return cfg, model, df


def test_the_users_training_rows_score_online_as_in_batch(trained, monkeypatch, tmp_path):
    cfg, model, df = trained
    monkeypatch.setattr("kfct.config.load_config", lambda *a, **k: cfg)
    lv = _prepare(model, "m", "1", "sha", "run", "customer_id")
    rows = df.head(20)
    records = [{**r, "signup": str(r["signup"])} for r in rows.to_dict("records")]  # as JSON carries a date
    online = score_loaded(lv, records).probabilities
    rows.to_parquet(tmp_path / "in.parquet")
    score_file(model, tmp_path / "in.parquet", tmp_path / "out.parquet", "1", "m")
    batch = pd.read_parquet(tmp_path / "out.parquet")["probability"].to_numpy()
    assert np.allclose(online, batch)


def test_a_column_no_schema_names_is_still_refused_online(trained, monkeypatch):
    cfg, model, df = trained
    monkeypatch.setattr("kfct.config.load_config", lambda *a, **k: cfg)
    lv = _prepare(model, "m", "1", "sha", "run", "customer_id")
    rec = {**df.drop(columns=["signup"]).head(1).to_dict("records")[0], "tenur_days": 3}
    with pytest.raises(BadRequest, match="unknown feature 'tenur_days'"):
        score_loaded(lv, [rec])
