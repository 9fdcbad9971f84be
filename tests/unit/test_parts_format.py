"""The parts format (kfct.data.parts): content-addressed parts, a canonical manifest whose sha256 is the version."""

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from kfct.data import parts
from kfct.errors import DataSourceError


def test_generate_in_parts_from_the_cli(tmp_path, capsys):
    from kfct.cli import main

    out = tmp_path / "c"
    assert main(["data", "generate", "--rows", "25000", "--part-rows", "10000", "--out", str(out)]) == 0
    m = parts.load_manifest(out)
    assert [p["rows"] for p in m["parts"]] == [10_000, 10_000, 5_000] and m["rows"] == 25_000
    assert hashlib.sha256((out / parts.MANIFEST).read_bytes()).hexdigest() == m["version"]
    for p, uri in zip(m["parts"], parts.part_uris(m, out)):
        assert hashlib.sha256(Path(uri).read_bytes()).hexdigest() == p["sha256"]
    df = pd.read_parquet(out)  # the manifest is invisible to readers
    assert len(df) == 25_000 and df["customer_id"].is_unique
    assert m["version"] in capsys.readouterr().out
    again = tmp_path / "d"
    main(["data", "generate", "--rows", "25000", "--part-rows", "10000", "--out", str(again)])
    assert parts.load_manifest(again)["version"] == m["version"]  # deterministic


def test_writer_refuses_a_schema_change_and_bad_sizes(tmp_path):
    w = parts.PartWriter(tmp_path / "x", part_rows=1_000)
    w.write(pd.DataFrame({"a": [1, 2]}))
    with pytest.raises(DataSourceError, match="part schema changed"):
        w.write(pd.DataFrame({"a": ["x"]}))
    with pytest.raises(DataSourceError, match="part rows"):
        parts.PartWriter(tmp_path / "y", part_rows=10)


def test_a_manifest_that_lies_is_refused(tmp_path):
    parts.write_parts([pd.DataFrame({"a": range(3000)})], tmp_path / "p", 1_000)
    mpath = tmp_path / "p" / parts.MANIFEST
    m = json.loads(mpath.read_text())
    m["rows"] = 5
    mpath.write_text(json.dumps(m))
    with pytest.raises(DataSourceError, match="parts hold 3000"):
        parts.load_manifest(tmp_path / "p")
    m["rows"] = 3000
    m["parts"][0]["sha256"] = "0" * 64
    mpath.write_text(json.dumps(m))
    uri = parts.part_uris(parts.load_manifest(tmp_path / "p"), tmp_path / "p")[0]
    with pytest.raises(DataSourceError, match="not found"):
        parts.read_part(uri)
