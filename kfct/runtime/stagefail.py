"""A failed stage leaves a `stage_failed` entry in the audit trail, wherever it runs.

On a cluster each stage is a pod of its own and nothing local to the CLI sees it fail, so
the stage itself records the failure before kfp marks the task failed: every kfp component
function wraps its body in `audit_failure(...)`. The original exception always propagates
unchanged; a trail that cannot take the entry (disk full, store away) is logged as one
warning and never hides the error that made the stage fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

EVENT = "stage_failed"
RUN_ID_ENV = "KFCT_RUN_ID"  # set by the local runner (kfct.pipelines.runner) for its stage processes


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's first message line, capped (a 30 KB one-line message stays readable)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def failure_entry(stage: str, exc: BaseException, context: dict, env: Mapping[str, str] = os.environ) -> dict:
    """Fields of the `stage_failed` entry: the stage, what is known of the run, the error's class and first line."""
    fields = {"stage": stage, **{k: v for k, v in context.items() if v not in (None, "")}}
    if env.get(RUN_ID_ENV):
        fields["run_id"] = env[RUN_ID_ENV]
    if env.get("KFP_POD_NAME"):  # KFP's launcher sets it on a cluster: names the task's pod
        fields["pod"] = env["KFP_POD_NAME"]
    fields["error_type"] = type(exc).__name__
    fields["error"] = first_line(exc)
    return fields


@contextmanager
def audit_failure(stage: str, **context: Any) -> Iterator[dict]:
    """Record `stage_failed` (stage, model_name / pipeline_run when given) if the body raises, then re-raise.

    Yields the context dict: a body that learns more (the model a shard is scored with) adds it.
    Every stage passes through here first, so it also tunes a task process's garbage
    collector for a one-stage life (`kfct.runtime.stageproc`)."""
    from kfct.runtime import stageproc

    stageproc.begin()
    ok = False
    try:
        yield context
        ok = True
    except Exception as exc:
        try:
            from kfct.governance import audit

            audit.record(EVENT, **failure_entry(stage, exc, context))
        except Exception as audit_exc:  # noqa: BLE001 - the stage's own error matters more: never hide it
            import logging

            logging.getLogger("kfct.runtime.stagefail").warning(
                "stage %s failed and the audit trail could not record it: %s", stage, audit_exc
            )
        raise
    finally:
        stageproc.end(ok=ok)


def recorded_for_run(run_id: str, path: Path | None = None) -> bool:
    """Whether the local run `run_id` already put its failure on the trail: a stage's `stage_failed`,
    or the `run_failed` of the CT run's exit handler (kfct.components.run_outcome)."""
    from kfct.governance import audit

    return any(e.get("event") in (EVENT, "run_failed") and e.get("run_id") == run_id for e in audit.read(path))
