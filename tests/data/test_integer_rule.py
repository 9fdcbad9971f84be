"""An int column holds whole numbers, in the suite as in the scorer and the server: one rule
set from one place (issue 23 item 5: `tenure = 10.5` passed the GX suite, was registered
as champion, then `kfct score` refused the same file)."""

import numpy as np
import pytest

from kfct.components.validation_plan import plan_checks
from kfct.components.validation_run import validate_frame
from kfct.config import config_dict, load_config, validate_config
from kfct.data.datagen import generate
from kfct.data.record_schema import RecordSchema
from kfct.errors import FeatureError


def test_the_suite_rejects_a_fraction_in_an_int_column_as_the_scorer_does():
    cfg = load_config()
    df = generate(3000, seed=5)
    df["tenure_days"] = df["tenure_days"].astype("float64")
    df.loc[df.index[[7, 11]], "tenure_days"] = 10.5
    res = validate_frame(df, cfg)
    failed = {(f["check"], f["column"]) for f in res["failures"]}
    assert failed == {("integer", "tenure_days")}
    assert res["failures"][0]["sample_bad_values"] == [10.5] and res["failures"][0]["unexpected_count"] == 2
    with pytest.raises(FeatureError, match=r"'tenure_days': 10\.5 is not an integer"):
        RecordSchema.from_config(cfg).check_column("tenure_days", df["tenure_days"].to_numpy())


def test_whole_floats_and_nulls_in_a_nullable_int_column_pass():
    raw = config_dict(load_config())
    raw["dataset"]["columns"]["tenure_days"]["nullable"] = True
    cfg = validate_config(raw)
    df = generate(3000, seed=5)
    df["tenure_days"] = df["tenure_days"].astype("float64")  # a CSV int column with a gap reads as float
    df.loc[df.index[3], "tenure_days"] = np.nan
    assert validate_frame(df, cfg)["passed"]


def test_every_numeric_rule_of_the_scorer_is_in_the_suite():
    cfg = load_config()
    plan = {(m["check"], m["column"]): kw for _, kw, m in plan_checks(cfg)}
    for rule in RecordSchema.from_config(cfg).numeric:
        assert (("integer", rule.name) in plan) == rule.integer
        if rule.min is not None or rule.max is not None:
            kw = plan[("range", rule.name)]
            assert (kw["min_value"], kw["max_value"]) == (rule.min, rule.max)
