"""`kfct init` on real-looking tables: dates are dates (checked, not model inputs), all-null and
constant columns are excluded with a note in the YAML (issue 23 items 6 and 8).

Before: a parquet datetime column was written as `dtype: string` and `kfct run` on the same
file failed validation; a CSV date column with <= 50 values became a category (next season's
dates all unknown); an all-null column became a required model feature; a constant one was
kept silently."""

import logging

import numpy as np
import pandas as pd
import pytest

from kfct.cli import main
from kfct.components.validation_run import validate_frame
from kfct.config import feature_columns, load_config


@pytest.fixture(autouse=True)
def _logging_back_on():
    """The tests below silence GX's warnings with logging.disable; later test files must get logging back."""
    yield
    logging.disable(logging.NOTSET)


def _table(n=300):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "churn": rng.integers(0, 2, n),
            "x": rng.normal(size=n),
            "plan": rng.choice(["a", "b"], n),
            "signup": pd.date_range("2024-01-01", periods=n, freq="D"),
            "season_day": [f"2024-03-{i % 30 + 1:02d}" for i in range(n)],  # 30 distinct values: not a category
            "nothing": [np.nan] * n,
            "site": ["berlin"] * n,
        }
    )


@pytest.fixture(params=["parquet", "csv"])
def table(request, tmp_path):
    path = tmp_path / f"t.{request.param}"
    df = _table()
    df.to_parquet(path) if request.param == "parquet" else df.to_csv(path, index=False)
    return path


def test_init_infers_dates_and_excludes_empty_and_constant_columns_saying_so(table, tmp_path, capsys):
    out = tmp_path / "cfg.yaml"
    assert main(["init", "--data", str(table), "--label", "churn", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    text = out.read_text()
    cols = load_config(out).dataset.columns
    for c in ("signup", "season_day"):
        assert cols[c].dtype == "datetime", (c, cols[c])
    cfg = load_config(out)
    assert set(feature_columns(cfg)) == {"x", "plan"}
    assert set(cfg.dataset.exclude_features) == {"nothing", "site"}
    assert '"nothing": {dtype: ' in text and "# all values missing: not a model input" in text
    assert "# constant (every value 'berlin'): no information, not a model input" in text
    assert "(2 features)" in printed and "note: signup: date:" in printed


def test_the_inferred_config_validates_the_same_file_and_rejects_future_dates(table, tmp_path):
    logging.disable(logging.WARNING)
    out = tmp_path / "cfg.yaml"
    main(["init", "--data", str(table), "--label", "churn", "--out", str(out)])
    cfg = load_config(out)
    from kfct.data.datasource import read_dataset

    df = read_dataset(str(table))
    res = validate_frame(df, cfg)
    assert res["passed"], res["failures"]
    bad = df.copy()
    bad["season_day"] = bad["season_day"].astype(object)
    bad.loc[bad.index[5], "season_day"] = pd.Timestamp("2999-01-01") if table.suffix == ".parquet" else "2999-01-01"
    res = validate_frame(bad, cfg)
    assert [(f["check"], f["column"]) for f in res["failures"]] == [("timestamp", "season_day")]


def test_the_inferred_config_accepts_a_table_with_its_own_duplicates(tmp_path):
    """iris ships two identical rows (2 of 150 rows take part in a duplicate: 1.3% > the 1% default)."""
    from sklearn.datasets import load_iris

    logging.disable(logging.WARNING)
    df = load_iris(as_frame=True).frame
    df["setosa"] = (df.pop("target") == 0).map({True: "yes", False: "no"})
    data, out = tmp_path / "iris.csv", tmp_path / "iris.yaml"
    df.to_csv(data, index=False)
    assert main(["init", "--data", str(data), "--label", "setosa", "--positive", "yes", "--out", str(out)]) == 0
    cfg = load_config(out)
    assert cfg.dataset.max_duplicate_share == 0.02
    assert validate_frame(pd.read_csv(data), cfg)["passed"]
