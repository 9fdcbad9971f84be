"""Stage 5 — evaluate and gate: test-set metrics, fairness, champion vs challenger.

The gate says deploy only when (0) no feature alone predicts the label (leakage) and,
when a champion exists, the champion still holds on the new data (else the data is
suspect and the run stops: `champion_collapse`), (1) every absolute threshold holds (case study:
AUC-ROC >= 0.80, recall >= 0.65), (2) the fairness limits hold, and (3) when a
champion exists, the challenger beats it on the same test set by at least
`min_improvement` while a paired bootstrap confidence interval of the difference
shows no significant regression. The first model ever faces (1) and (2) only.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from kfct.evidence.abstats import auc_groups, grouped_auc

if TYPE_CHECKING:
    import pandas as pd

    from kfct.config import GateConfig, LeakageConfig, RunConfig
    from kfct.evidence.model import ChurnModel

HIGHER_IS_BETTER = {"roc_auc", "pr_auc", "recall", "precision", "f1", "accuracy"}


def compute_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        brier_score_loss,
        confusion_matrix,
        log_loss,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y_true = np.asarray(y_true).astype(int)
    pred = (proba >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y_true, pred, labels=[0, 1]).ravel())
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, pred, average="binary", pos_label=1, zero_division=0)
    return {
        "roc_auc": float(roc_auc_score(y_true, proba)),
        "pr_auc": float(average_precision_score(y_true, proba)),
        "recall": float(recall),
        "precision": float(precision),
        "f1": float(f1),
        "accuracy": float(accuracy_score(y_true, pred)),
        "log_loss": float(log_loss(y_true, np.clip(proba, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier": float(brier_score_loss(y_true, proba)),
        "threshold": float(threshold),
        "positive_rate": float(pred.mean()),
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def paired_bootstrap(
    y_true: np.ndarray,
    p_new: np.ndarray,
    p_old: np.ndarray,
    metric: str = "roc_auc",
    rounds: int = 300,
    confidence: float = 0.95,
    seed: int = 7,
    threshold_new: float = 0.5,
    threshold_old: float = 0.5,
) -> dict[str, Any]:
    """Paired bootstrap of metric(new) - metric(old) on the same resamples.

    AUC uses a Poisson bootstrap with weighted AUC over pre-grouped scores (fast);
    other metrics resample indices and recompute.
    """
    y = np.asarray(y_true).astype(int)
    rng = np.random.default_rng(seed)
    diffs = np.empty(rounds)
    if metric == "roc_auc":
        g_new, g_old = auc_groups(y, p_new), auc_groups(y, p_old)
        for i in range(rounds):
            w = rng.poisson(1.0, len(y)).astype(np.float64)
            diffs[i] = grouped_auc(*g_new, w) - grouped_auc(*g_old, w)
    else:
        for i in range(rounds):
            idx = rng.integers(0, len(y), len(y))
            a = compute_metrics(y[idx], p_new[idx], threshold_new)[metric]
            b = compute_metrics(y[idx], p_old[idx], threshold_old)[metric]
            diffs[i] = a - b
    diffs = diffs[np.isfinite(diffs)]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(diffs, [alpha, 1.0 - alpha])
    new = compute_metrics(y, p_new, threshold_new)[metric]
    old = compute_metrics(y, p_old, threshold_old)[metric]
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    return {
        "metric": metric,
        "challenger": new,
        "champion": old,
        "diff": new - old,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "confidence": confidence,
        "rounds": len(diffs),
        # A significant regression: the whole interval on the wrong side of zero.
        "significant_regression": bool(sign * hi < 0),
        "significant_improvement": bool(sign * lo > 0),
    }


def feature_aucs(test_df: "pd.DataFrame", features: list[str], y: np.ndarray) -> dict[str, float]:
    """Each raw feature alone as a score for the label: its AUC, folded to >= 0.5 (direction free).

    Numbers score as themselves (a null as its own value below every other); categories and
    strings score as their level's positive share on this set. A feature at AUC ~1 separates
    the classes by itself: in a real table that is almost always the label leaking in."""
    import pandas as pd

    y = np.asarray(y).astype(int)
    out: dict[str, float] = {}
    if len(set(y.tolist())) < 2:
        return out
    for c in features:
        if c not in test_df:
            continue
        col = test_df[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            v = col.to_numpy(dtype=np.float64, na_value=np.nan)
            finite = np.isfinite(v)
            if not finite.any():
                continue
            score = np.where(finite, v, np.nanmin(np.where(finite, v, np.nan)) - 1.0)
        else:
            key = col.astype(str).where(col.notna(), "\x00null")
            score = key.map(pd.Series(y, index=key.index).groupby(key).mean()).to_numpy(np.float64)
        auc = grouped_auc(*auc_groups(y, score))
        if np.isfinite(auc):
            out[c] = float(max(auc, 1.0 - auc))
    return out


def auc_lower_bound(auc: float, n_pos: int, n_neg: int, z: float = 1.645) -> float:
    """One-sided 95% lower bound of an AUC (Hanley & McNeil 1982 standard error).

    Why a bound: on a small test set a real, strong feature reaches 0.99 by chance
    (breast cancer's worst concave points: 0.995 on 86 rows), a leaked one sits at 1.0."""
    if n_pos < 1 or n_neg < 1:
        return 0.0
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return float(auc - z * np.sqrt(max(var, 0.0)))


def leakage_findings(
    metrics: dict[str, Any], feature_auc: dict[str, float], leak: "LeakageConfig", n_pos: int = 10**9, n_neg: int = 10**9
) -> tuple[list[str], list[str]]:
    """(blocking reasons, notes): single features that alone predict the label block the gate, named;
    a too-perfect test AUC that no single feature explains is a note beside the decision.

    A feature blocks when the lower bound of its AUC (`auc_lower_bound`) reaches
    `leak.max_feature_auc`; `leak.accept` names features a user has accepted knowingly
    ("*": every feature, and no note on the metric)."""
    accept = set(leak.accept)
    limit = float(leak.max_feature_auc)
    found, explained = [], False
    for c, auc in sorted(feature_auc.items(), key=lambda kv: -kv[1]):
        if auc_lower_bound(auc, n_pos, n_neg) < limit:
            continue
        if c in accept or "*" in accept:
            explained = True  # an accepted leak explains a perfect metric too
        else:
            found.append(
                f"leakage: feature {c!r} alone predicts the label (AUC {auc:.4f} >= {limit}); "
                f"drop it, or accept it knowingly in gate.leakage.accept"
            )
    notes = []
    top = float(leak.max_roc_auc)
    if metrics.get("roc_auc", 0.0) >= top and "*" not in accept and not found and not explained:
        notes.append(
            f"note: test roc_auc {metrics['roc_auc']:.4f} >= {top} is suspiciously perfect and no single "
            f"feature explains it; check for features derived from the label"
        )
    return found, notes


def champion_collapse(
    champion_version: str | None, champion_now: dict[str, Any], registered: dict[str, Any], gate: "GateConfig"
) -> str | None:
    """The one line that stops the run when the champion collapses on the new data, else None.

    `champion_now`: the champion's metrics on this test set; `registered`: the metrics it was
    registered with. A model that held at registration and is now below chance, or far under
    its own figure, tells about the data (labels inverted, a column's meaning changed), not
    about the challenger: promoting whatever beats it would crown a model fitted to broken data."""
    m = gate.compare_metric
    auc = champion_now.get("roc_auc")
    reg_auc = registered.get("roc_auc")
    if auc is not None and auc < 0.5 and (reg_auc is None or reg_auc >= 0.6):
        what = f"roc_auc {auc:.4f} is below chance" + (f" (registered {reg_auc:.4f})" if reg_auc is not None else "")
    else:
        drop, now, reg = gate.champion_max_drop, champion_now.get(m), registered.get(m)
        if drop is None or now is None or reg is None:
            return None
        sign = 1.0 if m in HIGHER_IS_BETTER else -1.0
        if sign * (reg - now) <= float(drop):
            return None
        what = f"{m} {now:.4f} vs registered {reg:.4f} (drop over gate.champion_max_drop {drop})"
    return (
        f"stopped: champion v{champion_version} collapsed on this data: {what}; the data changed meaning "
        f"(labels inverted? a column redefined?), not a reason to promote; registry unchanged"
    )


def decide(
    metrics: dict[str, Any],
    gate: "GateConfig",
    comparison: dict[str, Any] | None,
    fairness: tuple[bool, list[str]] | None,
    leakage: list[str] | None = None,
    stop: str | None = None,
) -> tuple[bool, list[str]]:
    """Pure gate decision. Returns (deploy, reasons) where reasons explain either outcome.

    `stop` (a verdict on the data, `champion_collapse`) blocks and comes first; `leakage` findings block."""
    reasons: list[str] = [stop] if stop else []
    ok = not stop
    if leakage:
        ok = False
        reasons.extend(leakage)
    for name, limit in gate.thresholds.items():
        value = metrics[name]
        passed = value >= limit if name in HIGHER_IS_BETTER else value <= limit
        ok &= passed
        reasons.append(
            f"{name} {value:.4f} {'>=' if passed else '<'} {limit}"
            if name in HIGHER_IS_BETTER
            else f"{name} {value:.4f} {'<=' if passed else '>'} {limit}"
        )
    if fairness is not None:
        f_ok, f_reasons = fairness
        ok &= f_ok
        reasons.extend(f_reasons or (["fairness limits hold"] if f_ok else []))
    if comparison is None:
        reasons.append("no champion yet: absolute thresholds only")
    elif "error" in comparison:
        ok = False
        reasons.append(f"champion could not be scored on this test set: {comparison['error']}")
    else:
        m, diff, min_imp = comparison["metric"], comparison["diff"], float(gate.min_improvement)
        sign = 1.0 if m in HIGHER_IS_BETTER else -1.0
        improved = sign * diff >= min_imp
        ci = f"{int(comparison['confidence'] * 100)}% CI [{comparison['ci_low']:+.4f}, {comparison['ci_high']:+.4f}]"
        reasons.append(
            f"{m} vs champion v{comparison.get('champion_version', '?')}: {comparison['challenger']:.4f} vs "
            f"{comparison['champion']:.4f}, diff {diff:+.4f} {'>=' if improved else '<'} min_improvement {min_imp}, {ci}"
        )
        if comparison["significant_regression"]:
            reasons.append(f"significant regression on {m}")
        ok &= improved and not comparison["significant_regression"]
    return bool(ok), reasons


def registered_metrics(tags: dict[str, Any]) -> dict[str, float]:
    """The test metrics a version was registered with (its `test_<metric>` lineage tags)."""
    out = {}
    for k, v in (tags or {}).items():
        if k.startswith("test_"):
            try:
                out[k[5:]] = float(v)
            except (TypeError, ValueError):
                continue
    return out


def evaluate_core(
    model: "ChurnModel",
    test_df: "pd.DataFrame",
    cfg: "RunConfig",
    champion: "ChurnModel | None" = None,
    champion_version: str | None = None,
    champion_registered: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics on test, leakage, fairness, champion comparison and the decision — plain values.

    `champion_registered`: the champion's metrics at registration (`registered_metrics`), for
    `champion_collapse`; a result with `stop` set is a verdict on the data."""
    label = cfg.dataset.label
    y = test_df[label].to_numpy(np.int64)
    X = test_df.drop(columns=[label])
    proba = model.predict_positive(X)
    metrics = compute_metrics(y, proba, model.threshold)
    gate = cfg.gate

    fairness_report, fairness = None, None
    fcfg = cfg.fairness
    sensitive = cfg.dataset.sensitive_features
    if fcfg.enabled and sensitive:
        from kfct.components.fairness import fairness_gate
        from kfct.components.fairness import fairness_report as build_fairness

        pred = (proba >= model.threshold).astype(int)
        groups = {c: test_df[c].astype(str).to_numpy() for c in sensitive if c in test_df}
        fairness_report = build_fairness(y, pred, groups, int(fcfg.min_group_size))
        fairness = fairness_gate(fairness_report, fcfg, sensitive)

    comparison, stop = None, None
    if champion is not None:
        try:
            p_old = champion.predict_positive(X)
        except Exception as exc:  # noqa: BLE001 - schema changed: the old model cannot read the new data
            comparison = {"error": f"{type(exc).__name__}: {exc}", "champion_version": champion_version}
        else:
            comparison = paired_bootstrap(
                y,
                proba,
                p_old,
                gate.compare_metric,
                int(gate.bootstrap_rounds),
                float(gate.confidence),
                int(gate.seed),
                model.threshold,
                champion.threshold,
            )
            comparison["champion_version"] = champion_version
            now = compute_metrics(y, p_old, champion.threshold)
            stop = champion_collapse(champion_version, now, champion_registered or {}, gate)

    feature_auc = feature_aucs(test_df, list(model.feature_names), y)
    n_pos = int(y.sum())
    leakage, notes = leakage_findings(metrics, feature_auc, gate.leakage, n_pos, len(y) - n_pos)
    deploy, reasons = decide(metrics, gate, comparison, fairness, leakage, stop)
    reasons += notes
    return {
        "deploy": deploy,
        "reasons": reasons,
        "metrics": metrics,
        "comparison": comparison,
        "fairness": fairness_report,
        "fairness_passed": None if fairness is None else fairness[0],
        "stop": stop,
        "leakage": leakage,
        "feature_auc": {k: round(v, 4) for k, v in sorted(feature_auc.items(), key=lambda kv: -kv[1])[:10]},
        "proba": proba,
        "y": y,
    }


def slice_metrics(
    test_df: "pd.DataFrame", cfg: "RunConfig", y: np.ndarray, proba: np.ndarray, threshold: float
) -> dict[str, Any]:
    """AUC / recall / positive rate per value of each sensitive feature (groups under 30 rows or one class skipped)."""
    out: dict[str, dict[str, Any]] = {}
    for col in cfg.dataset.sensitive_features:
        if col not in test_df:
            continue
        vals = test_df[col].astype(str).to_numpy()
        out[col] = {}
        for v in sorted(set(vals)):
            mask = vals == v
            if mask.sum() < 30 or len(set(y[mask])) < 2:
                continue
            m = compute_metrics(y[mask], proba[mask], threshold)
            out[col][v] = {
                "n": int(mask.sum()),
                "roc_auc": round(m["roc_auc"], 4),
                "recall": round(m["recall"], 4),
                "positive_rate": round(m["positive_rate"], 4),
            }
    return out


def card_evidence(
    model: "ChurnModel", test_df: "pd.DataFrame", cfg: "RunConfig", y: np.ndarray, proba: np.ndarray
) -> dict[str, Any]:
    """What the model card shows beside the gate's figures: slices, top features (TreeSHAP) and charts.

    Computed here, where the fitted model and the test-set predictions are already in
    memory: the register stage then only registers (no model load, no plotting library
    in its pod) and renders the card from this. Charts are PNG bytes.
    """
    from kfct.evidence.modelcard import top_features_shap
    from kfct.evidence.modelcard_charts import curve_charts

    X = test_df.drop(columns=[cfg.dataset.label])
    top = top_features_shap(model, X.sample(n=min(2000, len(X)), random_state=0), k=10)
    return {
        "rows_test": len(test_df),
        "slices": slice_metrics(test_df, cfg, y, proba, model.threshold),
        "top_features": top,
        "charts": curve_charts(y, proba, top),
    }


def write_evidence(evidence: dict[str, Any], path: str) -> None:
    """The card evidence as one JSON file (charts base64-encoded): one artifact, readable anywhere."""
    import base64
    import json

    doc = {**evidence, "charts": {k: base64.b64encode(v).decode("ascii") for k, v in evidence["charts"].items()}}
    with Path(path).open("w") as fh:
        json.dump(doc, fh)


def read_evidence(path: str) -> dict[str, Any]:
    """Inverse of `write_evidence`: charts back to PNG bytes."""
    import base64
    import json

    with Path(path).open() as fh:
        doc = json.load(fh)
    doc["charts"] = {k: base64.b64decode(v) for k, v in (doc.get("charts") or {}).items()}
    evidence: dict[str, Any] = doc
    return evidence


def report_markdown(result: dict[str, Any], gate: "GateConfig") -> str:
    m = result["metrics"]
    lines = [f"# Evaluation — {'DEPLOY' if result['deploy'] else 'BLOCKED'}", "", "## Decision", ""]
    lines += [f"- {r}" for r in result["reasons"]]
    lines += ["", "## Test metrics", "", "| metric | value | threshold |", "|---|---|---|"]
    th = gate.thresholds
    for k in ("roc_auc", "pr_auc", "recall", "precision", "f1", "accuracy", "log_loss", "brier"):
        lines.append(f"| {k} | {m[k]:.4f} | {th.get(k, '')} |")
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    lines += ["", f"Confusion matrix at threshold {m['threshold']:.4f}: TN {tn}, FP {fp}, FN {fn}, TP {tp}", ""]
    c = result.get("comparison")
    if c and "error" not in c:
        lines += [
            "## Champion vs challenger",
            "",
            f"{c['metric']}: challenger {c['challenger']:.4f}, champion v{c.get('champion_version')} {c['champion']:.4f}, "
            f"diff {c['diff']:+.4f}, {int(c['confidence'] * 100)}% CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] "
            f"({c['rounds']} paired bootstrap resamples)",
            "",
        ]
    f = result.get("fairness")
    if f:
        lines += ["## Fairness", "", "| attribute | demographic parity diff | equalized odds diff |", "|---|---|---|"]
        for attr, r in f.items():
            if isinstance(r, dict) and "demographic_parity_difference" in r:
                lines.append(f"| {attr} | {r['demographic_parity_difference']:.4f} | {r['equalized_odds_difference']:.4f} |")
    return "\n".join(lines) + "\n"


def _log_kfp_metrics(metrics: Metrics, classification: ClassificationMetrics, result: dict[str, Any]) -> dict[str, Any]:
    """Scalar metrics and the ROC curve / confusion matrix for the Kubeflow UI; returns the scalars."""
    from sklearn.metrics import roc_curve

    m = result["metrics"]
    scalar = {k: float(v) for k, v in m.items() if isinstance(v, (int, float))}
    for k, v in scalar.items():
        metrics.log_metric(k, v)
    fpr, tpr, thr = roc_curve(result["y"], result["proba"])
    step = max(1, len(fpr) // 200)  # keep the UI artifact small
    thr = np.clip(thr, 0.0, 1.0)
    classification.log_roc_curve(fpr[::step].tolist(), tpr[::step].tolist(), thr[::step].tolist())
    classification.log_confusion_matrix(["stay", "churn"], m["confusion_matrix"])
    return scalar


def _log_to_mlflow(run_id: str, scalar: dict[str, Any], result: dict[str, Any], files: dict[str, bytes]) -> None:
    """Test metrics, the comparison and the gate on the training run; the report, decision and charts as artifacts."""
    import tempfile

    import mlflow

    with mlflow.start_run(run_id=run_id), tempfile.TemporaryDirectory() as tmp:
        mlflow.log_metrics({f"test_{k}": v for k, v in scalar.items()})
        c = result["comparison"]
        if c and "error" not in c:
            mlflow.log_metrics(
                {
                    "champion_" + c["metric"]: c["champion"],
                    "diff_" + c["metric"]: c["diff"],
                    "diff_ci_low": c["ci_low"],
                    "diff_ci_high": c["ci_high"],
                }
            )
        mlflow.set_tags({"gate.deploy": str(result["deploy"]), "gate.reason": "; ".join(result["reasons"])[:5000]})
        for name, data in files.items():
            Path(tmp, name).write_bytes(data)
            mlflow.log_artifact(f"{tmp}/{name}", artifact_path="evaluation")


def evaluate_model(
    test: Input[Dataset],
    model: Input[Model],
    config_json: str,
    model_name: str,
    mlflow_run_id: str,
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
    decision: Output[Artifact],
    evidence: Output[Artifact],
) -> bool:
    """Score the test set, check fairness, compare with the champion; returns whether to deploy.

    Also writes the model card's evidence (slices, top features, charts) for the register stage."""
    from kfct.runtime.stage import stage

    with stage("evaluate-model", config_json, stamp=decision.metadata, registry=True, model_name=model_name) as st:
        import json
        from pathlib import Path

        import joblib
        import pandas as pd

        from kfct.components.evaluate import (
            _log_kfp_metrics,
            _log_to_mlflow,
            card_evidence,
            evaluate_core,
            registered_metrics,
            report_markdown,
            write_evidence,
        )
        from kfct.governance import audit, registry
        from kfct.governance.reconcile import reconcile

        cfg = st.config
        challenger = joblib.load(model.path)
        test_df = pd.read_parquet(test.path)
        # Settle what crashed runs left (dead RUNNING runs, PENDING models, orphan versions) before
        # the gate reads the champion; each finding is audited.
        reconcile(model_name, own_run_id=mlflow_run_id)
        # The champion this gate compares with: register moves aliases only if it is still this one.
        champion, champion_version = None, registry.alias_version(model_name, cfg.register_.alias)
        registered = {}
        if champion_version is not None:
            loaded = registry.load_version(model_name, version=champion_version)
            champion, registered = loaded.model, registered_metrics(loaded.tags)
        result = evaluate_core(challenger, test_df, cfg, champion, champion_version, registered)

        scalar = _log_kfp_metrics(metrics, classification, result)
        md = report_markdown(result, cfg.gate)
        Path(report.path).write_text(md)
        payload = {k: v for k, v in result.items() if k not in ("proba", "y")}
        payload["champion_version"] = champion_version
        with Path(decision.path).open("w") as fh:
            json.dump(payload, fh, indent=2, default=float)
        decision.metadata.update(
            {"deploy": result["deploy"], "reason": "; ".join(result["reasons"]), "champion_version": champion_version or ""}
        )
        card = card_evidence(challenger, test_df, cfg, result["y"], result["proba"])
        write_evidence(card, evidence.path)
        files = {f"{k}.png": png for k, png in card["charts"].items()}
        files.update({"evaluation.md": md.encode(), "decision.json": json.dumps(payload, indent=2, default=float).encode()})
        _log_to_mlflow(mlflow_run_id, scalar, result, files)
        st.log.info(
            "gate: %s (%s); test %s",
            "deploy" if result["deploy"] else "blocked",
            "; ".join(result["reasons"]),
            ", ".join(f"{k} {v:.4f}" for k, v in scalar.items() if k in ("roc_auc", "recall", "precision")),
        )
        audit.record(
            "gate_decision",
            model_name=model_name,
            mlflow_run_id=mlflow_run_id,
            deploy=result["deploy"],
            reasons=result["reasons"],
            champion_version=champion_version,
            metrics={k: round(v, 6) for k, v in scalar.items()},
            **({"verdict": "data", "stop": result["stop"]} if result["stop"] else {}),
            **({"leakage": result["leakage"]} if result["leakage"] else {}),
        )
        return bool(result["deploy"])
