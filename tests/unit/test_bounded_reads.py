"""Steps that only need part of a large dataset read only that part (item 6 of the data-at-scale issue).

Each test uses a dataset larger than the bound and makes the whole-table readers fail, so a
step that still loaded the table would fail here.
"""

import pandas as pd
import pyarrow.parquet as pq
import pytest

from kfct.data import parts
from kfct.data.datagen import generate

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
    df, path, pdir = data
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
            mp.setattr(pq, "read_table", lambda src, *a, **k: (_ for _ in ()).throw(AssertionError("whole table"))
                       if str(src) in (str(path), str(pdir)) else real_read_table(src, *a, **k))
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
    for k in range(6):    # six files of 100 rows, one hour apart
        log.log(now - 3600 * (6 - k), f"r{k}", "m", "1", "champion", recs, np.full(100, 0.1 * k), np.zeros(100), 0.5)
        assert log.flush(10)
    log.close()
    whole = read_prediction_log(root=tmp_path, s3=False)
    assert len(whole) == 600
    opened = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda p, *a, **k: opened.append(str(p)) or real(p, *a, **k))
    got = read_prediction_log(root=tmp_path, s3=False, max_rows=250)
    assert len(got) == 250 and got.attrs["rows_total"] >= 250
    pd.testing.assert_frame_equal(got, whole.tail(250).reset_index(drop=True))
    assert len(opened) == 3    # the newest three files hold 300 >= 250 rows
