"""The local router's traffic split, as a small JSON file that a running server watches.

A contract between the layers: the deploy and rollout stages write it, the local
model server (`kfct.serving`) reads it, so it lives in the library layer below both.

`<KFCT_HOME>/serving/<model_name>/split.json`::

    {"model_name": "churn-classifier", "champion_version": "3", "canary_version": "4",
     "canary_percent": 10.0, "mode": "canary", "generation": 7, "updated_at": "...", "reason": "..."}

Writers (the deploy stage, `kfct rollout`, `kfct serve` at start-up) replace the file
atomically and bump `generation`; the server polls it, loads any new version off the
request path, swaps it in, and reports the generation it applied on `GET /kfct/stats`,
so a writer can wait until its change is live. `champion_version: null` means "whatever
the `champion` alias points to". This is the local stand-in for patching an
InferenceService's `canaryTrafficPercent`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kfct.errors import KfctError

MODES = ("canary", "shadow")


class SplitStateError(KfctError):
    """A split state file or value that cannot be used."""


@dataclass
class SplitState:
    model_name: str
    champion_version: str | None = None
    canary_version: str | None = None
    canary_percent: float = 0.0
    mode: str = "canary"
    generation: int = 0
    updated_at: str = ""
    reason: str = ""
    # A canary whose rollout was deferred (no live server to judge it) has an owner: past this
    # wall-clock time (epoch seconds) servers stop routing to it and the next rollout rolls it back.
    canary_deadline: float | None = None

    def validate(self) -> SplitState:
        if not self.model_name:
            raise SplitStateError("split state: model_name is empty")
        try:
            pct = float(self.canary_percent)
        except (TypeError, ValueError):
            raise SplitStateError(f"split state: canary_percent {self.canary_percent!r} is not a number") from None
        if not 0.0 <= pct <= 100.0:
            raise SplitStateError(f"split state: canary_percent {pct} must be within 0..100")
        self.canary_percent = pct
        if self.mode not in MODES:
            raise SplitStateError(f"split state: mode {self.mode!r} must be one of {', '.join(MODES)}")
        if (pct > 0 or self.mode == "shadow") and not self.canary_version:
            raise SplitStateError("split state: canary_percent > 0 or shadow mode needs canary_version")
        if self.canary_deadline is not None:
            try:
                self.canary_deadline = float(self.canary_deadline)
            except (TypeError, ValueError):
                raise SplitStateError(
                    f"split state: canary_deadline {self.canary_deadline!r} is not a number (epoch seconds)"
                ) from None
        for f in ("champion_version", "canary_version"):
            v = getattr(self, f)
            if v is not None:
                setattr(self, f, str(v))
        return self

    @property
    def active_canary(self) -> str | None:
        """The canary version that receives traffic or shadow copies, if any."""
        if not self.canary_version or self.canary_version == self.champion_version:
            return None
        if self.expired():
            return None
        if self.mode == "shadow" or self.canary_percent > 0:
            return self.canary_version
        return None

    def expired(self, now: float | None = None) -> bool:
        """A deferred canary past its deadline: it gets no traffic, whatever the percent says."""
        return self.canary_deadline is not None and (time.time() if now is None else now) >= self.canary_deadline

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> SplitState:
        if not isinstance(d, dict):
            raise SplitStateError("split state must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise SplitStateError(f"split state: unknown field {unknown[0]!r}")
        return cls(**d).validate()


def state_path(model_name: str, home: str | Path | None = None) -> Path:
    if home is None:
        from kfct.runtime.settings import get_settings

        home = get_settings().home
    return Path(home) / "serving" / model_name / "split.json"


def read_state(path: str | Path) -> SplitState | None:
    p = Path(path)
    if not p.exists():
        return None
    try:
        return SplitState.from_json(json.loads(p.read_text()))
    except json.JSONDecodeError as exc:
        raise SplitStateError(f"split state {p} is not valid JSON: {exc}") from exc


def write_state(state: SplitState, path: str | Path | None = None) -> SplitState:
    """Validate, bump the generation past what is on disk, replace the file atomically."""
    import fcntl

    state.validate()
    p = Path(path) if path is not None else state_path(state.model_name)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.with_suffix(".lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                current = read_state(p)
            except SplitStateError:
                current = None
            base = max(state.generation, current.generation if current else 0)
            state.generation = base + 1
            state.updated_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".split-", suffix=".json")
            with os.fdopen(fd, "w") as fh:
                json.dump(state.to_json(), fh, indent=1, sort_keys=True)
            Path(tmp).replace(p)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return state


def update_state(model_name: str, path: str | Path | None = None, **changes: Any) -> SplitState:
    """Read-modify-write: start from the file (or defaults) and apply `changes`."""
    p = Path(path) if path is not None else state_path(model_name)
    cur = read_state(p) or SplitState(model_name=model_name)
    for k, v in changes.items():
        if k not in SplitState.__dataclass_fields__:
            raise SplitStateError(f"split state: unknown field {k!r}")
        setattr(cur, k, v)
    return write_state(cur, p)
