import pandas as pd
import pytest

from kfct.config import ConfigError, config_from_json, config_to_json, feature_columns, load_config
from kfct.data.datagen import generate, write_frame
from kfct.data.datasource import parse_generate, read_dataset
from kfct.errors import DataSourceError


def test_user_config_is_deep_merged(tmp_path):
    p = tmp_path / "my.yaml"
    p.write_text("gate:\n  thresholds:\n    roc_auc: 0.9\ntrain:\n  model: random_forest\n")
    cfg = load_config(p)
    assert cfg.gate.thresholds == {"roc_auc": 0.9, "recall": 0.65}
    assert cfg.train.model == "random_forest" and cfg.train.xgboost["tree_method"] == "hist"


def test_bad_config_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)


def test_config_json_round_trip(cfg):
    assert config_from_json(config_to_json(cfg)) == cfg
    assert config_from_json("").schema_version == 1


def test_features_exclude_id_and_label(cfg):
    feats = feature_columns(cfg)
    assert "customer_id" not in feats and "churned" not in feats and "frustration_index" in feats


def test_generate_uri():
    assert parse_generate("generate://500?seed=3&drift=0.5") == {"rows": 500, "seed": 3, "drift": 0.5, "bias": 0.0}
    assert len(read_dataset("generate://300?seed=1")) == 300
    with pytest.raises(DataSourceError, match="bad generator URI"):
        parse_generate("generate://many")


def test_csv_and_parquet_read_the_same_data(tmp_path):
    df = generate(1000, seed=2)
    a = read_dataset(str(write_frame(df, tmp_path / "d.parquet")))
    b = read_dataset(str(write_frame(df, tmp_path / "d.csv")))
    pd.testing.assert_frame_equal(a, df)
    pd.testing.assert_frame_equal(b, df, check_dtype=False)


@pytest.mark.parametrize(
    "uri, message",
    [
        ("nope/missing.parquet", "dataset not found"),
        ("ftp://x/y.csv", "unsupported dataset URI scheme 'ftp'"),
    ],
)
def test_unreadable_sources_are_one_clear_error(uri, message):
    with pytest.raises(DataSourceError, match=message):
        read_dataset(uri)


def test_unsupported_format_and_garbage(tmp_path):
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataSourceError, match="unsupported dataset format"):
        read_dataset(str(tmp_path / "d.xlsx"))
    (tmp_path / "d.parquet").write_text("not parquet")
    with pytest.raises(DataSourceError, match="cannot parse"):
        read_dataset(str(tmp_path / "d.parquet"))


def test_s3_without_endpoint_is_named(monkeypatch):
    from kfct.runtime.settings import reset_settings

    monkeypatch.delenv("KFCT_S3_ENDPOINT", raising=False)
    reset_settings()
    with pytest.raises(DataSourceError, match="KFCT_S3_ENDPOINT"):
        read_dataset("s3://bucket/key.parquet")


def test_cli_generate_and_bad_args(tmp_path, capsys):
    from kfct.cli import main

    assert main(["data", "generate", "--rows", "300", "--out", str(tmp_path / "x.csv")]) == 0
    assert "300 rows" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "x.csv")) == 300
    assert main(["data", "generate", "--rows", "0", "--out", str(tmp_path / "y.csv")]) == 2
    assert "rows must be positive" in capsys.readouterr().err
    assert main(["data", "generate", "--rows", "10", "--out", str(tmp_path / "y.xlsx")]) == 2


def test_cli_run_missing_file_one_line(tmp_path, capsys, kfct_home):
    from kfct.cli import main

    assert main(["run", "--data-uri", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset not found" in err[0]


def test_snapshot_hash_is_the_push_hash(tmp_path):
    """ingest's data version equals the content-addressed key `kfct data push` would use."""
    from kfct.components.ingest import ingest_core
    from kfct.data.datastore import normalise_to_parquet
    from kfct.governance.lineage import sha256_file

    df = generate(800, seed=4)
    csv = write_frame(df, tmp_path / "d.csv")
    pq = write_frame(df, tmp_path / "d.parquet")
    for src in (csv, pq):
        meta = ingest_core(str(src), tmp_path / f"snap-{src.suffix[1:]}.parquet")
        assert meta["rows"] == 800
        assert meta["sha256"] == sha256_file(normalise_to_parquet(src, tmp_path))
