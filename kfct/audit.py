"""Append-only audit trail with a hash chain.

Every decision (validation result, gate decision, registration, alias moves,
rollout steps, rollbacks, drift-triggered runs) is one JSON line whose `hash`
covers its content and the previous line's hash, so editing, removing or
reordering any entry breaks verification from that point on.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

GENESIS = "0" * 64


def default_path() -> Path:
    from kfct.settings import get_settings

    return get_settings().home / "audit" / "audit.jsonl"


def _digest(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _last_hash(path: Path) -> tuple[str, int]:
    if not path.exists() or path.stat().st_size == 0:
        return GENESIS, 0
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 65536))
        tail = fh.read().splitlines()
    last = json.loads(tail[-1])
    return last["hash"], int(last["seq"]) + 1


def record(event: str, path: Path | None = None, **fields: Any) -> dict:
    """Append one event; returns the written entry (with its chained hash)."""
    import fcntl

    mirror = _mirror_uri() if path is None else None
    path = Path(path) if path is not None else default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if mirror and (not path.exists() or path.stat().st_size == 0):
        _pull_mirror(mirror, path)  # a fresh pod continues the chain instead of starting a new one
    with path.open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            prev, seq = _last_hash(path)
            entry = {
                "seq": seq,
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "event": event,
                **fields,
                "prev": prev,
            }
            entry["hash"] = _digest(entry)
            fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
            fh.flush()
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    if mirror:
        _push_mirror(path, mirror)
    return entry


# -- mirror in S3 / MinIO (cluster) -------------------------------------------------------
# Opt-in with KFCT_AUDIT_S3_URI=s3://<bucket>/audit/audit.jsonl (endpoint and keys from the
# usual KFCT_S3_* settings). The local file stays authoritative: after each append it is
# copied to the mirror; a process that starts without a local trail (a pipeline pod) first
# fetches the mirror so the chain goes on. Mirror failures are logged, never raised: an
# unreachable store must not stop a decision from being recorded locally. Two pods writing
# at the same moment can still race (the later upload wins); `verify` on the mirror shows it.
MIRROR_ENV = "KFCT_AUDIT_S3_URI"


def _mirror_uri() -> str | None:
    from kfct.settings import get_settings

    uri = (get_settings().audit_s3_uri or "").strip()  # KFCT_AUDIT_S3_URI
    return uri or None


def _pull_mirror(uri: str, path: Path) -> bool:
    import logging
    import tempfile

    from kfct import s3
    from kfct.errors import DataSourceError

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = s3.download(uri, Path(tmp) / "audit.jsonl")
            if not path.exists() or path.stat().st_size == 0:
                path.write_bytes(local.read_bytes())
        return True
    except DataSourceError as exc:
        if "object not found" not in str(exc):
            logging.getLogger("kfct.audit").warning("audit mirror %s not fetched: %s", uri, exc)
        return False


def _push_mirror(path: Path, uri: str) -> bool:
    import logging

    from kfct import s3

    try:
        s3.upload(path, uri)
        return True
    except Exception as exc:  # DataSourceError and anything the client raises
        logging.getLogger("kfct.audit").warning("audit mirror %s not updated: %s", uri, exc)
        return False


def read(path: Path | None = None) -> Iterator[dict]:
    path = Path(path) if path is not None else default_path()
    if not path.exists():
        return
    with path.open() as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    problem: str = ""
    line: int | None = None


def verify(path: Path | None = None) -> VerifyResult:
    """Walk the chain; the first broken link names the line and why."""
    path = Path(path) if path is not None else default_path()
    if not path.exists():
        return VerifyResult(True, 0)
    prev = GENESIS
    n = 0
    with path.open() as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                return VerifyResult(False, n, "line is not valid JSON", lineno)
            if entry.get("seq") != n:
                return VerifyResult(False, n, f"sequence {entry.get('seq')} where {n} expected "
                                    "(removed or reordered entry)", lineno)
            if entry.get("prev") != prev:
                return VerifyResult(False, n, "previous-hash link broken (removed or reordered entry)", lineno)
            if _digest(entry) != entry.get("hash"):
                return VerifyResult(False, n, "content does not match its hash (edited entry)", lineno)
            prev = entry["hash"]
            n += 1
    return VerifyResult(True, n)


def history(model_name: str | None = None, version: str | None = None, path: Path | None = None) -> list[dict]:
    out = []
    for e in read(path):
        if model_name and e.get("model_name") not in (None, model_name):
            continue
        if version and str(e.get("version", "")) not in ("", str(version)):
            continue
        out.append(e)
    return out
