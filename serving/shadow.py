"""Shadow scoring off the request path: a bounded queue and one background thread.

The champion answers; the challenger scores the same records here, later. A full queue
drops the shadow work (never the answer); `drain` waits for what is queued (tests, shutdown).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

log = logging.getLogger("kfct.serving.shadow")


class ShadowWorker:
    """Runs `score(*job)` for each submitted job on one daemon thread, started on first use."""

    def __init__(self, score: Callable[..., None], maxsize: int = 10_000):
        self._score = score
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def submit(self, *job) -> bool:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="kfct-shadow", daemon=True)
            self._thread.start()
        try:
            self._q.put_nowait(job)
            return True
        except queue.Full:
            return False

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                job = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._score(*job)
            except Exception:  # pragma: no cover - never let the shadow thread die
                log.exception("shadow scoring error")
            finally:
                self._q.task_done()

    def drain(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while self._q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._q.unfinished_tasks == 0

    def close(self) -> None:
        self._closed.set()
