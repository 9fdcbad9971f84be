"""Labels of any coding (0/1, booleans, strings) mapped once, at the boundary, to 0/1.

A user's label may be `churned: 0/1`, `is_fraud: true/false`, `outcome: "yes"/"no"` or
`class: "malignant"/"benign"`; YAML adds its own twist (unquoted `yes`/`no` become
booleans). Stages after the boundary (featurize's splits, drift's current batch) only
see 0/1 with 1 meaning `dataset.positive_label`. Values compare by a canonical token:
booleans, yes/no, on/off, true/false and 1/0 all mean the same, strings ignore case
and surrounding blanks, so the YAML twist and the data agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kfct.errors import KfctError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from kfct.config import RunConfig

_TRUE = {"1", "true", "yes", "y", "on", "t"}
_FALSE = {"0", "false", "no", "n", "off", "f"}


class LabelError(KfctError):
    """The label column holds values the config does not allow."""


def token(v: Any) -> str:
    """The canonical form two label values are compared by."""
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return "1" if v else "0"
    if isinstance(v, (int, float)) or hasattr(v, "dtype"):
        f = float(v)
        if f.is_integer():
            return str(int(f))
        return repr(f)
    s = str(v).strip().lower()
    if s in _TRUE:
        return "1"
    if s in _FALSE:
        return "0"
    try:
        f = float(s)
        return str(int(f)) if f.is_integer() else repr(f)
    except ValueError:
        return s


def binary_labels(series: Iterable[Any], positive_label: Any, values: Iterable[Any] | None = None) -> np.ndarray:
    """0/1 int array: 1 where the value means `positive_label`. LabelError (one line) on other values.

    With `values` (the config's allowed set) every value must be one of them, and
    there must be at most two; without, at most two distinct values are allowed.
    """
    import numpy as np
    import pandas as pd

    name = getattr(series, "name", None) or "label"
    s = pd.Series(series)
    if s.isna().any():
        raise LabelError(f"label {name!r} has {int(s.isna().sum())} missing value(s)")
    tokens = s.map(token)
    pos = token(positive_label)
    allowed_values = list(values) if values is not None else None
    allowed = {token(v) for v in allowed_values} if allowed_values is not None else None
    seen = set(tokens.unique())
    if allowed is not None:
        bad = seen - allowed
        if bad and allowed_values is not None:
            raise LabelError(_other_values(name, s, tokens, bad, sorted(map(str, allowed_values))))
    if len(seen | ({pos} if allowed is None else set())) > 2 or (allowed is not None and len(allowed) > 2):
        shown = sorted(map(str, s.unique()))[:5]
        raise LabelError(
            f"label {name!r} must have two values (positive {positive_label!r} and one other); "
            f"found {len(seen)}: {', '.join(shown)}{' ...' if len(seen) > 5 else ''}"
        )
    return (tokens == pos).to_numpy(np.int64)


def _other_values(name: str, s: pd.Series, tokens: pd.Series, bad: set, allowed: list[str]) -> str:
    mask = tokens.isin(bad)
    sample = [str(v)[:40] for v in s[mask].unique()[:3]]
    return (
        f"label {name!r} has {int(mask.sum())} row(s) with values outside {{{', '.join(allowed)}}}: "
        f"{', '.join(repr(v) for v in sample)}{' ...' if len(bad) > 3 else ''}"
    )


def rate_name(cfg: RunConfig) -> str:
    """What the share of predicted positives is called in this dataset's words: `churned=1 rate`."""
    ds = cfg.dataset
    return f"{ds.label}={ds.positive_label} rate"


def label_value(cfg: RunConfig, predicted: int) -> Any:
    """The user's own label value for a predicted 0/1 ("Yes"/"No", "female"/"male"), from the config."""
    ds = cfg.dataset
    pos = ds.positive_label
    if int(predicted) == 1:
        return pos
    spec = ds.columns.get(ds.label)
    values = (spec.values if spec is not None else None) or []
    others = [v for v in values if token(v) != token(pos)]
    return others[0] if len(others) == 1 else f"not {pos}"


def aligned_values(series: Iterable[Any], values: Iterable[Any]) -> list[Any]:
    """The data's own spellings of the config's values (YAML `yes` -> the data's "Yes"), for set checks."""
    import pandas as pd

    want = {token(v) for v in values}
    present = [v for v in pd.Series(series).dropna().unique() if token(v) in want]
    return list(values) + [v for v in present if v not in list(values)]
