"""Labels of any coding mapped once to 0/1, and `kfct init` inferring a schema config from a table."""

from __future__ import annotations

import pandas as pd
import pytest

from kfct.data.labels import LabelError, binary_labels, token


def test_label_codings_map_to_zero_one():
    assert binary_labels(pd.Series([0, 1, 1]), 1, [0, 1]).tolist() == [0, 1, 1]
    assert binary_labels(pd.Series([True, False]), True, [False, True]).tolist() == [1, 0]
    assert binary_labels(pd.Series(["M", "B", " m "]), "M", ["B", "M"]).tolist() == [1, 0, 1]
    assert binary_labels(pd.Series([1.0, 0.0]), 1, [0, 1]).tolist() == [1, 0]
    assert token(True) == token("yes") == token(1) == token("1") == "1"


def test_other_label_values_are_one_short_line():
    s = pd.Series(["yes", "no", "maybe" * 2000] * 500, name="churned")
    with pytest.raises(LabelError) as exc:
        binary_labels(s, "yes", ["yes", "no"])
    msg = str(exc.value)
    assert "label 'churned' has 500 row(s) with values outside {no, yes}" in msg and len(msg) < 200
    with pytest.raises(LabelError, match="must have two values"):
        binary_labels(pd.Series(["a", "b", "c"], name="y"), "a")
    with pytest.raises(LabelError, match="missing"):
        binary_labels(pd.Series(["a", None], name="y"), "a")


def test_featurize_maps_string_labels_before_the_split(tmp_path):
    from kfct.components.featurize import featurize_core
    from kfct.config import load_config

    p = tmp_path / "c.yaml"
    p.write_text(
        "dataset:\n  label: y\n  positive_label: bad\n  columns:\n    x: {dtype: float}\n"
        "    y: {dtype: category, values: [good, bad]}\ntrain: {model: logistic_regression}\n"
    )
    df = pd.DataFrame({"x": range(200), "y": ["good", "bad"] * 100})
    train, val, test, _enc = featurize_core(df, load_config(p))
    for part in (train, val, test):
        assert set(part["y"].unique()) == {0, 1} and part["y"].dtype.kind == "i"


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
    from sklearn.datasets import load_breast_cancer

    df = load_breast_cancer(as_frame=True).frame
    df.columns = [c.replace(" ", "_") for c in df.columns]
    df.insert(0, "patient_id", [f"P{i:04d}" for i in range(len(df))])
    df["sex"] = ["f", "m"] * (len(df) // 2) + ["f"] * (len(df) % 2)
    path = tmp_path_factory.mktemp("cancer") / "cancer.csv"
    df.to_csv(path, index=False)
    return df, path


def test_init_infers_a_config_that_loads_and_fits_the_data(cancer, tmp_path, capsys):
    from kfct.cli import main
    from kfct.config import feature_columns, load_config

    df, path = cancer
    out = tmp_path / "my.yaml"
    assert main(["init", "--data", str(path), "--label", "target", "--id", "patient_id", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sensitive-feature candidates ['sex']" in printed
    text = out.read_text()
    assert '# sensitive_features: ["sex"]' in text and "\n  sensitive_features: []" in text
    cfg = load_config(out)
    ds = cfg.dataset
    assert ds.label == "target" and ds.positive_label == 1 and ds.columns["target"].values == [0, 1]
    assert ds.columns["patient_id"].dtype == "string" and ds.columns["patient_id"].unique is True
    assert len(feature_columns(cfg)) == 31 and ds.columns["sex"].categories == ["f", "m"]
    for col in df.columns[1:31]:
        spec = ds.columns[col]
        assert spec.min <= df[col].min() and df[col].max() <= spec.max
    assert cfg.register_.model_name == "cancer-classifier"


def test_init_with_string_labels_needs_the_positive_value(cancer, tmp_path):
    from kfct.config import load_config
    from kfct.data.schema_infer import InitError, init_config

    df, _ = cancer
    df = df.assign(target=df["target"].map({0: "malignant", 1: "benign"}))
    path = tmp_path / "str.parquet"
    df.to_parquet(path)
    with pytest.raises(InitError, match="say which one is the positive class with --positive"):
        init_config(str(path), "target", tmp_path / "a.yaml", id_column="patient_id")
    with pytest.raises(InitError, match="is not a value of label"):
        init_config(str(path), "target", tmp_path / "a.yaml", positive="benignn")
    with pytest.raises(InitError, match=r"--label column 'targte' is not in the data .did you mean 'target'"):
        init_config(str(path), "targte", tmp_path / "a.yaml")
    init_config(str(path), "target", tmp_path / "b.yaml", id_column="patient_id", positive="malignant")
    ds = load_config(tmp_path / "b.yaml").dataset
    assert ds.positive_label == "malignant" and ds.columns["target"].dtype == "category"
