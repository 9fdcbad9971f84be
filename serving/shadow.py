"""Shadow scoring off the request path: a bounded queue and one background thread.

The champion answers; the challenger scores the same records here, later. A full queue
drops the shadow work (never the answer); `drain` waits for what is queued (tests, shutdown).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger("kfct.serving.shadow")


class ShadowWorker:
    """Runs `score(*job)` for each submitted job on one daemon thread, started on first use."""

    def __init__(self, score: Callable[..., None], maxsize: int = 10_000, max_rows: int | None = None, name: str = "kfct-shadow"):
        self._score = score
        self.name = name
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.max_rows = max_rows  # a bound on the records held, not only on the jobs
        self._rows = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def submit(self, *job, rows: int = 0) -> bool:
        """Queue `job` (holding `rows` records); False when the queue is full: the work is skipped."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        with self._lock:
            if self.max_rows is not None and self._rows + rows > self.max_rows:
                return False
            self._rows += rows
        try:
            self._q.put_nowait((job, rows))
            return True
        except queue.Full:
            with self._lock:
                self._rows -= rows
            return False

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                job, rows = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._score(*job)
            except Exception:  # pragma: no cover - never let the shadow thread die
                log.exception("shadow scoring error")
            finally:
                with self._lock:
                    self._rows -= rows
                self._q.task_done()

    def drain(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while self._q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._q.unfinished_tasks == 0

    def close(self) -> None:
        self._closed.set()
