"""What a valid input row is, from the dataset schema in the config: one rule set for
online requests, batch scoring and (through the same config) the GX suite.

The GX suite (`kfct.components.validate`) checks training data column by column:
dtype, nulls, min/max, categories. A model server that accepted what the suite
rejects (a negative `tenure_days`, 2.5 support tickets, 1e39 that is infinite once
cast to float32) would score rows the model never saw anything like; `kfct score`
imputing a NaN in a non-nullable column would answer where the server refuses.
`RecordSchema` holds the per-column rules and checks records (online) and numpy
columns (batch), raising `FeatureError` naming the column (and the row).

Pure: no kserve, no pandas needed; built once per loaded model version.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kfct.errors import FeatureError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from kfct.config import ColumnSpec, RunConfig

FLOAT32_MAX = 3.4028234663852886e38
INT64_LIMIT = 2**63
ID_MAX_LENGTH = 128


@dataclass(frozen=True)
class NumericRule:
    name: str
    integer: bool
    nullable: bool
    min: float | None
    max: float | None


class RecordSchema:
    """Per-column rules from `cfg.dataset.columns` (numeric ranges, integer-ness, the id column)."""

    def __init__(
        self,
        numeric: list[NumericRule],
        id_column: str | None,
        id_max_length: int = ID_MAX_LENGTH,
        columns: frozenset = frozenset(),
    ):
        self.numeric = numeric
        self.id_column = id_column
        self.id_max_length = id_max_length
        # Every column the schema names (label, dates, free text too): a record may carry them,
        # as the batch scorer reads a file that has them; the model reads its features only.
        self.columns = frozenset(columns)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> RecordSchema:
        ds = cfg.dataset
        rules = [r for name, spec in ds.columns.items() if name != ds.label and (r := numeric_rule(name, spec)) is not None]
        # ColumnSpec holds no per-column id length: the id's limit is the house one.
        return cls(rules, ds.id_column, ID_MAX_LENGTH, frozenset(str(c) for c in ds.columns))

    # -- online: one record at a time ----------------------------------------------------------
    def check_records(self, records: Iterable[dict]) -> None:
        """Raise FeatureError for the first value outside the schema. Values of the wrong type,
        missing features and nulls are left to the encoder, which names them the same way."""
        idc = self.id_column
        rules = self.numeric
        for i, rec in enumerate(records):
            if idc is not None and idc in rec:
                self._check_id(rec[idc], i)
            for r in rules:
                v = rec.get(r.name)
                if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                _check_number(r, v, i)

    def _check_id(self, v: Any, i: int) -> None:
        name = self.id_column or "id"
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise FeatureError(name, f"expected a string id, got {type(v).__name__}", i)
        if isinstance(v, int):
            if not -INT64_LIMIT < v < INT64_LIMIT:
                raise FeatureError(name, "integer id is out of range", i)
            return
        if not v:
            raise FeatureError(name, "empty id", i)
        if len(v) > self.id_max_length:
            raise FeatureError(name, f"id of {len(v)} characters is longer than {self.id_max_length}", i)

    # -- batch: one numeric column at a time ---------------------------------------------------
    def check_column(self, name: str, values: ArrayLike) -> None:
        """`values`: float64 numpy array with NaN for nulls. Same rules as `check_records`,
        plus the null policy (batch has no encoder step in between that would name it)."""
        import numpy as np

        rule = next((r for r in self.numeric if r.name == name), None)
        if rule is None:
            return
        v = np.asarray(values, dtype=np.float64)
        nan = np.isnan(v)
        if not rule.nullable and nan.any():
            raise FeatureError(name, f"null/NaN not allowed (row {int(np.flatnonzero(nan)[0])})")
        fin = v[~nan]
        bad = ~np.isfinite(fin)
        if bad.any():
            raise FeatureError(name, f"non-finite value {_plainnum(fin[bad][0])}")
        for mask, why in (
            (np.abs(fin) > FLOAT32_MAX, "overflows float32"),
            (rule.integer & (fin != np.floor(fin)) if rule.integer else None, "is not an integer"),
            (fin < rule.min if rule.min is not None else None, f"is below the minimum {rule.min}"),
            (fin > rule.max if rule.max is not None else None, f"is above the maximum {rule.max}"),
        ):
            if mask is not None and np.any(mask):
                raise FeatureError(name, f"{_plainnum(fin[mask][0])!r} {why}")


def numeric_rule(name: str, spec: ColumnSpec | None) -> NumericRule | None:
    """The one place a numeric column's rule comes from: the GX suite (`validation_plan`), the
    model server and `kfct score` all apply it (an int column holds whole numbers, in range)."""
    if spec is None or spec.dtype not in ("float", "int"):
        return None
    return NumericRule(name, spec.dtype == "int", spec.nullable, _num(spec.min), _num(spec.max))


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 24 else f"{s[:10]}...({len(s)} digits)"


def _plainnum(v: Any) -> float:
    """A numpy scalar as the Python number it is: messages say 68.5, not np.float64(68.5)."""
    return v.item() if hasattr(v, "item") else v


def _check_number(r: NumericRule, v: float, i: int) -> None:
    """Record i's number against its column's rule: int64 range, integrality, float32 range, bounds."""
    if isinstance(v, int):
        if not -INT64_LIMIT < v < INT64_LIMIT:
            raise FeatureError(r.name, f"integer {_short(v)} is out of range", i)
    elif not math.isfinite(v):
        return  # NaN/inf: the encoder's null policy names it
    elif r.integer and not v.is_integer():
        raise FeatureError(r.name, f"expected an integer, got {_plainnum(v)!r}", i)
    if abs(v) > FLOAT32_MAX:
        raise FeatureError(r.name, f"{_short(v)} overflows float32 (the model's input type)", i)
    if r.min is not None and v < r.min:
        raise FeatureError(r.name, f"{_plainnum(v)!r} is below the minimum {r.min:g}", i)
    if r.max is not None and v > r.max:
        raise FeatureError(r.name, f"{_plainnum(v)!r} is above the maximum {r.max:g}", i)
