"""Smoke test of `make bench`'s machinery: the load generator against a tiny loopback server,
the report writer on what it measured, the GPU figure file check, the CLI's argument errors.

Behaviour only: no benchmark figure is asserted (a benchmark reports, tests assert behaviour).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench/` is a top-level folder run with `python -m bench`, not an installed package
    sys.path.insert(0, str(ROOT))


class _Handler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 JSON echo: 200, or 500 when the body asks to fail; chunked on request."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        payload = json.loads(body)
        status = 500 if payload.get("fail") else 200
        out = json.dumps({"predictions": [{"probability": 0.5}], "echo": payload}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if payload.get("chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(out) // 2
            for part in (out[:half], out[half:]):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1/models/m:predict"
    srv.shutdown()
    srv.server_close()


def test_percentile_is_nearest_rank():
    from bench.load import percentile_ms

    ns = [i * 1_000_000 for i in range(1, 101)]  # 1..100 ms
    assert percentile_ms(ns, 50) == 50.0
    assert percentile_ms(ns, 99) == 99.0
    assert percentile_ms(ns, 100) == 100.0
    assert percentile_ms([7_000_000], 99) == 7.0
    assert percentile_ms([], 50) is None


def test_load_generator_counts_every_request_and_error(echo_server):
    from bench.load import run

    bodies = [json.dumps({"instances": [{"x": i}]}).encode() for i in range(5)]
    bodies += [json.dumps({"fail": True}).encode(), json.dumps({"chunked": True}).encode()]
    res = run(echo_server, bodies, concurrency=3, duration=0.6, warmup=0.1)
    s = res.summary()
    assert set(s) >= {"concurrency", "requests", "errors", "rps", "p50_ms", "p99_ms", "statuses", "wall_s"}
    assert s["concurrency"] == 3
    assert s["requests"] > 0 and s["errors"] > 0
    # every answered request is either a latency sample (2xx) or an error (the 500s)
    assert s["statuses"].get("500", 0) == s["errors"]
    assert s["statuses"]["200"] == s["requests"] == len(res.latencies_ns)
    assert s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert all(v > 0 for v in res.latencies_ns)


def test_load_generator_counts_a_refused_connection_as_errors():
    import socket

    from bench.load import run

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run(f"http://127.0.0.1:{port}/x", [b"{}"], concurrency=2, duration=0.2, warmup=0)
    assert res.ok == 0 and res.errors > 0
    assert set(res.error_kinds) <= {"ConnectionRefusedError", "OSError"}


def test_load_generator_rejects_bad_arguments():
    from bench.load import run

    with pytest.raises(ValueError, match="url"):
        run("ftp://x/y", [b"{}"], 1, 0.1)
    with pytest.raises(ValueError, match="concurrency"):
        run("http://127.0.0.1:1/x", [b"{}"], 0, 0.1)
    with pytest.raises(ValueError, match="bodies"):
        run("http://127.0.0.1:1/x", [], 1, 0.1)


def _measured_results(echo_server, tmp_path) -> dict:
    """A results record whose serving numbers come from real runs of `python -m bench.load`."""
    from bench.serving import aggregate, ratios

    bodies = tmp_path / "bodies.json"
    bodies.write_text(json.dumps([{"instances": [{"x": i}]} for i in range(4)]))
    cmd = [
        sys.executable,
        "-m",
        "bench.load",
        "--url",
        echo_server,
        "--bodies",
        str(bodies),
        "--concurrency",
        "1,4",
        "--duration",
        "0.3",
        "--warmup",
        "0.05",
    ]
    cells = {}
    for name in ("kfct", "mlflow"):
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=str(ROOT))
        assert cp.returncode == 0, cp.stderr
        rows = json.loads(cp.stdout)
        assert [r["concurrency"] for r in rows] == [1, 4]
        cells[name] = {str(r["concurrency"]): aggregate([r]) for r in rows}
    servers = {
        n: {"label": f"{n} server", "endpoint": "/v1/models/m:predict", "ready_s": 0.1, "max_abs_diff_vs_model": 0.0}
        for n in cells
    }
    serving = {
        "model": {"name": "m", "version": "1", "train_rows": 100},
        "payload": "test payload",
        "levels": [1, 4],
        "repeats": 1,
        "duration_s": 0.3,
        "warmup_s": 0.05,
        "servers": servers,
        "cells": cells,
        "ratios": ratios(cells),
        "failed": {"fastapi": "exited with code 1"},
    }
    return {
        "meta": {"date": "today", "cpu": "test cpu", "cores": 2, "wall_s": 1.0, "versions": {}},
        "sections": {
            "serving": {"status": "ok", "data": serving},
            "scoring": {"status": "failed", "reason": "RuntimeError: no disk"},
            "training": {"status": "skipped", "reason": "not in --only"},
        },
        "gpu_figure": None,
    }


def _tables(md: str) -> list[list[str]]:
    tables, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    if cur:
        tables.append(cur)
    return tables


def test_report_tables_from_measured_runs(echo_server, tmp_path):
    from bench import report

    results = _measured_results(echo_server, tmp_path)
    paths = report.write(results, tmp_path / "out")
    md = paths["md"].read_text()
    assert set(paths) == {"md", "json", "png"} and paths["png"].stat().st_size > 0
    assert json.loads(paths["json"].read_text())["sections"]["serving"]["status"] == "ok"

    for table in _tables(md):  # well-formed: header, separator, rows with the same number of cells
        widths = {line.count("|") for line in table}
        assert len(widths) == 1, table
        assert set(table[1].replace("|", "").replace(":", "").replace("-", "").strip()) == set()
    serving_table = next(t for t in _tables(md) if t[0].startswith("| server | concurrency | p50 ms | p99 ms"))
    assert len(serving_table) == 2 + 2 * 2  # two servers x two concurrency levels
    ratio_table = next(t for t in _tables(md) if t[0].startswith("| peer | concurrency | p50 ratio"))
    assert [r.split("|")[1].strip() for r in ratio_table[2:]] == ["mlflow server", "mlflow server"]
    assert "share this machine's 2 cores" in md
    assert "fastapi failed" in md
    assert "_Failed: RuntimeError: no disk_" in md
    assert "_Skipped: not in --only._" in md and "_Skipped: not requested._" in md
    assert report.NO_GPU in md


def test_gpu_figure_file_is_checked_and_shown(tmp_path):
    from bench import report
    from bench.training import GpuFigureError, load_gpu_figure

    p = tmp_path / "gpu.json"
    good = {
        "date": "2026-01-02",
        "hardware": "NVIDIA H100 80GB HBM3",
        "figures": [{"rows": 1_000_000, "seconds": 4.5, "fit_seconds": 3.0, "best_iteration": 99, "repeats": 3}],
    }
    for broken, field in [
        ({k: v for k, v in good.items() if k != "hardware"}, "'hardware'"),
        ({**good, "date": ""}, "'date'"),
        ({**good, "figures": []}, "'figures'"),
        ({**good, "figures": [{"rows": 10, "seconds": "fast"}]}, "figures[0].seconds"),
    ]:
        p.write_text(json.dumps(broken))
        with pytest.raises(GpuFigureError, match=field.replace("[", r"\[").replace("]", r"\]")):
            load_gpu_figure(p)
    p.write_text("{not json")
    with pytest.raises(GpuFigureError, match="not valid JSON"):
        load_gpu_figure(p)
    p.write_text(json.dumps(good))
    gpu = load_gpu_figure(p)
    md = report.render_markdown(
        {"meta": {}, "sections": {"training": {"status": "ok", "data": {"figures": [], "cores": 2}}}, "gpu_figure": gpu}
    )
    row = next(line for line in md.splitlines() if "GPU:" in line)
    assert "NVIDIA H100 80GB HBM3" in row and "2026-01-02" in row and "1,000,000" in row
    assert report.NO_GPU not in md

    # a figure measured later is added to existing results without measuring again
    rec = tmp_path / "res" / "results.json"
    rec.parent.mkdir()
    rec.write_text(json.dumps({"meta": {}, "sections": {}, "gpu_figure": None}))
    assert report.main(["--results", str(rec), "--gpu-figure", str(p)]) == 0
    assert "NVIDIA H100 80GB HBM3" in (tmp_path / "res" / "results.md").read_text()
    assert json.loads(rec.read_text())["gpu_figure"]["hardware"] == "NVIDIA H100 80GB HBM3"


def test_cli_names_a_bad_section(capsys):
    from bench.__main__ import main

    assert main(["--only", "serving,nonsense"]) == 2
    assert "'nonsense'" in capsys.readouterr().err
    assert main(["--gpu-figure", "/nonexistent/gpu.json", "--only", "training"]) == 2
    assert "gpu.json" in capsys.readouterr().err


def test_bench_imports_reads_each_tasks_outermost_imports_from_a_kfp_log():
    from bench.imports import top_level_imports

    log = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       10 |         10 |   kfp",  # the driver's, before any task: not counted
            "00:00:01.000 - INFO - Executing task \x1b[96m'validate-data'\x1b[0m",
            "    import time:       100 |     2000000 |   great_expectations",
            "    import time:        50 |      500000 |     great_expectations.core",
            "    import time:       300 |      300000 |   pandas",
            "00:00:05.000 - INFO - Executing task \x1b[96m'deploy-model'\x1b[0m",
            "    import time:       100 |     1500000 |   mlflow",
        ]
    )
    out = top_level_imports(log)
    assert out == {"validate-data": [(2.0, "great_expectations"), (0.3, "pandas")], "deploy-model": [(1.5, "mlflow")]}


def test_a_held_ct_runs_records_become_the_scale_sections_table(tmp_path):
    """bench.scale turns `kfct run --pod-limits --json`'s memory records into one row per step: map tasks
    (kfp.local names repeats `comp-x-2`, ...) folded, workers one by one, a kill shown as over the limit."""
    from bench import report, scale

    rec = [
        {"task": "comp-validate-part", "process": "task", "limit_mib": 2048, "peak_rss_mib": 640.0, "wall_s": 10, "exit": 0},
        {"task": "comp-validate-part-2", "process": "task", "limit_mib": 2048, "peak_rss_mib": 650.5, "wall_s": 12, "exit": 0},
        {"task": "train-model", "process": "worker 0 of 2", "limit_mib": 8192, "peak_rss_mib": 900.0, "exit": 0},
        {"task": "train-model", "process": "worker 1 of 2", "limit_mib": 8192, "peak_rss_mib": 8300.0, "exit": 137},
    ]
    summary = {
        "memory": rec,
        "dataset": {"rows": 1000},
        "total_seconds": 99,
        "validation": {"passed": True},
        "decision": {"metrics": {"roc_auc": 0.87}},
        "registered": {"version": "1"},
    }
    fig = scale.ct_run_figures(summary, "1k", "kfct run --pod-limits")
    steps = {s["step"]: s for s in fig["steps"]}
    assert steps["validate-part"]["processes"] == 2 and steps["validate-part"]["peak_rss_mib"] == 650.5
    assert steps["validate-part"]["wall_s"] == 22 and steps["validate-part"]["under_limit"]
    assert not steps["train worker 1 of 2"]["under_limit"] and steps["train worker 0 of 2"]["under_limit"]
    text = "\n".join(report.render_ct_run(fig))
    assert "**a process was over its limit**" in text and "| train worker 1 of 2 | 1 | 8,300 | 8,192 |" in text
