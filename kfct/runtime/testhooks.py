"""Test-only pause points, inert unless `KFCT_TEST_PAUSE_AT` names one.

Crash tests need a process stopped at an exact moment (after the alias moved, between
registration and the alias move, inside a training run) so they can `kill -9` it there.
`pause_at(point)` does nothing at all unless `KFCT_TEST_PAUSE_AT=<point>` is set; then it
writes `<KFCT_TEST_PAUSE_DIR>/<point>.reached` (containing the pid) and waits until
`<point>.release` appears — or, as the tests intend, until the process is killed.
Never set these variables outside tests.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_ENV = "KFCT_TEST_PAUSE_AT"
DIR_ENV = "KFCT_TEST_PAUSE_DIR"


def pause_at(point: str) -> None:
    if os.environ.get(PAUSE_ENV) != point:
        return
    folder = Path(os.environ.get(DIR_ENV) or ".")
    folder.mkdir(parents=True, exist_ok=True)
    release = folder / f"{point}.release"
    tmp = folder / f".{point}.{os.getpid()}"
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, folder / f"{point}.reached")
    while not release.exists():
        time.sleep(0.05)
