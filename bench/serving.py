"""Serving: kfct's KServe server against `mlflow models serve`, MLServer's XGBoost runtime and the
case study's FastAPI app; every cell lasts long enough (30 s in the full plan) to include the
server's background work (prediction-log flushes every 5 s, GC), and reports p50/p99/p99.9;
kfct's cells are cross-checked with wrk when it is installed.

Same registered version, same single-instance V1 body (`{"instances": [one customer]}`,
256 distinct customers in rotation), same closed-loop load at concurrency 1 and 16,
one worker each, all on 127.0.0.1. Servers start one after another (their start-up
time is reported), then every repeat measures each server in turn, so slow drift in
the machine's load (other processes share its two cores) spreads over all of them.
The load generator (`bench.load`) is a separate process. Before measuring, each
server's answers for a few customers are compared with the model's own
probabilities: the servers must be serving the same model.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench import peers
from bench.model import Context, ensure_registered

if TYPE_CHECKING:
    from kfct.config import RunConfig

LEVELS = (1, 16)
BODY_SEED = 2024
N_BODIES = 256
SERVERS = ("kfct", "mlflow", "fastapi", "mlserver")


def request_records(cfg: RunConfig, n: int = N_BODIES, seed: int = BODY_SEED) -> list[dict]:
    """Feature records as a client sends them: id + features, NaN as null, no label."""
    from kfct.data.datagen import generate

    df = generate(max(n, 10), seed=seed).head(n).drop(columns=[cfg.dataset.label])
    df = df.astype(object).where(df.notna(), None)
    return df.to_dict("records")


def aggregate(runs: list[dict]) -> dict:
    """Medians over repeats of one (server, concurrency) cell; errors and requests summed."""

    def med(key):
        vals = [r[key] for r in runs if r.get(key) is not None]
        return round(statistics.median(vals), 4) if vals else None

    def spread(key):
        vals = [r[key] for r in runs if r.get(key) is not None]
        return [min(vals), max(vals)] if vals else None

    return {
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "p999_ms": med("p999_ms"),
        "rps": med("rps"),
        "errors": sum(int(r.get("errors", 0)) for r in runs),
        "requests": sum(int(r.get("requests", 0)) for r in runs),
        "repeats": len(runs),
        "p50_ms_range": spread("p50_ms"),
        "p99_ms_range": spread("p99_ms"),
        "rps_range": spread("rps"),
        "error_kinds": _merge([r.get("error_kinds", {}) for r in runs]),
    }


def _merge(dicts: list[dict]) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def ratios(cells: dict, base: str = "kfct") -> dict:
    """kfct ÷ peer for p50, p99 (lower is better) and requests/s (higher is better)."""
    out = {}
    for peer in cells:
        if peer == base:
            continue
        for level, cell in cells[peer].items():
            mine = cells.get(base, {}).get(level)
            if not mine:
                continue
            r = {}
            for key in ("p50_ms", "p99_ms", "rps"):
                a, b = mine.get(key), cell.get(key)
                r[key] = round(a / b, 3) if a and b else None
            out.setdefault(peer, {})[level] = r
    return out


def run_load(url: str, bodies_path: Path, levels, duration: float, warmup: float) -> list[dict]:
    """One `bench.load` process against one server, all concurrency levels in order."""
    cmd = [
        sys.executable,
        "-m",
        "bench.load",
        "--url",
        url,
        "--bodies",
        str(bodies_path),
        "--concurrency",
        ",".join(str(c) for c in levels),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
    ]
    timeout = len(levels) * (duration + warmup + 25) + 30
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(Path(__file__).resolve().parents[1]))
    if cp.returncode != 0:
        raise RuntimeError(f"load generator failed ({cp.returncode}): {cp.stderr.strip()[-800:]}")
    return json.loads(cp.stdout.strip().splitlines()[-1])


def check_same_model(server: peers.ServerProcess, records: list[dict], expected, bodies=None) -> float:
    """Max |p_server - p_model| over a few customers; raises when a server answers wrongly."""
    got = []
    for i, rec in enumerate(records):
        body = bodies[i] if bodies is not None else {"instances": [rec]}
        status, payload = peers.http_json("POST", server.predict_url, body)
        if status != 200:
            raise RuntimeError(f"{server.label} answered {status} to a valid request: {str(payload)[:300]}")
        got.extend(peers.positive_probability(server.name, payload))
    diff = max(abs(a - float(b)) for a, b in zip(got, expected))
    if diff > 1e-4:
        raise RuntimeError(f"{server.label} does not serve the benchmark model: probabilities differ by {diff:.2e}")
    return diff


def run(ctx: Context, repeats: int = 3, duration: float = 3.0, warmup: float = 0.5, levels=LEVELS, servers=SERVERS) -> dict:
    """Start each server (one failing is reported, the others still measured), check they serve the same
    model, measure them in turn `repeats` times, cross-check kfct with wrk; stop them all."""
    import os
    import time as _time

    from kfct.config import feature_columns, load_config

    measured = {"date": _time.strftime("%Y-%m-%d %H:%M UTC", _time.gmtime()), "load_before": os.getloadavg()[0]}
    cfg = load_config()
    reg = ensure_registered(ctx)
    records = request_records(cfg)
    bodies_for = write_bodies(ctx, reg, records)
    wrk_out: dict = {}
    started: list[peers.ServerProcess] = []
    failed: dict[str, str] = {}
    try:
        info = start_servers(ctx, reg, servers, records, bodies_for, started, failed)
        raw = measure(ctx, started, bodies_for, repeats, levels, duration, warmup, failed)
        wrk_out = cross_check_wrk(ctx, [s for s in started if s.name == "kfct"], records[0], levels, duration)
    finally:
        for srv in started:
            srv.stop()
    cells = {
        name: {str(level): aggregate([row for rep in reps for row in rep if row["concurrency"] == level]) for level in levels}
        for name, reps in raw.items()
    }
    return {
        "model": {"name": reg.name, "version": reg.version, "train_rows": reg.train_rows},
        "payload": f"V1 JSON, 1 instance per request (id + {len(feature_columns(cfg))} features), "
        f"{len(records)} distinct customers in rotation (MLServer: the same customers encoded by the "
        "model's encoder in the client, one V2 FP32 row; its `predict` output is the probability)",
        "levels": list(levels),
        "repeats": repeats,
        "duration_s": duration,
        "warmup_s": warmup,
        "servers": info,
        "cells": cells,
        "ratios": ratios(cells),
        "failed": failed,
        "raw": raw,
        "wrk": wrk_out,
        "measured": {**measured, "load_after": os.getloadavg()[0]},
    }


def write_bodies(ctx: Context, reg, records: list[dict]) -> dict[str, tuple[Path, list]]:
    """The request bodies each server gets, on disk for the load generator: {server: (path, bodies)};
    the V1 bodies under "default", MLServer's V2 rows (encoded in the client) under "mlserver"."""
    v1 = [{"instances": [r]} for r in records]
    v1_path = ctx.workdir / "serving-bodies.json"
    v1_path.write_text(json.dumps(v1))
    ml_bodies = peers.mlserver_bodies(reg.model, records)
    ml_bodies_path = ctx.workdir / "serving-bodies-mlserver.json"
    ml_bodies_path.write_text(json.dumps(ml_bodies))
    return {"default": (v1_path, v1), "mlserver": (ml_bodies_path, ml_bodies)}


def server_factories(ctx: Context, reg) -> dict:
    """name -> a function that builds (does not start) that server on the registered version."""

    def mlserver():
        bin_dir = peers.ensure_mlserver_venv(ctx.cache_dir, ctx.log)
        return peers.mlserver_server(bin_dir, reg.model, reg.name, reg.version, ctx.workdir, ctx.logs)

    return {
        "mlserver": mlserver,
        "kfct": lambda: peers.kfct_server(ctx.home, ctx.tracking_uri, reg.name, ctx.logs),
        "mlflow": lambda: peers.mlflow_server(ctx.home, ctx.tracking_uri, reg.name, reg.version, ctx.logs),
        "fastapi": lambda: peers.fastapi_server(ctx.home, ctx.tracking_uri, reg.name, reg.version, ctx.logs),
    }


def start_servers(
    ctx: Context, reg, names, records: list[dict], bodies_for: dict, started: list, failed: dict
) -> dict[str, dict]:
    """Start the servers one after another, each checked against the model's own probabilities; those
    that run are appended to `started` as they come up (the caller stops them), those that cannot go to
    `failed`. Returns what the report says of each: label, endpoint, start-up time, largest difference."""
    expected = reg.model.predict_proba_records([{k: v for k, v in r.items()} for r in records[:8]])
    factories = server_factories(ctx, reg)
    info: dict[str, dict] = {}
    for name in names:
        try:
            srv = factories[name]()
        except Exception as exc:  # noqa: BLE001 - e.g. MLServer's own virtualenv cannot be built
            failed[name] = str(exc)
            ctx.log(f"  {name} FAILED: {str(exc).splitlines()[0] if str(exc) else exc}")
            continue
        ctx.log(f"  starting {srv.label} ...")
        try:
            srv.start()
            ready = srv.wait_ready()
            diff = check_same_model(srv, records[:8], expected, bodies_for[name][1][:8] if name in bodies_for else None)
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported, the others still are
            srv.stop()
            failed[name] = str(exc)
            ctx.log(f"  {srv.label} FAILED: {str(exc).splitlines()[0]}")
            continue
        started.append(srv)
        info[name] = {"label": srv.label, "endpoint": srv.predict_path, "ready_s": ready, "max_abs_diff_vs_model": diff}
        ctx.log(f"  {srv.label} ready in {ready:.1f} s at {srv.predict_url}")
    return info


def measure(
    ctx: Context, started: list, bodies_for: dict, repeats: int, levels, duration: float, warmup: float, failed: dict
) -> dict[str, list]:
    """Every repeat measures each server in turn (slow drift in the machine's load spreads over all of
    them); {server: [one list of rows per repeat]}; a failed load run goes to `failed`."""
    raw: dict[str, list] = {}
    for r in range(repeats):
        for srv in started:
            ctx.log(f"  repeat {r + 1}/{repeats}: {srv.label} at concurrency {', '.join(map(str, levels))} ({duration:g} s each)")
            try:
                rows = run_load(srv.predict_url, bodies_for.get(srv.name, bodies_for["default"])[0], levels, duration, warmup)
            except Exception as exc:  # noqa: BLE001 - a peer's failed run is reported, the others still run
                failed.setdefault(srv.name, f"load run failed: {exc}")
                continue
            raw.setdefault(srv.name, []).append(rows)
    return raw


def cross_check_wrk(ctx: Context, servers: list, record: dict, levels, duration: float) -> dict:
    """kfct's cells again with wrk (an independent client), when installed."""
    from bench import wrk

    if not wrk.available():
        return {"skipped": "wrk is not installed (apt-get install -y wrk)"}
    out: dict = {"version": wrk.version(), "duration_s": duration, "cells": {}}
    for srv in servers:
        for level in levels:
            ctx.log(f"  wrk: {srv.label} at {level} connection(s) ({duration:g} s)")
            try:
                out["cells"].setdefault(srv.name, {})[str(level)] = wrk.run(
                    srv.predict_url, {"instances": [record]}, level, duration, ctx.workdir
                )
            except Exception as exc:  # noqa: BLE001 - a peer's failed cell is reported, the others still run
                out.setdefault("errors", []).append(f"{srv.name} c={level}: {exc}")
    return out
