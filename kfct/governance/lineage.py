"""Lineage every artifact carries: dataset sha256, code version, MLflow run, pipeline run."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Git commit of the checkout (or KFCT_CODE_VERSION baked into an image)."""
    from kfct.runtime.settings import get_settings

    baked = get_settings().code_version  # KFCT_CODE_VERSION
    if baked:
        return baked
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        if out.returncode == 0 and out.stdout.strip():
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).resolve().parent,
            ).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from kfct import __version__

    return f"v{__version__}"
