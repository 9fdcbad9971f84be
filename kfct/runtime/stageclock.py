"""Each stage's own start and end time, carried in its output metadata.

The local runner reports per-stage wall time from these stamps instead of parsing
kfp's log: a stage knows when it started and ended, whatever prints what and
whatever the clock of the log says (no midnight wrap, no guessing). On a cluster the
same stamps show up in the Kubeflow UI next to the artifacts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

STARTED = "kfct_started_at"
ENDED = "kfct_ended_at"


class StageClock:
    """Started when created; `stamp()` writes both times (epoch seconds, UTC) into a metadata dict."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self.started_at = clock()

    def as_dict(self) -> dict[str, float]:
        return {STARTED: round(self.started_at, 3), ENDED: round(self._clock(), 3)}

    def stamp(self, *metadata: dict) -> dict[str, float]:
        """Record start and now as the end in each metadata dict given; return the two stamps."""
        times = self.as_dict()
        for m in metadata:
            m.update(times)
        return times


def duration(metadata: dict) -> float | None:
    """Seconds between the two stamps of a metadata dict, or None when it carries none."""
    try:
        return round(float(metadata[ENDED]) - float(metadata[STARTED]), 2)
    except (KeyError, TypeError, ValueError):
        return None
