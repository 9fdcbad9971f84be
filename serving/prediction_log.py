"""Every prediction (inputs, outputs, version, role, time) to a rolling parquet log.

The request path only appends a tuple to a bounded queue (about a microsecond); a
background thread turns batches into parquet files every `flush_seconds` or
`flush_rows`, so logging never adds latency. A full queue drops rows and counts
them (`kfct_prediction_log_dropped_total`) rather than slowing requests down.

The layout (folders, file names, columns) and the reader that drift monitoring uses
live in the library layer, `kfct.prediction_log`; this module is the writer.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kfct.prediction_log import PREFIX, default_root
from kfct.prediction_log import use_s3 as _use_s3

log = logging.getLogger("kfct.serving.predlog")


class PredictionLogger:
    """Queue + writer thread. `log()` is the only call on the request path."""

    def __init__(self, root: str | Path | None = None, id_column: str = "customer_id", s3: bool | None = None,
                 flush_seconds: float = 5.0, flush_rows: int = 50_000, max_queue: int = 200_000,
                 settings=None):
        from kfct.settings import get_settings

        self.settings = settings or get_settings()
        self.s3 = _use_s3(self.settings) if s3 is None else s3
        self.root = Path(root) if root is not None else default_root(self.settings)
        self.id_column = id_column
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._seq = 0
        self.rows_written = 0
        self.files_written = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None
        self._flush_req = threading.Event()
        self._flushed = threading.Condition()
        self._flush_gen = 0
        self._done_gen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kfct-prediction-log", daemon=True)
        self._thread.start()

    # -- request path --------------------------------------------------------------------
    def log(self, ts: float, request_id: str | None, model_name: str, version: str, role: str,
            records: list[dict], probabilities, labels, threshold: float) -> None:
        """Enqueue one scored request (records are not copied: they are not mutated later)."""
        try:
            self._q.put_nowait((ts, request_id, model_name, version, role, records, probabilities, labels,
                                threshold))
        except queue.Full:
            self.dropped += len(records)
            try:
                from kfct.serving.metrics import prometheus

                prometheus().log_dropped.inc(len(records))
            except Exception:  # pragma: no cover
                pass

    # -- control -------------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> bool:
        """Write everything queued so far; True when done within `timeout`."""
        with self._flushed:
            self._flush_gen += 1
            target = self._flush_gen
        self._flush_req.set()
        deadline = time.monotonic() + timeout
        with self._flushed:
            while self._done_gen < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._flushed.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        self._stop.set()
        self._flush_req.set()
        self._thread.join(timeout)

    @property
    def queued(self) -> int:
        return self._q.qsize()

    def status(self) -> dict:
        return {"target": self._target(), "queued": self.queued, "rows_written": self.rows_written,
                "files_written": self.files_written, "dropped": self.dropped, "errors": self.errors,
                "last_error": self.last_error}

    def _target(self) -> str:
        if self.s3:
            return f"s3://{self.settings.s3_bucket}/{PREFIX}/"
        return str(self.root)

    # -- writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        pending: list = []
        pending_rows = 0
        last = time.monotonic()
        while True:
            self._flush_req.wait(timeout=min(0.25, self.flush_seconds))
            with self._flushed:
                gen = self._flush_gen
            forced = self._flush_req.is_set()
            self._flush_req.clear()
            while True:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                pending.append(item)
                pending_rows += len(item[5])
            due = forced or pending_rows >= self.flush_rows or time.monotonic() - last >= self.flush_seconds
            if pending and due:
                try:
                    self._write(pending)
                except Exception as exc:  # never take the server down; keep the error visible
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.error("prediction log write failed (%d rows lost): %s", pending_rows, self.last_error)
                pending, pending_rows = [], 0
                last = time.monotonic()
            elif not pending:
                last = time.monotonic()
            if forced:
                with self._flushed:
                    self._done_gen = max(self._done_gen, gen)
                    self._flushed.notify_all()
            if self._stop.is_set() and self._q.empty() and not pending:
                return

    def _write(self, items: list) -> None:
        table = build_table(items, self.id_column)
        if table.num_rows == 0:
            return
        import pyarrow.parquet as pq

        first_ms = int(min(it[0] for it in items) * 1000)
        last_ms = int(max(it[0] for it in items) * 1000)
        day = dt.datetime.fromtimestamp(first_ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d")
        self._seq += 1
        name = f"part-{first_ms}-{last_ms}-{os.getpid()}-{self._seq:06d}.parquet"
        rel = f"date={day}/{name}"
        if self.s3:
            from kfct import s3

            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / name
                pq.write_table(table, local)
                s3.upload(local, f"s3://{self.settings.s3_bucket}/{PREFIX}/{rel}", settings=self.settings)
        else:
            dest = self.root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(".parquet.tmp")
            pq.write_table(table, tmp)
            os.replace(tmp, dest)  # readers never see half a file
        self.rows_written += table.num_rows
        self.files_written += 1
        try:
            from kfct.serving.metrics import prometheus

            prometheus().log_rows.inc(table.num_rows)
        except Exception:  # pragma: no cover
            pass


def build_table(items: list, id_column: str = "customer_id"):
    """Queued items -> one Arrow table (features typed from values: str -> string, else float64)."""
    import numpy as np
    import pyarrow as pa

    ts, req, names, versions, roles, ids, probs, labels, thrs = [], [], [], [], [], [], [], [], []
    records: list[dict] = []
    for (t, rid, mname, ver, role, recs, p, lab, thr) in items:
        n = len(recs)
        ts.extend([t] * n)
        req.extend([rid] * n)
        names.extend([mname] * n)
        versions.extend([ver] * n)
        roles.extend([role] * n)
        thrs.extend([thr] * n)
        probs.append(np.asarray(p, dtype=np.float64))
        labels.append(np.asarray(lab, dtype=np.int64))
        records.extend(recs)
        ids.extend(None if r.get(id_column) is None else str(r.get(id_column)) for r in recs)
    if not records:
        return pa.table({})
    features: list[str] = []
    seen = {id_column}
    for r in records:
        for k in r:
            if k not in seen:
                seen.add(k)
                features.append(k)
    cols: dict[str, Any] = {
        "ts": pa.array((np.asarray(ts, dtype=np.float64) * 1e6).astype(np.int64), type=pa.timestamp("us", tz="UTC")),
        "request_id": pa.array(req, type=pa.string()),
        "model_name": pa.array(names, type=pa.string()),
        "model_version": pa.array(versions, type=pa.string()),
        "role": pa.array(roles, type=pa.string()),
        "customer_id": pa.array(ids, type=pa.string()),
        "probability": pa.array(np.concatenate(probs)),
        "label": pa.array(np.concatenate(labels)),
        "threshold": pa.array(thrs, type=pa.float64()),
    }
    for f in features:
        if f in cols:
            continue
        vals = [r.get(f) for r in records]
        if any(isinstance(v, str) for v in vals):
            cols[f] = pa.array([None if v is None else str(v) for v in vals], type=pa.string())
        else:
            cols[f] = pa.array([None if v is None else float(v) for v in vals], type=pa.float64())
    return pa.table(cols)
