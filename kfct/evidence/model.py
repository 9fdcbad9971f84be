"""The model object every stage and the server share: encoder + estimator + threshold.

`ChurnModel` is a scikit-learn compatible classifier (so MLflow's sklearn flavor,
signatures and pyfunc all work) that bundles the fitted preprocessing with the
estimator, so serving applies exactly the training transforms. It has two paths:

- `predict_proba(DataFrame)`: vectorised, for evaluation and batch scoring;
- `predict_proba_records(list[dict])`: a few microseconds of Python per record,
  for single online requests where building a DataFrame would cost more than the
  prediction itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.exceptions import NotFittedError

from kfct.errors import FeatureError  # here too: where the encoder raises it

if TYPE_CHECKING:
    import pyarrow as pa


class TabularEncoder(BaseEstimator, TransformerMixin):
    """Numeric columns as float32 (median-imputed, optionally standardised), categoricals one-hot.

    Categories come from the config, not from the data, so an unseen category is an
    error at serving time rather than a silent all-zero row. A nullable categorical has
    one more level, `<column>=<missing>`: a null is a category of its own, in all three paths.
    """

    def __init__(
        self,
        numeric: Sequence[str] = (),
        categorical: dict[str, Sequence[str]] | None = None,
        nullable: Sequence[str] = (),
        scale: bool = False,
    ):
        self.numeric = numeric
        self.categorical = categorical
        self.nullable = nullable
        self.scale = scale

    # -- fitting -------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any = None) -> TabularEncoder:
        cats = self.categorical or {}
        self.numeric_ = list(self.numeric)
        self.categorical_ = {c: list(v) for c, v in cats.items()}
        # Set at fit: a model pickled before nullable categories existed keeps its width.
        self.cat_missing_ = [c for c in self.categorical_ if c in set(self.nullable)]
        num = X[self.numeric_].to_numpy(dtype=np.float64)
        med = np.nanmedian(num, axis=0) if len(num) else np.zeros(len(self.numeric_))
        self.medians_ = np.where(np.isnan(med), 0.0, med).astype(np.float32)
        if self.scale:
            filled = np.where(np.isnan(num), self.medians_, num)
            self.means_ = filled.mean(axis=0).astype(np.float32)
            std = filled.std(axis=0)
            self.stds_ = np.where(std > 0, std, 1.0).astype(np.float32)
        else:
            self.means_ = np.zeros(len(self.numeric_), dtype=np.float32)
            self.stds_ = np.ones(len(self.numeric_), dtype=np.float32)
        self.output_names_ = list(self.numeric_)
        for c, vals in self.categorical_.items():
            self.output_names_ += [f"{c}={v}" for v in vals] + ([f"{c}={MISSING_LEVEL}"] if c in self.cat_missing_ else [])
        self._index()
        return self

    def _index(self) -> None:
        offset = len(self.numeric_)
        self._cat_offsets = {}
        missing = set(getattr(self, "cat_missing_", ()))
        self._missing_slot = {}
        for c, vals in self.categorical_.items():
            self._cat_offsets[c] = (offset, {v: i for i, v in enumerate(vals)})
            if c in missing:
                self._missing_slot[c] = len(vals)  # the level after the listed ones
            offset += len(vals) + (1 if c in missing else 0)
        self._width = offset
        self._nullable = set(self.nullable)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "numeric_" in state:
            self._index()

    @property
    def input_features(self) -> list[str]:
        return list(self.numeric_) + list(self.categorical_)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.output_names_, dtype=object)

    @property
    def width(self) -> int:
        """Columns of the encoded matrix."""
        return self._width

    # -- one null policy, shared by the three paths ---------------------------
    # A numeric null (None / NaN) is the training median when the feature is declared
    # nullable and an error naming the feature otherwise; inf is always an error; a
    # categorical null is its own level when the feature is nullable and an error otherwise;
    # an unknown category is always an error. Batch (`transform`), Arrow
    # (`transform_arrow`) and online (`transform_records`) apply exactly this.
    def _numeric_column(self, j: int, c: str, v: np.ndarray) -> np.ndarray:
        nan = np.isnan(v)
        if nan.any():
            if c not in self._nullable:
                raise FeatureError(c, f"null not allowed ({int(nan.sum())} row(s))", int(np.argmax(nan)))
            v = np.where(nan, self.medians_[j], v)
        inf = np.isinf(v)
        if inf.any():
            raise FeatureError(c, f"non-finite value {v[inf][0]}", int(np.argmax(inf)))
        return (v - self.means_[j]) / self.stds_[j]

    def _one_hot(self, out: np.ndarray, c: str, codes: np.ndarray, values: np.ndarray | _LazyValues) -> None:
        """Set the one-hot cells; codes < 0 are unknown (or null) values of `values` (row-aligned)."""
        off, index = self._cat_offsets[c]
        if (codes < 0).any():
            i = int(np.argmax(codes < 0))
            bad = values[i]
            if _is_null(bad):
                raise FeatureError(c, "null not allowed", i)
            raise FeatureError(c, f"unknown category {bad!r}; allowed: {sorted(index)}", i)
        out[np.arange(len(codes)), off + codes] = 1.0

    # -- vectorised path -----------------------------------------------------
    def transform(self, X: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.input_features if c not in X.columns]
        if missing:
            raise FeatureError(missing[0], "missing column")
        out = np.zeros((len(X), self._width), dtype=np.float32)
        for j, c in enumerate(self.numeric_):
            try:
                v = X[c].to_numpy(dtype=np.float32, na_value=np.nan)
            except (TypeError, ValueError):
                raise FeatureError(c, f"expected numbers, got {X[c].dtype}") from None
            out[:, j] = self._numeric_column(j, c, v)
        for c, (_, index) in self._cat_offsets.items():
            col = X[c]
            values = col.to_numpy(dtype=object)
            codes = np.asarray(
                pd.Categorical(col.astype(str).where(col.notna(), None), categories=list(index)).codes, dtype=np.int64
            )
            if c in self._missing_slot:
                codes = np.where(col.isna().to_numpy(), self._missing_slot[c], codes)
            self._one_hot(out, c, codes, values)
        return out

    # -- Arrow path (batch scoring without pandas) ------------------------------
    def transform_arrow(self, table: pa.Table) -> np.ndarray:
        """`transform` computed from Arrow columns: each distinct category string is looked up once."""
        import pyarrow as pa
        import pyarrow.compute as pc

        missing = [c for c in self.input_features if c not in table.column_names]
        if missing:
            raise FeatureError(missing[0], "missing column")
        out = np.zeros((table.num_rows, self._width), dtype=np.float32)
        for j, c in enumerate(self.numeric_):
            col = table.column(c)
            if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_null(col.type)):
                raise FeatureError(c, f"expected numbers, got {col.type}")
            v = pc.fill_null(pc.cast(col, pa.float64()), float("nan")).to_numpy().astype(np.float32)
            out[:, j] = self._numeric_column(j, c, v)
        for c, (_, index) in self._cat_offsets.items():
            col = table.column(c)
            if not pa.types.is_dictionary(col.type):
                col = pc.dictionary_encode(col)
            col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            dictionary = col.dictionary.to_pylist()
            lookup = np.array([index.get(str(v), -1) for v in dictionary] + [self._missing_slot.get(c, -1)], dtype=np.int64)
            idx = pc.fill_null(col.indices, len(dictionary)).to_numpy(zero_copy_only=False)
            values = [*dictionary, None]
            codes = lookup[idx]
            self._one_hot(out, c, codes, _LazyValues(values, idx))
        return out

    # -- per-record path (online serving) -------------------------------------
    def transform_records(self, records: Iterable[dict]) -> np.ndarray:
        """The serving path: a well-formed value costs one type check; anything else (missing, null,
        non-finite, the wrong type, an unknown category) takes the slow helpers, which fill or raise."""
        records = list(records)
        out = np.zeros((len(records), self._width), dtype=np.float32)
        numeric = self.numeric_
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise FeatureError("<instance>", f"expected an object of features, got {type(rec).__name__}", i)
            row = out[i]
            for j, c in enumerate(numeric):
                v = rec.get(c, _MISSING)
                if type(v) not in _PLAIN_NUMBERS or not math.isfinite(v):
                    v = self._number_or_fill(c, j, v, i)
                row[j] = (v - self.means_[j]) / self.stds_[j]
            for c, (off, index) in self._cat_offsets.items():
                v = rec.get(c, _MISSING)
                k = index.get(v) if isinstance(v, str) else None
                if k is None:
                    k = self._category_slot(c, index, v, i)
                row[off + k] = 1.0
        return out

    def _number_or_fill(self, c: str, j: int, v: Any, i: int) -> float:
        """Numeric column j's value for record i: the median for an allowed null or NaN, else FeatureError."""
        if v is _MISSING:
            raise FeatureError(c, "missing", i)
        if v is None:
            if c not in self._nullable:
                raise FeatureError(c, "null not allowed", i)
            return self.medians_[j]  # float32, as the batch path fills it
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise FeatureError(c, f"expected a number, got {type(v).__name__}", i)
        if not math.isfinite(v):
            if math.isnan(v) and c in self._nullable:
                return self.medians_[j]  # float32, as the batch path fills it
            raise FeatureError(c, f"non-finite value {v}", i)
        return v

    def _category_slot(self, c: str, index: dict, v: Any, i: int) -> int:
        """The one-hot slot of a value that is not a known category: the missing level for an allowed
        null, else FeatureError."""
        if v is _MISSING:
            raise FeatureError(c, "missing", i)
        if _is_null(v):
            k = self._missing_slot.get(c)
            if k is None:
                raise FeatureError(c, "null not allowed", i)
            return k
        raise FeatureError(c, f"unknown category {v!r}; allowed: {sorted(index)}", i)


_MISSING = object()
_PLAIN_NUMBERS = (int, float)  # exact types: a bool, a numpy scalar or a str takes the checked path
MISSING_LEVEL = "<missing>"


def _is_null(v: Any) -> bool:
    """None, NaN or pandas' NA/NaT: a missing value, whichever path it came by."""
    if v is None:
        return True
    if isinstance(v, float):
        return math.isnan(v)
    return type(v).__name__ in ("NAType", "NaTType")


class _LazyValues:
    """Row i's original value, looked up only for the row an error names."""

    def __init__(self, dictionary: list, idx: np.ndarray):
        self.dictionary, self.idx = dictionary, idx

    def __getitem__(self, i: int) -> Any:
        return self.dictionary[int(self.idx[i])]


class ChurnModel(BaseEstimator, ClassifierMixin):
    """Fitted encoder + binary estimator + decision threshold chosen on validation."""

    def __init__(self, encoder: TabularEncoder | None = None, estimator: Any = None, threshold: float = 0.5):
        self.encoder = encoder
        self.estimator = estimator
        self.threshold = threshold

    @property
    def classes_(self) -> np.ndarray:
        return np.array([0, 1])

    def _fitted_encoder(self) -> TabularEncoder:
        """The encoder; None only on an unassembled instance (sklearn's clone needs the None default).
        NotFittedError is an AttributeError, as the bare `None.transform` it replaces was."""
        if self.encoder is None:
            raise NotFittedError("ChurnModel has no encoder: it is assembled by kfct.components.train")
        return self.encoder

    @property
    def feature_names(self) -> list[str]:
        return self._fitted_encoder().input_features

    def fit(self, X: Any, y: Any) -> NoReturn:  # pragma: no cover - training happens in kfct.components.train
        raise NotImplementedError("ChurnModel is assembled by kfct.components.train, not fitted directly")

    def _booster(self) -> Any:
        est = self.estimator
        return est if type(est).__name__ == "Booster" else None

    def proba_from_matrix(self, M: np.ndarray) -> np.ndarray:
        """Positive-class probability for an already encoded matrix."""
        booster = self._booster()
        if booster is not None:
            return np.asarray(booster.inplace_predict(M), dtype=np.float64)
        return self.estimator.predict_proba(M)[:, 1].astype(np.float64)

    def predict_positive(self, X: pd.DataFrame) -> np.ndarray:
        return self.proba_from_matrix(self._fitted_encoder().transform(X))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.predict_positive(X)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_positive(X) >= self.threshold).astype(np.int64)

    def predict_proba_records(self, records: Iterable[dict]) -> np.ndarray:
        return self.proba_from_matrix(self._fitted_encoder().transform_records(records))
