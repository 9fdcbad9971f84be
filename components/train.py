"""Stage 4 — train: XGBoost (`hist`, CPU or CUDA) or a scikit-learn alternative, by config.

Imbalance is handled (scale_pos_weight / class weights), XGBoost stops early on the
validation AUC, an optional Optuna search tunes on validation, and the decision
threshold is chosen on validation: the best F1 among thresholds whose recall meets
`train.recall_target` (the business wants to reach at-risk customers first).
Everything is logged to MLflow: params, metrics, the data sha256 and the model
(with signature, input example and the preprocessing inside).
"""

import time
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from kfp.dsl import Dataset, Input, Model, Output

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from sklearn.base import BaseEstimator
    from xgboost import Booster, XGBClassifier

    from kfct.config import RunConfig, TrainConfig
    from kfct.evidence.model import ChurnModel, TabularEncoder

MODELS = ("xgboost", "logistic_regression", "random_forest", "hist_gradient_boosting")


def choose_threshold(y_true: np.ndarray, proba: np.ndarray, recall_target: float | None) -> float:
    """Best-F1 threshold on validation, among thresholds reaching `recall_target` when given."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y_true, proba)
    precision, recall = precision[:-1], recall[:-1]
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    if recall_target is not None:
        ok = recall >= recall_target
        if ok.any():
            f1 = np.where(ok, f1, -1.0)
    return float(thresholds[int(np.argmax(f1))])


def _xgb_estimator(params: dict[str, Any], n_pos: int, n_neg: int, cfg_train: "TrainConfig", device: str) -> "XGBClassifier":
    from xgboost import XGBClassifier

    p = dict(params)
    spw = (n_neg / max(n_pos, 1)) if cfg_train.imbalance == "scale_pos_weight" else 1.0
    return XGBClassifier(
        **p,
        objective="binary:logistic",
        eval_metric="auc",
        scale_pos_weight=spw,
        early_stopping_rounds=int(cfg_train.early_stopping_rounds),
        random_state=int(cfg_train.seed),
        device=device,
        n_jobs=0 if device == "cuda" else None,
    )


def _sklearn_estimator(kind: str, params: dict[str, Any], cfg_train: "TrainConfig") -> "BaseEstimator":
    seed = int(cfg_train.seed)
    weight = "balanced" if cfg_train.imbalance in ("class_weight", "scale_pos_weight") else None
    if kind == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(**params, class_weight=weight, random_state=seed)
    if kind == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(**params, class_weight=weight and "balanced_subsample", random_state=seed, n_jobs=-1)
    if kind == "hist_gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(**params, class_weight=weight, random_state=seed, early_stopping=True)
    raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")


def _fit(
    kind: str,
    params: dict[str, Any],
    Xtr: np.ndarray,
    ytr: np.ndarray,
    Xva: np.ndarray,
    yva: np.ndarray,
    cfg_train: "TrainConfig",
    device: str,
) -> "tuple[Booster | BaseEstimator, np.ndarray, dict[str, Any]]":
    """Fit one estimator; returns (predictor, val_proba, info). XGBoost returns its trimmed Booster."""
    if kind == "xgboost":
        n_pos = int(ytr.sum())
        est = _xgb_estimator(params, n_pos, len(ytr) - n_pos, cfg_train, device)
        est.fit(Xtr, ytr, eval_set=[(Xva, yva)], verbose=False)
        best = int(getattr(est, "best_iteration", cast(int, est.n_estimators) - 1))  # params always set it
        booster = est.get_booster()[: best + 1]
        booster.set_param({"device": "cpu", "nthread": 0})  # serve on CPU whatever trained it
        proba = booster.inplace_predict(Xva)
        return booster, np.asarray(proba, dtype=np.float64), {"best_iteration": best}
    est = _sklearn_estimator(kind, params, cfg_train)
    est.fit(Xtr, ytr)
    return est, est.predict_proba(Xva)[:, 1].astype(np.float64), {}


def _tune(
    kind: str,
    base: dict[str, Any],
    Xtr: np.ndarray,
    ytr: np.ndarray,
    Xva: np.ndarray,
    yva: np.ndarray,
    cfg_train: "TrainConfig",
    device: str,
    trials: int,
) -> dict[str, Any]:
    """Optuna search maximising validation AUC; returns the best params merged over `base`."""
    try:
        import optuna
    except ImportError as exc:
        from kfct.errors import KfctError

        raise KfctError("tune_trials > 0 needs Optuna: pip install 'kfct[tune]'") from exc
    from sklearn.metrics import roc_auc_score

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def space(trial: "optuna.Trial") -> dict[str, Any]:
        if kind == "xgboost":
            return {
                "max_depth": trial.suggest_int("max_depth", 3, 8),
                "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
                "min_child_weight": trial.suggest_float("min_child_weight", 1, 20, log=True),
                "subsample": trial.suggest_float("subsample", 0.6, 1.0),
                "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
                "reg_lambda": trial.suggest_float("reg_lambda", 0.1, 10, log=True),
            }
        if kind == "logistic_regression":
            return {"C": trial.suggest_float("C", 1e-3, 10, log=True)}
        if kind == "random_forest":
            return {
                "max_depth": trial.suggest_int("max_depth", 4, 20),
                "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20),
            }
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
            "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 8, 63),
        }

    def objective(trial: "optuna.Trial") -> float:
        params = {**base, **space(trial)}
        _, proba, _ = _fit(kind, params, Xtr, ytr, Xva, yva, cfg_train, device)
        return float(roc_auc_score(yva, proba))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=int(cfg_train.seed)))
    study.optimize(objective, n_trials=int(trials))
    return {**base, **study.best_params}


def threshold_and_metrics(yva: np.ndarray, val_proba: np.ndarray, cfg_train: "TrainConfig") -> tuple[float, dict[str, Any]]:
    """The decision threshold chosen on validation and the validation metrics at it (in-pod and distributed)."""
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    recall_target = float(cfg_train.recall_target) if cfg_train.threshold_strategy == "recall_target" else None
    threshold = choose_threshold(yva, val_proba, recall_target)
    pred = (val_proba >= threshold).astype(int)
    return threshold, {
        "val_roc_auc": float(roc_auc_score(yva, val_proba)),
        "val_recall": float(recall_score(yva, pred, zero_division=0)),
        "val_precision": float(precision_score(yva, pred, zero_division=0)),
    }


def xgb_booster_params(
    params: dict[str, Any], n_pos: int, n_neg: int, cfg_train: "TrainConfig", device: str
) -> tuple[dict[str, Any], int, int]:
    """The in-pod estimator's settings as XGBoost's native (params, rounds, early-stopping rounds).

    Built from the very `XGBClassifier` the in-pod path fits (`get_xgb_params`), so a
    distributed worker trains with the same objective, metric, weights, seed and tree settings."""
    est = _xgb_estimator(params, n_pos, n_neg, cfg_train, device)
    native = {k: v for k, v in est.get_xgb_params().items() if v is not None}
    return native, int(est.get_num_boosting_rounds()), int(cast(int, est.early_stopping_rounds))  # set above


def train_core(
    train_df: "pd.DataFrame",
    val_df: "pd.DataFrame",
    cfg: "RunConfig",
    encoder: "TabularEncoder | None" = None,
    device: str | None = None,
    tune_trials: int | None = None,
) -> "tuple[ChurnModel, dict[str, Any], dict[str, Any], dict[str, Any]]":
    """Train the configured model. Returns (ChurnModel, params, val_metrics, info)."""
    from kfct.components.featurize import build_encoder
    from kfct.evidence.model import ChurnModel

    ct = cfg.train
    kind = ct.model
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r} in train.model; choose one of {', '.join(MODELS)}")
    device = (device or ct.device or "cpu").lower()
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and kind != "xgboost":
        raise ValueError(f"device='cuda' needs model xgboost, not {kind}")
    trials = int(ct.tune_trials if tune_trials is None else tune_trials)
    label = cfg.dataset.label
    if encoder is None:
        encoder = build_encoder(cfg, scale=kind == "logistic_regression").fit(train_df)
    Xtr, Xva = encoder.transform(train_df), encoder.transform(val_df)
    ytr, yva = train_df[label].to_numpy(np.int64), val_df[label].to_numpy(np.int64)

    params = dict(getattr(ct, kind))  # the chosen estimator's hyperparameters (train.<model>)
    t0 = time.perf_counter()
    if trials > 0:
        params = _tune(kind, params, Xtr, ytr, Xva, yva, ct, device, trials)
    predictor, val_proba, info = _fit(kind, params, Xtr, ytr, Xva, yva, ct, device)
    info["fit_seconds"] = round(time.perf_counter() - t0, 3)

    threshold, val_metrics = threshold_and_metrics(yva, val_proba, ct)
    model = ChurnModel(encoder=encoder, estimator=predictor, threshold=threshold)
    info.update(
        {
            "model": kind,
            "device": device,
            "tune_trials": trials,
            "threshold": threshold,
            "n_train": len(train_df),
            "n_val": len(val_df),
        }
    )
    return model, params, val_metrics, info


def train_model(
    train: Input[Dataset],
    val: Input[Dataset],
    preprocessor: Input[Model],
    config_json: str,
    device: str,
    tune_trials: int,
    dataset_sha256: str,
    data_uri: str,
    code_version: str,
    pipeline_run: str,
    run_reason: str,
    model: Output[Model],
    pipeline_run_id: str = "",
) -> str:
    """Train the configured model (XGBoost CPU/CUDA or scikit-learn; with train.workers > 1, XGBoost on N workers:
    a Kubeflow Trainer TrainJob on a cluster) and log it to MLflow; returns the run id."""
    from kfct.runtime.stage import stage

    with stage(
        "train-model", config_json, stamp=model.metadata, registry=True, pipeline_run=pipeline_run, data_uri=data_uri
    ) as st:
        import tempfile  # a kfp component runs this function's source alone: its imports are all in here

        import joblib
        import mlflow
        import pandas as pd

        from kfct.components.train import train_core
        from kfct.governance import registry

        cfg = st.config
        if cfg.train.workers > 1:
            # N workers train; rank 0 leaves the model at model.path (see kfct.components.train_distributed)
            from kfct.components.train_distributed import train_distributed_step

            fitted, params, val_metrics, info, tr = train_distributed_step(
                cfg, train, val, preprocessor, model, device, tune_trials, pipeline_run, pipeline_run_id
            )
        else:
            tr, va = pd.read_parquet(train.path), pd.read_parquet(val.path)
            encoder = joblib.load(preprocessor.path)
            fitted, params, val_metrics, info = train_core(tr, va, cfg, encoder=encoder, device=device, tune_trials=tune_trials)
            info.update({"workers": 1, "engine": "in-pod"})

        from kfct.governance.reconcile import process_tags

        label = cfg.dataset.label
        with mlflow.start_run(run_name=f"train-{pipeline_run}"[:250]) as run:
            mlflow.set_tags(
                {
                    "dataset_sha256": dataset_sha256,
                    "data_uri": data_uri,
                    "code_version": code_version,
                    "pipeline_run": pipeline_run,
                    "run_reason": run_reason,
                    "stage": "train",
                    **process_tags(),  # lets a later run's reconcile tell a dead RUNNING run from a live one
                }
            )
            mlflow.log_params({f"{info['model']}.{k}": v for k, v in params.items()})
            mlflow.log_params(
                {
                    "model": info["model"],
                    "device": info["device"],
                    "tune_trials": info["tune_trials"],
                    "threshold": round(info["threshold"], 6),
                    "n_train": info["n_train"],
                    "n_val": info["n_val"],
                    "workers": info["workers"],
                    "engine": info["engine"],
                }
            )
            mlflow.log_metrics(
                {
                    **val_metrics,
                    "fit_seconds": info["fit_seconds"],
                    **({"best_iteration": info["best_iteration"]} if "best_iteration" in info else {}),
                }
            )
            logged = registry.log_model(fitted, tr.drop(columns=[label]))
            # Reference snapshot for drift monitoring: a bounded sample of the training split.
            window = int(cfg.drift.window_rows)
            with tempfile.TemporaryDirectory() as tmp:
                snap = f"{tmp}/train_snapshot.parquet"
                tr.sample(n=min(window, len(tr)), random_state=0).to_parquet(snap, index=False)
                mlflow.log_artifact(snap, artifact_path="data")
            run_id = run.info.run_id

        if info["engine"] == "in-pod":  # distributed: model.path already holds what rank 0 wrote
            joblib.dump(fitted, model.path)
        st.log.info(
            "trained %s on %s rows (%s, %s x %s, %.1f s): threshold %.4f, validation %s; MLflow run %s",
            info["model"],
            info["n_train"],
            info["device"],
            info["workers"],
            info["engine"],
            info["fit_seconds"],
            info["threshold"],
            ", ".join(f"{k} {v:.4f}" for k, v in val_metrics.items()),
            run_id,
        )
        model.metadata.update(
            {
                "mlflow_run_id": run_id,
                "model_uri": logged["model_uri"],
                "model_sha256": logged["model_sha256"],
                "dataset_sha256": dataset_sha256,
                "code_version": code_version,
                "pipeline_run": pipeline_run,
                "threshold": info["threshold"],
                "model": info["model"],
                "device": info["device"],
                "train_workers": info["workers"],
                "train_engine": info["engine"],
                **val_metrics,
            }
        )
        return str(run_id)
