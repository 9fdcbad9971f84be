"""Steps that only need part of a large dataset read only that part (item 6 of the data-at-scale issue).

Each test uses a dataset larger than the bound and makes the whole-table readers fail, so a
step that still loaded the table would fail here.
"""

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from kfct.data import parts
from kfct.data.datagen import generate
from tests.predlogkit import FLUSH_BOUND_S

ROWS = 5_000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("bounded")
    df = generate(ROWS, seed=4)
    path = d / "big.parquet"
    pq.write_table(__import__("pyarrow").Table.from_pandas(df, preserve_index=False), path, row_group_size=1000)
    parts.split_parquet(path, d / "parts", 1_500)
    return df, path, d / "parts"


@pytest.fixture
def no_whole_reads(monkeypatch, data):
    """pandas never reads parquet; pyarrow may read one part, never the big file or a whole directory."""
    from pathlib import Path

    real = pq.read_table
    big = {str(data[1]), str(data[2])}

    def refuse(*a, **k):
        raise AssertionError("the whole table was read")

    def one_part_only(source, *a, **k):
        if str(source) in big or Path(str(source)).is_dir():
            refuse()
        return real(source, *a, **k)

    monkeypatch.setattr(pd, "read_parquet", refuse)
    monkeypatch.setattr(pq, "read_table", one_part_only)


def test_tail_of_a_file_and_of_parts(data, no_whole_reads):
    from kfct.data.datasource import read_dataset_bounded

    df, path, pdir = data
    for loc in (path, pdir):
        got, total = read_dataset_bounded(str(loc), 700, mode="tail")
        assert total == ROWS
        pd.testing.assert_frame_equal(got, df.tail(700).reset_index(drop=True))


def test_bounded_sample_is_uniform_without_replacement(data):
    df, _path, pdir = data
    a, total = parts.sample_location(pdir, 300, seed=1)
    b, _ = parts.sample_location(pdir, 300, seed=1)
    assert total == ROWS and len(a) == 300 and a["customer_id"].is_unique
    pd.testing.assert_frame_equal(a, b)
    assert set(a["customer_id"]) <= set(df["customer_id"])
    # spread over every part, not the first rows
    pos = df.reset_index().set_index("customer_id").loc[a["customer_id"], "index"]
    assert pos.min() < 1_000 and pos.max() > 4_000


def test_drift_reads_only_its_window_of_a_large_batch(data, no_whole_reads):
    from kfct.components.drift_inputs import load_current
    from kfct.config import load_config, with_overrides

    df, path, pdir = data
    cfg = with_overrides(load_config(), {"drift": {"window_rows": 1_000}})
    for loc in (path, pdir):
        cur, source, _ = load_current(str(loc), cfg)
        assert len(cur) == 1_000
        assert "the last 1,000 of 5,000 rows" in source
        pd.testing.assert_frame_equal(cur, df.tail(1_000).reset_index(drop=True))


def test_batch_split_streams_into_shards(data, tmp_path):
    from kfct.components.batch_score import SHARD_FILE, split_core

    df, path, pdir = data
    real_read_table = pq.read_table
    for loc, out in ((path, tmp_path / "a"), (pdir, tmp_path / "b")):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(
                pq,
                "read_table",
                lambda src, *a, **k: (
                    (_ for _ in ()).throw(AssertionError("whole table"))
                    if str(src) in (str(path), str(pdir))
                    else real_read_table(src, *a, **k)
                ),
            )
            assert split_core(loc, out, 3) == [0, 1, 2]
        got = [real_read_table(out / SHARD_FILE.format(i)).to_pandas() for i in range(3)]
        assert [len(g) for g in got] == [1667, 1666, 1667]
        pd.testing.assert_frame_equal(pd.concat(got, ignore_index=True), df)


def test_ingest_of_a_parquet_file_reads_only_its_footer(data, tmp_path, no_whole_reads):
    from kfct.components.ingest import ingest_core
    from kfct.governance.lineage import sha256_file

    df, path, _ = data
    meta = ingest_core(str(path), tmp_path / "snap.parquet")
    assert meta["rows"] == ROWS and meta["columns"] == df.shape[1] and meta["column_names"] == list(df.columns)
    assert meta["sha256"] == sha256_file(path)


def test_prediction_log_window_reads_newest_files_only(tmp_path, monkeypatch):
    """A log longer than the window: the newest `max_rows` rows, and the oldest files are never opened."""
    import time

    import numpy as np

    from kfct.contracts.prediction_log import read_prediction_log
    from kfct.serving.prediction_log import PredictionLogger

    log = PredictionLogger(root=tmp_path, s3=False, flush_seconds=60)
    now = time.time()
    recs = [{"customer_id": f"c{i}", "x": float(i)} for i in range(100)]
    for k in range(6):  # six files of 100 rows, one hour apart
        log.log(now - 3600 * (6 - k), f"r{k}", "m", "1", "champion", recs, np.full(100, 0.1 * k), np.zeros(100), 0.5)
        assert log.flush(FLUSH_BOUND_S)
    log.close()
    whole = read_prediction_log(root=tmp_path, s3=False)
    assert len(whole) == 600
    opened = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda p, *a, **k: opened.append(str(p)) or real(p, *a, **k))
    got = read_prediction_log(root=tmp_path, s3=False, max_rows=250)
    assert len(got) == 250 and got.attrs["rows_total"] >= 250
    pd.testing.assert_frame_equal(got, whole.tail(250).reset_index(drop=True))
    assert len(opened) == 3  # the newest three files hold 300 >= 250 rows


# -- the outcomes, A/B and shadow reports: a bounded sample of the log, only its customers' outcomes ----------


def test_prediction_log_sample_is_bounded_by_customer_and_whole_below_the_bound(tmp_path, monkeypatch):
    """Past the bound: at most n rows, whole customers (champion and shadow rows together), the same
    customers at every read; pandas never reads a whole file. Below it: the plain read's rows."""
    from kfct.contracts.prediction_log import read_prediction_log, sample_prediction_log
    from tests.predlogkit import write_log

    total = write_log(tmp_path, customers=3_000, files=3)
    whole = read_prediction_log(root=tmp_path / "predictions", s3=False)
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: (_ for _ in ()).throw(AssertionError("whole file read")))
    got, seen = sample_prediction_log(1_000, root=tmp_path / "predictions", s3=False)
    assert seen == total == 6_000 and len(got) == 1_000
    per_customer = got.groupby("customer_id")["role"].agg(set)
    assert (per_customer == {"champion", "shadow"}).all()  # pairs stay whole (n is even here)
    again, _ = sample_prediction_log(1_000, root=tmp_path / "predictions", s3=False)
    pd.testing.assert_frame_equal(got, again)
    assert set(got.columns) <= set(whole.columns) and "f0" not in got.columns  # metadata columns only
    pos = whole.drop_duplicates("customer_id").reset_index().set_index("customer_id").loc[got["customer_id"], "index"]
    assert pos.min() < 1_000 and pos.max() > 5_000  # spread over the log, not its head or tail
    monkeypatch.setattr(pq, "read_table", real)
    small, n = sample_prediction_log(10_000, root=tmp_path / "predictions", s3=False)
    assert n == total
    cols = list(small.columns)
    pd.testing.assert_frame_equal(small, whole[cols].sort_values("ts", kind="stable").reset_index(drop=True))


def test_stored_outcomes_reads_only_the_customers_asked_for(tmp_path, monkeypatch):
    from kfct.evidence.outcomes import stored_outcomes
    from kfct.runtime.settings import get_settings, reset_settings
    from tests.predlogkit import write_outcomes

    monkeypatch.setenv("KFCT_HOME", str(tmp_path))
    monkeypatch.delenv("KFCT_S3_ENDPOINT", raising=False)
    reset_settings()
    write_outcomes(tmp_path, 5_000)
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: (_ for _ in ()).throw(AssertionError("whole file read")))
    got = stored_outcomes(get_settings(), ids=["c00000007", "c00004999", "nobody"])
    assert list(got["customer_id"]) == ["c00000007", "c00004999"]
    assert len(stored_outcomes(get_settings())) == 5_000
    reset_settings()


@pytest.mark.slow
def test_the_outcomes_report_states_its_sample(kfct_home, cfg, tmp_path):
    """`kfct outcomes report` judges at most outcomes.max_predictions predictions and says so in the
    Markdown, HTML, JSON and audit entry; below the bound it says it judged all of them."""
    import json

    from kfct.components.outcomes_report import outcomes_report
    from kfct.config import with_overrides
    from tests.predlogkit import write_log, write_outcomes

    write_log(kfct_home, customers=2_000, files=2)
    write_outcomes(kfct_home, 2_000)
    small = with_overrides(cfg, {"outcomes": {"max_predictions": 600}})
    rep = outcomes_report("m", small, tmp_path / "a")
    assert rep["sample"] == {
        "predictions_total": 4_000,
        "predictions_read": 600,
        "max_predictions": 600,
        "sampled": True,
        "text": "a sample of 600 of 4,000 served predictions (by customer; outcomes.max_predictions 600)",
    }
    assert rep["n_judged"] == 600  # every sampled prediction has its customer's outcome
    for f in ("markdown", "html"):
        assert "Judged on a sample of 600 of 4,000 served predictions" in Path(rep["files"][f]).read_text()
    assert json.loads(Path(rep["files"]["json"]).read_text())["sample"]["predictions_read"] == 600
    from kfct.governance import audit

    (entry,) = [e for e in audit.read() if e["event"] == "realized_performance"]
    assert entry["sample"]["predictions_total"] == 4_000
    from kfct.components.ab_test import sample_statement

    assert sample_statement(4_000, 4_000, 500_000)["text"] == "all 4,000 served predictions"


@pytest.mark.parametrize(
    "kind", [None, "label_nulls", "unknown_category", "out_of_range", "missing_column", "duplicated_rows", "wrong_dtype"]
)
def test_a_csv_is_streamed_into_the_frame_pandas_reads(tmp_path, monkeypatch, kind):
    """Ingest (and `kfct data push`) stream a CSV block by block (64 KiB blocks here, so a 2,000-row file
    is many); the snapshot reads back as `pandas.read_csv` reads the file, clean or broken, with a
    column a later block widens (wrong_dtype) and whatever the validation step must then see."""
    from kfct.data import datastore
    from kfct.data.datagen import corrupt, generate, write_frame
    from kfct.data.datasource import snapshot_file

    monkeypatch.setattr(datastore, "CSV_BLOCK_BYTES", 64 << 10)
    df = generate(2_000, seed=5)
    csv = write_frame(df if kind is None else corrupt(df, kind, seed=1), tmp_path / "d.csv")
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: (_ for _ in ()).throw(AssertionError("whole CSV read")))
    shape = snapshot_file(str(csv), tmp_path / "snap.parquet")
    monkeypatch.undo()
    expect = pd.read_csv(csv)
    assert shape["rows"] == len(expect) and shape["column_names"] == list(expect.columns)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "snap.parquet"), expect)


def test_a_csv_column_a_later_block_does_not_fit_is_widened(tmp_path, monkeypatch):
    """pyarrow types columns from the first block: an int column with a decimal, a flag column with a
    word and an empty column with text further down are read again wider, as pandas reads them."""
    from kfct.data import datastore

    monkeypatch.setattr(datastore, "CSV_BLOCK_BYTES", 256)
    rows = ["n,x,flag,empty,day"] + [f"{i},{i},{'true' if i % 2 else 'false'},,2026-01-0{i % 9 + 1}" for i in range(300)]
    rows += ["1,1.5,maybe,text,2026-02-01"]
    csv = tmp_path / "late.csv"
    csv.write_text("\n".join(rows) + "\n")
    assert datastore.csv_to_parquet(csv, tmp_path / "late.parquet") == 301
    got, expect = pd.read_parquet(tmp_path / "late.parquet"), pd.read_csv(csv)
    assert got.dtypes.to_dict() == expect.dtypes.to_dict()
    assert str(got.dtypes["x"]) == "float64" and str(got.dtypes["day"]) == "object"
    pd.testing.assert_frame_equal(got, expect)


def test_drift_reference_fallback_reads_a_bounded_sample_of_the_training_data(data, monkeypatch, no_whole_reads):
    """A champion without its training snapshot artifact falls back to its `data_uri`, checked against
    `dataset_sha256`: a sample of drift.window_rows rows, never the whole table."""
    from types import SimpleNamespace

    from kfct.components.drift_inputs import DriftInputError, load_reference
    from kfct.governance import registry
    from kfct.governance.lineage import sha256_file

    df, path, _ = data
    version = SimpleNamespace(
        version="3", run_id=None, model=None, tags={"data_uri": str(path), "dataset_sha256": sha256_file(path)}
    )
    monkeypatch.setattr(registry, "setup", lambda *a, **k: None)
    monkeypatch.setattr(registry, "load_version", lambda *a, **k: version)
    ref, loaded, source = load_reference("m", max_rows=800)
    assert loaded is version and len(ref) == 800 and ref["customer_id"].is_unique
    assert set(ref["customer_id"]) <= set(df["customer_id"])
    assert source == f"{path}; a sample of 800 of 5,000 rows (drift.window_rows)"
    version.tags["dataset_sha256"] = "0" * 64
    with pytest.raises(DriftInputError, match="no longer has the recorded content"):
        load_reference("m", max_rows=800)
