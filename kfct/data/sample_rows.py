"""Sample feature records of the configured schema: what `kfct predict` sends when given no data.

Why from the config and not from a file: the README's serving example must work when
pasted, for the packaged example and for a user's own schema alike; the schema knows
every feature's dtype, range and categories, which is all a valid request needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfct.config import RunConfig


def sample_records(cfg: RunConfig, n: int = 3) -> list[dict[str, Any]]:
    """n records with the id (when configured) and every model feature, values inside the schema."""
    from kfct.config import feature_columns

    ds = cfg.dataset
    cols = ds.columns
    out = []
    for i in range(n):
        rec: dict[str, Any] = {}
        if ds.id_column:
            rec[ds.id_column] = i + 1 if cols[ds.id_column].dtype == "int" else f"sample-{i + 1}"
        for c in feature_columns(cfg):
            spec = cols[c]
            if spec.dtype == "category":
                cats = spec.categories or []
                rec[c] = str(cats[i % len(cats)])
            elif spec.dtype in ("float", "int"):
                lo = spec.min if spec.min is not None else 0.0
                hi = spec.max if spec.max is not None else lo + 1.0
                v = lo + (hi - lo) * (i + 1) / (n + 1)
                rec[c] = int(round(v)) if spec.dtype == "int" else round(float(v), 6)
        out.append(rec)
    return out
