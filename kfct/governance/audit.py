"""Append-only audit trail with a hash chain.

Every decision (validation result, gate decision, registration, alias moves,
rollout steps, rollbacks, drift-triggered runs) is one JSON line whose `hash`
covers its content and the previous line's hash, so editing, removing or
reordering any entry breaks verification from that point on.

It fails closed: an entry that cannot be written (disk full, read-only) raises
`AuditError` and leaves the file as it was, and the registry calls `ensure_writable`
before moving anything, so a decision that cannot be audited is not taken. On a cluster
every writer also mirrors its entries to its own segment in S3 (see below), where
`verify_mirror` (`kfct audit verify`) checks all writers' chains.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfct.errors import KfctError

GENESIS = "0" * 64


def default_path() -> Path:
    from kfct.runtime.settings import get_settings

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


class AuditError(KfctError):
    """The trail cannot take an entry: the decision it would record must not be taken."""


def _writer_id(path: Path) -> str:
    """Who writes this local trail: kept in its first entry; a new trail gets a new id.

    On a cluster every pod starts with an empty trail, so every pod is its own writer and
    mirrors to its own segment (no two writers ever upload the same object)."""
    if path.exists() and path.stat().st_size:
        with path.open() as fh:
            first = fh.readline()
        try:
            return str(json.loads(first).get("writer") or "local")
        except json.JSONDecodeError:
            return "local"
    import socket
    import uuid

    host = "".join(c for c in socket.gethostname().lower() if c.isalnum())[:24] or "host"
    return f"{host}{uuid.uuid4().hex[:8]}"


def ensure_writable(path: Path | None = None, reserve_bytes: int = 65536) -> Path:
    """Fail closed before a decision is taken: the trail's folder exists, takes writes and has room.

    Registry moves (alias, registration) call this first, so a full or read-only disk stops
    the move instead of leaving a decision nobody can audit."""
    path = Path(path) if path is not None else default_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        st = os.statvfs(path.parent)
        free = st.f_bavail * st.f_frsize
        if free < reserve_bytes:
            raise OSError(28, f"only {free} bytes free", str(path.parent))
        with path.open("a"):
            pass
    except OSError as exc:
        raise AuditError(f"audit trail {path} cannot be written ({_why(exc)}): decision not taken") from exc
    return path


def _why(exc: OSError) -> str:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: {exc.strerror or exc}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"not writable: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def record(event: str, path: Path | None = None, **fields: Any) -> dict:
    """Append one event; returns the written entry (with its chained hash).

    A trail that cannot take the line (disk full, read-only) raises `AuditError` and is left
    exactly as it was (a torn line is cut off again): the caller's decision fails with it.
    """
    import fcntl

    mirror = _mirror_uri() if path is None else None
    path = Path(path) if path is not None else default_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = path.open("a+")
    except OSError as exc:
        raise AuditError(f"audit trail {path} cannot be written ({_why(exc)}): {event} not recorded") from exc
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            prev, seq = _last_hash(path)
            entry = {
                "seq": seq,
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "event": event,
                **fields,
                "writer": _writer_id(path),
                "prev": prev,
            }
            entry["hash"] = _digest(entry)
            line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
            size = os.fstat(fh.fileno()).st_size
            try:
                _write_all(fh.fileno(), line)
                os.fsync(fh.fileno())
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fh.fileno(), size)  # no torn line: the chain stays verifiable
                raise AuditError(f"audit trail {path} cannot be written ({_why(exc)}): {event} not recorded") from exc
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    if mirror:
        _push_mirror(path, mirror)
    return entry


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# -- mirror in S3 / MinIO (cluster) -------------------------------------------------------
# Opt-in with KFCT_AUDIT_S3_URI=s3://<bucket>/audit/audit.jsonl (endpoint and keys from the
# usual KFCT_S3_* settings). The local file stays authoritative for its writer. Each writer
# (a pod, or the processes sharing one local trail) mirrors every entry as its own object,
#     s3://<bucket>/audit/segments/<writer>/<seq:010d>.json
# so two pods mirroring at the same moment never overwrite each other (before, both uploaded
# one audit.jsonl and the later upload won). An entry is written once under a fixed key:
# a retry re-uploads the same bytes. Mirror failures are logged, never raised (the entry is
# recorded locally), and the next record uploads whatever the mirror is missing.
# `verify_mirror` checks every writer's chain across all segments.
MIRROR_ENV = "KFCT_AUDIT_S3_URI"
_MIRRORED = ".mirrored"  # next to the trail: how many of its entries the mirror has


def _mirror_uri() -> str | None:
    from kfct.runtime.settings import get_settings

    uri = (get_settings().audit_s3_uri or "").strip()  # KFCT_AUDIT_S3_URI
    return uri or None


def _segments_prefix(uri: str) -> str:
    base = uri.rstrip("/")
    if base.rsplit("/", 1)[-1].endswith((".jsonl", ".json")):
        base = base.rsplit("/", 1)[0]
    return f"{base}/segments"


def _push_mirror(path: Path, uri: str) -> bool:
    """Upload every local entry the mirror does not have yet (in order); False on failure."""
    import logging

    from kfct.data import s3

    marker = path.with_name(path.name + _MIRRORED)
    writer = _writer_id(path)
    try:
        who, count = marker.read_text().split() if marker.exists() else (writer, "0")
        done = int(count) if who == writer else 0  # a new trail (new pod) starts from its first entry
    except (OSError, ValueError):
        done = 0
    prefix = _segments_prefix(uri)
    n = done
    try:
        c = None
        for entry in read(path):
            if entry["seq"] < done:
                continue
            # one try per record, no backoff: a hanging MinIO costs a decision at most one
            # Settings timeout (KFCT_NET_*); the next record uploads what this one missed
            c = c or s3.quick_client()
            body = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
            s3.put_bytes(body, f"{prefix}/{entry.get('writer', 'local')}/{entry['seq']:010d}.json", client_=c, retry=False)
            n = entry["seq"] + 1
        return True
    except Exception as exc:  # noqa: BLE001 - DataSourceError and anything the client raises
        logging.getLogger("kfct.governance.audit").warning(
            "audit mirror %s not updated (%d entries waiting, retried on the next record): %s", prefix, _count(path) - n, exc
        )
        return False
    finally:
        if n != done:
            with contextlib.suppress(OSError):
                marker.write_text(f"{writer} {n}")


def _count(path: Path) -> int:
    return sum(1 for _ in read(path))


def read_mirror(uri: str | None = None) -> dict[str, list[dict]]:
    """{writer: its entries in key order} from every segment under the mirror."""
    import tempfile

    from kfct.data import s3

    uri = uri or _mirror_uri()
    if not uri:
        raise AuditError(f"no audit mirror configured: set {MIRROR_ENV}")
    bucket, key = s3.parse_uri(_segments_prefix(uri) + "/x")
    prefix = key[:-1]
    c = s3.client()
    out: dict[str, list[dict]] = {}
    try:
        names = sorted(o.object_name for o in c.list_objects(bucket, prefix=prefix, recursive=True))
    except Exception as exc:
        raise s3._explain(exc, f"cannot list s3://{bucket}/{prefix}", None, bucket) from exc
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(names):
            writer = name[len(prefix) :].split("/", 1)[0]
            local = s3.download(f"s3://{bucket}/{name}", Path(tmp) / f"{i}.json")
            text = local.read_text()
            try:
                out.setdefault(writer, []).append(json.loads(text))
            except json.JSONDecodeError:
                out.setdefault(writer, []).append({"_unreadable": name})
    return out


def verify_mirror(uri: str | None = None) -> VerifyResult:
    """Every writer's chain across all mirrored segments: contiguous, linked, unedited."""
    segments = read_mirror(uri)
    total = 0
    for writer, entries in sorted(segments.items()):
        res = verify_entries(entries)
        if not res.ok:
            return VerifyResult(False, total + res.entries, f"writer {writer}: {res.problem}", res.line)
        total += res.entries
    return VerifyResult(True, total, writers=len(segments))


def read(path: Path | None = None) -> Iterator[dict]:
    """Entries of one trail file; without `path` and with a mirror configured, every writer's
    entries (local ones not mirrored yet included), oldest first: a fresh pod then sees the
    history other pods wrote (the retrain cooldown and `kfct audit show` need it)."""
    mirror = _mirror_uri() if path is None else None
    if mirror:
        yield from _read_all(default_path(), mirror)
        return
    path = Path(path) if path is not None else default_path()
    if not path.exists():
        return
    with path.open() as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _read_all(local: Path, uri: str) -> list[dict]:
    import logging

    seen: dict[tuple, dict] = {}
    try:
        for writer, entries in read_mirror(uri).items():
            for e in entries:
                if "_unreadable" not in e:
                    seen[(e.get("writer", writer), e.get("seq"))] = e
    except Exception as exc:  # noqa: BLE001 - the store away: the local trail is still the truth for this pod
        logging.getLogger("kfct.governance.audit").warning("audit mirror %s not read, local trail only: %s", uri, exc)
    for e in read(local):
        seen[(e.get("writer", "local"), e.get("seq"))] = e
    return sorted(seen.values(), key=lambda e: (str(e.get("ts", "")), str(e.get("writer", "")), e.get("seq", 0)))


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    problem: str = ""
    line: int | None = None
    writers: int = 1


def verify(path: Path | None = None) -> VerifyResult:
    """Walk the chain; the first broken link names the line and why."""
    path = Path(path) if path is not None else default_path()
    if not path.exists():
        return VerifyResult(True, 0)
    entries: list = []
    with path.open() as fh:
        for line in fh:
            if not line.strip():
                entries.append(None)
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                entries.append({"_unreadable": True})
    return verify_entries(entries)


def verify_entries(entries: list) -> VerifyResult:
    """One writer's entries in order (None = a blank line, skipped)."""
    prev = GENESIS
    n = 0
    for lineno, entry in enumerate(entries, start=1):
        if entry is None:
            continue
        if "_unreadable" in entry:
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
