"""The registry lock is a module of its own (kfct.governance.registry_lock) on `filelock`, apart from the MLflow facade.

A holder in another process keeps a second taker out until the timeout, which names the holder;
the kernel drops the lock when the holder is killed (kill -9), so a crash never leaves it held.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

HOLDER = r"""
import sys, time
from pathlib import Path
from kfct.governance.registry_lock import _FileLock
lock = _FileLock(Path(sys.argv[1]), timeout=5)
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def _holder(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_the_facade_holds_no_locking_code():
    text = (ROOT / "kfct" / "governance" / "registry.py").read_text()
    assert "class _FileLock" not in text and "class _TagLease" not in text and "fcntl" not in text
    from kfct.governance import registry, registry_lock

    assert registry.champion_lock is registry_lock.champion_lock
    assert registry.AliasConflict is registry_lock.AliasConflict


def test_a_held_lock_times_out_naming_its_holder_and_is_freed_by_kill_9(tmp_path):
    from kfct.governance.registry_lock import RegistryLockTimeout, _FileLock

    path = tmp_path / "locks" / "registry-m.lock"
    proc = _holder(path)
    try:
        t0 = time.monotonic()
        with pytest.raises(RegistryLockTimeout, match=rf"still held by \S+:{proc.pid}:"):
            _FileLock(path, timeout=0.5).acquire()
        assert 0.4 < time.monotonic() - t0 < 5
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    lock = _FileLock(path, timeout=5)
    lock.acquire()  # the dead holder's flock went with it
    lock.release()


def test_champion_lock_is_reentrant_per_thread_and_exclusive_across_processes(tmp_path, monkeypatch):
    from kfct.governance.registry_lock import RegistryLockTimeout, champion_lock
    from kfct.runtime.settings import Settings

    s = Settings(home=tmp_path, registry_lock_timeout_seconds=0.3)
    with champion_lock("m", s) as outer, champion_lock("m", s) as inner:
        assert inner is outer and outer.kind == "file"
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys\nfrom kfct.governance.registry_lock import _FileLock\n"
                "from pathlib import Path\n_FileLock(Path(sys.argv[1]), timeout=0.3).acquire()",
                str(tmp_path.resolve() / "locks" / "registry-m.lock"),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert proc.returncode == 1 and RegistryLockTimeout.__name__ in proc.stderr
