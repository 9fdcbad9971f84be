"""Realized performance: served predictions judged on the outcomes that followed them.

Per served version (and role: champion / canary / shadow) and per time window:
AUC, recall, precision, accuracy, calibration (mean predicted vs observed, Brier)
and positive rates; the ROC and calibration curves as PNG (inline in the HTML);
Prometheus gauges in the node-exporter textfile format for the dashboard; and the
input the retrain policy needs: the champion's realized AUC against the AUC it had
on its test set when it was registered (`test_roc_auc` tag). A drop beyond
`drift.performance_drop_threshold` asks for a CT run (with the usual cooldown).
"""

import base64
import html
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfp.dsl import HTML, Markdown, Metrics, Output

if TYPE_CHECKING:
    from kfct.config import RunConfig
    from kfct.runtime.settings import Settings

log = logging.getLogger("kfct.components.outcomes_report")


def decay(champion_rows: list[dict], baseline: dict | None, threshold: float) -> dict:
    """Performance decay of the champion: realized vs registered test metrics."""
    realized = next((r for r in champion_rows if r.get("roc_auc") is not None), None)
    if not baseline or realized is None:
        return {
            "assessed": False,
            "retrain": False,
            "reason": "no baseline test metrics" if not baseline else "realized AUC not computable yet",
        }
    drop = float(baseline["roc_auc"]) - float(realized["roc_auc"])
    retrain = drop > threshold
    return {
        "assessed": True,
        "retrain": retrain,
        "baseline_roc_auc": float(baseline["roc_auc"]),
        "realized_roc_auc": float(realized["roc_auc"]),
        "roc_auc_drop": drop,
        "threshold": threshold,
        "n": realized["n"],
        "reason": (
            f"realized AUC {realized['roc_auc']:.3f} is {drop:.3f} below the test AUC "
            f"{baseline['roc_auc']:.3f} (limit {threshold:g})"
        )
        if retrain
        else f"realized AUC drop {drop:+.3f} within {threshold:g}",
    }


def realized_report_core(
    joined: Any, cfg: "RunConfig", champion: str | None, baseline: dict | None, window: str = "1D", sample: dict | None = None
) -> dict[str, Any]:
    """The report's content; `sample` says what the joined predictions are (all, or a bounded sample)."""
    from kfct.evidence.outcomes import calibration_curve, realized_performance

    threshold = float(cfg.drift.performance_drop_threshold)
    by_version = realized_performance(joined)
    champ_rows = [r for r in by_version if r["model_version"] == str(champion) and r["role"] == "champion"]
    return {
        "n_judged": len(joined),
        "sample": sample,
        "champion": champion,
        "by_version": by_version,
        "by_window": realized_performance(joined, window=window),
        "window": window,
        "calibration": {str(v): calibration_curve(g) for v, g in joined.groupby("model_version")} if len(joined) else {},
        "decay": decay(champ_rows, baseline, threshold),
    }


def curves_png(joined: Any) -> bytes:
    """ROC and calibration curves per served version, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    from kfct.evidence.outcomes import calibration_curve

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    for (version, role), g in joined.groupby(["model_version", "role"]):
        name = f"v{version} ({role})"
        if g["outcome"].nunique() == 2:
            fpr, tpr, _ = roc_curve(g["outcome"], g["probability"])
            ax1.plot(fpr, tpr, label=name)
        pts = calibration_curve(g)
        ax2.plot([p["mean_probability"] for p in pts], [p["observed_rate"] for p in pts], marker="o", label=name)
    ax1.plot([0, 1], [0, 1], ls=":", c="grey")
    ax2.plot([0, 1], [0, 1], ls=":", c="grey")
    ax1.set(title="ROC on realized outcomes", xlabel="false positive rate", ylabel="true positive rate")
    ax2.set(title="Calibration", xlabel="mean predicted probability", ylabel="observed churn rate")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


_COLS = (
    "n",
    "roc_auc",
    "recall",
    "precision",
    "accuracy",
    "brier",
    "mean_probability",
    "observed_rate",
    "predicted_positive_rate",
)


def _fmt(v: object) -> str:
    return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def render_markdown(rep: dict) -> str:
    lines = [
        f"# Realized performance ({rep['n_judged']} predictions with an outcome)",
        "",
        *([f"Judged on {rep['sample']['text']}.", ""] if rep.get("sample") else []),
        "| version | role | " + " | ".join(_COLS) + " |",
        "|---|---|" + "---|" * len(_COLS),
    ]
    for r in rep["by_version"]:
        lines.append(f"| v{r['model_version']} | {r['role']} | " + " | ".join(_fmt(r.get(c)) for c in _COLS) + " |")
    d = rep["decay"]
    lines += ["", f"**Champion decay:** {d['reason']}" + (" → retrain requested" if d.get("retrain") else "")]
    if rep["by_window"]:
        lines += [
            "",
            f"## Per window ({rep['window']})",
            "",
            "| window | version | role | n | roc_auc | recall |",
            "|---|---|---|---|---|---|",
        ]
        for r in rep["by_window"]:
            lines.append(
                f"| {r['window']} | v{r['model_version']} | {r['role']} | {r['n']} | {_fmt(r['roc_auc'])} | {_fmt(r['recall'])} |"
            )
    return "\n".join(lines) + "\n"


def render_html(rep: dict, png: bytes | None) -> str:
    rows = "".join(
        "<tr>"
        + f"<td>v{html.escape(r['model_version'])}</td><td>{html.escape(r['role'])}</td>"
        + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in _COLS)
        + "</tr>"
        for r in rep["by_version"]
    )
    img = f'<img alt="ROC and calibration curves" src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>kfct realized performance</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>Realized performance</h1><p>{rep['n_judged']} predictions with an outcome.</p>"
        + (f"<p>Judged on {html.escape(rep['sample']['text'])}.</p>" if rep.get("sample") else "")
        + "<table><tr><th>version</th><th>role</th>"
        + "".join(f"<th>{c}</th>" for c in _COLS)
        + f"</tr>{rows}</table>"
        f"<p><b>Champion decay:</b> {html.escape(rep['decay']['reason'])}</p>{img}</body></html>"
    )


def write_gauges(rep: dict, model_name: str, path: Path) -> Path:
    """`kfct_realized_*` gauges (node-exporter textfile format) for the Grafana dashboard."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    reg = CollectorRegistry()
    g = Gauge("kfct_realized_metric", "Model quality on realized outcomes", ["model", "version", "role", "metric"], registry=reg)
    for r in rep["by_version"]:
        for m in ("roc_auc", "recall", "precision", "accuracy", "brier", "observed_rate", "mean_probability", "n"):
            if r.get(m) is not None:
                g.labels(model_name, r["model_version"], r["role"], m).set(float(r[m]))
    d = Gauge("kfct_realized_auc_drop", "Champion test AUC minus realized AUC", ["model"], registry=reg)
    if rep["decay"].get("assessed"):
        d.labels(model_name).set(rep["decay"]["roc_auc_drop"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), reg)
    return path


def baseline_metrics(model_name: str, version: str | None) -> dict | None:
    from kfct.governance import registry

    if version is None:
        return None
    tags = registry.client().get_model_version(model_name, version).tags or {}
    if "test_roc_auc" not in tags:
        return None
    return {"roc_auc": float(tags["test_roc_auc"]), "recall": float(tags.get("test_recall", "nan"))}


def outcomes_report(
    model_name: str,
    cfg: "RunConfig",
    out_dir: str | Path,
    since: Any = None,
    retrain: bool = False,
    settings: "Settings | None" = None,
    window: str = "1D",
) -> dict:
    """Join, measure, write Markdown/HTML/JSON/gauges, audit; with `retrain`, act on decay."""
    import json

    from kfct.components.ab_test import gather_joined
    from kfct.governance import audit, registry

    registry.setup(settings)
    champion = registry.alias_version(model_name, "champion")
    joined, sample = gather_joined(cfg, model_name, since=since, settings=settings)
    rep = realized_report_core(joined, cfg, champion, baseline_metrics(model_name, champion), window=window, sample=sample)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = curves_png(joined) if len(joined) else None
    files = {
        "markdown": out / "realized_performance.md",
        "html": out / "realized_performance.html",
        "json": out / "realized_performance.json",
        "gauges": out / "kfct_realized.prom",
    }
    files["markdown"].write_text(render_markdown(rep))
    files["html"].write_text(render_html(rep, png))
    files["json"].write_text(json.dumps(rep, indent=1, default=str))
    write_gauges(rep, model_name, files["gauges"])
    rep["files"] = {k: str(v) for k, v in files.items()}
    audit.record(
        "realized_performance",
        model_name=model_name,
        version=champion,
        n_judged=rep["n_judged"],
        decay=rep["decay"],
        sample=sample,
    )
    log.info("realized performance of %s: %s", model_name, rep["decay"]["reason"])
    if retrain and rep["decay"].get("retrain"):
        from kfct.components.retrain_policy import run_trigger

        rep["retrain"] = run_trigger(
            {"retrain": True, "reason": rep["decay"]["reason"], "severity": "high"}, cfg, model_name, settings=settings
        )
    return rep


# --------------------------------------------------------------------------- kfp components (monitoring pipeline)


def report_realized_performance(
    config_json: str,
    model_name: str,
    since: str,
    retrain: bool,
    report_md: Output[Markdown],
    report_html: Output[HTML],
    metrics: Output[Metrics],
) -> str:
    """Join the prediction log with the stored outcomes; realized performance per served version; retrain on decay."""
    from kfct.runtime.stage import stage

    with stage("report-realized-performance", config_json, stamp=report_md.metadata, model_name=model_name) as st:
        import json
        import shutil
        import tempfile

        from kfct.components.outcomes_report import outcomes_report

        cfg = st.config
        with tempfile.TemporaryDirectory() as tmp:
            rep = outcomes_report(model_name, cfg, tmp, since=since or None, retrain=retrain)
            shutil.copy(rep["files"]["markdown"], report_md.path)
            shutil.copy(rep["files"]["html"], report_html.path)
        metrics.log_metric("n_judged", rep["n_judged"])
        if rep["decay"].get("assessed"):
            metrics.log_metric("realized_roc_auc", rep["decay"]["realized_roc_auc"])
            metrics.log_metric("roc_auc_drop", rep["decay"]["roc_auc_drop"])
        return json.dumps({"decay": rep["decay"], "retrain": rep.get("retrain")}, default=str)


def decide_ab_test(config_json: str, model_name: str, act: bool) -> str:
    """If an A/B test is running: report it on realized outcomes and, with `act`, promote/stop when conclusive."""
    from kfct.runtime.stage import stage

    with stage("decide-ab-test", config_json, model_name=model_name) as st:
        import json

        from kfct.components.ab_test import ab_decide, ab_report, read_state

        cfg = st.config
        state = read_state(model_name)
        if not state or state.get("status") != "running":
            return json.dumps({"action": "none", "reason": "no A/B test is running", "stage_time": st.times()})
        out: dict = ab_decide(model_name, cfg) if act else {"report": ab_report(model_name, cfg), "stop": None}
        return json.dumps({**out["report"]["decision"], "stop": out["stop"], "stage_time": st.times()}, default=str)
