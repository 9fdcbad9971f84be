"""The model card's pictures: ROC, precision-recall and calibration curves, top-feature bars (PNG bytes).

Why pictures and not only tables: a reviewer judges a curve's shape (where recall
collapses, whether probabilities are calibrated) at a glance, which a table of
figures hides. Rendered with matplotlib's Agg backend (no display), small and at a
fixed size so a card stays a few hundred KB with the PNGs inlined as base64.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

FIGSIZE, DPI = (4.2, 3.6), 80


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _axes(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    """A figure outside pyplot (no global figure registry, no GUI backend to pick; saved with Agg)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.subplots()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def curve_charts(y: Any, proba: Any, top_features: dict | None = None, bins: int = 10) -> dict[str, bytes]:
    """{"roc_curve", "pr_curve", "calibration", "top_features"?: PNG bytes} for the test set."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    y, proba = np.asarray(y), np.asarray(proba, dtype=float)
    out: dict[str, bytes] = {}
    if len(set(y.tolist())) == 2:
        fpr, tpr, _ = roc_curve(y, proba)
        fig, ax = _axes(f"ROC curve (AUC {auc(fpr, tpr):.3f})", "false positive rate", "true positive rate")
        ax.plot(fpr, tpr, lw=1.5)
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
        out["roc_curve"] = _png(fig)
        prec, rec, _ = precision_recall_curve(y, proba)
        fig, ax = _axes("Precision-recall curve", "recall", "precision")
        ax.plot(rec, prec, lw=1.5)
        ax.axhline(float(y.mean()), ls="--", lw=0.8, color="grey")
        out["pr_curve"] = _png(fig)
        frac, mean_pred = calibration_curve(y, proba, n_bins=bins, strategy="quantile")
        fig, ax = _axes("Calibration", "mean predicted probability", "observed positive share")
        ax.plot(mean_pred, frac, marker="o", lw=1.2)
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
        out["calibration"] = _png(fig)
    feats = (top_features or {}).get("features") or []
    if feats:
        names = [f["feature"] for f in feats][::-1]
        fig, ax = _axes("Top features", "mean |contribution|", "")
        ax.barh(names, [f["importance"] for f in feats][::-1])
        ax.tick_params(axis="y", labelsize=7)
        out["top_features"] = _png(fig)
    return out
