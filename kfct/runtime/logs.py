"""Logging for the stages: what each one decided, in the pod's log (and kfp.local's).

Every module logs through its own `logging.getLogger("kfct.<layer>.<module>")`. A kfp
component runs its function in a fresh process, so the function calls `stage_logger`,
which configures output once per process (`time level logger: message` on stderr, level
from `KFCT_LOG_LEVEL`) and returns the module's logger. Where something else already
configured logging (a test, `kfct serve`), it is left alone.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str | None = None) -> None:
    """Once per process: a stderr handler on the root logger unless one is there; kfct's level."""
    from kfct.runtime.settings import get_settings

    logging.basicConfig(format=FORMAT)  # no-op when the root logger already has a handler
    logging.getLogger("kfct").setLevel((level or get_settings().log_level).upper())


def stage_logger(name: str) -> logging.Logger:
    """The logger of a stage module (e.g. 'kfct.components.train'), output configured."""
    configure()
    return logging.getLogger(name)
