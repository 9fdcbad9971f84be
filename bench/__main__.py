"""`make bench` / `python -m bench`: run the benchmark sections, write and print the results.

    python -m bench                       # everything, a few minutes: bench/results.{md,json,png}
    python -m bench --quick               # about a minute: fewer repeats, no 1M training, no pipeline
    python -m bench --only serving,scoring
    python -m bench --only tail           # the prediction log's cost to the tail: wrk, 1 connection, log on/off
    python -m bench --gpu-figure gpu.json # add a GPU training figure measured elsewhere

Everything runs on this machine, servers on 127.0.0.1 only, state in a temporary
KFCT_HOME (removed at the end unless --keep or a section failed).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path

from bench.report import SECTIONS

BENCH_DIR = Path(__file__).resolve().parent

PLANS = {
    # section -> settings; `quick` trades repeats and sizes for a ~1 minute run
    "full": {
        "training": {100_000: 3, 1_000_000: 1},
        "serving": {"repeats": 1, "duration": 30.0, "warmup": 1.0},
        "scoring": {"repeats": 3, "peer_repeats": 1},
        "pipeline": {"repeats": 3},
        "scale": {"sizes": ["2.1M", "10M", "20M"]},
        "tail": {"rounds": 3, "duration": 30.0, "warmup": 3.0},
    },
    "quick": {
        "training": {100_000: 1, 1_000_000: 0},
        "serving": {"repeats": 1, "duration": 1.5, "warmup": 0.3},
        "scoring": {"repeats": 1, "peer_repeats": 0},
        "pipeline": {"repeats": 0},
        "scale": {"sizes": []},
        "tail": {"rounds": 1, "duration": 3.0, "warmup": 1.0},
    },
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="kfct benchmarks against the tools users would pick instead")
    p.add_argument("--quick", action="store_true", help="about a minute: 1 repeat, no 1M training, no pipeline run")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument(
        "--gpu-figure",
        default=None,
        help="JSON from `python -m bench.training --device cuda` on a GPU machine (default: bench/gpu_figure.json when present)",
    )
    p.add_argument("--out-dir", default=str(BENCH_DIR), help="where results.{md,json,png} go (default: bench/)")
    p.add_argument("--cache-dir", default=None, help="where the 2.1M-row input is cached (default $TMPDIR/kfct-bench-cache)")
    p.add_argument("--repeats", type=int, default=None, help="override the serving and scoring repeats")
    p.add_argument("--duration", type=float, default=None, help="override seconds per serving measurement")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder (logs, MLflow store)")
    return p.parse_args(argv)


def machine_info() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    for pkg in ("kserve", "mlflow", "fastapi", "uvicorn", "xgboost", "scikit-learn", "pandas", "kfp"):
        with contextlib.suppress(PackageNotFoundError):
            versions[pkg] = version(pkg)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        # Which build matters as much as the version: the stages are import-bound (results.md).
        "interpreter": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        "versions": versions,
    }


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _usage_error(args, only: list[str]) -> str | None:
    """What is wrong with the command line, or None."""
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        return f"unknown section {unknown[0]!r} in --only; choose from {', '.join(SECTIONS)}"
    if not only:
        return "--only names no section"
    if args.repeats is not None and args.repeats < 1:
        return "--repeats must be at least 1"
    if args.duration is not None and args.duration <= 0:
        return "--duration must be positive"
    return None


def _gpu_figure(explicit: str | None) -> dict | None:
    """The recorded GPU training figure: the file asked for (GpuFigureError when it is bad), else the
    default one if it is there (a bad default is reported in the results, not fatal)."""
    from bench.training import DEFAULT_GPU_FIGURE, GpuFigureError, load_gpu_figure

    if explicit:
        return load_gpu_figure(explicit)
    if not DEFAULT_GPU_FIGURE.is_file():
        return None
    try:
        return load_gpu_figure(str(DEFAULT_GPU_FIGURE))
    except GpuFigureError as exc:
        return {"error": str(exc)}


def _section(name: str, ctx, plan, args, meta: dict) -> dict:
    """Run one section: its status (ok with its data, skipped, failed with the reason) and seconds."""
    t0 = time.perf_counter()
    print(f"[{name}]", flush=True)
    try:
        data = _run_section(name, ctx, plan, args, meta)
    except Exception as exc:  # noqa: BLE001 - a failed section is reported, the others still run
        traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        return {"status": "failed", "reason": f"{type(exc).__name__}: {first}", "seconds": round(time.perf_counter() - t0, 1)}
    print(f"[{name}] done in {time.perf_counter() - t0:.1f} s", flush=True)
    if data is None:
        return {"status": "skipped", "reason": "--quick (takes 30-60 s on 2 cores; run without --quick)"}
    return {"status": "ok", "seconds": round(time.perf_counter() - t0, 1), "data": data}


def main(argv=None) -> int:
    args = parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    usage = _usage_error(args, only)
    if usage:
        print(f"bench: {usage}", file=sys.stderr)
        return 2

    from bench import report
    from bench.model import Context, default_cache_dir, new_workdir
    from bench.training import GpuFigureError

    try:
        gpu = _gpu_figure(args.gpu_figure)
    except GpuFigureError as exc:  # asked for explicitly: a bad file is an error
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    plan = PLANS["quick" if args.quick else "full"]
    t_start = time.perf_counter()
    meta = machine_info()
    meta.update(
        {
            "quick": args.quick,
            "only": only,
            "load_before": _load(),
            "command": "python -m bench"
            + (
                " " + shlex.join(argv if argv is not None else sys.argv[1:])
                if (argv if argv is not None else sys.argv[1:])
                else ""
            ),
        }
    )
    ctx = Context(
        workdir=new_workdir(),
        cache_dir=Path(args.cache_dir) if args.cache_dir else default_cache_dir(),
        quick=args.quick,
        log=lambda m: print(m, flush=True),
    )
    ctx.activate()
    print(f"kfct bench ({'quick' if args.quick else 'full'}): {', '.join(only)}; work folder {ctx.workdir}", flush=True)

    sections: dict[str, dict] = {}
    # training first: its 100k model is the one served
    order = ["training", "serving", "tail", "scoring", "pipeline", "workers", "scale"]
    for name in order:
        if name not in only:
            sections[name] = {"status": "skipped", "reason": "not in --only"}
            continue
        sections[name] = _section(name, ctx, plan, args, meta)

    meta["wall_s"] = round(time.perf_counter() - t_start, 1)
    meta["load_after"] = _load()
    results = {"meta": meta, "sections": sections, "gpu_figure": gpu}
    stem = "results-quick" if args.quick else "results"
    paths = report.write(results, Path(args.out_dir), stem=stem)
    print()
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    failed = [n for n, s in sections.items() if s["status"] == "failed"]
    if args.keep or failed:
        print(f"work folder kept (logs, MLflow store): {ctx.workdir}")
    else:
        shutil.rmtree(ctx.workdir, ignore_errors=True)
    return 1 if failed else 0


def _run_training(ctx, plan: dict, args, meta: dict):
    from bench import training

    sizes = dict(plan["training"])
    figures = training.measure(ctx, {r: n for r, n in sizes.items() if n > 0}, log=ctx.log)
    skipped = [{"rows": r, "reason": "skipped (--quick)"} for r, n in sizes.items() if n <= 0]
    return {"figures": figures, "skipped_sizes": skipped, "cores": meta.get("cores")}


def _run_serving(ctx, plan: dict, args, meta: dict):
    from bench import serving

    p = dict(plan["serving"])
    if args.repeats:
        p["repeats"] = args.repeats
    if args.duration:
        p["duration"] = args.duration
    return serving.run(ctx, **p)


def _run_tail(ctx, plan: dict, args, meta: dict):
    from bench import predlog_tail

    p = dict(plan["tail"])
    if args.repeats:
        p["rounds"] = args.repeats
    if args.duration:
        p["duration"] = args.duration
    data = predlog_tail.run(ctx, **p)
    predlog_tail.write(data, Path(args.out_dir))  # its own files too: a later run of other sections keeps them
    return data


def _run_scoring(ctx, plan: dict, args, meta: dict):
    from bench import scoring

    p = dict(plan["scoring"])
    if args.repeats:
        p["repeats"] = args.repeats
    return scoring.run(ctx, **p)


def _run_pipeline(ctx, plan: dict, args, meta: dict):
    from bench import pipeline

    n = plan["pipeline"]["repeats"]
    if n <= 0:
        return None
    return pipeline.run(ctx, repeats=n)


def _run_workers(ctx, plan: dict, args, meta: dict):
    from bench import workers

    return None if args.quick else workers.run(ctx.workdir, log=ctx.log)


def _run_scale(ctx, plan: dict, args, meta: dict):
    from bench import report, scale

    sizes = plan["scale"]["sizes"]
    if not sizes:
        return None
    data = scale.run(ctx, sizes=sizes, log=ctx.log)
    report.write_scale(data, BENCH_DIR)  # its own files: a later run of other sections keeps them
    return data


_RUNNERS = {
    "training": _run_training,
    "serving": _run_serving,
    "tail": _run_tail,
    "scoring": _run_scoring,
    "pipeline": _run_pipeline,
    "workers": _run_workers,
    "scale": _run_scale,
}


def _run_section(name: str, ctx, plan: dict, args, meta: dict):
    """A section's data, or None when this plan skips it."""
    run = _RUNNERS.get(name)
    if run is None:
        raise ValueError(name)
    return run(ctx, plan, args, meta)


if __name__ == "__main__":
    sys.exit(main())
