"""The prediction log's backlog and batching, without a network (local folder as the store)."""

from __future__ import annotations

import time

import numpy as np

from kfct.serving.predlog_spill import Segment, SpillBuffer, segment_name


def _seg(first_ms: int, seq: int, rows: int = 10, writer: str = "w1") -> Segment:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": list(range(rows))}), sink)
    return Segment(segment_name(first_ms, first_ms + 5, writer, seq), rows, data=sink.getvalue().to_pybytes(), seq=seq)


def test_bounded_in_rows_and_ordered_across_a_restart(tmp_path):
    buf = SpillBuffer(tmp_path, max_rows=25)
    assert buf.add(_seg(1000, 1), to_disk=True) and buf.add(_seg(2000, 2), to_disk=False)
    assert not buf.add(_seg(3000, 3), to_disk=True)  # 30 > 25 rows: refused, the caller counts the drop
    assert buf.rows == 20 and len(list(tmp_path.glob("part-*"))) == 1
    assert buf.persist() == 0 and len(list(tmp_path.glob("part-*"))) == 2  # shutdown: memory to disk

    again = SpillBuffer(tmp_path, max_rows=25)  # the next start
    assert again.load() == 20
    first = again.oldest()
    assert first.name.startswith("part-1000-") and first.seq is None and again.holds_upto(0)
    again.remove(first)
    assert again.oldest().name.startswith("part-2000-") and len(list(tmp_path.glob("part-*"))) == 1


def test_a_torn_spill_file_is_set_aside_not_uploaded(tmp_path):
    (tmp_path / segment_name(1, 2, "w1", 1)).write_bytes(b"PAR1 torn")
    buf = SpillBuffer(tmp_path, max_rows=100)
    assert buf.load() == 0 and len(buf) == 0
    assert list(tmp_path.glob("*.bad"))


def test_batches_are_bounded_by_flush_rows_and_a_flush_covers_everything_queued(tmp_path):
    from kfct.contracts.prediction_log import read_prediction_log
    from kfct.serving.prediction_log import PredictionLogger

    log = PredictionLogger(root=tmp_path, s3=False, flush_seconds=60, flush_rows=100)
    try:
        for i in range(100):  # 1,000 rows queued before the flush
            recs = [{"customer_id": f"C{i}-{j}", "x": float(j)} for j in range(10)]
            log.log(time.time(), f"r{i}", "m", "1", "champion", recs, np.full(10, 0.5), np.ones(10, np.int64), 0.5)
        assert log.flush(30)
        assert log.rows_written == 1000 and log.files_written == 10
    finally:
        log.close()
    assert len(read_prediction_log(root=tmp_path, s3=False)) == 1000
