"""Scale: peak RSS of each CT step's process at 2.1 M, 10 M and 20 M rows, parts of a fixed size.

    python -m bench --only scale              (datasets under $KFCT_SCALE_DIR, default /tmp/kfct-scale)

Why: a pod is OOM-killed at its memory limit; the design bounds each step's memory by its
part, not by the dataset. For every dataset size each step runs once in a fresh process
(`bench.scale_step`), inside a cgroup v1 memory group whose limit is the one the compiled
pipeline gives that step (`resources` in the config: 2 GiB, train 8 GiB), under
`/usr/bin/time -v`. A step over its limit is killed (status 137), as in a pod. Figures: peak
RSS (`Maximum resident set size`), the cgroup's peak usage (page cache included), wall time.

What is measured where (stated in the table too):
- validate-part / featurize-part / score-shard: one part (the first) of each dataset;
- merge-validation: every part's statistics (hashes, label counts) are computed; every part
  is validated with GX at 2.1 M, while at 10 M and 20 M the first part's GX result stands for
  the others (GX per part is what `validate-part` measures; running it 80 times on 2 shared
  cores would take most of an hour and does not change the reduce's input size);
- merge-featurize: every part is featurized first (not measured), then the reduce gathers
  the splits and fits the encoder from all train parts;
- evaluate: the evaluate core + model card evidence on the whole test split, with a model
  trained on 100 k rows (the model's size does not depend on the data's);
- train (in one pod, 8 GiB): at 2.1 M only; past that, training goes to the workers of
  Kubeflow Trainer (`train.workers`), whose per-worker memory is its share of the parts.
Without root or the cgroup v1 memory controller, steps run without a limit (said in the table).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

PART_ROWS = 250_000
SIZES = {"2.1M": 2_100_000, "10M": 10_000_000, "20M": 20_000_000}
STAGE_OF = {
    "validate-single": "validate_data",
    "featurize-single": "featurize",
    "validate-part": "validate_part",
    "merge-validation": "validate_data",
    "featurize-part": "featurize_part",
    "merge-featurize": "featurize",
    "evaluate": "evaluate",
    "score-shard": "batch_score",
    "train": "train",
}


def scale_dir() -> Path:
    return Path(os.environ.get("KFCT_SCALE_DIR", "/tmp/kfct-scale"))


def memory_limit(cfg: dict, step: str) -> int:
    """The limit the compiled pipeline gives the step's pod, in bytes."""
    from kfct.pipelines.task_config import stage_resources

    res = stage_resources(cfg, STAGE_OF[step])
    text = str(res.get("memory_limit", res.get("memory")))
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G)?", text)
    if not m:
        raise ValueError(f"cannot read memory {text!r} for {step}")
    mult = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, None: 1}
    return int(float(m.group(1)) * mult[m.group(2)])


def cgroup_available() -> bool:
    from kfct.runtime import memgroup

    return memgroup.available()


def measure(step: str, args: dict, limit: int | None, log=print) -> dict:
    """Run one step in a fresh process (in a memory cgroup with `limit` when possible)."""
    from kfct.runtime import memgroup

    group = None
    if limit and cgroup_available():
        group = memgroup.create(f"kfct-scale-{os.getpid()}-{step}", limit)
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "bench.scale_step", step, json.dumps(args)]
    t0 = time.perf_counter()
    p = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        preexec_fn=memgroup.joiner(group) if group else None,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    signal = re.search(r"Command terminated by signal (\d+)", p.stderr)
    out = {
        "step": step,
        "peak_rss_mib": round(int(rss.group(1)) / 1024, 1) if rss else None,
        "wall_s": round(wall, 1),
        "limit_mib": round(limit / 2**20) if limit else None,
        "exit": 128 + int(signal.group(1)) if signal else p.returncode,
        "cgroup": group is not None,
    }
    if group is not None:
        peaks = memgroup.peaks(group)
        out["cgroup_peak_mib"], out["oom_events"] = peaks["cgroup_peak_mib"], peaks["limit_hits"]
        memgroup.remove(group)
    out["under_limit"] = out["exit"] == 0 and (limit is None or (out["peak_rss_mib"] or 0) * 2**20 < limit)
    if out["exit"] != 0:
        out["error"] = (p.stderr.strip().splitlines() or [""])[-25:]
    log(
        f"  {step}: peak RSS {out['peak_rss_mib']} MiB (limit {out['limit_mib']} MiB{', cgroup' if group else ''}), "
        f"{out['wall_s']} s, exit {out['exit']}"
    )
    return out


# -- data ---------------------------------------------------------------------------------------------


def ensure_dataset(label: str, log=print) -> Path:
    """The parts dataset for a size label, generated once (20 M: 80 parts; 10 M: the first 40 of them)."""
    from kfct.data import parts
    from kfct.data.datagen import generate_chunks

    root = scale_dir()
    rows = SIZES[label]
    d = root / {"2.1M": "c2m", "10M": "c10m", "20M": "c20m"}[label]
    if parts.is_parts(d):
        return d
    if label == "10M":
        big = ensure_dataset("20M", log)
        m = parts.load_manifest(big)
        sub = parts.resolved(m, big)
        sub["parts"] = sub["parts"][: rows // PART_ROWS]
        sub["rows"] = sum(p["rows"] for p in sub["parts"])
        sub.pop("version")
        d.mkdir(parents=True, exist_ok=True)
        (d / parts.MANIFEST).write_bytes(parts.canonical_bytes(sub))
        # the parts stay in the 20 M folder: link them beside this manifest
        for p in sub["parts"]:
            link = d / f"{p['sha256']}.parquet"
            if not link.exists():
                link.symlink_to(p["uri"])
        return d
    log(f"  generating {rows:,} rows in parts of {PART_ROWS:,} under {d} (once)")
    parts.write_parts(generate_chunks(rows, seed=42, chunk_rows=PART_ROWS), d, PART_ROWS)
    return d


def _prepare_stats(d: Path, work: Path, cfg: dict, all_gx: bool, first_stats: Path, log=print) -> list[str]:
    """Per-part validation outputs for the reduce (see the module docstring)."""
    from kfct.components.validation_merge import part_statistics, validate_part
    from kfct.data import parts

    m = parts.load_manifest(d)
    out = []
    first = json.loads((first_stats / "part.json").read_text())
    for i, uri in enumerate(parts.part_uris(m, d)):
        sd = work / f"stats-{i:04d}"
        out.append(str(sd))
        if (sd / "part.json").exists():
            continue
        if i == 0:
            shutil.copytree(first_stats, sd, dirs_exist_ok=True)
            continue
        df = parts.read_part(uri).to_pandas()
        rec = validate_part(df, cfg, sd) if all_gx else {"result": first["result"], "stats": part_statistics(df, cfg, sd)}
        (sd / "part.json").write_text(json.dumps({**rec, "part_uri": uri}, default=str))
    return out


def _prepare_featurized(d: Path, work: Path, cfg: dict) -> list[str]:
    from kfct.components.featurize import with_binary_label
    from kfct.components.featurize_merge import split_by_id
    from kfct.data import parts

    m = parts.load_manifest(d)
    out = []
    for i, uri in enumerate(parts.part_uris(m, d)):
        fd = work / f"feat-{i:04d}"
        out.append(str(fd))
        if (fd / "test").exists():
            continue
        fd.mkdir(parents=True, exist_ok=True)
        df = with_binary_label(parts.read_part(uri).to_pandas(), cfg)
        for name, frame in zip(("train", "val", "test"), split_by_id(df, cfg)):
            frame.to_parquet(fd / name, index=False)
    return out


def _model(work: Path, cfg: dict) -> Path:
    """A model trained on 100 k rows (what evaluate and a scoring shard load)."""
    import joblib

    from kfct.components.featurize import featurize_core
    from kfct.components.train import train_core
    from kfct.data.datagen import generate

    path = work / "model.joblib"
    if not path.exists():
        tr, va, _te, enc = featurize_core(generate(100_000, seed=7), cfg)
        model = train_core(tr, va, cfg, encoder=enc, device="cpu", tune_trials=0)[0]
        joblib.dump(model, path)
    return path


def run(ctx=None, sizes: list[str] | None = None, log=print, train_sizes: tuple[str, ...] = ("2.1M",)) -> dict:
    from kfct.config import config_to_json, load_config
    from kfct.data import parts

    cfg = load_config()
    cfg_json = config_to_json(cfg)
    root = scale_dir()
    home = root / "home"
    os.environ["KFCT_HOME"] = str(home)
    from kfct.runtime.settings import reset_settings

    reset_settings()
    rows_out = []
    for label in sizes or list(SIZES):
        log(f" {label} rows:")
        d = ensure_dataset(label, log)
        m = parts.load_manifest(d)
        uris = parts.part_uris(m, d)
        work = root / f"work-{label}"
        work.mkdir(parents=True, exist_ok=True)
        model = _model(root, cfg)
        res = {"label": label, "rows": m["rows"], "parts": len(m["parts"]), "part_rows": PART_ROWS, "steps": []}

        def step(name, args, res=res):
            r = measure(name, {"config_json": cfg_json, **args}, memory_limit(cfg, name), log)
            res["steps"].append(r)
            return r

        first = work / "first-stats"
        shutil.rmtree(first, ignore_errors=True)
        step("validate-part", {"part": uris[0], "out": str(first)})
        stats = _prepare_stats(d, work, cfg, all_gx=label == "2.1M", first_stats=first, log=log)
        step(
            "merge-validation",
            {"stats": stats, "dataset": str(d), "sha256": m["version"], "out": str(work / "merged-validation")},
        )
        fp = work / "first-feat"
        shutil.rmtree(fp, ignore_errors=True)
        fp.mkdir(parents=True)
        step("featurize-part", {"part": uris[0], "out": str(fp)})
        feat = _prepare_featurized(d, work, cfg)
        merged = work / "merged-featurize"
        shutil.rmtree(merged, ignore_errors=True)
        merged.mkdir(parents=True)
        step("merge-featurize", {"parts": feat, "dataset": str(d), "sha256": m["version"], "out": str(merged)})
        step("evaluate", {"model": str(model), "test": str(merged / "test")})
        step("score-shard", {"model": str(model), "part": uris[0], "out": str(work / "scores.parquet")})
        if label in train_sizes:
            step(
                "train",
                {"train": str(merged / "train"), "val": str(merged / "val"), "preprocessor": str(merged / "preprocessor")},
            )
        res["split_rows"] = {s: parts.count_rows(merged / s) for s in ("train", "val", "test")}
        rows_out.append(res)
        (root / f"scale-results-{label}.json").write_text(json.dumps(res, indent=1))
    return {"sizes": rows_out, "cgroup": cgroup_available(), "part_rows": PART_ROWS}


# -- the train workers at a dataset's split sizes ------------------------------------------------------


def train_workers_step(dataset: Path, label: str, workers: int = 2, rounds: int = 20, log=print) -> dict:
    """N train workers, each in its own memory group at the per-worker limit, on a split of this dataset's
    size: its first 70% of parts as the train split, the next 15% as validation (the id-hash split's
    shares; generated rows are i.i.d., so a worker's shard has the size and make-up it has in a run).
    The encoder is fitted on 100 k generated rows. `rounds` caps boosting rounds: a worker's memory is
    its shard's features, labels and quantised matrix, built before the first round; more rounds add
    trees (kilobytes), not memory. Wall time here is not a training time."""
    import joblib

    from bench.workers import held_workers
    from kfct.components.featurize import featurize_core
    from kfct.components.train_distributed import config_json, run_local_workers, typed_config, worker_memory_limit
    from kfct.config import load_config
    from kfct.data import parts
    from kfct.data.datagen import generate

    cfg = load_config(overrides={"train": {"workers": workers, "xgboost": {"n_estimators": rounds}}})
    rc = typed_config(cfg)
    uris = parts.part_uris(parts.load_manifest(dataset), dataset)
    n_train, n_val = round(len(uris) * 0.70), round(len(uris) * 0.15)
    work = scale_dir() / f"workers-{label}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    joblib.dump(featurize_core(generate(100_000, seed=7), cfg)[3], work / "preprocessor")
    spec = {
        "config_json": config_json(rc),
        "train": uris[:n_train],
        "val": uris[n_train : n_train + n_val],
        "preprocessor": str(work / "preprocessor"),
        "model": str(work / "model"),
        "info": str(work / "info"),
        "device": "cpu",
    }
    (work / "spec.json").write_text(json.dumps(spec))
    limit = worker_memory_limit(rc.resources)
    t0 = time.perf_counter()
    with held_workers(work) as record:
        run_local_workers(str(work / "spec.json"), workers, float(rc.train.deadline_seconds), work / "logs", memory_limit=limit)
    wall = round(time.perf_counter() - t0, 1)
    info = json.loads((work / "info").read_text())["info"]
    out = {
        "label": label,
        "workers": workers,
        "rounds_cap": rounds,
        "train_rows": info["n_train"],
        "val_rows": info["n_val"],
        "wall_s": wall,
        "limit_mib": round(limit / 2**20) if limit else None,
        "held": [json.loads(line) for line in record.read_text().splitlines()] if record.is_file() else [],
    }
    log(f"  train workers at {label}: {out}")
    return out


# -- a whole CT run, every process held ---------------------------------------------------------------

CT_STEP = re.compile(r"^comp-(.+?)(?:-\d+)?$")  # kfp.local's component name; map tasks repeat with a suffix


def ct_run_figures(summary: dict, label: str, command: str) -> dict:
    """Per step of a `kfct run --pod-limits --json` summary: processes, the largest peak RSS and its limit,
    wall time (sum over a map step's tasks), exits; the train workers one by one."""
    steps: dict[str, dict] = {}
    for r in summary.get("memory") or []:
        name = CT_STEP.sub(r"\1", r["task"]) if r["process"] == "task" else f"train {r['process']}"
        s = steps.setdefault(
            name, {"step": name, "processes": 0, "peak_rss_mib": 0.0, "limit_mib": r["limit_mib"], "wall_s": 0.0, "exits": []}
        )
        s["processes"] += 1
        s["peak_rss_mib"] = max(s["peak_rss_mib"], r.get("peak_rss_mib") or 0.0)
        s["wall_s"] = None if r.get("wall_s") is None else round((s["wall_s"] or 0.0) + r["wall_s"], 1)  # workers: none
        s["exits"] = sorted(set(s["exits"]) | {r.get("exit")}, key=str)
        s["under_limit"] = all(e == 0 for e in s["exits"]) and s["peak_rss_mib"] < (s["limit_mib"] or float("inf"))
    dec = summary.get("decision") or {}
    return {
        "label": label,
        "rows": (summary.get("dataset") or {}).get("rows"),
        "command": command,
        "run_id": summary.get("run_id"),
        "total_seconds": summary.get("total_seconds"),
        "validation_passed": (summary.get("validation") or {}).get("passed"),
        "test_roc_auc": (dec.get("metrics") or {}).get("roc_auc"),
        "registered": (summary.get("registered") or {}).get("version"),
        "steps": list(steps.values()),
    }


def ct_run(dataset: Path, label: str, workers: int = 2, log=print) -> dict:
    """`kfct run --data-uri <parts> --workers N --pod-limits` in a fresh KFCT_HOME; its per-process figures."""
    out = scale_dir() / f"ct-run-{label}.json"
    home = scale_dir() / f"ct-home-{label}"
    cmd = [
        sys.executable,
        "-m",
        "kfct",
        "run",
        "--data-uri",
        str(dataset),
        "--workers",
        str(workers),
        "--pod-limits",
        "--json",
        str(out),
    ]
    log(f"  whole CT run at {label}: {' '.join(cmd[2:])}")
    subprocess.run(cmd, check=True, env={**os.environ, "KFCT_HOME": str(home)})
    return ct_run_figures(json.loads(out.read_text()), label, f"kfct {' '.join(cmd[3:])}")


def add_ct_run(summary_path: Path, label: str, command: str, out_dir: Path) -> dict:
    """Add one CT run's figures (its `kfct run --json` summary) to scale.json and re-render scale.md / .png."""
    from bench import report

    data = json.loads((out_dir / "scale.json").read_text())
    fig = ct_run_figures(json.loads(Path(summary_path).read_text()), label, command)
    data["ct_runs"] = [r for r in data.get("ct_runs", []) if r["label"] != label] + [fig]
    report.write_scale(data, out_dir)
    return fig


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", help="comma-separated size labels (default: all)")
    ap.add_argument(
        "--ct-run",
        metavar="DATASET",
        help="run the whole CT pipeline on this parts dataset (--workers 2 --pod-limits) and add its figures to bench/scale.*",
    )
    ap.add_argument("--label", default="20M", help="the size label of --ct-run / --add-ct-run")
    ap.add_argument("--add-ct-run", metavar="SUMMARY", help="add a finished `kfct run --pod-limits --json` summary")
    ap.add_argument("--command", default="", help="the command that produced --add-ct-run's summary")
    ap.add_argument(
        "--train-workers",
        metavar="DATASET",
        help="measure the train workers (held) on splits of this parts dataset's size and add them to bench/scale.*",
    )
    ap.add_argument("--rounds", type=int, default=20, help="boosting rounds cap for --train-workers")
    args = ap.parse_args(argv)
    out_dir = Path(__file__).resolve().parent
    if args.train_workers:
        from bench import report

        data = json.loads((out_dir / "scale.json").read_text())
        fig = train_workers_step(Path(args.train_workers), args.label, rounds=args.rounds)
        data["train_workers"] = [r for r in data.get("train_workers", []) if r["label"] != args.label] + [fig]
        report.write_scale(data, out_dir)
    elif args.ct_run:
        from bench import report

        data = json.loads((out_dir / "scale.json").read_text())
        fig = ct_run(Path(args.ct_run), args.label)
        data["ct_runs"] = [r for r in data.get("ct_runs", []) if r["label"] != args.label] + [fig]
        report.write_scale(data, out_dir)
    elif args.add_ct_run:
        fig = add_ct_run(Path(args.add_ct_run), args.label, args.command, out_dir)
    else:
        print(json.dumps(run(sizes=args.sizes.split(",") if args.sizes else None), indent=1))
        return 0
    print(json.dumps(fig, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
