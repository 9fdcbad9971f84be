"""Which local model servers serve a model: a registration file per live `kfct serve`.

On a cluster Prometheus scrapes every pod; locally two `kfct serve` on one home (two ports)
both take traffic, and a rollout that read only one of them judged half the evidence. Each
server writes `<home>/serving/<model>/replicas/<pid>-<port>.json` once it listens and removes
it when it stops; `discover` lists the ones whose process is still alive (a crashed server's
file is ignored, and removed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _dir(model_name: str, home: str | Path) -> Path:
    return Path(home) / "serving" / model_name / "replicas"


def register(model_name: str, url: str, home: str | Path, pid: int | None = None) -> Path:
    pid = os.getpid() if pid is None else pid
    d = _dir(model_name, home)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{pid}-{url.rsplit(':', 1)[-1].strip('/')}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": pid}))
    os.replace(tmp, path)
    return path


def unregister(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def discover(model_name: str, home: str | Path) -> list[str]:
    """URLs of the live servers registered for `model_name` under `home` (sorted, no duplicates)."""
    d = _dir(model_name, home)
    urls = set()
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            entry = json.loads(p.read_text())
            pid, url = int(entry["pid"]), str(entry["url"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(pid):
            urls.add(url)
        else:
            p.unlink(missing_ok=True)
    return sorted(urls)
