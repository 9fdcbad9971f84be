"""Disk full under the audit trail (issue 12, item 5): it fails closed.

A decision that cannot be audited is not taken: `audit.record` raises `AuditError` with one
line and leaves the trail exactly as it was (no torn line breaking the chain), and the
registry checks the trail before moving an alias or registering a version.
"""

from __future__ import annotations

import errno
import os

import pytest

from kfct.governance import audit
from tests.faultkit.servers import fill, tiny_disk, tmpfs_available


def test_full_disk_on_a_real_tiny_filesystem(tmp_path):
    """A real tmpfs filled to the last byte (mount needs root; skipped elsewhere)."""
    if not tmpfs_available():
        pytest.skip("mounting a tmpfs needs root")
    try:
        ctx = tiny_disk(tmp_path / "tiny", "64k")
        d = ctx.__enter__()
    except OSError as exc:
        pytest.skip(str(exc))
    try:
        trail = d / "audit" / "audit.jsonl"
        audit.record("validation", path=trail, passed=True)
        before = trail.read_bytes()
        fill(d)
        with pytest.raises(audit.AuditError, match=r"disk full.*gate_decision not recorded"):
            audit.record("gate_decision", path=trail, deploy=True, reason="x" * 8000)
        assert trail.read_bytes() == before and audit.verify(trail).ok
        with pytest.raises(audit.AuditError, match="disk full.*decision not taken"):
            audit.ensure_writable(trail)
    finally:
        ctx.__exit__(None, None, None)


def test_a_torn_write_is_cut_off_simulated_enospc(tmp_path, monkeypatch):
    """Simulated ENOSPC at the file layer: the disk takes half the line, then refuses."""
    trail = tmp_path / "audit.jsonl"
    audit.record("validation", path=trail, passed=True)
    before = trail.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(audit.AuditError, match="disk full"):
        audit.record("gate_decision", path=trail, deploy=True)
    monkeypatch.setattr(os, "write", real_write)
    assert trail.read_bytes() == before  # the torn half-line was cut off again
    audit.record("gate_decision", path=trail, deploy=False)
    res = audit.verify(trail)
    assert res.ok and res.entries == 2


def test_alias_does_not_move_when_the_trail_cannot_record_it(kfct_home, monkeypatch):
    from kfct.governance import registry

    registry.setup()
    c = registry.client()
    c.create_registered_model("m")
    src = kfct_home / "src"
    src.mkdir()
    v1 = c.create_model_version("m", str(src)).version
    v2 = c.create_model_version("m", str(src)).version
    registry.set_alias("m", "champion", v1, reason="first")

    real_statvfs = os.statvfs

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(audit.default_path().parent))

    monkeypatch.setattr(os, "statvfs", full)  # simulated: the audit disk reports ENOSPC
    with pytest.raises(audit.AuditError, match="decision not taken"):
        registry.set_alias("m", "champion", v2, reason="promote")
    with pytest.raises(audit.AuditError):
        registry.delete_alias("m", "champion")
    monkeypatch.setattr(os, "statvfs", real_statvfs)
    assert registry.alias_version("m", "champion") == str(v1)  # nothing moved
    assert [e["event"] for e in audit.read()] == ["alias_moved"]
