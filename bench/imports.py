"""Where each CT stage's time goes at import: `python -m bench.imports [--rows N]`.

Runs the local CT pipeline once (fresh KFCT_HOME) with `PYTHONPROFILEIMPORTTIME=1` in
the stage processes only, then reads each task's `-X importtime` lines out of kfp's log
and prints, per stage, its wall time, the time its imports took and the heaviest
top-level imports. Import profiling adds its own overhead: read the shares, not the
absolute seconds. The habit this keeps: a stage imports only what it uses.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections import defaultdict

_TASK = re.compile(r"Executing task '([^']+)'")
_LINE = re.compile(r"\s*import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def top_level_imports(log_text: str) -> dict[str, list[tuple[float, str]]]:
    """{task: [(seconds, module), ...]} for each task's outermost imports, heaviest first."""
    per_task: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    task = None
    for raw in log_text.splitlines():
        line = _ANSI.sub("", raw)
        m = _TASK.search(line)
        if m:
            task = m.group(1)
            continue
        m = _LINE.match(line)
        if m and task:
            per_task[task].append((int(m.group(2)), len(m.group(3)), m.group(4)))
    out = {}
    for t, rows in per_task.items():
        outer = min(depth for _, depth, _ in rows)
        out[t] = sorted(((cum / 1e6, name) for cum, depth, name in rows if depth == outer), reverse=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.imports", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--top", type=int, default=5)
    args = p.parse_args(argv)
    from kfct.config import config_to_json, load_config
    from kfct.pipelines.runner import run_pipeline

    cfg = load_config()
    arguments = dict(
        data_uri=f"generate://{args.rows}?seed=42",
        config_json=config_to_json(cfg),
        model_name=cfg.register_.model_name,
        device="cpu",
        tune_trials=0,
        code_version="bench",
        run_reason="bench",
        rollout=False,
        serving_url="",
    )
    with tempfile.TemporaryDirectory() as home:
        run = run_pipeline(
            "kfct.pipelines.ct:build_ct_pipeline",
            {"cfg": cfg, "gpu": False},
            arguments,
            home,
            prefix="imports",
            env={"PYTHONPROFILEIMPORTTIME": "1"},
        )
        imports = top_level_imports(run.log_path.read_text(errors="replace"))
    print("| stage | wall s | imports s | heaviest top-level imports (s) |\n|---|---:|---:|---|")
    for task, seconds in run.durations().items():
        rows = imports.get(task, [])
        heavy = ", ".join(f"{name} {s:.2f}" for s, name in rows[: args.top])
        print(f"| {task} | {seconds or 0:.2f} | {sum(s for s, _ in rows):.2f} | {heavy} |")
    failed = f"; failed: {run.error}" if run.error else ""
    print(f"\ntotal (wall, with import profiling on): {run.total_seconds:.1f} s{failed}")
    return 1 if run.error else 0


if __name__ == "__main__":
    raise SystemExit(main())
