"""Every prediction (inputs, outputs, version, role, time) to a rolling parquet log.

The request path only appends a tuple to a bounded queue (about a microsecond); a
background thread turns batches into parquet files every `flush_seconds` or
`flush_rows`, so logging never adds latency. A full queue drops rows and counts
them (`kfct_prediction_log_dropped_total`) rather than slowing requests down.

Layout (local folder `<KFCT_HOME>/predictions/`, or the same keys under
`s3://<bucket>/predictions/` when `KFCT_S3_ENDPOINT` is set)::

    predictions/date=2025-01-31/part-<first_ms>-<last_ms>-<pid>-<seq>.parquet

Columns: ts (UTC timestamp), request_id, model_name, model_version, role
(champion | canary | shadow), customer_id, probability, label, threshold, then one
column per input feature. `read_prediction_log(since=...)` is what drift
monitoring reads; file names carry their time range so old files are skipped
without opening them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("kfct.serving.predlog")

PREFIX = "predictions"
META_COLUMNS = ["ts", "request_id", "model_name", "model_version", "role", "customer_id",
                "probability", "label", "threshold"]
_PART = re.compile(r"part-(\d+)-(\d+)-")


def default_root(settings=None) -> Path:
    from kfct.settings import get_settings

    s = settings or get_settings()
    return Path(s.home) / PREFIX


def _use_s3(settings=None) -> bool:
    from kfct.settings import get_settings

    return bool((settings or get_settings()).s3_endpoint)


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


def _part_range(name: str) -> tuple[int, int] | None:
    m = _PART.search(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _since_seconds(since) -> float | None:
    if since is None:
        return None
    if isinstance(since, (int, float)):
        return float(since)
    import pandas as pd

    ts = pd.Timestamp(since)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.timestamp()


def read_prediction_log(since=None, root: str | Path | None = None, s3: bool | None = None,
                        settings=None, model_name: str | None = None):
    """All logged predictions with `ts >= since` (epoch seconds, datetime or ISO string) as a DataFrame.

    Reads the local folder, or the S3 prefix when `KFCT_S3_ENDPOINT` is set (or `s3=True`).
    An empty log gives an empty DataFrame with the metadata columns.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from kfct.settings import get_settings

    s = settings or get_settings()
    use_s3 = _use_s3(s) if s3 is None else s3
    since_s = _since_seconds(since)
    since_ms = None if since_s is None else int(since_s * 1000)
    frames = []
    tmpdir = None
    try:
        if use_s3:
            paths, tmpdir = _s3_fetch(s, since_ms)
        else:
            base = Path(root) if root is not None else default_root(s)
            paths = sorted(base.glob("date=*/part-*.parquet")) if base.exists() else []
            if since_ms is not None:
                paths = [p for p in paths if (_part_range(p.name) or (0, 1 << 62))[1] >= since_ms]
        for p in paths:
            frames.append(pq.read_table(p).to_pandas())
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in META_COLUMNS})
    df = pd.concat(frames, ignore_index=True, sort=False)
    if since_s is not None:
        df = df[df["ts"] >= pd.Timestamp(since_s, unit="s", tz="UTC")]
    if model_name is not None:
        df = df[df["model_name"] == model_name]
    return df.sort_values("ts", kind="stable").reset_index(drop=True)


def _s3_fetch(s, since_ms):
    from kfct import s3
    from kfct.errors import DataSourceError

    tmp = tempfile.mkdtemp(prefix="kfct-predlog-")
    paths = []
    try:
        objs = list(s3.client(s).list_objects(s.s3_bucket, prefix=f"{PREFIX}/", recursive=True))
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataSourceError(f"cannot list s3://{s.s3_bucket}/{PREFIX}/: {exc}") from exc
    for o in objs:
        name = o.object_name.rsplit("/", 1)[-1]
        rng = _part_range(name)
        if not name.endswith(".parquet") or (since_ms is not None and rng and rng[1] < since_ms):
            continue
        dest = Path(tmp) / o.object_name.replace("/", "_")
        s3.download(f"s3://{s.s3_bucket}/{o.object_name}", dest, settings=s)
        paths.append(dest)
    return sorted(paths), tmp
