"""The prediction log's backlog: batches that have not reached the store yet, in order.

Why it exists: MinIO restarts, and a prediction that is not logged is invisible to drift
monitoring and to every outcome judged later. So a batch the writer cannot upload is
kept, not dropped: on local disk (`<KFCT_HOME>/predictions-spill/`, survives SIGTERM and
a restart, which uploads it first), or in memory while that disk refuses writes (full).
The buffer is bounded in rows; only when it is full does the writer drop a batch.

Each entry is one finished parquet file named by its final object name
(`part-<first_ms>-<last_ms>-<writer>-<seq>.parquet`): uploading it again after a crash
or a timed-out-but-completed PUT overwrites the same key, so retries never duplicate rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import re
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("kfct.serving.predlog")

_NAME = re.compile(r"^part-(\d+)-(\d+)-([A-Za-z0-9]+)-(\d+)\.parquet$")


@dataclass
class Segment:
    """One batch, serialized: bytes in memory and/or a file in the spill directory."""

    name: str
    rows: int
    data: bytes | None = None
    path: Path | None = None
    seq: int | None = None  # this writer's sequence number (None: left by a previous run)

    @property
    def first_ms(self) -> int:
        m = _NAME.match(self.name)
        return int(m.group(1)) if m else 0

    @property
    def rel(self) -> str:
        """Object key below the log's prefix: date=<day of the first row>/<name>."""
        day = dt.datetime.fromtimestamp(self.first_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d")
        return f"date={day}/{self.name}"

    def payload(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


def segment_name(first_ms: int, last_ms: int, writer: str, seq: int) -> str:
    return f"part-{first_ms}-{last_ms}-{writer}-{seq:06d}.parquet"


def _sort_key(name: str) -> tuple[int, str, int]:
    m = _NAME.match(name)
    return (int(m.group(1)), m.group(3), int(m.group(4))) if m else (0, name, 0)


class SpillBuffer:
    """Ordered, row-bounded backlog. Thread-safe; `add` never blocks on the network."""

    def __init__(self, directory: str | Path | None, max_rows: int):
        self.directory = Path(directory) if directory is not None else None
        self.max_rows = int(max_rows)
        self._entries: deque[Segment] = deque()
        self._rows = 0
        self._lock = threading.Lock()
        self.disk_full = False  # the spill directory refused the last write (ENOSPC / EDQUOT)
        self.disk_error: str | None = None

    # -- state ----------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return self._rows

    def __len__(self) -> int:
        return len(self._entries)

    def holds_upto(self, seq: int) -> bool:
        """Anything waiting that is as old as this writer's batch `seq` (or left by an earlier run)?"""
        with self._lock:
            return any(s.seq is None or s.seq <= seq for s in self._entries)

    def oldest(self) -> Segment | None:
        with self._lock:
            return self._entries[0] if self._entries else None

    # -- changes --------------------------------------------------------------------------
    def load(self) -> int:
        """Pick up what a previous process left on disk (oldest first); returns rows found."""
        if self.directory is None or not self.directory.is_dir():
            return 0
        import pyarrow.parquet as pq

        found = []
        for p in self.directory.glob("part-*.parquet"):
            if not _NAME.match(p.name):
                continue
            try:
                rows = pq.ParquetFile(p).metadata.num_rows
            except (OSError, ValueError) as exc:  # a torn file from a crash mid-write (ArrowInvalid is a ValueError)
                log.error("prediction log spill file %s unreadable, moved aside: %s", p, exc)
                p.rename(p.with_suffix(".parquet.bad"))
                continue
            found.append(Segment(p.name, rows, path=p))
        found.sort(key=lambda s: _sort_key(s.name))
        with self._lock:
            known = {s.name for s in self._entries}
            new = [s for s in found if s.name not in known]
            self._entries.extendleft(reversed(new))
            added = sum(s.rows for s in new)
            self._rows += added
        return added

    def add(self, seg: Segment, to_disk: bool) -> bool:
        """Append a batch; False when it does not fit (the caller drops and counts it)."""
        with self._lock:
            if self._rows + seg.rows > self.max_rows:
                return False
            self._entries.append(seg)
            self._rows += seg.rows
        if to_disk:
            self._to_disk(seg)
        return True

    def remove(self, seg: Segment) -> None:
        """The store has it: forget it (and its spill file)."""
        with self._lock:
            try:
                self._entries.remove(seg)
            except ValueError:
                return
            self._rows -= seg.rows
        if seg.path is not None:
            with contextlib.suppress(FileNotFoundError):
                seg.path.unlink()

    def persist(self) -> int:
        """Write every in-memory entry to disk (shutdown); returns rows still only in memory."""
        with self._lock:
            mem = [s for s in self._entries if s.path is None]
        for seg in mem:
            self._to_disk(seg)
        with self._lock:
            return sum(s.rows for s in self._entries if s.path is None)

    def spill_memory(self) -> None:
        """The store is failing: move in-memory entries to disk so a restart keeps them."""
        self.persist()

    def _to_disk(self, seg: Segment) -> bool:
        if self.directory is None or seg.path is not None or seg.data is None:
            return seg.path is not None
        dest = self.directory / seg.name
        tmp = dest.with_name(dest.name + ".tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as fh:
                fh.write(seg.data)
            tmp.replace(dest)  # a reader (the next start) never sees half a file
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            if not self.disk_full or self.disk_error is None:
                log.error(
                    "prediction log spill to %s failed (%s), keeping %d rows in memory: %s",
                    self.directory,
                    "disk full" if full else "write error",
                    seg.rows,
                    exc,
                )
            self.disk_full = True
            self.disk_error = f"{type(exc).__name__}: {exc}"
            return False
        if self.disk_full:
            log.warning("prediction log spill to %s works again", self.directory)
        self.disk_full = False
        self.disk_error = None
        seg.path = dest
        seg.data = None  # on disk now: memory is for what the disk cannot take
        return True
