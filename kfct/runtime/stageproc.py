"""A kfp task process runs one stage and then exits: the garbage collector is tuned for that.

Measured on the 2-core dev machine (`python -X importtime`, and the gap between a stage's
last line and its process's end): about a fifth of a stage's import time is the cyclic
collector rescanning the growing heap of module objects, and interpreter shutdown then
spends 0.3-1.0 s collecting the same objects once more (0.8 s after importing Great
Expectations alone, 0.06 s once they are frozen). A task process lives for one stage, so:

- `begin()` freezes what is loaded and raises the young-generation threshold, so the
  stage's imports are not rescanned over and over;
- `end()` freezes everything, so shutdown has nothing left to collect.

Only inside kfp's executor (`_KFP_RUNTIME=true`, which every kfp lightweight component's
command sets, locally and in a pod). A long-lived process that calls a component function
in-process (`kfct monitor`, the tests) keeps Python's default collector.

A task process whose stage succeeded also leaves without native teardown. Once kfp has
written the executor output, every other exit handler has run (MLflow's, pyarrow's, the
logging flush) and Python's threads are joined, what is left is module teardown and C++
static destructors. Those are where pyarrow's thread pools intermittently abort the process
("terminate called without an active exception", SIGABRT; apache/arrow#34314): a stage
that did its work and wrote its outputs then failed its task all the same (seen in the
e2e's ingest pod). So the last exit handler flushes and calls `os._exit(0)` — but only
when the stage returned and no exception escaped afterwards (kfp writing the output, say);
otherwise the interpreter exits as it would, with its own status.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
from collections.abc import Mapping
from typing import Any

YOUNG_THRESHOLD = 50_000  # allocations between young collections (Python's default: 700)
# This process's exit: the hook is installed once; `ok` set by `end`, `uncaught` by the excepthook.
_EXIT = {"armed": False, "ok": False, "uncaught": False}


def in_task_process(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is a kfp task's executor, alive for this one stage."""
    return env.get("_KFP_RUNTIME", "false") == "true"


def begin(env: Mapping[str, str] = os.environ) -> bool:
    """Tune the collector for a short-lived stage process; returns whether it did."""
    if not in_task_process(env):
        return False
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, g1, g2)
    if not _EXIT["armed"]:
        _EXIT["armed"] = True
        atexit.register(_leave)  # registered first, so it runs after every exit handler the stage adds
        previous = sys.excepthook

        def recording_hook(*exc_info: Any) -> None:
            _EXIT["uncaught"] = True
            previous(*exc_info)

        sys.excepthook = recording_hook
    return True


def end(env: Mapping[str, str] = os.environ, ok: bool = False) -> bool:
    """Freeze the heap so the exiting interpreter does not collect it; returns whether it did.

    `ok`: the stage returned normally, so its process may leave without native teardown."""
    if not in_task_process(env):
        return False
    gc.freeze()
    _EXIT["ok"] = ok
    return True


def _leave() -> None:
    """The last exit handler: after a successful stage, flush and exit 0 before native teardown."""
    if not _EXIT["ok"] or _EXIT["uncaught"]:
        return  # a failure: the interpreter exits as usual, with its own status
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    os._exit(0)
