"""The benchmark's outputs: `results.md` (the table, also printed), `results.json`, `results.png`.

Pure rendering: `render_markdown(results)` takes the plain dict the sections return and
never measures anything; `render_chart` draws the same numbers with matplotlib's Agg
backend (no display needed). A section that was skipped or failed is shown as such,
with the reason, instead of numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

SECTIONS = ("serving", "tail", "scoring", "training", "pipeline", "workers", "scale")
TITLES = {
    "serving": "Serving",
    "tail": "Serving tail: prediction log on and off (wrk, one connection)",
    "scoring": "Batch scoring",
    "training": "Training",
    "pipeline": "Local CT pipeline",
    "workers": "Distributed training (train.workers)",
    "scale": "Scale: memory per step, 2.1M to 20M rows",
}
# Issue 3's speed targets for one worker on loopback; reported, never asserted.
TARGETS = {"p50_ms": 1.0, "p99_ms": 2.0, "rps": 1500.0, "rows_per_s": 250_000.0}
NO_GPU = "not measured (no GPU lent to this session)"


def _n(v, digits: int = 0) -> str:
    if v is None:
        return "—"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _ms(v) -> str:
    if v is None:
        return "—"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def _ratio(v) -> str:
    if v is None:
        return "—"
    return f"{v:.3f}" if v < 0.1 else f"{v:.2f}" if v < 10 else f"{v:,.1f}"


def _duration(seconds) -> str:
    if seconds is None:
        return "—"
    m, s = divmod(float(seconds), 60)
    return f"{int(m)} min {s:.0f} s" if m else f"{s:.1f} s"


def _plural(n, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _status_line(sec: dict) -> str | None:
    st = sec.get("status")
    if st == "skipped":
        return f"_Skipped: {sec.get('reason', '')}._"
    if st == "failed":
        return f"_Failed: {sec.get('reason', '')}_"
    return None


def render_header(meta: dict) -> list[str]:
    v = meta.get("versions", {})
    lines = ["# kfct benchmarks", ""]
    lines.append(
        f"Measured {meta.get('date', '?')} on {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores, "
        f"{meta.get('memory_gib', '?')} GiB RAM; Python {meta.get('python', '?')}"
        + (f" (`{meta['interpreter']}`)" if meta.get("interpreter") else "")
        + "".join(f", {k} {val}" for k, val in v.items())
        + "."
    )
    lines.append("")
    lines.append(
        f"Command: `{meta.get('command', 'python -m bench')}` — total wall time {_duration(meta.get('wall_s'))}. "
        "Figures are medians over the repeats shown. **The load generator and the servers share this "
        f"machine's {meta.get('cores', 2)} cores**, and the machine is shared with other work "
        f"(1-min load average {meta.get('load_before', '?')} at start, {meta.get('load_after', '?')} at the end): "
        "absolute numbers are noisy, ratios measured in the same run are the robust part. "
        "How to reproduce: `bench/README.md`."
    )
    lines.append("")
    return lines


def render_serving(sec: dict) -> list[str]:
    """The serving section: how it was measured, the latency table, the wrk cross-check, kfct ÷ peers,
    issue 3's targets, then per-server notes."""
    lines = [f"## {TITLES['serving']}", ""]
    st = _status_line(sec)
    if st:
        return [*lines, st, ""]
    d = sec.get("data") or {}
    return (
        lines
        + _serving_setup(d)
        + _serving_cells(d)
        + _serving_wrk(d)
        + _serving_ratios(d)
        + _serving_targets(d)
        + _serving_notes(d)
        + [""]
    )


def _serving_setup(d: dict) -> list[str]:
    m = d.get("model", {})
    lines = [
        f"Same registered model ({m.get('name')} v{m.get('version')}, XGBoost trained on {m.get('train_rows', 0):,} rows) "
        f"behind each server on 127.0.0.1, one worker each; {d.get('payload', '')}; closed-loop keep-alive clients "
        f"(`bench/load.py`, its own process), {_plural(d.get('repeats'), 'repeat')} × {d.get('duration_s')} s per cell after "
        f"{d.get('warmup_s')} s warm-up. Latency: request written → last response byte. "
        "**Load generator and servers share the machine's 2 cores.**"
    ]
    ms = d.get("measured")
    if ms:
        lines += [
            "",
            f"This section measured {ms.get('date')}, 1-min load average {ms.get('load_before', 0):.2f} at its "
            f"start and {ms.get('load_after', 0):.2f} at its end (other work on the machine: the tails below "
            "include it).",
        ]
    return lines


def _serving_cells(d: dict) -> list[str]:
    servers, cells = d.get("servers", {}), d.get("cells", {})
    lines = [
        "",
        "| server | concurrency | p50 ms | p99 ms | p99.9 ms | p99 ÷ p50 | requests/s | errors | requests measured |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in cells:
        label = servers.get(name, {}).get("label", name)
        for lv in [str(c) for c in d.get("levels", [])]:
            c = cells[name].get(lv)
            if not c:
                continue
            tail = round(c["p99_ms"] / c["p50_ms"], 1) if c.get("p99_ms") and c.get("p50_ms") else None
            lines.append(
                f"| {label} | {lv} | {_ms(c['p50_ms'])} | {_ms(c['p99_ms'])} | {_ms(c.get('p999_ms'))} | "
                f"{tail if tail is not None else '—'} | {_n(c['rps'])} | {c['errors']} | {c['requests']:,} |"
            )
    return lines


def _serving_wrk(d: dict) -> list[str]:
    servers, wrk = d.get("servers", {}), d.get("wrk") or {}
    if wrk.get("cells"):
        lines = [
            "",
            f"Cross-check with an independent load generator (`wrk {wrk.get('version', '')}`, one thread, "
            f"{wrk.get('duration_s')} s per cell, same single-instance body):",
            "",
            "| server | connections | p50 ms | p99 ms | p99.9 ms | requests/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, by_level in wrk["cells"].items():
            label = servers.get(name, {}).get("label", name)
            for lv, c in by_level.items():
                lines.append(
                    f"| {label} | {lv} | {_ms(c.get('p50_ms'))} | {_ms(c.get('p99_ms'))} | "
                    f"{_ms(c.get('p999_ms'))} | {_n(c.get('rps'))} |"
                )
        return lines
    if wrk.get("skipped"):
        return ["", f"wrk cross-check skipped: {wrk['skipped']}"]
    return []


def _serving_ratios(d: dict) -> list[str]:
    servers, ratios = d.get("servers", {}), d.get("ratios", {})
    if not ratios:
        return []
    lines = [
        "",
        "kfct ÷ peer (latency below 1 = kfct faster; requests/s above 1 = kfct serves more):",
        "",
        "| peer | concurrency | p50 ratio | p99 ratio | requests/s ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for peer, by_level in ratios.items():
        label = servers.get(peer, {}).get("label", peer)
        for lv in [str(c) for c in d.get("levels", [])]:
            r = by_level.get(lv)
            if r:
                lines.append(f"| {label} | {lv} | {_ratio(r['p50_ms'])} | {_ratio(r['p99_ms'])} | {_ratio(r['rps'])} |")
    return lines


def _verdict(v, target, lower=True) -> str:
    if v is None:
        return "—"
    return "met" if (v <= target if lower else v >= target) else "not met"


def _serving_targets(d: dict) -> list[str]:
    cells = d.get("cells", {})
    k1 = cells.get("kfct", {}).get("1")
    if not k1:
        return []
    best_rps = max((c.get("rps") or 0) for c in cells["kfct"].values())
    return [
        "",
        f"kfct against issue 3's targets (one worker, loopback): p50 {_ms(k1['p50_ms'])} ms at "
        f"concurrency 1 (≤ {TARGETS['p50_ms']:g} ms: {_verdict(k1['p50_ms'], TARGETS['p50_ms'])}), "
        f"p99 {_ms(k1['p99_ms'])} ms (≤ {TARGETS['p99_ms']:g} ms: {_verdict(k1['p99_ms'], TARGETS['p99_ms'])}), "
        f"best {_n(best_rps)} requests/s (≥ {TARGETS['rps']:,.0f}: "
        f"{_verdict(best_rps, TARGETS['rps'], lower=False)}).",
    ]


def _serving_notes(d: dict) -> list[str]:
    notes = []
    for s in d.get("servers", {}).values():
        notes.append(
            f"{s['label']} (`{s['endpoint']}`) ready {s['ready_s']:.1f} s after start; answers match the "
            f"model's own probabilities within {s['max_abs_diff_vs_model']:.0e}"
        )
    for name, why in (d.get("failed") or {}).items():
        notes.append(f"**{name} failed**: {why.splitlines()[0] if why else ''}")
    lines = [""] + [f"- {n}." for n in notes] if notes else []
    lines.append(
        "- Each server runs with its own defaults: uvicorn's access log is on in `mlflow models serve` "
        "and in the FastAPI app (as the case study runs it), off in kfct (`--access-log` turns it on); "
        "kfct's prediction log (parquet, off the request path) and Prometheus metrics are on."
    )
    lines.append(
        "- All servers run with `OMP_NUM_THREADS=1` (one worker, one core), so XGBoost's OpenMP threads in the "
        "peers' `predict_proba` do not fight the load generator for the two cores. kfct answers single "
        "requests from the same booster compiled to numpy trees (`serving/fasttrees.py`, checked against "
        "the booster at load); the peers call the model's `predict_proba` on a pandas DataFrame."
    )
    return lines


def render_scoring(sec: dict) -> list[str]:
    d = sec.get("data") or {}
    lines = [f"## {TITLES['scoring']}", ""]
    st = _status_line(sec)
    if st:
        return [*lines, st, ""]
    tools = d.get("tools", {})
    lines.append(
        "2.1M generated customers, parquet in → parquet of id, probability, label out, timed file to file "
        "(model load excluded), same registered model. The case study's monthly batch took 2 h 31 min."
    )
    lines += [
        "",
        "| tool | rows | seconds, median (range) | rows/s | read / score / write s | vs case study | repeats |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    cs = d.get("case_study_s")
    for t in tools.values():
        speed = f"{cs / t['projected_2_1m_s']:,.0f}× faster" if cs and t.get("projected_2_1m_s") else "—"
        rng = t.get("seconds_range")
        spread = f" ({rng[0]:.2f}–{rng[1]:.2f})" if rng and t.get("repeats", 1) > 1 else ""
        lines.append(
            f"| {t['label']} | {t['rows']:,} | {_n(t['seconds'], 2)}{spread} | {_n(t['rows_per_s'])} | "
            f"{t['read_s']:.2f} / {t['score_s']:.2f} / {t['write_s']:.2f} | {speed} | {t['repeats']} |"
        )
    lines.append(f"| case study (TelecomIT, 2h31m) | 2,100,000 | {_n(cs)} | {_n(d.get('case_study_rows_per_s'))} | — | 1× | — |")
    k = tools.get("kfct")
    if k:
        ok = "met" if (k.get("rows_per_s") or 0) >= TARGETS["rows_per_s"] else "not met"
        extra = ""
        if d.get("kfct_over_mlflow_rows_per_s"):
            extra = f"; kfct ÷ MLflow pyfunc rows/s: {_ratio(d['kfct_over_mlflow_rows_per_s'])}"
        lines += ["", f"kfct: {_n(k['rows_per_s'])} rows/s (issue 3's target ≥ 250,000 rows/s: {ok}){extra}."]
    if d.get("generated_s"):
        lines.append(f"(The input was generated in this run in {d['generated_s']:.1f} s and cached: {d['input']}.)")
    return [*lines, ""]


def render_training(sec: dict, gpu: dict | None) -> list[str]:
    d = sec.get("data") or {}
    lines = [f"## {TITLES['training']}", ""]
    st = _status_line(sec)
    if st:
        lines.append(st)
    else:
        lines.append(
            "Split + encoder fit + XGBoost `hist` with early stopping on validation AUC (default config: "
            "≤ 400 trees, depth 5), as the pipeline's featurize and train stages compute it, in process, "
            "MLflow logging excluded."
        )
    lines += [
        "",
        "| rows | device | wall s (split + fit), median (range) | fit s | trees kept | val AUC | repeats |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for f in d.get("figures", []):
        rng = f.get("seconds_range")
        spread = f" ({rng[0]:.1f}–{rng[1]:.1f})" if rng and f.get("repeats", 1) > 1 else ""
        lines.append(
            f"| {f['rows']:,} | CPU ({d.get('cores', '?')} cores) | {_n(f['seconds'], 1)}{spread} | "
            f"{_n(f['fit_seconds'], 1)} | {(f.get('best_iteration') or 0) + 1} | {f['val_roc_auc']} | "
            f"{f['repeats']} |"
        )
    for s in d.get("skipped_sizes", []):
        lines.append(f"| {s['rows']:,} | CPU | {s['reason']} | | | | |")
    if gpu and not gpu.get("error"):
        for f in gpu["figures"]:
            trees = f.get("best_iteration")
            lines.append(
                f"| {int(f['rows']):,} | GPU: {gpu['hardware']}, measured {gpu['date']} | "
                f"{_n(f['seconds'], 1)} | {_n(f.get('fit_seconds'), 1)} | "
                f"{(trees + 1) if isinstance(trees, int) else '—'} | {f.get('val_roc_auc', '—')} | "
                f"{f.get('repeats', '—')} |"
            )
    else:
        lines.append(f"| 1,000,000 | GPU (CUDA) | {NO_GPU} | | | | |")
        if gpu and gpu.get("error"):
            lines += ["", f"GPU figure file not used: {gpu['error']}"]
    return [*lines, ""]


def render_pipeline(sec: dict) -> list[str]:
    d = sec.get("data") or {}
    lines = [f"## {TITLES['pipeline']}", ""]
    st = _status_line(sec)
    if st:
        return [*lines, st, ""]
    how = "one run" if d.get("repeats") == 1 else "median of " + _plural(d.get("repeats"), "run")
    lines.append(
        f"`kfct.pipelines.local.run_ct(\"{d.get('data_uri')}\")`: the compiled pipeline's own DAG run by kfp's "
        "SubprocessRunner, each stage a subprocess; a stage's time is what it stamped itself, from the first line "
        "of its function (the libraries it imports included) to its last, and the total also holds starting "
        f"Python and kfp's executor for each; {how}."
    )
    lines += ["", "| stage | seconds |", "|---|---:|"]
    for k, v in (d.get("stages") or {}).items():
        lines.append(f"| {k} | {_n(v, 1)} |")
    rng = d.get("total_range")
    spread = f" (runs: {', '.join(f'{x:.1f}' for x in rng)})" if rng and len(set(rng)) > 1 else ""
    lines.append(f"| **total (wall)** | **{_n(d.get('total_seconds'), 1)}**{spread} |")
    return [*lines, ""]


SCALE_STEPS = (
    "validate-single",
    "featurize-single",
    "validate-part",
    "merge-validation",
    "featurize-part",
    "merge-featurize",
    "evaluate",
    "score-shard",
    "train",
)


def render_scale(sec: dict) -> list[str]:
    """Peak RSS per step (fresh process, in a cgroup at the IR's limit) for each dataset size."""
    d = sec.get("data") or {}
    lines = [f"## {TITLES['scale']}", ""]
    st = _status_line(sec)
    if st:
        return [*lines, st, ""]
    sizes = d.get("sizes") or []
    lines.append(
        f"Datasets in parts of {d.get('part_rows', 0):,} rows (`kfct data generate --part-rows`). Each step "
        "ran once in a fresh process under `/usr/bin/time -v`"
        + (
            ", inside a cgroup v1 memory group limited to the memory the compiled pipeline gives its pod"
            if d.get("cgroup")
            else " (no cgroup here: limits not enforced)"
        )
        + "; peak RSS in MiB, wall seconds, and whether it finished under the limit. See `bench/scale.py` "
        "for what each step reads (map steps: one part; reduce steps: every part's statistics)."
    )
    head = "| step | limit MiB | " + " | ".join(f"{z['label']} ({z['rows']:,} rows, {z['parts']} parts)" for z in sizes) + " |"
    lines += ["", head, "|---|---:|" + "---:|" * len(sizes)]
    for step in SCALE_STEPS:
        cells, limit = [], None
        for z in sizes:
            r = next((x for x in z["steps"] if x["step"] == step), None)
            if r is None:
                cells.append("not run")
                continue
            limit = r.get("limit_mib") or limit
            ok = "ok" if r.get("under_limit") else f"**over / exit {r.get('exit')}**"
            cells.append(f"{_n(r.get('peak_rss_mib'))} MiB, {_n(r.get('wall_s'), 1)} s, {ok}")
        lines.append(f"| {step} | {_n(limit)} | " + " | ".join(cells) + " |")
    for z in sizes:
        sr = z.get("split_rows") or {}
        if sr:
            lines.append("")
            lines.append(
                f"{z['label']}: split {sr.get('train', 0):,} / {sr.get('val', 0):,} / {sr.get('test', 0):,} "
                "rows (train/val/test, by id hash)."
            )
    if d.get("notes"):
        lines += [""] + [f"- {n}" for n in d["notes"]]
    lines += render_train_workers(d.get("train_workers") or [])
    for run in d.get("ct_runs") or []:
        lines += render_ct_run(run)
    return [*lines, ""]


def render_train_workers(tw: list) -> list[str]:
    """The held train workers' table (`python -m bench.scale --train-workers`), when measured."""
    if not tw:
        return []
    lines: list[str] = []
    lines += [
        "",
        "### Train workers at a dataset's split sizes (`python -m bench.scale --train-workers`)",
        "",
        "Each worker in its own cgroup v1 memory group at the per-worker limit (the TrainJob's "
        "`resourcesPerNode`); train/validation splits of the dataset's size (70% / 15% of its parts); "
        "boosting capped at the stated rounds (memory is built before the first round).",
        "",
        "| dataset | workers | train rows | val rows | rounds cap | peak RSS per worker MiB | limit MiB | exits | wall s |",
        "|---|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in tw:
        held = r.get("held") or []
        peaks = " / ".join(_n(h.get("peak_rss_mib")) for h in held) or "–"
        exits = ", ".join(str(h.get("exit")) for h in held) or "–"
        lines.append(
            f"| {r['label']} | {r['workers']} | {_n(r['train_rows'])} | {_n(r['val_rows'])} | "
            f"{r['rounds_cap']} | {peaks} | {_n(r.get('limit_mib'))} | {exits} | {_n(r['wall_s'], 1)} |"
        )
    return lines


def render_ct_run(run: dict) -> list[str]:
    """One whole CT run with every process held at its pod's limit (`kfct run --pod-limits`)."""
    ok = all(s.get("under_limit") for s in run["steps"])
    lines = [
        "",
        f"### Whole CT run, {run['label']} ({_n(run.get('rows'))} rows), every process held at its pod's limit",
        "",
        f"`{run['command']}`: each task process (and each train worker) in its own cgroup v1 memory group at "
        f"the limit the compiled pipeline gives its pod; {_n(run.get('total_seconds'), 0)} s in all; validation "
        f"{'passed' if run.get('validation_passed') else 'FAILED'}; test ROC AUC {run.get('test_roc_auc') or 0:.4f}; "
        f"registered version {run.get('registered') or '–'}; "
        + ("every process under its limit." if ok else "**a process was over its limit**."),
        "",
        "| step | processes | largest peak RSS MiB | limit MiB | wall s (all its processes) | exit |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for s in run["steps"]:
        lines.append(
            f"| {s['step']} | {s['processes']} | {_n(s['peak_rss_mib'])} | {_n(s['limit_mib'])} | "
            f"{_n(s['wall_s'], 1) if s.get('wall_s') is not None else '– (in train-model)'} | "
            f"{', '.join(map(str, s['exits']))} |"
        )
    return lines


def render_scale_chart(data: dict, path: Path) -> Path | None:
    """Peak RSS of each step against the dataset's row count, with the pods' limits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = data.get("sizes") or []
    if not sizes:
        return None
    fig, ax = plt.subplots(figsize=(9, 5))
    limits = set()
    for step in SCALE_STEPS:
        pts = [
            (z["rows"] / 1e6, r["peak_rss_mib"])
            for z in sizes
            for r in z["steps"]
            if r["step"] == step and r.get("peak_rss_mib") is not None
        ]
        limits |= {r["limit_mib"] for z in sizes for r in z["steps"] if r["step"] == step and r.get("limit_mib")}
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=step)
    for lim in sorted(limits):
        ax.axhline(lim, color="red", linestyle="--", linewidth=1)
        ax.text(0.2, lim * 1.02, f"pod limit {lim:.0f} MiB", color="red", fontsize=8)
    ax.set_xlabel("dataset rows (millions)")
    ax.set_ylabel("peak RSS (MiB)")
    ax.set_title(f"Peak RSS per CT step, parts of {data.get('part_rows', 0):,} rows")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_scale(data: dict, out_dir: Path) -> dict[str, Path]:
    """`scale.md` / `scale.json` / `scale.png`: the Scale section on its own (kept when other sections rerun)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "scale.md", "json": out_dir / "scale.json"}
    md = "\n".join(render_scale({"status": "ok", "data": data})).rstrip() + "\n"
    chart = render_scale_chart(data, out_dir / "scale.png")
    if chart is not None:
        paths["png"] = chart
        md += f"\n![peak RSS per step]({chart.name})\n"
    paths["md"].write_text(md)
    paths["json"].write_text(json.dumps(data, indent=1, default=str) + "\n")
    return paths


def render_markdown(results: dict) -> str:
    meta = results.get("meta", {})
    secs = results.get("sections", {})
    lines = render_header(meta)
    for name in SECTIONS:
        sec = secs.get(name) or {"status": "skipped", "reason": "not requested"}
        if name == "serving":
            lines += render_serving(sec)
        elif name == "tail":
            from bench.predlog_tail import render as render_tail

            lines += render_tail(sec, TITLES["tail"])
        elif name == "scoring":
            lines += render_scoring(sec)
        elif name == "training":
            lines += render_training(sec, results.get("gpu_figure"))
        elif name == "pipeline":
            lines += render_pipeline(sec)
        elif name == "workers":
            from bench.workers import render

            lines += render(sec, TITLES["workers"])
        elif name == "scale":
            lines += render_scale(sec)
    return "\n".join(lines).rstrip() + "\n"


def render_chart(results: dict, path: Path) -> Path | None:
    """Four panels: serving latency, serving throughput, batch rows/s, pipeline stages. None if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    secs = results.get("sections", {})
    serving = (secs.get("serving") or {}).get("data") or {}
    scoring = (secs.get("scoring") or {}).get("data") or {}
    pipeline = (secs.get("pipeline") or {}).get("data") or {}
    training = (secs.get("training") or {}).get("data") or {}
    if not any((serving.get("cells"), scoring.get("tools"), pipeline.get("stages"), training.get("figures"))):
        return None
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    _latency_panel(axes[0][0], serving)
    _throughput_panel(axes[0][1], serving)
    _scoring_panel(axes[1][0], scoring)
    _pipeline_panel(axes[1][1], pipeline, training)
    meta = results.get("meta", {})
    fig.suptitle(
        f"kfct benchmarks — {meta.get('date', '')}, {meta.get('cores', '?')} shared cores "
        "(load generator and servers on the same machine)",
        fontsize=11,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency_panel(ax, serving: dict) -> None:
    cells = serving.get("cells") or {}
    levels = [str(c) for c in serving.get("levels", [])]
    if cells:
        xs, p50, p99, names = [], [], [], []
        for name, by in cells.items():
            for lv in levels:
                c = by.get(lv)
                if c:
                    names.append(f"{name}\nc={lv}")
                    p50.append(c["p50_ms"] or 0)
                    p99.append(c["p99_ms"] or 0)
                    xs.append(len(xs))
        ax.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99")
        ax.set_xticks(xs, names, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.legend()
    ax.set_title("Serving latency, 1 instance/request")


def _throughput_panel(ax, serving: dict) -> None:
    cells = serving.get("cells") or {}
    labels = {k: v.get("label", k) for k, v in (serving.get("servers") or {}).items()}
    levels = [str(c) for c in serving.get("levels", [])]
    if cells:
        width = 0.8 / max(1, len(levels))
        for j, lv in enumerate(levels):
            vals = [(by.get(lv) or {}).get("rps") or 0 for by in cells.values()]
            ax.bar(
                [i + (j - (len(levels) - 1) / 2) * width for i in range(len(cells))], vals, width=width, label=f"concurrency {lv}"
            )
        ax.set_xticks(range(len(cells)), [labels.get(n, n) for n in cells], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("requests/s (log)")
        ax.legend()
    ax.set_title("Serving throughput, one worker")


def _scoring_panel(ax, scoring: dict) -> None:
    tools = scoring.get("tools") or {}
    if tools:
        names = [t["label"] for t in tools.values()] + ["case study\n(2h31m)"]
        vals = [t["rows_per_s"] or 0 for t in tools.values()] + [scoring.get("case_study_rows_per_s") or 0]
        ax.bar(range(len(vals)), vals, color=[f"C{i}" for i in range(len(tools))] + ["C7"])
        ax.set_xticks(range(len(vals)), names, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("rows/s (log)")
    ax.set_title("Batch scoring, 2.1M customers")


def _pipeline_panel(ax, pipeline: dict, training: dict) -> None:
    stages = pipeline.get("stages") or {}
    if stages:
        ax.barh(list(stages)[::-1], list(stages.values())[::-1])
        ax.set_xlabel("seconds")
        ax.set_title(f"Local CT pipeline, 100k rows (total {pipeline.get('total_seconds')} s)")
    elif training.get("figures"):
        f = training["figures"]
        ax.bar([f"{x['rows']:,}" for x in f], [x["seconds"] for x in f])
        ax.set_ylabel("seconds")
        ax.set_title("Training wall time (CPU)")
    else:
        ax.set_title("Local CT pipeline (not run)")


def _jsonable(results: dict) -> dict:
    """The record without bulky raw per-run rows."""
    out = json.loads(json.dumps(results, default=str))
    serving = ((out.get("sections") or {}).get("serving") or {}).get("data") or {}
    serving.pop("raw", None)
    return out


def write(results: dict, out_dir: Path, stem: str = "results") -> dict[str, Path]:
    """Write `<stem>.md`, `<stem>.json`, `<stem>.png` into out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / f"{stem}.md", "json": out_dir / f"{stem}.json"}
    chart = render_chart(results, out_dir / f"{stem}.png")
    md = render_markdown(results)
    if chart is not None:
        paths["png"] = chart
        md = md.rstrip() + f"\n\n![kfct benchmarks]({chart.name})\n"
    paths["md"].write_text(md)
    paths["json"].write_text(json.dumps(_jsonable(results), indent=2) + "\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    """Re-render results.md/.png from a results.json, e.g. to add a GPU figure measured later."""
    import argparse
    import sys

    from bench.training import GpuFigureError, load_gpu_figure

    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    p.add_argument("--results", default=str(here / "results.json"))
    p.add_argument("--gpu-figure", default=None, help="JSON from `python -m bench.training --device cuda`")
    args = p.parse_args(argv)
    src = Path(args.results)
    try:
        results = json.loads(src.read_text())
    except (OSError, ValueError) as exc:
        print(f"bench.report: cannot read {src}: {exc}", file=sys.stderr)
        return 2
    if args.gpu_figure:
        try:
            results["gpu_figure"] = load_gpu_figure(args.gpu_figure)
        except GpuFigureError as exc:
            print(f"bench.report: {exc}", file=sys.stderr)
            return 2
    stem = src.stem
    paths = write(results, src.parent, stem=stem)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
