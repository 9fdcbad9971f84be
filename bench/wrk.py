"""Cross-check of the serving cells with an independent load generator: `wrk` (Debian package).

`bench/load.py` is ours; a tail that only our client sees (or hides) would be a client
artefact. wrk (C, epoll, one thread here) posts the same single-instance body over
keep-alive connections for the same duration and reports p50/p99/p99.9 from its own
histogram (a Lua `done` hook prints them as JSON). Skipped, with the reason, when `wrk`
is not installed (`apt-get install -y wrk`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("%(body)s", "r")
wrk.body = f:read("*a")
f:close()
function done(summary, latency, requests)
  io.write(string.format('KFCTJSON {"requests": %%d, "duration_us": %%d, "errors": %%d, "p50_us": %%d, ' ..
    '"p99_us": %%d, "p999_us": %%d, "max_us": %%d}\\n', summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status +
    summary.errors.timeout, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.max))
end
"""


def available() -> str | None:
    return shutil.which("wrk")


def version() -> str:
    try:
        cp = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        return (cp.stdout or cp.stderr).split()[1] if (cp.stdout or cp.stderr).split() else ""
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


def run(url: str, body: dict, connections: int, duration: float, workdir: Path) -> dict:
    """One wrk run: {p50_ms, p99_ms, p999_ms, rps, requests, errors}."""
    body_path = workdir / "wrk-body.json"
    body_path.write_text(json.dumps(body))
    script = workdir / "wrk-post.lua"
    script.write_text(LUA % {"body": str(body_path)})
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s", str(script), url]
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in cp.stdout.splitlines() if ln.startswith("KFCTJSON ")), None)
    if cp.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({cp.returncode}): {(cp.stderr or cp.stdout)[-400:]}")
    r = json.loads(line[len("KFCTJSON ") :])
    secs = r["duration_us"] / 1e6
    return {
        "p50_ms": r["p50_us"] / 1e3,
        "p99_ms": r["p99_us"] / 1e3,
        "p999_ms": r["p999_us"] / 1e3,
        "max_ms": r["max_us"] / 1e3,
        "requests": r["requests"],
        "errors": r["errors"],
        "rps": round(r["requests"] / secs, 1) if secs else 0.0,
    }
