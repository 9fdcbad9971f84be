"""Realized outcomes: what really happened after a prediction was served.

A churner is known weeks after the prediction. An outcomes file holds one row per
observed outcome: the dataset's id column, its label column (the schema's label
rules apply) and the time the outcome was observed (`outcomes.observed_at_column`).

- `load_outcomes` reads and validates a file (parquet/CSV, local or `s3://`): the id
  and label columns go through the same Great Expectations suite builder as any
  dataset (the schema's label values), the observation time is parsed; every problem
  is one line naming the column.
- `store_outcomes` keeps it content-addressed (`outcomes/<sha256>.parquet` under
  `KFCT_HOME`, or in the bucket when `KFCT_S3_ENDPOINT` is set), like datasets.
- `join_predictions` pairs each outcome with the predictions served for that id
  *before* it was observed and within the label horizon; each prediction is counted
  once (for the first outcome after it), keeping the version and the role (arm) that
  answered it.
- `realized_performance` gives AUC, recall, precision, accuracy, calibration and the
  positive rates per served version (and per time window).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfct.errors import DataSourceError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pandas as pd
    import pyarrow as pa
    from numpy.typing import ArrayLike

    from kfct.config import RunConfig
    from kfct.runtime.settings import Settings

    # the validate stage's suite runner (`kfct.components.validate.validate_frame`): (frame, config) -> result
    ValidateFrame = Callable[[pd.DataFrame, RunConfig], dict]

PREFIX = "outcomes"
ID = "customer_id"  # the prediction log's id column name, whatever the dataset calls it


class OutcomesError(DataSourceError):
    """An outcomes file that cannot be used."""

    exit_code = 3


def _label_map(cfg: RunConfig) -> tuple[dict[Any, int], Any]:
    """Label value → 0/1 by `kfct.data.labels.token` (strings, booleans, YAML's yes/no or 0/1 agree)."""
    from kfct.data.labels import token

    ds = cfg.dataset
    spec = ds.columns[ds.label]
    values = list(spec.values or spec.categories or [0, 1])
    positive = ds.positive_label
    return {v: int(token(v) == token(positive)) for v in values}, positive


def _gx_check(df: pd.DataFrame, cfg: RunConfig, validate_frame: ValidateFrame) -> None:
    """The dataset's own GX suite, restricted to the id and label columns.

    `validate_frame` is the validate stage's suite runner, passed in by the caller (the
    CLI): the library layer does not import the stages."""
    ds = cfg.dataset
    cols = {c: ds.columns[c] for c in (ds.id_column, ds.label) if c is not None and c in ds.columns}
    if ds.id_column in cols:  # a customer can churn, come back and churn again
        cols[ds.id_column] = cols[ds.id_column].model_copy(update={"unique": False})
    sub = cfg.model_copy(
        update={
            "dataset": ds.model_copy(
                update={
                    "columns": cols,
                    "min_rows": 1,
                    "max_duplicate_share": None,
                    "label_balance": None,
                    "allow_extra_columns": True,
                    "exclude_features": [],
                    "sensitive_features": [],
                }
            )
        }
    )
    result = validate_frame(df[list(cols)], sub)
    if not result["passed"]:
        first = result["failures"][0]
        more = f" (and {result['n_failed'] - 1} more)" if result["n_failed"] > 1 else ""
        raise OutcomesError(
            f"outcomes fail the schema's rules: {first.get('expectation_type', first.get('check'))} "
            f"[{first.get('column')}] observed={first.get('observed')} "
            f"sample={first.get('sample_bad_values')}{more}"
        )


def validate_outcomes(
    df: pd.DataFrame, cfg: RunConfig, gx: bool = True, validate_frame: ValidateFrame | None = None
) -> pd.DataFrame:
    """Checked copy: id (str), label (0/1 int), observed_at (UTC timestamp). Raises OutcomesError.

    With `gx`, `validate_frame` (`kfct.components.validate.validate_frame`) runs the schema's
    Great Expectations rules on the id and label columns."""
    import pandas as pd

    ds = cfg.dataset
    idc, lab, obs = ds.id_column, ds.label, cfg.outcomes.observed_at_column
    missing = [c for c in (idc, lab, obs) if c not in df.columns]
    if missing:
        raise OutcomesError(
            f"outcomes lack column(s) {', '.join(map(str, missing))} (need {idc}, {lab}, {obs}); "
            f"got {', '.join(map(str, list(df.columns)[:10]))}"
        )
    if len(df) == 0:
        raise OutcomesError("outcomes file has no rows")
    if df[idc].isna().any():
        raise OutcomesError(f"outcomes column {idc}: {int(df[idc].isna().sum())} empty id(s)")
    mapping, _positive = _label_map(cfg)
    labels = df[lab]
    from kfct.data.labels import token

    known = {str(k) for k in mapping}
    tokens = labels.map(lambda v: None if pd.isna(v) else token(v))
    bad = labels[~tokens.isin({token(k) for k in mapping}) | labels.isna()]
    if len(bad):
        raise OutcomesError(
            f"outcomes column {lab}: {len(bad)} value(s) outside {sorted(known)}, e.g. {[str(v)[:20] for v in bad.unique()[:3]]}"
        )
    if gx:
        if validate_frame is None:
            raise TypeError("validate_outcomes(gx=True) needs validate_frame=kfct.components.validate.validate_frame")
        _gx_check(df, cfg, validate_frame)
    try:
        ts = pd.to_datetime(df[obs], utc=True, errors="raise", format="mixed")
    except (ValueError, TypeError) as exc:
        raise OutcomesError(f"outcomes column {obs}: not a timestamp ({str(exc)[:120]})") from None
    if ts.isna().any():
        raise OutcomesError(f"outcomes column {obs}: {int(ts.isna().sum())} empty timestamp(s)")
    by_token = {token(k): v for k, v in mapping.items()}
    return pd.DataFrame(
        {
            ID: df[idc].astype(str).to_numpy(),
            "outcome": tokens.map(by_token).astype("int64").to_numpy(),
            "observed_at": ts.astype("datetime64[us, UTC]").reset_index(drop=True),
        }
    )


def read_outcomes_file(uri: str) -> pd.DataFrame:
    """A DataFrame from a parquet/CSV path or `s3://` object (same readers as datasets)."""
    from kfct.data.datasource import _read_local

    if uri.startswith("s3://"):
        from kfct.data import s3

        with tempfile.TemporaryDirectory(prefix="kfct-outcomes-") as tmp:
            local = s3.download(uri, Path(tmp) / Path(uri).name)
            return _read_local(local)
    return _read_local(Path(uri).expanduser())


def load_outcomes(uri: str, cfg: RunConfig, validate_frame: ValidateFrame | None = None) -> pd.DataFrame:
    return validate_outcomes(read_outcomes_file(uri), cfg, validate_frame=validate_frame)


def store_outcomes(frame: pd.DataFrame, settings: Settings | None = None) -> dict[str, Any]:
    """Content-addressed copy of validated outcomes; returns {uri, sha256, rows}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kfct.governance.lineage import sha256_file
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    with tempfile.TemporaryDirectory(prefix="kfct-outcomes-") as tmp:
        local = Path(tmp) / "outcomes.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), local)
        digest = sha256_file(local)
        if s.s3_endpoint:
            from kfct.data import s3

            uri = f"s3://{s.s3_bucket}/{PREFIX}/{digest}.parquet"
            if not s3.exists(uri, settings=s):
                s3.upload(local, uri, settings=s, metadata={"sha256": digest})
        else:
            dest = Path(s.home) / PREFIX / f"{digest}.parquet"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                tmp_dest = dest.with_suffix(".tmp")
                tmp_dest.write_bytes(local.read_bytes())
                tmp_dest.replace(dest)
            uri = str(dest)
    return {"uri": uri, "sha256": digest, "rows": len(frame)}


def stored_outcomes(settings: Settings | None = None, ids: Any = None) -> pd.DataFrame:
    """Stored outcomes snapshots, concatenated and de-duplicated (id, observed_at, outcome).

    With `ids` (the customers of the predictions a report judges), only their outcomes: each
    snapshot is read batch by batch and filtered as it is read (an S3 snapshot is fetched one at
    a time), so memory is those customers' outcomes plus one batch, however many are stored.
    Without `ids`, every stored outcome."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = None if ids is None else pa.array(pd.unique(pd.Series(ids, dtype=object).dropna().astype(str)), pa.string())
    frames = []
    for table in _snapshot_batches(settings):
        if wanted is not None:
            table = table.filter(pc.is_in(table.column(ID).cast(pa.string()), value_set=wanted))
        if table.num_rows:
            frames.append(table.to_pandas())
    if not frames:
        return pd.DataFrame(
            {ID: pd.Series(dtype=str), "outcome": pd.Series(dtype="int64"), "observed_at": pd.Series(dtype="datetime64[us, UTC]")}
        )
    out = pd.concat(frames, ignore_index=True).drop_duplicates([ID, "observed_at", "outcome"])
    return out.sort_values(["observed_at", ID], kind="stable").reset_index(drop=True)


def _snapshot_batches(settings: Settings | None = None) -> Iterator[pa.Table]:
    """Every stored outcomes snapshot, batch by batch (an S3 one downloaded, read and deleted in turn)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    if s.s3_endpoint:
        from kfct.data import s3

        names = [n for n in s3.list_names(s.s3_bucket, f"{PREFIX}/", settings=s) if n.endswith(".parquet")]
        with tempfile.TemporaryDirectory(prefix="kfct-outcomes-") as tmp:
            for object_name in names:
                dest = s3.download(f"s3://{s.s3_bucket}/{object_name}", Path(tmp) / "snapshot.parquet", settings=s)
                for batch in pq.ParquetFile(dest).iter_batches(batch_size=65_536):
                    yield pa.Table.from_batches([batch])
                Path(dest).unlink()
        return
    base = Path(s.home) / PREFIX
    for path in sorted(base.glob("*.parquet")) if base.exists() else []:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536):
            yield pa.Table.from_batches([batch])


def join_predictions(predictions: pd.DataFrame, outcomes: pd.DataFrame, horizon_days: float = 30.0) -> pd.DataFrame:
    """Each served prediction paired with the first outcome observed after it within the horizon.

    A prediction made after the outcome, or more than `horizon_days` before it, gets
    none (it is not judged); each prediction appears at most once. Columns kept: ts,
    request_id, model_version, role, customer_id, probability, label, threshold,
    outcome, observed_at.
    """
    import pandas as pd

    keep = ["ts", "request_id", "model_version", "role", ID, "probability", "label", "threshold"]
    if predictions is None or len(predictions) == 0 or len(outcomes) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in [*keep, "outcome", "observed_at"]})
    p = predictions[keep].copy()
    p[ID] = p[ID].astype(str)
    p["_row"] = range(len(p))
    p["ts"] = pd.to_datetime(p["ts"], utc=True).astype("datetime64[us, UTC]")
    o = outcomes[[ID, "outcome", "observed_at"]].copy()
    o["observed_at"] = pd.to_datetime(o["observed_at"], utc=True).astype("datetime64[us, UTC]")
    p = p.dropna(subset=[ID]).sort_values("ts", kind="stable")
    o = o.sort_values("observed_at", kind="stable")
    # merge_asof: for each prediction, the first outcome at or after it for the same id.
    joined = pd.merge_asof(
        p,
        o,
        left_on="ts",
        right_on="observed_at",
        by=ID,
        direction="forward",
        tolerance=pd.Timedelta(days=horizon_days),
        allow_exact_matches=False,
    )
    joined = joined.dropna(subset=["outcome"]).drop_duplicates("_row")
    joined["outcome"] = joined["outcome"].astype("int64")
    return joined.drop(columns="_row").sort_values("ts", kind="stable").reset_index(drop=True)


def _metrics(y: ArrayLike, proba: ArrayLike, label: ArrayLike) -> dict[str, Any]:
    import numpy as np

    from kfct.evidence.abstats import roc_auc

    y, proba, label = np.asarray(y, int), np.asarray(proba, float), np.asarray(label, int)
    positives, predicted = int(y.sum()), int(label.sum())
    tp = int(((label == 1) & (y == 1)).sum())
    out: dict[str, Any] = {
        "n": len(y),
        "positives": positives,
        "accuracy": float((label == y).mean()),
        "recall": tp / positives if y.any() else None,
        "precision": tp / predicted if label.any() else None,
        "roc_auc": roc_auc(y, proba) if 0 < positives < len(y) else None,
        "brier": float(np.mean((proba - y) ** 2)),
        "mean_probability": float(proba.mean()),
        "observed_rate": float(y.mean()),
        "predicted_positive_rate": float(label.mean()),
    }
    out["calibration_gap"] = out["mean_probability"] - out["observed_rate"]
    return out


def realized_performance(
    joined: pd.DataFrame, by: tuple[str, ...] = ("model_version", "role"), window: str | None = None
) -> list[dict]:
    """Metrics per group (served version and role; optionally per time window such as '1D' or '7D')."""
    import pandas as pd

    if len(joined) == 0:
        return []
    keys = list(by)
    frame = joined
    if window:
        frame = joined.assign(
            window=joined["ts"].dt.floor(window)
            if window.endswith(("D", "h", "min"))
            else joined["ts"].dt.to_period(window).dt.start_time
        )
        keys.append("window")
    rows = []
    for k, g in frame.groupby(keys, sort=True, dropna=False):
        k = k if isinstance(k, tuple) else (k,)
        row = {name: (str(v) if not isinstance(v, pd.Timestamp) else v.isoformat()) for name, v in zip(keys, k)}
        row.update(_metrics(g["outcome"], g["probability"], g["label"]))
        rows.append(row)
    return rows


def calibration_curve(joined: pd.DataFrame, bins: int = 10) -> list[dict]:
    """Mean predicted vs observed per probability bin (the calibration plot's points)."""
    import numpy as np

    if len(joined) == 0:
        return []
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(joined["probability"].to_numpy(float), edges) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append(
                {
                    "bin": b,
                    "mean_probability": float(joined["probability"].to_numpy()[m].mean()),
                    "observed_rate": float(joined["outcome"].to_numpy()[m].mean()),
                    "n": int(m.sum()),
                }
            )
    return out
