"""A prediction-log batch turned into parquet bytes, in a child process.

Building the Arrow table walks every record in Python (hundreds of ms for a 5-s flush at
3,000 requests/s) and, run on a thread of the serving process, holds the GIL that the event
loop needs: with the log on, p99 at one connection was 3.6-12.2 ms against 1.3-3.2 ms without
it. KServe's own payload logger ships rows to a sink outside the predictor; kfct keeps the
backlog, the spill directory and the uploads (every durability property) in the server, and
moves the CPU work out of it.

What crosses the pipe is already bytes: the request path pickles each request once (`log()`,
a microsecond or two), the collector joins a batch's pickles into one payload (a memcpy) and
the child unpickles, builds the table and writes parquet. Nothing in the server walks or
pickles the rows again at flush time (pickling a 15,000-request batch of dicts at once held
the GIL for ~0.3 s). The child runs at a lower CPU priority (`BACKGROUND_NICE`): on a machine
whose cores the server shares, its burst of encoding every flush yields to request handling.

`encode` is the pure core; `encode_payload` is what the child runs; a child that dies, cannot
be started or times out is replaced by encoding in-process for that batch (logged once), so a
broken child never loses rows; once the logger closes (shutdown: no request left to yield to) the
last batches are encoded in-process too, so a stuck or starved child cannot hold them past the
shutdown budget.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import time
from typing import Any

log = logging.getLogger("kfct.serving.predlog")

BACKGROUND_NICE = 10  # the encoder's niceness above the server's: ~10 % of a core against a busy server


def encode(items: list, id_column: str) -> tuple[bytes | None, int, int, str | None]:
    """(parquet bytes or None, rows written, rows lost, why rows were lost): a batch that fails to
    encode is salvaged per request, then per row (`salvage`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kfct.serving.prediction_log import build_table, salvage

    lost, why = 0, None
    try:
        table = build_table(items, id_column)
    except Exception as exc:  # noqa: BLE001 - one poisoned row must not take the others with it
        items, lost = salvage(items, id_column)
        why = f"{type(exc).__name__}: {str(exc)[:200]}"
        if not items:
            return None, 0, lost, why
        table = build_table(items, id_column)
    if table.num_rows == 0:
        return None, 0, lost, why
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes(), table.num_rows, lost, why


def decode(payload: bytes) -> list:
    """The queued requests back from a payload: concatenated pickles, one per request (each ends
    with pickle's STOP opcode, so they read back one after another)."""
    buf = io.BytesIO(payload)
    items = []
    while buf.tell() < len(payload):
        items.append(pickle.load(buf))
    return items


def encode_payload(payload: bytes, id_column: str) -> tuple[bytes | None, int, int, str | None]:
    """`encode` of a payload of pickled requests (what the child runs)."""
    return encode(decode(payload), id_column)


def _background() -> None:
    """The child's initializer: a lower CPU priority than the server it works for."""
    with contextlib.suppress(OSError):  # not permitted: encoding still works, at the server's priority
        os.nice(BACKGROUND_NICE)


class ChildEncoder:
    """One spawned worker process for `encode_payload`; started on the first batch."""

    def __init__(self, timeout: float = 120.0):
        self.timeout = timeout
        self._pool: Any = None
        self._warned = False
        self.closing = False  # set by the logger's close(): no request left to yield to

    def encode(self, payload: bytes, id_column: str) -> tuple[bytes | None, int, int, str | None]:
        """The batch encoded by the child; in this process once closing (the final flush must fit the
        shutdown budget, however slow or stuck the low-priority child is) or when the child fails."""
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        if self.closing:
            return encode_payload(payload, id_column)
        try:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_background)
            future = self._pool.submit(encode_payload, payload, id_column)
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    return future.result(timeout=0.1)
                except TimeoutError:
                    if self.closing:  # shutting down: encode here rather than wait on the child
                        future.cancel()
                        return encode_payload(payload, id_column)
                    if time.monotonic() > deadline:
                        raise
        except Exception as exc:  # noqa: BLE001 - a dead / unstartable child, a timeout
            if not self._warned:
                log.warning(
                    "prediction log encoder process unavailable (%s: %s): encoding in the server process", type(exc).__name__, exc
                )
                self._warned = True
            self.close()
            return encode_payload(payload, id_column)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
