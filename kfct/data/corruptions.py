"""The ways `kfct.data.datagen.corrupt` can break a dataset, by name.

A module of their own so that `kfct data generate --corrupt` can offer them as choices
while the parser is built: the generator itself needs numpy and pandas, which `kfct --help`
should not pay for.
"""

from __future__ import annotations

CORRUPTIONS = (
    "label_nulls",
    "unknown_category",
    "out_of_range",
    "missing_column",
    "duplicated_rows",
    "too_few_rows",
    "wrong_dtype",
)
