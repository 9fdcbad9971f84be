"""`kfct init`: a schema config inferred from a user's table, written as YAML the user reviews.

Why infer rather than ask: a new dataset should reach a first validated, trained and
served model without the user writing the 30-column schema by hand. What inference
cannot know is left to the user, visibly: sensitive attributes are listed commented
out (a fairness gate on a guess would be wrong both ways), and every range carries a
margin so next month's data is not rejected for being 1% outside last month's.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfct.errors import KfctError

if TYPE_CHECKING:
    import pandas as pd

CATEGORY_CAP = 50  # more distinct strings than this: free text, kept out of the model
FUTURE_DAYS = 1.0  # a date more than this many days ahead of the check fails validation
# Strings that are dates: ISO (2007-11-11, 2007-11-11T10:00:00Z) or d/m/y-style (11/11/07).
DATE_PATTERN = re.compile(
    r"^\s*(\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?"
    r"|\d{1,2}/\d{1,2}/\d{2,4}|\d{4}/\d{1,2}/\d{1,2})\s*$"
)
RANGE_MARGIN = 0.10  # numeric ranges widened by this share of the observed span
SENSITIVE_HINTS = re.compile(
    r"(^|_)(age|sex|gender|race|ethnic\w*|religion|nationality|marital|disab\w*|region)(_|$)", re.IGNORECASE
)


class InitError(KfctError):
    """The data cannot be turned into a schema config (say which column and why)."""


def _nice(v: float, down: bool) -> float | int:
    """A round-ish bound (4 significant digits), never inside the observed range."""
    if v == 0 or not math.isfinite(v):
        return 0
    digits = 3 - math.floor(math.log10(abs(v)))
    scale = 10.0**digits
    out = (math.floor if down else math.ceil)(v * scale) / scale
    return int(out) if float(out).is_integer() else out


def _numeric_spec(s: pd.Series, is_int: bool) -> dict:
    lo, hi = float(s.min()), float(s.max())
    span = (hi - lo) or abs(hi) or 1.0
    lo_m, hi_m = lo - RANGE_MARGIN * span, hi + RANGE_MARGIN * span
    if lo >= 0:
        lo_m = max(0.0, lo_m)  # a non-negative quantity stays non-negative
    return {
        "dtype": "int" if is_int else "float",
        "nullable": bool(s.isna().any()),
        "min": _nice(lo_m, down=True),
        "max": _nice(hi_m, down=False),
    }


def _is_date_strings(s: pd.Series) -> bool:
    """Every non-null value is a date-looking string that pandas parses: a date, not a category."""
    import warnings

    import pandas as pd

    vals = s.dropna()
    if vals.empty or not all(isinstance(v, str) and DATE_PATTERN.match(v) for v in vals.unique()[:10_000]):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format": the parse result decides
        parsed = pd.to_datetime(vals, errors="coerce", format="mixed")
    return bool(parsed.notna().all())


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    return v


def _label_spec(s: pd.Series, positive: Any | None) -> tuple[dict, Any]:
    import pandas as pd

    name = s.name
    if s.isna().any():
        raise InitError(f"label {name!r} has {int(s.isna().sum())} missing value(s); drop those rows first")
    values = sorted((_plain(v) for v in s.unique()), key=str)
    if len(values) != 2:
        shown = ", ".join(repr(v) for v in values[:5]) + (" ..." if len(values) > 5 else "")
        raise InitError(f"label {name!r} must have exactly two values for a binary classifier; found {len(values)}: {shown}")
    if pd.api.types.is_bool_dtype(s):
        dtype = "bool"
    elif pd.api.types.is_integer_dtype(s):
        dtype = "int"
    elif pd.api.types.is_float_dtype(s):
        dtype = "float"
    else:
        dtype = "category"
    if positive is None:
        from kfct.data.labels import token

        ones = [v for v in values if token(v) == "1"]
        if not ones:
            raise InitError(
                f"label {name!r} has values {values[0]!r} and {values[1]!r}: say which one is the positive class with --positive"
            )
        positive = ones[0]
    else:
        from kfct.data.labels import token

        match = [v for v in values if token(v) == token(positive)]
        if not match:
            raise InitError(f"--positive {positive!r} is not a value of label {name!r} (values: {values[0]!r}, {values[1]!r})")
        positive = match[0]
    return {"dtype": dtype, "nullable": False, "values": values}, positive


def _column_spec(s: pd.Series) -> tuple[dict, bool, str | None]:
    """A column other than the label and the id: (its spec, whether it is kept out of the model inputs,
    the note that says why or how it is used)."""
    import pandas as pd

    if s.isna().all():
        return (
            {"dtype": "float" if pd.api.types.is_numeric_dtype(s) else "string", "nullable": True},
            True,
            "all values missing: not a model input",
        )
    if pd.api.types.is_datetime64_any_dtype(s) or (s.dtype == object and _is_date_strings(s)):
        return (
            {"dtype": "datetime", "nullable": bool(s.isna().any()), "max_future_days": FUTURE_DAYS},
            False,
            "date: validated (parseable, not in the future), not a model input; derive features from it",
        )
    if pd.api.types.is_bool_dtype(s):
        return (
            {"dtype": "bool", "nullable": bool(s.isna().any())},
            True,
            "boolean: not a model input (recode as 0/1 int or a category to use it)",
        )
    if pd.api.types.is_numeric_dtype(s):
        return _numeric_spec(s, pd.api.types.is_integer_dtype(s)), False, None
    cats = sorted(str(v) for v in s.dropna().unique())
    if len(cats) <= CATEGORY_CAP:
        return {"dtype": "category", "nullable": bool(s.isna().any()), "categories": cats}, False, None
    return (
        {"dtype": "string", "nullable": bool(s.isna().any())},
        True,
        f"{len(cats)} distinct strings (> {CATEGORY_CAP}): free text, not a model input",
    )


def _exclude_constants(
    df: pd.DataFrame, columns: dict[str, dict], keep: tuple[str | None, ...], exclude: list[str], notes: dict[str, str]
) -> None:
    """Add the model inputs that hold one value only to `exclude`, with a note (`keep`: label and id)."""
    for col in df.columns:
        if col in keep or col in exclude or columns[col]["dtype"] == "datetime":
            continue
        values = df[col].dropna().unique()
        if len(values) == 1:
            exclude.append(col)
            notes[col] = f"constant (every value {_plain(values[0])!r}): no information, not a model input"


def infer_config(
    df: pd.DataFrame, label: str, id_column: str | None = None, positive: Any | None = None, name: str = "dataset"
) -> dict:
    """The user-file config for `df`: dataset (schema, checks), register name, sensitive candidates."""
    import pandas as pd

    for what, col in (("--label", label), ("--id", id_column)):
        if col is not None and col not in df.columns:
            from kfct.config import _closest

            raise InitError(f"{what} column {col!r} is not in the data{_closest(col, df.columns)}")
    if len(df) < 20:
        raise InitError(f"the data has {len(df)} rows; a model needs at least 20")
    columns: dict[str, dict] = {}
    exclude: list[str] = []
    notes: dict[str, str] = {}
    for col in df.columns:
        s = df[col]
        if col == label:
            columns[col], positive = _label_spec(s, positive)
        elif col == id_column:
            columns[col] = {
                "dtype": "int" if pd.api.types.is_integer_dtype(s) else "string",
                "nullable": False,
                "unique": bool(s.is_unique),
            }
        else:
            columns[col], out, note = _column_spec(s)
            if out:
                exclude.append(col)
            if note:
                notes[col] = note
    _exclude_constants(df, columns, (label, id_column), exclude, notes)
    y = df[label].map(lambda v: v == positive)
    share = float(y.mean())
    sensitive = [
        c
        for c in df.columns
        if c not in (label, id_column)
        and columns[c]["dtype"] == "category"
        and c not in exclude
        and SENSITIVE_HINTS.search(str(c))
    ]
    ds = {
        "name": name,
        "id_column": id_column,
        "label": label,
        "positive_label": _plain(positive),
        "min_rows": max(1, min(1000, len(df) // 10)),
        "max_duplicate_share": _duplicate_share(df),
        "label_balance": [round(share / 2, 4), round(share + (1 - share) / 2, 4)],
        "allow_extra_columns": False,
        "columns": columns,
        "exclude_features": exclude,
        "sensitive_features": [],
    }
    return {
        "dataset": ds,
        "register": {"model_name": f"{_slug(name)}-classifier"},
        "_notes": notes,
        "_sensitive_candidates": sensitive,
        "_rows": len(df),
    }


def _duplicate_share(df: pd.DataFrame) -> float:
    """1%, or more when the table itself has more fully duplicated rows (counted as the suite counts
    them: every copy), so the config `kfct init` writes accepts the very table it was inferred from
    (iris ships two identical rows: 1.3% of its 150)."""
    observed = float(df.duplicated(keep=False).mean()) if len(df) else 0.0
    return max(0.01, math.ceil(observed * 1.5 * 1000) / 1000)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "dataset"


def _v(v: Any) -> str:
    """A YAML flow value that reads back as written (strings quoted: `yes` stays a string)."""
    return json.dumps(_plain(v) if not isinstance(v, list) else [_plain(x) for x in v])


def render_yaml(inferred: dict, source: str) -> str:
    """The commented YAML `kfct init` writes."""
    ds = inferred["dataset"]
    out = [
        f"# kfct config inferred by `kfct init` from {source} ({inferred['_rows']} rows, {len(ds['columns'])} columns).",
        "# Review it, then: kfct --config THIS_FILE config check THIS_FILE && kfct --config THIS_FILE run --data-uri DATA",
        "# `dataset` here replaces the packaged example's dataset wholesale; other sections (split, train, gate,",
        "# fairness, rollout, drift) keep the defaults shown by `kfct config show` unless you set them here.",
        "dataset:",
        f"  name: {_v(ds['name'])}",
        f"  id_column: {_v(ds['id_column'])}" + ("" if ds["id_column"] else "   # no id: rows are not traceable"),
        f"  label: {_v(ds['label'])}",
        f"  positive_label: {_v(ds['positive_label'])}   # the class the model predicts the probability of",
        f"  min_rows: {ds['min_rows']}                # a batch with fewer rows fails validation",
        f"  max_duplicate_share: {ds['max_duplicate_share']}",
        f"  label_balance: {_v(ds['label_balance'])}   # positive share must fall in this range",
        "  allow_extra_columns: false     # true: columns not listed below are allowed (and ignored)",
        "  columns:",
    ]
    for col, spec in ds["columns"].items():
        body = ", ".join(f"{k}: {_v(v)}" for k, v in spec.items())
        note = inferred["_notes"].get(col)
        out.append(f"    {_v(col)}: {{{body}}}" + (f"   # {note}" if note else ""))
    out.append(f"  exclude_features: {_v(ds['exclude_features'])}")
    cands = inferred["_sensitive_candidates"]
    out.append("  # Sensitive attributes gate the model on fairness (demographic parity, equalized odds).")
    if cands:
        out.append("  # Candidates found by name; confirm and uncomment:")
        out.append(f"  # sensitive_features: {_v(cands)}")
    out.append("  sensitive_features: []")
    out += ["register:", f"  model_name: {_v(inferred['register']['model_name'])}", ""]
    return "\n".join(out)


def init_config(data: str, label: str, out: str | Path, id_column: str | None = None, positive: Any | None = None) -> dict:
    """Read `data`, infer, write `out`, check it loads; returns the inferred config (with notes)."""
    from kfct.config import load_config
    from kfct.data.datasource import read_dataset

    df = read_dataset(data)
    if positive is not None and label in df.columns and not isinstance(positive, str):
        positive = str(positive)
    inferred = infer_config(df, label, id_column, positive, name=Path(str(data)).stem)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_yaml(inferred, str(data)))
    load_config(out)  # what we wrote must be a valid config
    return inferred
