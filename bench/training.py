"""Training wall time at 100k and 1M rows: split + encoder fit + XGBoost `hist` with early stopping.

What is timed is what the pipeline's featurize and train stages compute
(`featurize_core` + `train_core`, default config), in process, without MLflow logging;
data generation is not timed. CPU here. The GPU figure cannot be measured on a machine
without a GPU: it comes from a JSON file written on a GPU machine by

    python -m bench.training --device cuda --rows 100000,1000000 --out bench/gpu_figure.json

and `python -m bench --gpu-figure FILE` (default `bench/gpu_figure.json` when present)
puts it in the table with its date and hardware.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from bench.model import MODEL_ROWS, MODEL_SEED, Context

DEFAULT_GPU_FIGURE = Path(__file__).resolve().parent / "gpu_figure.json"


class GpuFigureError(ValueError):
    """The GPU figure file is missing a field or holds a wrong value (the message says which)."""


def time_training(frame, device: str = "cpu") -> dict:
    from kfct.components.featurize import featurize_core
    from kfct.components.train import train_core
    from kfct.config import load_config

    cfg = load_config()
    t0 = time.perf_counter()
    tr, va, _te, enc = featurize_core(frame, cfg)
    model, _params, val, info = train_core(tr, va, cfg, encoder=enc, device=device)
    seconds = time.perf_counter() - t0
    return {
        "seconds": round(seconds, 3),
        "fit_seconds": info["fit_seconds"],
        "best_iteration": info.get("best_iteration"),
        "val_roc_auc": round(val["val_roc_auc"], 4),
        "_model": model,
        "_train": tr,
    }


def summarize(rows: int, runs: list[dict]) -> dict:
    secs = [r["seconds"] for r in runs]
    return {
        "rows": rows,
        "repeats": len(runs),
        "seconds": round(statistics.median(secs), 3),
        "seconds_range": [min(secs), max(secs)],
        "fit_seconds": round(statistics.median(r["fit_seconds"] for r in runs), 3),
        "best_iteration": runs[0]["best_iteration"],
        "val_roc_auc": runs[0]["val_roc_auc"],
    }


def measure(ctx: Context | None, sizes: dict[int, int], device: str = "cpu", seed: int = MODEL_SEED, log=print) -> list[dict]:
    """{rows: repeats} -> one summary per size. The 100k model is handed to the serving/scoring model step."""
    from kfct.data.datagen import generate

    out = []
    for rows, repeats in sizes.items():
        if repeats <= 0:
            continue
        frame = ctx.frame(rows, seed) if ctx is not None else generate(rows, seed=seed)
        runs = []
        for r in range(repeats):
            res = time_training(frame, device)
            model, tr = res.pop("_model"), res.pop("_train")
            if ctx is not None and rows == MODEL_ROWS and seed == MODEL_SEED and rows not in ctx.trained:
                ctx.trained[rows] = (model, tr, res["val_roc_auc"])
            runs.append(res)
            log(
                f"  train {rows:,} rows on {device} {r + 1}/{repeats}: {res['seconds']:.1f} s "
                f"(fit {res['fit_seconds']:.1f} s, {res['best_iteration']} trees kept, val AUC {res['val_roc_auc']})"
            )
        out.append(summarize(rows, runs))
        if ctx is not None and rows != MODEL_ROWS:
            ctx.frames.pop((rows, seed), None)
    return out


def load_gpu_figure(path: str | Path) -> dict:
    """Read and check a GPU figure file; every problem names the field."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as exc:
        raise GpuFigureError(f"GPU figure file {p}: cannot read it ({exc.strerror})") from exc
    except ValueError as exc:
        raise GpuFigureError(f"GPU figure file {p}: not valid JSON ({exc})") from exc
    problem = _gpu_figure_problem(data)
    if problem:
        raise GpuFigureError(f"GPU figure file {p}: {problem}")
    return {"source": str(p), **data}


def _gpu_figure_problem(data: object) -> str | None:
    """What is wrong with a GPU figure document (naming the field), or None."""
    if not isinstance(data, dict):
        return "expected a JSON object"
    for key in ("date", "hardware", "figures"):
        if key not in data:
            return f"field {key!r} is missing"
    for key in ("date", "hardware"):
        if not isinstance(data[key], str) or not data[key].strip():
            return f"field {key!r} must be a non-empty string"
    figs = data["figures"]
    if not isinstance(figs, list) or not figs:
        return "field 'figures' must be a non-empty list"
    for i, f in enumerate(figs):
        for key in ("rows", "seconds"):
            v = f.get(key) if isinstance(f, dict) else None
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                return f"figures[{i}].{key} must be a positive number"
    return None


def gpu_hardware() -> str:
    """GPU name from nvidia-smi, or 'unknown GPU'."""
    import subprocess

    try:
        cp = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
        names = [ln.strip() for ln in cp.stdout.splitlines() if ln.strip()]
        return "; ".join(names) if names else "unknown GPU"
    except (OSError, subprocess.SubprocessError):
        return "unknown GPU"


def main(argv: list[str] | None = None) -> int:
    """Measure training on this machine (GPU with `--device cuda`) and write a figure file."""
    import argparse
    import datetime
    import os
    import platform
    from importlib.metadata import version

    p = argparse.ArgumentParser(prog="python -m bench.training", description=main.__doc__)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--rows", default="100000,1000000", help="comma-separated sizes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(DEFAULT_GPU_FIGURE))
    args = p.parse_args(argv)
    try:
        sizes = {int(r): args.repeats for r in args.rows.split(",") if r.strip()}
    except ValueError:
        print(f"--rows: expected comma-separated integers, got {args.rows!r}", file=sys.stderr)
        return 2
    figs = measure(None, sizes, device=args.device)
    hw = gpu_hardware() if args.device == "cuda" else (platform.processor() or platform.machine())
    doc = {
        "date": datetime.date.today().isoformat(),
        "hardware": hw,
        "device": args.device,
        "cpu_cores": os.cpu_count(),
        "xgboost": version("xgboost"),
        "figures": figs,
        "command": "python -m bench.training " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
