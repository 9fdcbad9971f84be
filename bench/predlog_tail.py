"""The prediction log's cost to the serving tail (issue 22, item 6): `python -m bench --only tail`.

Three servers on the same registered model, all on 127.0.0.1, one worker each:
- `log-on`: `python -m kfct.serving` as `kfct serve` runs it (prediction log on, flushed every 5 s);
- `log-off`: the same with `--no-prediction-log`;
- `mlserver`: MLServer 1.7.1's XGBoost runtime (`bench.peers`), for the requests/s ratio.

The load generator is `wrk` (Debian package; C, one thread), not the code under test: one
connection, one single-instance body, `duration` seconds per cell (30 s in the full plan, so
each cell holds about six flushes of the log and the GC passes). Cells are interleaved: each
round measures every server in turn, the order rotating from round to round, so the drift of
a shared machine's load spreads over all three; the 1-minute load average is recorded at the
start of each cell. Targets (issue 22): with the log on, p99 <= 3 x p50; requests/s not below
1.9 x MLServer's in the same run. Reported as measured, never asserted.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import urllib.request

from bench import peers
from bench.model import Context, ensure_registered

VARIANTS = ("log-on", "log-off", "mlserver")
TARGET_TAIL = 3.0  # p99 <= 3 x p50 with the log on
TARGET_RPS_RATIO = 1.9  # kfct requests/s over MLServer's at one connection (bench/results.md, 2026-11-24)


def run(ctx: Context, rounds: int = 3, duration: float = 30.0, warmup: float = 3.0) -> dict:
    """Start the three servers, warm them (the log's encoder child starts on the first flush),
    measure `rounds` interleaved rounds of wrk cells, stop them; medians and ratios."""
    from bench import serving, wrk
    from kfct.config import load_config

    if not wrk.available():
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    reg = ensure_registered(ctx)
    record = serving.request_records(load_config(), n=8)[0]
    bodies = {
        "log-on": {"instances": [record]},
        "log-off": {"instances": [record]},
        "mlserver": peers.mlserver_bodies(reg.model, [record])[0],
    }
    expected = reg.model.predict_proba_records([record])
    started: dict[str, peers.ServerProcess] = {}
    measured = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": os.getloadavg()[0]}
    try:
        for name, srv in _servers(ctx, reg).items():
            ctx.log(f"  starting {name}: {srv.label} ...")
            srv.start()
            srv.wait_ready()
            serving.check_same_model(srv, [record], expected, [bodies[name]] if name == "mlserver" else None)
            started[name] = srv
        for name, srv in started.items():
            wrk.run(srv.predict_url, bodies[name], 1, warmup, ctx.workdir)
        _wait_first_file(ctx, timeout=30.0)
        cells = _measure(ctx, started, bodies, rounds, duration)
        log_status = _log_status(started["log-on"])
    finally:
        for srv in started.values():
            srv.stop()
    return summarize(
        cells,
        rounds=rounds,
        duration=duration,
        warmup=warmup,
        wrk_version=wrk.version(),
        log_status=log_status,
        model={"name": reg.name, "version": reg.version},
        measured={**measured, "load_after": os.getloadavg()[0]},
    )


def _servers(ctx: Context, reg) -> dict[str, peers.ServerProcess]:
    bin_dir = peers.ensure_mlserver_venv(ctx.cache_dir, ctx.log)
    return {
        "log-on": peers.kfct_server(ctx.home, ctx.tracking_uri, reg.name, ctx.logs, log_name="kfct-log-on.log"),
        "log-off": peers.kfct_server(
            ctx.home,
            ctx.tracking_uri,
            reg.name,
            ctx.logs,
            log_name="kfct-log-off.log",
            extra_args=("--no-prediction-log",),
            label="kfct --no-prediction-log",
        ),
        "mlserver": peers.mlserver_server(bin_dir, reg.model, reg.name, reg.version, ctx.workdir, ctx.logs),
    }


def _wait_first_file(ctx: Context, timeout: float) -> None:
    """Until the log-on server wrote a parquet file: its encoder is up before anything is measured."""
    deadline = time.monotonic() + timeout
    root = ctx.home / "predictions"
    while time.monotonic() < deadline:
        if any(root.glob("date=*/part-*.parquet")):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the log-on server wrote no prediction-log file within {timeout:.0f} s")


def _measure(ctx: Context, started: dict, bodies: dict, rounds: int, duration: float) -> dict[str, list]:
    from bench import wrk

    cells: dict[str, list] = {name: [] for name in started}
    names = list(started)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate: no server always goes first
        for name in order:
            load = round(os.getloadavg()[0], 2)
            c = wrk.run(started[name].predict_url, bodies[name], 1, duration, ctx.workdir)
            c.update(round=r + 1, load_1m=load, p99_over_p50=round(c["p99_ms"] / c["p50_ms"], 2) if c["p50_ms"] else None)
            cells[name].append(c)
            ctx.log(
                f"  round {r + 1}/{rounds} {name:8s} p50 {c['p50_ms']:.3f} p99 {c['p99_ms']:.3f} "
                f"p99.9 {c['p999_ms']:.3f} ms  {c['rps']:,.0f} req/s  p99/p50 {c['p99_over_p50']}  load {load}"
            )
    return cells


def _log_status(srv: peers.ServerProcess) -> dict | None:
    """The log-on server's own account of its log (rows written, dropped) after the cells."""
    try:
        with urllib.request.urlopen(srv.base_url + "/kfct/stats", timeout=10) as r:
            return json.loads(r.read()).get("prediction_log")
    except (OSError, ValueError):
        return None


def _median(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return round(statistics.median(vals), 4) if vals else None


def summarize(cells: dict[str, list], **info) -> dict:
    """Per server: medians over its cells (p50, p99, p99.9, req/s, p99/p50) with their ranges; per
    round: each kfct variant's requests/s over MLServer's in that round; the targets' verdicts."""
    out: dict = {"cells": cells, "medians": {}, "ratios": {}, **info}
    for name, cs in cells.items():
        out["medians"][name] = {
            k: _median([c.get(k) for c in cs]) for k in ("p50_ms", "p99_ms", "p999_ms", "rps", "p99_over_p50", "load_1m")
        }
        out["medians"][name]["errors"] = sum(c.get("errors", 0) for c in cs)
        out["medians"][name]["p99_over_p50_range"] = (
            [min(c["p99_over_p50"] for c in cs), max(c["p99_over_p50"] for c in cs)] if cs else None
        )
    ml = cells.get("mlserver") or []
    for name in ("log-on", "log-off"):
        per_round = [round(a["rps"] / b["rps"], 3) for a, b in zip(cells.get(name) or [], ml, strict=False) if b.get("rps")]
        out["ratios"][name] = {"per_round": per_round, "median": _median(per_round)}
    on = out["medians"].get("log-on") or {}
    tail = on.get("p99_over_p50")
    ratio = out["ratios"].get("log-on", {}).get("median")
    out["targets"] = {
        "tail": {
            "target": TARGET_TAIL,
            "median": tail,
            "met": None if tail is None else tail <= TARGET_TAIL,
            "cells_met": sum(1 for c in cells.get("log-on") or [] if c["p99_over_p50"] <= TARGET_TAIL),
            "cells": len(cells.get("log-on") or []),
        },
        "rps_ratio": {"target": TARGET_RPS_RATIO, "median": ratio, "met": None if ratio is None else ratio >= TARGET_RPS_RATIO},
    }
    return out


def render(sec: dict, title: str) -> list[str]:
    """The section in results.md: how it was measured, the per-server medians, every cell, verdicts."""
    lines = [f"## {title}", ""]
    if sec.get("status") == "skipped":
        return [*lines, f"_Skipped: {sec.get('reason', '')}._", ""]
    if sec.get("status") == "failed":
        return [*lines, f"_Failed: {sec.get('reason', '')}_", ""]
    d = sec.get("data") or {}
    m = d.get("model") or {}
    lines.append(
        f"`wrk {d.get('wrk_version', '')}` (one thread, **one connection**), the same single-instance body, "
        f"{d.get('duration_s', d.get('duration'))} s per cell after a {d.get('warmup')} s warm-up, "
        f"{d.get('rounds')} interleaved round{'' if d.get('rounds') == 1 else 's'} (the order rotates each round); "
        "servers on 127.0.0.1 with "
        f"{m.get('name')} v{m.get('version')}: kfct with its prediction log on (`kfct serve`'s default, a flush "
        "every 5 s), kfct with `--no-prediction-log`, MLServer 1.7.1's XGBoost runtime. wrk and the servers "
        "share the machine's cores with other work: the 1-min load average at each cell's start is shown."
    )
    ms = d.get("measured")
    if ms:
        lines += [
            "",
            f"This section measured {ms.get('date')}, 1-min load average {ms.get('load_before', 0):.2f} at "
            f"its start and {ms.get('load_after', 0):.2f} at its end.",
        ]
    lines += [
        "",
        "| server | p50 ms | p99 ms | p99.9 ms | p99 ÷ p50 (range) | requests/s | ÷ MLServer req/s | errors | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, med in (d.get("medians") or {}).items():
        rng = med.get("p99_over_p50_range") or [None, None]
        ratio = (d.get("ratios") or {}).get(name, {}).get("median")
        lines.append(
            f"| {name} | {_f(med['p50_ms'], 3)} | {_f(med['p99_ms'], 2)} | {_f(med['p999_ms'], 2)} | "
            f"{_f(med['p99_over_p50'], 1)} ({_f(rng[0], 1)}–{_f(rng[1], 1)}) | {_f(med['rps'], 0)} | "
            f"{_f(ratio, 2)} | {med['errors']} | {_f(med['load_1m'], 1)} |"
        )
    lines += [
        "",
        "Medians over the cells; every cell, in the order measured:",
        "",
        "| round | server | load | p50 ms | p99 ms | p99.9 ms | max ms | p99 ÷ p50 | requests/s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = sorted(((c["round"], name, c) for name, cs in (d.get("cells") or {}).items() for c in cs), key=lambda t: t[0])
    for rnd, name, c in rows:
        lines.append(
            f"| {rnd} | {name} | {_f(c.get('load_1m'), 2)} | {_f(c['p50_ms'], 3)} | {_f(c['p99_ms'], 2)} | "
            f"{_f(c['p999_ms'], 2)} | {_f(c.get('max_ms'), 1)} | {_f(c['p99_over_p50'], 1)} | "
            f"{_f(c['rps'], 0)} |"
        )
    t = d.get("targets") or {}
    tail, rps = t.get("tail") or {}, t.get("rps_ratio") or {}
    lines += [
        "",
        f"Targets (issue 22), log on: p99 ≤ {tail.get('target')} × p50 — median {_f(tail.get('median'), 1)}×, "
        f"{_met(tail.get('met'))} ({tail.get('cells_met')} of {tail.get('cells')} cells); requests/s ≥ "
        f"{rps.get('target')} × MLServer's — median of the rounds' ratios {_f(rps.get('median'), 2)}, "
        f"{_met(rps.get('met'))}.",
    ]
    st = d.get("log_status")
    if st:
        lines.append(
            f"The log-on server's log after the cells: {st.get('rows_written', 0):,} rows written in "
            f"{st.get('files_written', 0)} files, {st.get('dropped', 0)} dropped, {st.get('queued', 0)} "
            f"queued, backlog {st.get('backlog_rows', 0)} rows."
        )
    return [*lines, ""]


def _f(v, digits: int) -> str:
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def _met(v) -> str:
    return "—" if v is None else "**met**" if v else "**not met**"


def write(data: dict, out_dir) -> dict:
    """`tail.md` / `tail.json`: this section on its own (kept when other sections rerun)."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from bench.report import TITLES

    paths = {"md": out / "tail.md", "json": out / "tail.json"}
    paths["md"].write_text("\n".join(render({"status": "ok", "data": data}, TITLES["tail"])).rstrip() + "\n")
    paths["json"].write_text(json.dumps(data, indent=1, default=str) + "\n")
    return paths
