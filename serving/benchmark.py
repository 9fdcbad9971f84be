"""Serving and batch-scoring figures, reproducible: `python -m serving.benchmark`.

1. trains a ChurnModel with the default config on `--train-rows` generated customers and
   registers it in a throw-away MLflow store (temp KFCT_HOME);
2. starts `python -m serving` (the KServe ModelServer, one worker) as its own process;
3. drives it from another process with `serving.loadtest` (raw keep-alive HTTP/1.1):
   V1 single-instance at concurrency 1 and 2, V2 single-instance, V1 batches of 100;
4. batch-scores `--score-rows` customers from parquet with `components.score`.

Both processes share this machine's cores, so throughput includes the client's cost.
Prints one JSON document (and writes it to `--out` if given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _register(home: Path, rows: int) -> dict:
    import mlflow

    from components.featurize import featurize_core
    from components.train import train_core
    from kfct import registry
    from kfct.config import load_config
    from kfct.datagen import generate

    cfg = load_config()
    tr, va, te, enc = featurize_core(generate(rows, seed=42), cfg)
    model, *_ = train_core(tr, va, cfg, encoder=enc)
    exp = registry.setup()
    with mlflow.start_run(experiment_id=exp, run_name="serving-benchmark"):
        info = registry.log_model(model, te.drop(columns=[cfg["dataset"]["label"]]))
    name = cfg["register"]["model_name"]
    version = registry.register(info["model_uri"], name, {"model_sha256": info["model_sha256"]})
    registry.set_alias(name, "champion", version, reason="benchmark")
    return {"model_name": name, "version": version, "trees": int(model.estimator.num_boosted_rounds())
            if hasattr(model.estimator, "num_boosted_rounds") else None, "model": model}


def _wait_ready(url: str, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f} s")


def _loadtest(url: str, model: str, **kw) -> dict:
    args = [sys.executable, "-m", "serving.loadtest", "--url", url, "--model", model]
    for k, v in kw.items():
        args += [f"--{k}", str(v)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.benchmark", description=__doc__.splitlines()[0])
    p.add_argument("--train-rows", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--score-rows", type=int, default=2_100_000)
    p.add_argument("--port", type=int, default=18090)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="kfct-serving-bench-"))
    try:
        return _run(args, home)
    finally:
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def _run(args, home: Path) -> int:
    os.environ["KFCT_HOME"] = str(home)
    from kfct.settings import reset_settings

    reset_settings()
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "load_avg_at_start": os.getloadavg()}}
    t = time.perf_counter()
    reg = _register(home, args.train_rows)
    model = reg.pop("model")
    result["model"] = {**reg, "train_rows": args.train_rows, "setup_seconds": round(time.perf_counter() - t, 1)}

    url = f"http://127.0.0.1:{args.port}"
    env = dict(os.environ, KFCT_HOME=str(home))
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(args.port),
                             "--no-prediction-log"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(url)
        name, n = reg["model_name"], args.requests
        runs = {
            "v1_c1": _loadtest(url, name, requests=n, concurrency=1),
            "v1_c2": _loadtest(url, name, requests=n, concurrency=2),
            "v2_c1": _loadtest(url, name, requests=n // 2, concurrency=1, protocol="v2"),
            "v1_batch100_c1": _loadtest(url, name, requests=max(200, n // 20), concurrency=1, batch=100),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    result["serving"] = runs

    if args.score_rows:
        from components.score import score_file
        from kfct.datagen import generate, write_frame

        src = home / "customers.parquet"
        write_frame(generate(args.score_rows, seed=7), src)
        s = score_file(model, src, home / "scores.parquet", reg["version"], reg["model_name"])
        result["batch_scoring"] = s.to_json()
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
