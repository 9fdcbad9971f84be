"""The prediction log's cost to the serving tail (issue 22, item 6), measured with wrk.

    python -m bench.predlog_tail [--duration 30] [--rounds 2] [--json out.json]

One connection, single-instance V1 bodies, `duration` seconds per cell; three servers in turn,
interleaved over `rounds` (same build, same machine, same model):
- `no-log`: `--no-prediction-log`;
- `log-in-process`: the log on, its batches encoded on a thread of the serving process (before);
- `log-child`: the log on, batches encoded in a child process (`kfct.serving.predlog_encoder`).
Target: p99 <= 3 x p50 with the log on. The model is the serving test kit's (a small real
xgboost model registered in a temporary MLflow store).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = """
import sys
from kfct.serving.server import ServerOptions, serve
log, child, port = sys.argv[1] == "1", sys.argv[2] == "1", int(sys.argv[3])
sys.exit(serve(ServerOptions(host="127.0.0.1", port=port, log_predictions=log, log_encode_in_child=child, watch=False)))
"""

VARIANTS = {"no-log": ("0", "0"), "log-in-process": ("1", "0"), "log-child": ("1", "1")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from bench import wrk

    if not wrk.available():
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    from tests.faultkit.servers import free_port
    from tests.servingkit import MODEL_NAME, build_registry, records

    work = Path(tempfile.mkdtemp(prefix="kfct-predlog-tail-"))
    home = work / "home"
    os.environ["KFCT_HOME"] = str(home)
    for var in ("KFCT_MLFLOW_TRACKING_URI", "KFCT_CONFIG", "KFCT_S3_ENDPOINT"):
        os.environ.pop(var, None)
    build_registry(home)
    body = {"instances": records(1)}
    out: dict = {"duration_s": args.duration, "wrk": wrk.version(), "cells": {k: [] for k in VARIANTS}}
    for rnd in range(args.rounds):
        for name, (log, child) in VARIANTS.items():
            port = free_port()
            env = dict(os.environ, PYTHONPATH=str(Path.cwd()))
            proc = subprocess.Popen([sys.executable, "-c", SERVER, log, child, str(port)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict"
                import httpx

                deadline = time.monotonic() + 120
                while True:
                    try:
                        if httpx.post(url, json=body, timeout=5).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"{name}: server did not come up")
                    time.sleep(0.2)
                wrk.run(url, body, 1, 3, work)  # warm-up (the child encoder starts on the first flush)
                time.sleep(5.5)
                r = wrk.run(url, body, 1, args.duration, work)
                r["p99_over_p50"] = round(r["p99_ms"] / r["p50_ms"], 2) if r["p50_ms"] else None
                out["cells"][name].append(r)
                print(f"round {rnd + 1} {name:15s} p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                      f"p99.9 {r['p999_ms']:.3f} ms  rps {r['rps']}  p99/p50 {r['p99_over_p50']}", flush=True)
            finally:
                proc.terminate()
                proc.wait(60)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
