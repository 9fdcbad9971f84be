"""The split watcher: polls the split file (and the registry aliases) and applies changes.

A thread off the request path: it loads new versions and swaps them into the router;
a version that fails to load leaves the current routing alone and is retried with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kfct.contracts.split_state import SplitState, SplitStateError, read_state

if TYPE_CHECKING:
    from kfct.serving.router import _ChurnRouter

log = logging.getLogger("kfct.serving.router")


class SplitWatcher:
    """Polls the split file; applies changes and retries loading until a champion is ready."""

    def __init__(
        self,
        router: _ChurnRouter,
        path: str | Path,
        poll_seconds: float = 0.5,
        retry_seconds: float = 2.0,
        max_retry_seconds: float = 30.0,
        follow_aliases: bool = False,
        alias_poll_seconds: float = 5.0,
    ):
        self.router = router
        self.path = Path(path)
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        # The registry aliases win over the file (kfct.governance.convergence): read every alias_poll_seconds.
        self.follow_aliases = follow_aliases
        router.follows_aliases = follow_aliases
        self.alias_poll_seconds = alias_poll_seconds
        self._aliases: dict[str, str] | None = None
        self._aliases_at = 0.0
        self._registry_set_up = False
        # A failed load (MLflow / MinIO away) is retried after retry_seconds, doubling up to
        # max_retry_seconds; also when a model already serves (a reload that failed is not
        # forgotten: the new split is applied once the dependency is back).
        self.max_retry_seconds = max_retry_seconds
        self._backoff = retry_seconds
        self._failing = False
        self._stop = threading.Event()
        self._seen: tuple | None = None
        self._last_try = 0.0
        self._deadline: float | None = None  # the applied state's canary deadline, re-applied once past
        self._thread = threading.Thread(target=self._run, name="kfct-split-watcher", daemon=True)

    def start(self) -> SplitWatcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():  # never started (--no-watch, a failed start): nothing to join
            self._thread.join(timeout)

    def check(self) -> bool:
        """One poll: apply the file if it changed (or retry while no champion is loaded)."""
        try:
            st = self.path.stat()
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            sig = None
        not_ready = self.router.route.champion is None or self.router.route.champion.current is None
        expired = self._deadline is not None and time.time() >= self._deadline
        # Writers move aliases before they write the file: a changed file means fresh aliases too.
        aliases_changed = self._poll_aliases(force=sig != self._seen)
        changed = sig != self._seen or expired or aliases_changed
        retry_due = (not_ready or self._failing) and time.monotonic() - self._last_try >= self._backoff
        if not changed and not retry_due:
            return False
        self._last_try = time.monotonic()
        try:
            state = read_state(self.path) if sig is not None else None
        except SplitStateError as exc:
            self.router.last_error = str(exc)
            log.error("%s", exc)
            self._seen = sig
            return False
        if state is None:
            state = SplitState(model_name=self.router.name)
            state.generation = self.router.applied_generation
        if expired or state.expired():
            log.warning(
                "model %s: deferred canary v%s passed its deadline: routing it no traffic", self.router.name, state.canary_version
            )
        state = self._converge(state)
        ok = self.router.apply_state(state)
        self._seen = sig
        if ok:
            self._failing, self._backoff, self.router.next_retry = False, self.retry_seconds, 0.0
            self._deadline = state.canary_deadline if state.active_canary else None
        else:
            if self._failing:
                self._backoff = min(self.max_retry_seconds, self._backoff * 2)
            self._failing = True
            self.router.next_retry = self._last_try + self._backoff
        return ok

    def _poll_aliases(self, force: bool = False) -> bool:
        """Re-read the aliases when due (or forced); True when they changed since the last read."""
        if not self.follow_aliases:
            return False
        if not force and time.monotonic() - self._aliases_at < self.alias_poll_seconds:
            return False
        self._aliases_at = time.monotonic()
        try:
            from kfct.governance import registry

            if not self._registry_set_up:
                # The first poll comes before any load: without this it would read MLflow's default
                # store, a new ./mlflow.db in the server's working directory.
                registry.setup(attempts=1)
                self._registry_set_up = True
            now = registry.aliases(self.router.name, attempts=1)  # this loop is the retry
        except Exception as exc:  # noqa: BLE001 - registry away: keep serving what the file says
            log.warning("aliases of %s not read, following the split file: %s", self.router.name, exc)
            self._aliases = None  # never converge on a stale read: the file stands until they are read again
            return False
        changed = now != self._aliases
        self._aliases = now
        return changed

    def _converge(self, state: SplitState) -> SplitState:
        """The state as the aliases say it must be (in memory: serving writes no shared state)."""
        if not self.follow_aliases or not self._aliases:
            return state
        from dataclasses import replace

        from kfct.governance.convergence import split_changes

        changes, reasons = split_changes(
            state.champion_version, state.canary_version, state.canary_percent, state.mode, self._aliases
        )
        if not changes:
            return state
        log.warning(
            "model %s: split file disagrees with the registry aliases, following the aliases: %s",
            self.router.name,
            "; ".join(reasons),
        )
        return replace(state, **changes).validate()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # pragma: no cover - the watcher must survive anything
                log.exception("split watcher error")
            self._stop.wait(self.poll_seconds)
