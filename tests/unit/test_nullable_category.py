"""A nullable categorical is a category with a missing level: training, batch (pandas and
Arrow) and online records encode a null the same way (issue 23 item 4: `kfct init` wrote
`{dtype: category, nullable: true}`, validation passed, train died with
`FeatureError: feature 'plan': null not allowed`)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from kfct.components.featurize import featurize_core
from kfct.components.train import train_core
from kfct.config import config_dict, load_config, validate_config
from kfct.data.datagen import generate
from kfct.errors import FeatureError
from kfct.evidence.model import TabularEncoder


def test_a_nullable_category_with_nulls_trains_and_scores_alike_on_every_path():
    raw = config_dict(load_config())
    raw["dataset"]["columns"]["payment_method"]["nullable"] = True
    raw["train"]["xgboost"]["n_estimators"] = 30
    cfg = validate_config(raw)
    df = generate(4000, seed=3)
    df.loc[df.sample(frac=0.1, random_state=0).index, "payment_method"] = None
    train, val, test, enc = featurize_core(df, cfg)
    assert "payment_method=<missing>" in enc.output_names_
    model, *_ = train_core(train, val, cfg, encoder=enc)
    X = test.drop(columns=[cfg.dataset.label])
    assert X["payment_method"].isna().any()
    batch = model.predict_positive(X)
    arrow = model.proba_from_matrix(model.encoder.transform_arrow(pa.Table.from_pandas(X, preserve_index=False)))
    records = model.predict_proba_records(X.to_dict("records"))  # NaN as pandas hands it over
    as_json = [{k: (None if k == "payment_method" and v != v else v) for k, v in r.items()} for r in X.to_dict("records")]
    online = model.predict_proba_records(as_json)  # null as JSON sends it
    assert np.allclose(batch, arrow) and np.allclose(batch, records) and np.allclose(batch, online)


def test_a_category_not_declared_nullable_still_refuses_a_null_on_every_path():
    enc = TabularEncoder(numeric=[], categorical={"plan": ["a", "b"]}).fit(pd.DataFrame({"plan": ["a"]}))
    df = pd.DataFrame({"plan": ["a", None]})
    for encode in (
        enc.transform,
        lambda d: enc.transform_arrow(pa.Table.from_pandas(d)),
        lambda d: enc.transform_records(d.to_dict("records")),
    ):
        with pytest.raises(FeatureError, match="'plan': null not allowed"):
            encode(df)


def test_kfct_score_reads_an_empty_csv_field_as_the_missing_level(tmp_path):
    """Batch scoring of a CSV: pyarrow read an empty string field as '' (an unknown category), pandas
    (training) as a null; found by the penguins corpus (`Comments` is mostly empty)."""
    from kfct.components.score import score_file

    raw = config_dict(load_config())
    raw["dataset"]["columns"]["payment_method"]["nullable"] = True
    raw["train"]["xgboost"]["n_estimators"] = 20
    cfg = validate_config(raw)
    df = generate(3000, seed=4)
    df.loc[df.sample(frac=0.1, random_state=1).index, "payment_method"] = None
    train, val, test, enc = featurize_core(df, cfg)
    model, *_ = train_core(train, val, cfg, encoder=enc)
    test.to_csv(tmp_path / "in.csv", index=False)
    score_file(model, tmp_path / "in.csv", tmp_path / "out.parquet", "1", "m")
    scored = pd.read_parquet(tmp_path / "out.parquet")
    assert np.allclose(scored["probability"], model.predict_positive(pd.read_csv(tmp_path / "in.csv")))
