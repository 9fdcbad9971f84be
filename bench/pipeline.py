"""The local CT pipeline end to end at 100k rows: wall time per stage and in total.

`kfct.pipelines.local.run_ct` runs the same `@dsl.pipeline` that is compiled for Kubeflow
with kfp's SubprocessRunner, every stage a real kfp task in its own subprocess. Each
stage's time is what it stamped in its output metadata (its own imports included; starting
Python and kfp's executor only show in the total). Each run gets a fresh
`KFCT_HOME` inside the benchmark's work folder: the first model of a store faces the
absolute thresholds only, so every repeat runs the same stages.
"""

from __future__ import annotations

import os
import statistics

from bench.model import Context

DATA_URI = "generate://100000?seed=42"


def run_once(ctx: Context, index: int, data_uri: str = DATA_URI) -> dict:
    from kfct.pipelines.local import run_ct
    from kfct.runtime.settings import reset_settings

    home = ctx.workdir / f"pipeline-home-{index}"
    saved = os.environ.get("KFCT_HOME")
    os.environ["KFCT_HOME"] = str(home)
    reset_settings()
    try:
        s = run_ct(data_uri=data_uri)
    finally:
        if saved is None:
            os.environ.pop("KFCT_HOME", None)
        else:
            os.environ["KFCT_HOME"] = saved
        reset_settings()
    dec = s.get("decision") or {}
    return {
        "stages": dict(s.get("stages") or {}),
        "total_seconds": s.get("total_seconds"),
        "validation_passed": (s.get("validation") or {}).get("passed"),
        "deploy": dec.get("deploy"),
        "registered": (s.get("registered") or {}).get("version"),
    }


def summarize(runs: list[dict]) -> dict:
    stages: dict[str, list[float]] = {}
    for r in runs:
        for k, v in r["stages"].items():
            if v is not None:
                stages.setdefault(k, []).append(float(v))
    totals = [r["total_seconds"] for r in runs if r["total_seconds"] is not None]
    return {
        "data_uri": DATA_URI,
        "repeats": len(runs),
        "stages": {k: round(statistics.median(v), 2) for k, v in stages.items()},
        "total_seconds": round(statistics.median(totals), 2) if totals else None,
        "total_range": [min(totals), max(totals)] if totals else None,
        "runs": runs,
    }


def run(ctx: Context, repeats: int = 1, data_uri: str = DATA_URI) -> dict:
    runs = []
    for i in range(repeats):
        r = run_once(ctx, i, data_uri)
        runs.append(r)
        ctx.log(
            f"  CT pipeline {i + 1}/{repeats}: {r['total_seconds']:.1f} s "
            f"(validation {'passed' if r['validation_passed'] else 'FAILED'}, deploy {r['deploy']}, "
            f"registered v{r['registered']})"
        )
    return summarize(runs)
