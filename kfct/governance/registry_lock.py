"""The registry lock: one writer at a time moves a registered model's aliases.

Split from `kfct.governance.registry` (the MLflow facade), which re-exports `champion_lock`,
`AliasConflict` and `RegistryLockTimeout`: this module is the distributed-locking part. A
local SQLite store is guarded by a file lock (`filelock`, an flock the kernel drops when its
holder dies); an MLflow server by a lease kept in a registered-model tag (`_TagLease`, whose
docstring says exactly what it does and does not guarantee). `compare_and_set_alias` in
`kfct.governance.registry` is the alias move made under this lock.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from kfct.errors import KfctError

if TYPE_CHECKING:
    from pathlib import Path

    from kfct.runtime.settings import Settings

LEASE_TAG = "kfct.lease"  # registered-model tag holding the registry lease (MLflow server)


class AliasConflict(KfctError):
    """An alias is not where the caller's decision assumed it was (moved by someone else)."""

    def __init__(self, message: str, expected: str | None, actual: str | None):
        super().__init__(message)
        self.expected, self.actual = expected, actual


class RegistryLockTimeout(KfctError):
    """Another run held the registry lock for longer than `registry_lock_timeout_seconds`."""


def _is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "databricks"))


def _owner_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class _FileLock:
    """Local store: `filelock.FileLock` (an exclusive `flock` on Unix) on a file beside the store.

    The kernel drops an flock when its holder dies (kill -9 included), so a crash never leaves
    the registry locked. filelock opens the lock file truncating it, so the holder's token
    (named in a timeout) is kept in a sidecar file `<lock>.owner`."""

    kind = "file"

    def __init__(self, path: Path, timeout: float):
        from filelock import FileLock

        self.path, self.timeout = path, timeout
        self.owner = path.with_name(path.name + ".owner")
        # one holder object per `champion_lock`; never a soft (existence) lock, which a dead holder would keep
        self._lock = FileLock(path, timeout=timeout, thread_local=False, is_singleton=False, fallback_to_soft=False)

    def acquire(self) -> None:
        from filelock import Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(poll_interval=0.05)
        except Timeout:
            holder = self.owner.read_text().strip() if self.owner.exists() else ""
            raise RegistryLockTimeout(
                f"registry lock {self.path} still held by {holder or '?'} after {self.timeout:.0f} s"
            ) from None
        self.owner.write_text(_owner_token())

    def verify(self) -> None:
        return None  # an flock cannot be lost while the process lives

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()


class _TagLease:
    """MLflow server: a lease in a registered-model tag, taken by write-then-re-read.

    MLflow's REST API has no conditional write, so this is not a linearizable lock. What it
    does guarantee: a holder only proceeds after it wrote its token, waited `settle` seconds
    and read its own token back; two contenders that both write see the later token, and only
    its writer proceeds. The remaining hole is a contender whose read-to-write gap exceeds
    `settle` (a process paused for seconds between reading "free" and writing). That is why
    the champion move itself is additionally checked: the alias is compared before the write
    and re-read after it (`compare_and_set_alias`), and the lease is re-verified before the
    write; a run that finds the alias not where its gate saw it blocks or re-gates. A lease
    whose holder died expires after `registry_lease_seconds`. For a strict guarantee on a
    cluster put a Kubernetes Lease (or any store with conditional writes) in front instead.
    """

    kind = "mlflow-tag-lease"

    def __init__(self, name: str, lease_seconds: float, timeout: float, settle: float = 0.5):
        self.name, self.lease_seconds, self.timeout, self.settle = name, lease_seconds, timeout, settle
        self.token = _owner_token()

    def _read(self) -> dict | None:
        from kfct.governance.registry import client
        from kfct.runtime.retry import retry_call

        rm = retry_call(lambda: client().get_registered_model(self.name), f"read lease of {self.name}")
        raw = (rm.tags or {}).get(LEASE_TAG)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _write(self, body: str) -> None:
        from kfct.governance.registry import client

        client().set_registered_model_tag(self.name, LEASE_TAG, body)

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        from kfct.governance.registry import client
        from kfct.runtime.retry import is_transient, retry_call

        def create() -> None:
            try:
                client().create_registered_model(self.name)
            except MlflowException as exc:
                if is_transient(exc):
                    raise  # RESOURCE_ALREADY_EXISTS is fine

        retry_call(create, f"create registered model {self.name}")

    def acquire(self) -> None:
        import random

        from mlflow.exceptions import MlflowException

        from kfct.runtime.retry import retry_call

        self._ensure_model()
        deadline = time.monotonic() + self.timeout
        while True:
            cur = self._read()
            if cur is None or float(cur.get("expires", 0)) < time.time() or cur.get("owner") == self.token:
                body = json.dumps({"owner": self.token, "expires": time.time() + self.lease_seconds})
                try:
                    retry_call(functools.partial(self._write, body), f"write lease of {self.name}")
                except MlflowException as exc:
                    if "UNIQUE constraint" not in str(exc) and "IntegrityError" not in str(exc) and "Duplicate" not in str(exc):
                        raise
                    # Two first writes of the tag collided in the server's store: a contender wrote too.
                time.sleep(self.settle)
                cur = self._read()
                if cur is not None and cur.get("owner") == self.token:
                    return
            if time.monotonic() > deadline:
                raise RegistryLockTimeout(
                    f"registry lease on {self.name} still held by {(cur or {}).get('owner', '?')} after {self.timeout:.0f} s"
                )
            time.sleep(self.settle * (0.5 + random.random()))

    def verify(self) -> None:
        cur = self._read()
        if cur is None or cur.get("owner") != self.token or float(cur.get("expires", 0)) < time.time():
            raise AliasConflict(
                f"registry lease on {self.name} lost to {(cur or {}).get('owner', 'nobody')}; nothing was moved", None, None
            )

    def release(self) -> None:
        try:
            cur = self._read()
            if cur is not None and cur.get("owner") == self.token:
                from kfct.governance.registry import client

                client().delete_registered_model_tag(self.name, LEASE_TAG)
        except Exception:  # noqa: BLE001 - an unreleased lease expires by itself
            pass


RegistryLock = _TagLease | _FileLock  # what `champion_lock` yields
_held = threading.local()


@contextmanager
def champion_lock(name: str, settings: Settings | None = None) -> Iterator[RegistryLock]:
    """Serialize gate hand-off -> registration -> alias moves of one registered model.

    Local SQLite store: an flock beside the store (dies with its holder). MLflow server: a
    tag lease (see `_TagLease` for exactly what it guarantees). Yields the lock; pass it to
    `compare_and_set_alias`.
    """
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    held = getattr(_held, "locks", None)
    if held is None:
        held = _held.locks = {}
    if name in held:  # re-entered by the same thread (e.g. a promotion that deploys): already ours
        yield held[name]
        return
    lock: RegistryLock
    if _is_remote(s.tracking_uri):
        lock = _TagLease(name, s.registry_lease_seconds, s.registry_lock_timeout_seconds)
    else:
        lock = _FileLock(s.home.resolve() / "locks" / f"registry-{name}.lock", s.registry_lock_timeout_seconds)
    lock.acquire()
    held[name] = lock
    try:
        yield lock
    finally:
        held.pop(name, None)
        lock.release()
