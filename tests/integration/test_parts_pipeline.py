"""The CT pipeline on a dataset in parts (kfp.local, map -> reduce) decides what the single-file run decides.

The same rows, once as one parquet file and once as parts: the validation verdict, the
train/val/test split (by id) and the fitted encoder are equal. A defect that only crosses
parts (one customer id in two parts) stops both runs at validation, before training.
"""

import numpy as np
import pandas as pd
import pytest

from kfct.data import parts

pytestmark = pytest.mark.slow

ROWS = 8_000
PART_ROWS = 3_000


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    import os

    from kfct.runtime.settings import reset_settings

    home = tmp_path_factory.mktemp("parts-home")
    old = os.environ.get("KFCT_HOME")
    os.environ["KFCT_HOME"] = str(home)
    reset_settings()
    yield home
    if old is None:
        os.environ.pop("KFCT_HOME", None)
    else:
        os.environ["KFCT_HOME"] = old
    reset_settings()


def _one(run_dir, task, name):
    from pathlib import Path

    hits = [p for p in Path(run_dir).rglob(name) if task in p.parts]
    assert len(hits) == 1, (task, name, hits)
    return hits[0]


def _run(data, **kw):
    from kfct.pipelines.local import run_ct

    return run_ct(data_uri=str(data), raise_on_validation=False, **kw)


def test_parts_run_equals_single_file_run(home):
    import joblib

    from kfct.data.datagen import generate, write_frame

    single = write_frame(generate(ROWS, seed=8), home / "data" / "customers.parquet")
    manifest = parts.split_parquet(single, home / "data" / "customers-parts", PART_ROWS)
    assert len(manifest["parts"]) == 3
    one = _run(single)
    many = _run(home / "data" / "customers-parts")
    assert "merge-validation" in many["stages"] and "validate-data" in one["stages"]
    assert many["dataset"]["sha256"] == manifest["version"] and many["dataset"]["parts"] == 3
    for key in ("passed", "n_expectations", "n_failed"):
        assert one["validation"][key] == many["validation"][key]
    assert one["validation"]["passed"]
    enc1 = joblib.load(_one(one["run_dir"], "featurize-split", "preprocessor"))
    enc2 = joblib.load(_one(many["run_dir"], "merge-featurize", "preprocessor"))
    assert enc1.output_names_ == enc2.output_names_ and enc1.categorical_ == enc2.categorical_
    np.testing.assert_array_equal(enc1.medians_, enc2.medians_)
    np.testing.assert_array_equal(enc1.means_, enc2.means_)
    np.testing.assert_array_equal(enc1.stds_, enc2.stds_)
    for split in ("train", "val", "test"):
        a = pd.read_parquet(_one(one["run_dir"], "featurize-split", split))
        b = pd.read_parquet(_one(many["run_dir"], "merge-featurize", split))  # a parts directory
        key = "customer_id"
        pd.testing.assert_frame_equal(a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True))
    # the gate saw the same test rows: its verdict is taken on the same data
    assert ("decision" in one) == ("decision" in many)


def test_duplicate_id_across_parts_stops_both_runs(home):
    from kfct.data.datagen import generate, write_frame

    df = generate(ROWS, seed=9)
    df.loc[ROWS - 1, "customer_id"] = df.loc[0, "customer_id"]  # first part and last part
    single = write_frame(df, home / "dup" / "customers.parquet")
    parts.split_parquet(single, home / "dup" / "customers-parts", PART_ROWS)
    for p in parts.iter_parts(home / "dup" / "customers-parts", ["customer_id"]):
        assert p.column(0).to_pandas().is_unique  # no part shows the defect on its own
    one = _run(single)
    many = _run(home / "dup" / "customers-parts")
    assert not one["validation"]["passed"] and not many["validation"]["passed"]
    f1 = {(f["check"], f["column"], f["unexpected_count"]) for f in one["validation"]["failures"]}
    f2 = {(f["check"], f["column"], f["unexpected_count"]) for f in many["validation"]["failures"]}
    assert f1 == f2 == {("unique", "customer_id", 2)}
    assert "train-model" not in one["stages"] and "train-model" not in many["stages"]
    # Both runs keep GX's Data Docs site as the validation step's `data_docs` artifact under the run's pipeline
    # root; its index links to the validation page, which opens from disk and shows the failed expectation.
    import re
    from pathlib import Path

    for summary in (one, many):
        index = Path(summary["validation"]["data_docs"])
        assert index.name == "index.html" and Path(summary["run_dir"]) in index.parents, index
        [link] = set(re.findall(r"'_table_row_link_path': '(validations/[^']+\.html)'", index.read_text()))
        page = (index.parent / link).read_text()
        words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
        assert "Expectation Validation Result" in page and "values must be unique. 2 unexpected values found." in words
        assert re.search(r"Unsuccessful Expectations</div></td><td[^>]*><div[^>]*>1</div>", page)
        # the step's HTML artifact (the page the Kubeflow UI shows) is the standalone page with kfct's summary
        shown = Path(summary["validation"]["report_html"]).read_text()
        assert "validation: " in shown and "customer_id: unique (2 bad)" in shown and "<script" not in shown
