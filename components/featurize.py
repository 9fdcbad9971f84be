"""Stage 3 — featurize and split: fit the preprocessing on train, train/val/test split by id hash.

The fitted `TabularEncoder` is saved as an artifact and later bundled inside the
model, so serving applies exactly the training transforms. Splits keep raw
columns (the model owns its encoding).
"""

from typing import TYPE_CHECKING

from kfp.dsl import Dataset, Input, Model, Output

if TYPE_CHECKING:
    import pandas as pd

    from kfct.config import RunConfig
    from kfct.evidence.model import TabularEncoder


def build_encoder(cfg: "RunConfig", scale: bool = False) -> "TabularEncoder":
    from kfct.config import categorical_columns, numeric_columns
    from kfct.evidence.model import TabularEncoder

    cols = cfg.dataset.columns
    return TabularEncoder(
        numeric=numeric_columns(cfg),
        categorical={c: [str(v) for v in cols[c].categories or []] for c in categorical_columns(cfg)},
        nullable=[c for c in numeric_columns(cfg) + categorical_columns(cfg) if cols[c].nullable],
        scale=scale,
    )


def split_frame(df: "pd.DataFrame", cfg: "RunConfig") -> "tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]":
    """Train/val/test by a keyed hash of each row's id (`featurize_merge.split_codes`).

    A row's split depends on its id alone, so splitting a dataset part by part gives the same
    split as splitting it whole, and a customer stays in the same split from run to run.
    """
    from kfct.components.featurize_merge import split_by_id

    return split_by_id(df, cfg)


def with_binary_label(df: "pd.DataFrame", cfg: "RunConfig") -> "pd.DataFrame":
    """The boundary where a label of any coding (0/1, booleans, strings) becomes 0/1 (1 = positive_label)."""
    from kfct.data.labels import binary_labels

    ds = cfg.dataset
    out = df.copy()
    out[ds.label] = binary_labels(df[ds.label], ds.positive_label, ds.columns[ds.label].values)
    return out


def featurize_core(df: "pd.DataFrame", cfg: "RunConfig") -> "tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, TabularEncoder]":
    """Labels to 0/1, split, then fit the encoder on train only. Returns (train, val, test, encoder)."""
    train, val, test = split_frame(with_binary_label(df, cfg), cfg)
    scale = cfg.train.model == "logistic_regression"
    encoder = build_encoder(cfg, scale=scale).fit(train)
    return train, val, test, encoder


def featurize_split(
    dataset: Input[Dataset],
    config_json: str,
    train: Output[Dataset],
    val: Output[Dataset],
    test: Output[Dataset],
    preprocessor: Output[Model],
) -> None:  # kfp reads None as no outputs, as it does an omitted annotation (kfp 2.17 component_factory.py)
    """Stratified train/val/test split and the fitted preprocessing (saved with the model)."""
    from kfct.runtime.stage import stage

    with stage("featurize-split", config_json, stamp=preprocessor.metadata) as st:
        import joblib
        import pandas as pd

        from kfct.components.featurize import featurize_core

        log = st.log

        cfg = st.config
        df = pd.read_parquet(dataset.path)
        tr, va, te, encoder = featurize_core(df, cfg)
        label = cfg.dataset.label
        for art, part in ((train, tr), (val, va), (test, te)):
            part.to_parquet(art.path, index=False)
            art.metadata.update(
                {
                    "rows": len(part),
                    "positive_share": round(float(part[label].mean()), 4),
                    "dataset_sha256": dataset.metadata.get("sha256", ""),
                }
            )
        joblib.dump(encoder, preprocessor.path)
        preprocessor.metadata.update({"features_in": len(encoder.input_features), "features_out": len(encoder.output_names_)})
        log.info(
            "split %d/%d/%d rows (train/val/test); %d features -> %d encoded",
            len(tr),
            len(va),
            len(te),
            len(encoder.input_features),
            len(encoder.output_names_),
        )
