"""Featurize as map -> reduce: the split by id and the encoder fitted from parts equal the single pass."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from kfct.components import featurize_merge as fm
from kfct.components.featurize import featurize_core, with_binary_label
from kfct.config import load_config, with_overrides
from kfct.data.datagen import generate


def _parts(df, k):
    n = -(-len(df) // k)
    return [df.iloc[i * n : (i + 1) * n].reset_index(drop=True) for i in range(k)]


@pytest.mark.parametrize("model", ["xgboost", "logistic_regression"])
def test_parts_split_and_encoder_equal_single_pass(tmp_path, model):
    cfg = with_overrides(load_config(), {"train": {"model": model}})
    df = generate(9000, seed=3)
    df.loc[df.index % 7 == 0, "monetary_std"] = np.nan  # a nullable column with nulls: median matters
    tr, va, te, enc = featurize_core(df, cfg)
    got = {s: [] for s in fm.SPLITS}
    train_files = []
    for i, part in enumerate(_parts(df, 4)):
        for name, frame in zip(fm.SPLITS, fm.split_by_id(with_binary_label(part, cfg), cfg)):
            got[name].append(frame)
            if name == "train":
                path = tmp_path / f"train-{i}.parquet"
                frame.to_parquet(path, index=False)
                train_files.append(str(path))
    for name, single in zip(fm.SPLITS, (tr, va, te)):
        pd.testing.assert_frame_equal(pd.concat(got[name], ignore_index=True), single)
    merged = fm.fit_encoder_on_parts(cfg, train_files, batch_rows=1000)
    assert merged.output_names_ == enc.output_names_ and merged.categorical_ == enc.categorical_
    assert merged.nullable == enc.nullable and merged.scale == enc.scale
    np.testing.assert_array_equal(merged.medians_, enc.medians_)
    np.testing.assert_allclose(merged.means_, enc.means_, rtol=1e-6)
    np.testing.assert_allclose(merged.stds_, enc.stds_, rtol=1e-5)
    probe = te.head(200)
    np.testing.assert_allclose(merged.transform(probe), enc.transform(probe), rtol=1e-5, atol=1e-6)


def test_split_is_by_id_only():
    cfg = load_config()
    df = generate(4000, seed=1)
    codes = fm.split_codes(df, cfg)
    shuffled = df.sample(frac=1.0, random_state=0)
    again = fm.split_codes(shuffled, cfg)
    assert (pd.Series(codes, index=df.index).loc[shuffled.index].to_numpy() == again).all()
    shares = np.bincount(codes, minlength=3) / len(codes)
    assert shares == pytest.approx([0.70, 0.15, 0.15], abs=0.03)


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 1001])
def test_exact_median_with_tiny_bins_equals_numpy(monkeypatch, n):
    """Force many narrowing passes (8 bins, collect at most 5 values): still numpy's median, exactly."""
    monkeypatch.setattr(fm, "BINS", 8)
    monkeypatch.setattr(fm, "COLLECT_CAP", 5)
    rng = np.random.default_rng(n)
    cols = {
        "cont": rng.lognormal(0, 2, n),
        "ties": rng.integers(0, 4, n).astype(float),
        "const": np.full(n, 3.25),
        "nulls": np.where(rng.random(n) < 0.3, np.nan, rng.normal(0, 1, n)),
        "allnull": np.full(n, np.nan),
        "tiny": 1.0 + rng.integers(0, 3, n) * np.finfo(float).eps,
    }
    table = pa.table(cols)

    def batches():
        return iter(table.to_batches(max_chunksize=97))

    got = fm.encoder_stats(batches, list(cols), scale=False)["medians"]
    for j, (name, v) in enumerate(cols.items()):
        want = np.nanmedian(v) if (~np.isnan(v)).any() else 0.0
        assert got[j] == want, name


def test_gate_test_set_is_bounded_by_id_hash(tmp_path):
    """Past EVAL_MAX_ROWS the test split is thinned by id hash: about that many rows, the same ones each time."""
    from kfct.data import parts

    cfg = load_config()
    files = []
    for i, part in enumerate(_parts(generate(6000, seed=11), 3)):
        f = tmp_path / f"test-{i}.parquet"
        part.to_parquet(f, index=False)
        files.append(str(f))
    m1, pos1 = fm.gather_parts(files, str(tmp_path / "a"), "churned", max_rows=1500, cfg=cfg)
    _m2, _ = fm.gather_parts(files, str(tmp_path / "b"), "churned", max_rows=1500, cfg=cfg)
    assert m1["rows_before_thinning"] == 6000 and 1300 < m1["rows"] < 1700
    a, b = pd.read_parquet(tmp_path / "a"), pd.read_parquet(tmp_path / "b")
    assert sorted(a["customer_id"]) == sorted(b["customer_id"]) and a["customer_id"].is_unique
    assert parts.count_rows(tmp_path / "a") == len(a) == m1["rows"] and pos1 == int(a["churned"].sum())
    m3, _ = fm.gather_parts(files, str(tmp_path / "c"), "churned", max_rows=10_000, cfg=cfg)
    assert m3["rows"] == 6000 and "rows_before_thinning" not in m3
