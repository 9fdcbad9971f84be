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

    path = Path(path) if path is not None else default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
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
    return entry


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
                return VerifyResult(False, n, f"sequence {entry.get('seq')} where {n} expected (removed or reordered entry)", lineno)
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
