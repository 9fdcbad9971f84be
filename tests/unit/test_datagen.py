import numpy as np
import pandas as pd
import pytest

from kfct.data.datagen import CORRUPTIONS, corrupt, generate, write_frame


def test_deterministic_and_seed_sensitive():
    a, b, c = generate(2000, seed=1), generate(2000, seed=1), generate(2000, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_schema_matches_default_config(cfg):
    df = generate(3000, seed=3)
    assert list(df.columns) == list(cfg.dataset.columns)
    for col, spec in cfg.dataset.columns.items():
        if spec.categories:
            assert set(df[col]) <= set(spec.categories), col
        if spec.min is not None:
            assert df[col].min() >= spec.min and df[col].max() <= spec.max, col


def test_realistic_imbalance():
    share = generate(50_000, seed=5)["churned"].mean()
    assert 0.10 < share < 0.30


def test_frustration_index_as_in_case_study():
    df = generate(5000, seed=4)
    expected = np.clip(df.support_tickets_90d * 2 + df.support_escalations_90d * 5 + df.unresolved_tickets * 3, 0, 20) / 20
    np.testing.assert_allclose(df.frustration_index, expected)


def test_drift_shifts_distributions():
    base, drifted = generate(20_000, seed=6), generate(20_000, seed=6, drift=1.0)
    assert drifted.recency_days.mean() > base.recency_days.mean() * 1.4
    assert drifted.activity_trend.median() < base.activity_trend.median() * 0.8
    assert (drifted.contract_type == "monthly").mean() > (base.contract_type == "monthly").mean() + 0.08


def test_bias_ties_churn_to_age_group():
    df = generate(30_000, seed=8, bias=1.0)
    rates = df.groupby("age_group").churned.mean()
    assert rates["18_35"] - rates["56_plus"] > 0.2


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_each_corruption_changes_the_data(kind):
    df = generate(2000, seed=9)
    bad = corrupt(df, kind)
    assert not bad.equals(df)


def test_unknown_corruption_named():
    with pytest.raises(ValueError, match="unknown corruption 'nope'"):
        corrupt(generate(100), "nope")


def test_write_frame_formats(tmp_path):
    df = generate(500, seed=1)
    assert pd.read_csv(write_frame(df, tmp_path / "a.csv")).shape == df.shape
    assert pd.read_parquet(write_frame(df, tmp_path / "a.parquet")).shape == df.shape
    with pytest.raises(ValueError, match="unsupported output format"):
        write_frame(df, tmp_path / "a.xlsx")
