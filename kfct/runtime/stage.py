"""The prologue and epilogue every kfp stage shares, written once.

A stage's kfp function is its core plus this:

    def featurize_split(dataset: Input[Dataset], config_json: str, ...):
        from kfct.runtime.stage import stage

        with stage("featurize-split", config_json, stamp=preprocessor.metadata) as st:
            ...  # st.config (the RunConfig), st.log, st.clock, st.context

Entering it: the failure audit (`kfct.runtime.stagefail.audit_failure`: a raising body leaves
`stage_failed` on the trail and tunes the task process), the stage clock, the config parsed
from the kfp parameter (`kfct.config.config_from_json`: a bad one fails inside the audit,
naming the key), the stage's logger and, when asked, the registry's setup. Leaving it
normally stamps the start and end times into the given output metadata.

kfp compiles a component from its function's source alone, so the import of this module
stays inside the function body (tests/unit/test_component_functions.py checks that).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

    from kfct.config import RunConfig
    from kfct.runtime.stageclock import StageClock


class Stage:
    """What a stage body works with: its config, logger, clock and the audit context."""

    def __init__(self, name: str, config: RunConfig | None, log: logging.Logger, clock: StageClock, context: dict[str, Any]):
        self.name = name
        self._config = config
        self.log = log
        self.clock = clock
        self.context = context  # a body that learns more (the model a shard uses) adds it for the audit

    @property
    def config(self) -> RunConfig:
        if self._config is None:
            raise RuntimeError(f"stage {self.name} was entered without a config_json")
        return self._config

    def times(self) -> dict[str, float]:
        """Start and now: what a stage returning a JSON summary carries as `stage_time`."""
        return self.clock.as_dict()


def logger_name(name: str) -> str:
    return f"kfct.runtime.stage.{name}"


@contextmanager
def stage(
    name: str, config_json: str | None = None, *, stamp: dict | None = None, registry: bool = False, **context: Any
) -> Iterator[Stage]:
    """Run a stage body: audited failure, clock, typed config, logger, registry; stamps `stamp` on success.

    `config_json` None: the stage takes no config ('' is the packaged default config). `context`
    (model_name, pipeline_run, ...) goes into a `stage_failed` entry."""
    from kfct.runtime.stagefail import audit_failure

    with audit_failure(name, **context) as ctx:
        from kfct.runtime.logs import stage_logger
        from kfct.runtime.stageclock import StageClock

        clock = StageClock()
        config = None
        if config_json is not None:
            from kfct.config import config_from_json

            config = config_from_json(config_json)
        if registry:
            from kfct.governance import registry as _registry

            _registry.setup()
        st = Stage(name, config, stage_logger(logger_name(name)), clock, ctx)
        yield st
        if stamp is not None:
            clock.stamp(stamp)
