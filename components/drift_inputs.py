"""Inputs of a monitoring run: the champion's training snapshot, the current window, both scored."""

from typing import TYPE_CHECKING, Any

from kfct.components.drift_detect import PREDICTION

if TYPE_CHECKING:
    import datetime as dt

    import pandas as pd

    from kfct.config import RunConfig
    from kfct.evidence.model import ChurnModel
    from kfct.governance.registry import LoadedModel


class DriftInputError(ValueError):
    """Reference or current data for drift monitoring cannot be had (message names what and why)."""


def load_reference(
    model_name: str, alias: str = "champion", max_rows: int | None = None
) -> "tuple[pd.DataFrame, LoadedModel, str]":
    """The champion's training snapshot, the champion itself and its tags.

    The snapshot is the MLflow artifact `data/train_snapshot.parquet` of the run that
    trained the version (its `reference_uri` tag; bounded when training wrote it); a version
    without one falls back to the dataset it was trained on (`data_uri` tag), checked against
    `dataset_sha256` and, with `max_rows` (the monitoring step passes `drift.window_rows`), read
    as a uniform sample of that many rows, never whole (`kfct.data.parts.sample_location`).
    Returns (reference DataFrame, LoadedModel, description of the source).
    """
    import tempfile

    import pandas as pd
    from mlflow.exceptions import MlflowException

    from kfct.governance import registry

    registry.setup()
    try:
        loaded = registry.load_version(model_name, alias=alias)
    except MlflowException as exc:
        raise DriftInputError(
            f"no {alias!r} version of model {model_name!r} to monitor: train and register one first "
            f"(kfct run); MLflow said: {str(exc).splitlines()[0][:200]}"
        ) from exc
    uri = loaded.tags.get("reference_uri") or (f"runs:/{loaded.run_id}/data/train_snapshot.parquet" if loaded.run_id else "")
    if uri:
        import mlflow

        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
                return pd.read_parquet(local), loaded, uri
        except (MlflowException, OSError) as exc:
            missing = f"{uri} ({type(exc).__name__})"
    else:
        missing = "no reference_uri tag"
    data_uri = loaded.tags.get("data_uri")
    if not data_uri:
        raise DriftInputError(f"{model_name} v{loaded.version}: no training snapshot ({missing}) and no data_uri tag")
    from kfct.data import parts
    from kfct.data.datasource import snapshot_file
    from kfct.governance.lineage import sha256_file

    with tempfile.TemporaryDirectory() as tmp:  # same snapshot ingest made, so the same data version
        snap = f"{tmp}/snapshot.parquet"
        snapshot_file(data_uri, snap)  # a parquet file copied, a CSV streamed: never held whole
        expected = loaded.tags.get("dataset_sha256")
        if expected and sha256_file(snap) != expected:
            raise DriftInputError(
                f"{model_name} v{loaded.version}: training snapshot missing ({missing}) and "
                f"{data_uri} no longer has the recorded content (sha256 {expected[:12]}...)"
            )
        if max_rows is None:
            return pd.read_parquet(snap), loaded, data_uri
        df, total = parts.sample_location(snap, int(max_rows))
    source = data_uri if total <= len(df) else f"{data_uri}; a sample of {len(df):,} of {total:,} rows (drift.window_rows)"
    return df, loaded, source


def load_current(
    current_uri: str | None, cfg: "RunConfig", model_name: str | None = None, since: "str | float | dt.datetime | None" = None
) -> "tuple[pd.DataFrame, str, str | None]":
    """The current window: a batch (`current_uri`: path, s3://, generate://) or the serving prediction log.

    From the log, shadow rows are dropped (they repeat inputs the champion already
    answered) and the logged `probability` becomes the prediction. Returns (frame,
    description of the source, name of the prediction column or None).
    """
    if current_uri:
        from kfct.data.datasource import read_dataset_bounded
        from kfct.data.datatags import resolve

        resolved, manifest = resolve(current_uri)  # a pointer names the newest batch at run time
        # Drift compares the last `window_rows` rows (drift_detect's window): read no more than that.
        window = int(cfg.drift.window_rows)
        df, total = read_dataset_bounded(resolved, window, mode="tail")
        pred = "probability" if "probability" in df.columns else None
        source = current_uri if manifest is None else f"{current_uri} (sha256 {manifest['sha256']}: {resolved})"
        if total > len(df):
            source += f"; the last {len(df):,} of {total:,} rows (drift.window_rows)"
        return df, source, pred
    from kfct.contracts.prediction_log import read_prediction_log

    if since is None:
        import datetime as dt

        days = float(cfg.drift.window_days)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    window = int(cfg.drift.window_rows)
    df = read_prediction_log(since=since, model_name=model_name, max_rows=window)
    total = int(df.attrs.get("rows_total", len(df)))
    if "role" in df.columns:
        df = df[df["role"] != "shadow"].reset_index(drop=True)
    # The log's `label` is the *predicted* label: never mistake it for ground truth.
    df = df.rename(columns={"label": "predicted_label"})
    if len(df) == 0:
        raise DriftInputError(
            f"the prediction log has no rows for model {model_name!r} since {since}: serve traffic "
            f"first (kfct serve) or give a batch with --current URI"
        )
    bounded = f"; the newest {len(df):,} of {total:,} rows (drift.window_rows)" if total > len(df) else ""
    return df, f"prediction log since {since}{bounded}", "probability"


def prepare_frames(
    reference: "pd.DataFrame", current: "pd.DataFrame", model: "ChurnModel", cfg: "RunConfig", prediction_column: str | None
) -> "tuple[pd.DataFrame, pd.DataFrame]":
    """Both frames with the champion's probability in column `PREDICTION` (scored where not logged)."""
    from kfct.config import feature_columns

    features = feature_columns(cfg)
    for name, df in (("reference", reference), ("current", current)):
        missing = [c for c in features if c not in df.columns]
        if missing:
            raise DriftInputError(f"{name} data lacks feature column(s) {', '.join(missing)}")
    reference = reference.copy()
    current = current.copy()
    try:
        reference[PREDICTION] = model.predict_positive(reference)
        if prediction_column and prediction_column in current.columns:
            current[PREDICTION] = current[prediction_column].astype(float)
        else:
            current[PREDICTION] = model.predict_positive(current)
    except ValueError as exc:  # FeatureError: unknown category, missing column
        raise DriftInputError(f"the champion cannot score the data: {exc}") from exc
    return reference, current


def heldout_performance(tags: dict[str, Any]) -> dict[str, Any] | None:
    """The champion's test-set ROC AUC and recall from its registry tags (`test_roc_auc`, `test_recall`)."""
    try:
        return {"roc_auc": float(tags["test_roc_auc"]), "recall": float(tags["test_recall"])}
    except (KeyError, TypeError, ValueError):
        return None


def with_binary_labels(frame: "pd.DataFrame", cfg: "RunConfig") -> "pd.DataFrame":
    """The label column as 0/1 (the training snapshot's coding), when the frame has one."""
    from kfct.data.labels import binary_labels

    ds = cfg.dataset
    label = ds.label
    if label not in frame.columns or frame[label].isna().all():
        return frame
    import numpy as np

    out = frame.copy()
    known = out[label].notna().to_numpy()
    coded = binary_labels(out.loc[known, label], ds.positive_label, ds.columns[label].values)
    # A new column, not item assignment into the old one: 0/1 set into a bool or string column
    # is an incompatible-dtype assignment (a pandas FutureWarning now, an error in pandas 3).
    if known.all():
        out[label] = np.asarray(coded, dtype=np.int64)
    else:
        values = np.full(len(out), np.nan)
        values[known] = coded
        out[label] = values
    return out
