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
"""

from __future__ import annotations

import gc
import os
from typing import Mapping

YOUNG_THRESHOLD = 50_000  # allocations between young collections (Python's default: 700)


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
    return True


def end(env: Mapping[str, str] = os.environ) -> bool:
    """Freeze the heap so the exiting interpreter does not collect it; returns whether it did."""
    if not in_task_process(env):
        return False
    gc.freeze()
    return True
