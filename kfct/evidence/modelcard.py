"""Model card per registered version (Markdown and HTML) and its feature attributions.

`build_model_card(info)` renders what the register stage knows about a version:
intended use, data snapshot (URI, sha256, size), metrics overall and by slice,
fairness figures, top features, thresholds and the gate decision, lineage. Both
formats come from one list of sections, so they always say the same thing.

`top_features_shap(model, X, k)` uses XGBoost's own SHAP values (TreeSHAP via
`Booster.predict(DMatrix, pred_contribs=True)`); one-hot columns (`col=value`) are
summed back into their source feature per row before averaging magnitudes, which is
exact because SHAP values are additive. Other estimators get a permutation
importance (mean absolute change of the predicted probability when one feature's
values are shuffled) and the card says so.
"""

from __future__ import annotations

import base64
import html as _html
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from kfct.config import RunConfig
    from kfct.evidence.model import ChurnModel

# One rendered block of a card section: ("p", text), ("ul", items), ("table", header, rows) or ("img", ...).
Block = tuple[Any, ...]
Section = tuple[str, list[Block]]  # a heading and its blocks

DEFAULT_INTENDED_USE = (
    "Scores records (by default: existing telecom customers) by their probability of the positive class "
    "(by default: churn), so that a team can act on the highest-risk cases first. It supports a human "
    "decision (who to contact, which offer); it must not be used to deny service, set prices or decide "
    "about an individual on its own. Valid for the population and feature definitions of the data snapshot "
    "below; drift monitoring retrains it when that population moves."
)
CHART_TITLES = {
    "roc_curve": "ROC curve",
    "pr_curve": "Precision-recall curve",
    "calibration": "Calibration curve",
    "top_features": "Top features",
}
SHAP_METHOD = "SHAP (XGBoost TreeSHAP contributions, pred_contribs=True), mean |value| per source feature"
HIGHER_IS_BETTER = {"roc_auc", "pr_auc", "recall", "precision", "f1", "accuracy"}
PERMUTATION_METHOD = (
    "permutation importance: mean |change in predicted probability| when the feature is "
    "shuffled (SHAP needs an XGBoost booster; this model is not one)"
)


# --------------------------------------------------------------------------- attributions
def _xgb_booster(model: Any) -> Any:
    est: Any = getattr(model, "estimator", None)
    if type(est).__name__ == "Booster":
        return est
    if hasattr(est, "get_booster"):
        try:
            return est.get_booster()
        except (AttributeError, ValueError):  # an unfitted sklearn wrapper (NotFittedError is both)
            return None
    return None


def _source_index(model: ChurnModel) -> tuple[list[str], np.ndarray]:
    """Source feature of each encoded column: 'col=value' -> 'col' for the encoder's categoricals."""
    enc = model._fitted_encoder()
    names = list(enc.output_names_)
    cats = set(getattr(enc, "categorical_", {}) or {})
    sources = []
    for n in names:
        head = n.split("=", 1)[0]
        sources.append(head if "=" in n and head in cats else n)
    order = list(dict.fromkeys(sources))
    pos = {s: i for i, s in enumerate(order)}
    return order, np.array([pos[s] for s in sources])


def _ranked(names: list[str], values: np.ndarray, k: int) -> list[dict[str, Any]]:
    total = float(values.sum()) or 1.0
    idx = np.argsort(-values, kind="stable")[:k]
    return [{"feature": names[i], "importance": float(values[i]), "share": float(values[i] / total)} for i in idx]


def top_features_shap(model: ChurnModel, X: pd.DataFrame, k: int = 10, seed: int = 0) -> dict[str, Any]:
    """Top-k source features by mean |SHAP| (XGBoost) or permutation importance (other models).

    Returns `{"method", "kind": "shap"|"permutation", "rows", "features": [{"feature",
    "importance", "share"}]}` where `share` is the feature's part of the total.
    """
    if len(X) == 0:
        raise ValueError("top_features_shap needs at least one row")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    booster = _xgb_booster(model)
    if booster is not None:
        import xgboost as xgb

        M = model._fitted_encoder().transform(X)
        contrib = booster.predict(xgb.DMatrix(M), pred_contribs=True)[:, :-1]  # last column: bias
        names, src = _source_index(model)
        if contrib.shape[1] != len(src):
            raise ValueError(f"booster returned {contrib.shape[1]} contributions for {len(src)} encoded columns")
        per_source = np.zeros((contrib.shape[0], len(names)))
        np.add.at(per_source.T, src, contrib.T)  # sum one-hot columns per row (SHAP is additive)
        values = np.abs(per_source).mean(axis=0)
        return {"method": SHAP_METHOD, "kind": "shap", "rows": len(X), "features": _ranked(names, values, k)}

    rng = np.random.default_rng(seed)
    base = model.predict_positive(X)
    names = list(model.feature_names)
    values = np.zeros(len(names))
    for i, col in enumerate(names):
        Xp = X.copy()
        Xp[col] = X[col].to_numpy()[rng.permutation(len(X))]
        values[i] = float(np.abs(model.predict_positive(Xp) - base).mean())
    return {"method": PERMUTATION_METHOD, "kind": "permutation", "rows": len(X), "features": _ranked(names, values, k)}


# --------------------------------------------------------------------------- rendering
def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _sections(info: dict[str, Any]) -> tuple[str, list[tuple[str, list[Any]]]]:
    """The card's title and its sections, each a list of blocks ("p" | "ul" | "table") both renderers share."""
    name = info.get("model_name", "model")
    version = info.get("version", "?")
    gate = info.get("gate") or {}
    return f"Model card — {name} v{version}", [
        ("Overview", _overview(info, name, version, gate)),
        ("Intended use", [("p", info.get("intended_use") or DEFAULT_INTENDED_USE)]),
        ("Data snapshot", _data_snapshot(info.get("dataset") or {})),
        ("Metrics (test set)", _metrics(info.get("metrics") or {}, gate.get("thresholds") or {})),
        ("Metrics by slice", _slices(info.get("slices") or {})),
        ("Fairness", _fairness(info.get("fairness") or {})),
        ("Top features", _top_features(info.get("top_features") or {})),
        ("Thresholds and gate decision", _gate(gate, info.get("comparison"))),
        *_charts(info.get("charts") or {}),
        ("Lineage", _lineage(info.get("lineage") or {})),
    ]


def _overview(info: dict[str, Any], name: str, version: str, gate: dict[str, Any]) -> list[Block]:
    rows = [
        ("Model", f"{name} version {version}" + (f" (alias `{info['alias']}`)" if info.get("alias") else "")),
        ("Estimator", info.get("model_kind")),
        ("Trained", _training(info.get("training") or {})),
        ("Decision threshold", _fmt(_float(info.get("threshold")))),
        ("Gate decision", "DEPLOY" if gate.get("deploy") else ("BLOCKED" if gate else None)),
        ("MLflow run", info.get("run_id")),
    ]
    return [("table", ["field", "value"], [[k, _fmt(v)] for k, v in rows])]


def _training(t: dict[str, Any]) -> str | None:
    """How the model was trained: workers, engine (in-pod, kubeflow-trainer, local-processes), device."""
    if not t.get("engine"):
        return None
    workers = int(t.get("workers") or 1)
    return f"{workers} worker{'s' if workers != 1 else ''}, {t['engine']}, {t.get('device') or 'cpu'}"


def _data_snapshot(ds: dict[str, Any]) -> list[Any]:
    fields = [
        ("URI", ds.get("uri")),
        ("sha256", ds.get("sha256")),
        ("rows", ds.get("rows")),
        ("columns", ds.get("columns")),
        ("test rows", ds.get("rows_test")),
    ]
    rows = [[k, _fmt(v)] for k, v in fields if v is not None]
    return [("table", ["field", "value"], rows)] if rows else [("p", "Not recorded.")]


def _metrics(metrics: dict[str, Any], thresholds: dict[str, Any]) -> list[Any]:
    rows = [
        [k, _fmt(v), _fmt(thresholds.get(k))]
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    return [("table", ["metric", "value", "threshold"], rows)] if rows else [("p", "No metrics recorded.")]


def _slices(slices: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    for feature, groups in slices.items():
        if not groups:
            continue
        cols = sorted({c for g in groups.values() for c in g})
        blocks.append(("p", f"By {feature}:"))
        blocks.append(("table", [feature, *cols], [[g, *(_fmt(v.get(c)) for c in cols)] for g, v in groups.items()]))
    return blocks or [("p", "No slice metrics recorded.")]


def _fairness(fairness: dict[str, Any]) -> list[Any]:
    if not fairness:
        return [("p", "Fairness was not evaluated for this version.")]
    summary = []
    for feature, r in fairness.items():
        if not isinstance(r, dict) or "demographic_parity_difference" not in r:
            continue
        summary.append(
            [
                feature,
                _fmt(r["demographic_parity_difference"]),
                _fmt(r["equalized_odds_difference"]),
                _fmt(r.get("tpr_difference")),
                _fmt(r.get("fpr_difference")),
                ", ".join(f"{g} ({n})" for g, n in (r.get("ignored_groups") or {}).items()) or "none",
            ]
        )
    blocks: list[Block] = [
        (
            "table",
            [
                "sensitive feature",
                "demographic parity diff",
                "equalized odds diff",
                "TPR diff",
                "FPR diff",
                "ignored (too small)",
            ],
            summary,
        )
    ]
    for feature, r in fairness.items():
        if not isinstance(r, dict) or "groups" not in r:
            continue
        blocks.append(("p", f"{feature} by group:"))
        blocks.append(
            (
                "table",
                [feature, "size", "selection rate", "TPR", "FPR"],
                [
                    [g, _fmt(v.get("size")), _fmt(v.get("selection_rate")), _fmt(v.get("tpr")), _fmt(v.get("fpr"))]
                    for g, v in r["groups"].items()
                ],
            )
        )
    return blocks


def _top_features(tf: dict[str, Any]) -> list[Any]:
    if not tf.get("features"):
        return [("p", "Not computed.")]
    blocks: list[Block] = [("p", f"Method: {tf.get('method')} over {_fmt(tf.get('rows'))} rows.")]
    if tf.get("kind") == "permutation":
        blocks.append(
            ("p", "Note: not SHAP — this estimator has no XGBoost booster, so permutation importance is shown instead.")
        )
    blocks.append(
        (
            "table",
            ["rank", "feature", "importance", "share"],
            [[str(i + 1), f["feature"], _fmt(f["importance"]), f"{100 * f['share']:.1f}%"] for i, f in enumerate(tf["features"])],
        )
    )
    return blocks


def _gate(gate: dict[str, Any], comp: dict[str, Any] | None) -> list[Block]:
    blocks: list[Block] = []
    thresholds = gate.get("thresholds") or {}
    if thresholds:
        blocks.append(("ul", [f"{k} {'>=' if k in HIGHER_IS_BETTER else '<='} {v}" for k, v in thresholds.items()]))
    if gate:
        blocks.append(("p", f"Decision: {'DEPLOY' if gate.get('deploy') else 'BLOCKED'}"))
        blocks.append(("ul", list(gate.get("reasons") or ["no reasons recorded"])))
    if comp and "error" not in comp:
        blocks.append(
            (
                "p",
                f"Champion comparison on {comp.get('metric')}: challenger {_fmt(comp.get('challenger'))} vs "
                f"champion v{comp.get('champion_version', '?')} {_fmt(comp.get('champion'))}, diff "
                f"{_fmt(comp.get('diff'))}, CI [{_fmt(comp.get('ci_low'))}, {_fmt(comp.get('ci_high'))}]",
            )
        )
    return blocks or [("p", "No gate recorded.")]


def _charts(charts: dict[str, Any]) -> list[Any]:
    """The curves/top-features section, only when the card has charts."""
    if not charts:
        return []
    return [("Curves and top features", [("img", CHART_TITLES.get(k, k), k, png) for k, png in charts.items()])]


def _lineage(lineage: dict[str, Any]) -> list[Any]:
    if not lineage:
        return [("p", "No lineage recorded.")]
    return [("table", ["key", "value"], [[k, _fmt(v)] for k, v in sorted(lineage.items())])]


def description(info: dict[str, Any], intended_use: str | None = None) -> str:
    """The MLflow version description: intended use, data, gate decision (what the registry UI shows)."""
    ds, gate = info.get("dataset") or {}, info.get("gate") or {}
    reasons = "; ".join(gate.get("reasons") or [])
    return (
        f"Intended use: {intended_use or DEFAULT_INTENDED_USE}\n\n"
        f"Data: {ds.get('uri')} (sha256 {str(ds.get('sha256'))[:16]}, {ds.get('rows')} rows, "
        f"{ds.get('columns')} columns; test set {ds.get('rows_test')} rows).\n\n"
        f"Gate decision: {'DEPLOY' if gate.get('deploy') else 'BLOCKED'} - {reasons}"
    )[:5000]


def model_description(cfg: RunConfig) -> str:
    """The registered model's description: what it predicts, from which dataset, how versions are gated."""
    ds, gate = cfg.dataset, cfg.gate
    limits = ", ".join(f"{k} >= {v}" for k, v in gate.thresholds.items())
    fair = ", ".join(ds.sensitive_features) or "none configured"
    return (
        f"Probability that {ds.label} == {ds.positive_label!r} for a record of dataset "
        f"{ds.name!r} ({len(ds.columns)} columns). Intended use: {DEFAULT_INTENDED_USE}\n\n"
        f"Every version passed data validation and the gate: {limits}; fairness across: {fair}; "
        f"a challenger must beat the champion by {gate.compare_metric} >= {gate.min_improvement}."
    )[:5000]


def _float(v: float | str | None) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _render_md(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for head, blocks in sections:
        out += [f"## {head}", ""]
        for b in blocks:
            if b[0] == "p":
                out += [b[1], ""]
            elif b[0] == "img":  # the PNG is logged next to the card as <key>.png
                out += [f"![{b[1]}]({b[2]}.png)", ""]
            elif b[0] == "ul":
                out += [f"- {_md_cell(x)}" for x in b[1]] + [""]
            elif b[0] == "table":
                _, headers, rows = b
                out.append("| " + " | ".join(map(_md_cell, headers)) + " |")
                out.append("|" + "---|" * len(headers))
                out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
                out.append("")
    return "\n".join(out).rstrip() + "\n"


def _render_html(title: str, sections: list[Section]) -> str:
    e = _html.escape
    css = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;padding:.25rem .6rem;"
        "text-align:left}th{background:#f3f3f3}code{background:#f3f3f3}"
    )
    out = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        f"<style>{css}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for head, blocks in sections:
        out.append(f"<h2>{e(head)}</h2>")
        for b in blocks:
            if b[0] == "p":
                out.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "img":
                data = base64.b64encode(b[3]).decode("ascii")
                out.append(
                    f'<figure><img alt="{e(b[1])}" src="data:image/png;base64,{data}"><figcaption>{e(b[1])}</figcaption></figure>'
                )
            elif b[0] == "ul":
                out.append("<ul>" + "".join(f"<li>{e(str(x))}</li>" for x in b[1]) + "</ul>")
            elif b[0] == "table":
                _, headers, rows = b
                out.append("<table><thead><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in headers) + "</tr></thead><tbody>")
                out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows]
                out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def build_model_card(info: dict[str, Any]) -> tuple[str, str]:
    """(Markdown, HTML) model card for one registered version; missing parts say so.

    `info["charts"]` ({key: PNG bytes}, from `kfct.evidence.modelcard_charts.curve_charts`) is inlined
    as base64 in the HTML; the Markdown links `<key>.png`, logged beside it.
    """
    if not isinstance(info, dict):
        raise ValueError(f"model card info must be a dict, got {type(info).__name__}")
    title, sections = _sections(info)
    return _render_md(title, sections), _render_html(title, sections)
