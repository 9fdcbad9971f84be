"""The moving dataset pointer (issue 14, finding 4) against moto's S3 server on loopback.

`kfct data push FILE --tag latest` moves `dataset://latest`; ingest resolves it when it runs,
so the same parameter ingests new data after each push, and records the snapshot's sha256.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.test_s3_store import BUCKET, moto_s3, s3_env  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def _write(tmp_path, name, seed):
    from kfct.data.datagen import generate, write_frame

    return write_frame(generate(rows=300, seed=seed), tmp_path / name)


def test_same_pointer_new_data_after_each_push(s3_env, tmp_path):
    from kfct.components.ingest import ingest_core
    from kfct.data.datastore import push_dataset

    uri1 = push_dataset(_write(tmp_path, "a.parquet", 1), tag="latest")
    meta1 = ingest_core("dataset://latest", tmp_path / "run1" / "dataset")  # no suffix, as a KFP artifact path
    uri2 = push_dataset(_write(tmp_path, "b.csv", 2), tag="latest")
    meta2 = ingest_core(f"s3://{BUCKET}/datasets/tags/latest", tmp_path / "run2" / "dataset")
    assert uri1 != uri2
    assert (meta1["resolved_uri"], meta2["resolved_uri"]) == (uri1, uri2)
    assert uri1.endswith(f"/{meta1['sha256']}.parquet") and uri2.endswith(f"/{meta2['sha256']}.parquet")
    assert meta1["source"] == "dataset://latest" and meta1["rows"] == 300


def test_cli_push_tag_writes_the_manifest(s3_env, tmp_path, capsys):
    from kfct.cli import main
    from kfct.data import s3

    path = _write(tmp_path, "c.parquet", 3)
    assert main(["data", "push", str(path), "--tag", "nightly"]) == 0
    out = capsys.readouterr().out.split()
    local = s3.download(f"s3://{BUCKET}/datasets/tags/nightly.json", tmp_path / "m.json")
    manifest = json.loads(local.read_text())
    assert manifest["uri"] == out[0] and manifest["rows"] == 300 and manifest["tag"] == "nightly"
    assert set(manifest) == {"tag", "sha256", "uri", "rows", "pushed_at"}


def test_missing_tampered_and_bad_tags_are_clear(s3_env, tmp_path):
    from kfct.components.ingest import ingest_core
    from kfct.data import s3
    from kfct.data.datastore import push_dataset
    from kfct.errors import DataSourceError

    with pytest.raises(DataSourceError, match=r"no tag manifest .*kfct data push FILE --tag nope"):
        ingest_core("dataset://nope", tmp_path / "x")
    with pytest.raises(DataSourceError, match="bad dataset tag"):
        push_dataset(_write(tmp_path, "d.parquet", 4), tag="../evil")
    assert not list(s3.client().list_objects(BUCKET, prefix="datasets/", recursive=True))  # nothing uploaded
    uri = push_dataset(_write(tmp_path, "e.parquet", 5), tag="latest")
    other = push_dataset(_write(tmp_path, "f.parquet", 6))
    bad = tmp_path / "bad.json"  # a manifest whose sha256 does not match the object it names
    sha_other = other.rsplit("/", 1)[1].removesuffix(".parquet")
    bad.write_text(
        json.dumps(
            {
                "sha256": uri.rsplit("/", 1)[1].removesuffix(".parquet"),
                "uri": uri.replace(uri.rsplit("/", 1)[1], f"{sha_other}.parquet"),
            }
        )
    )
    s3.upload(bad, f"s3://{BUCKET}/datasets/tags/latest.json")
    with pytest.raises(DataSourceError, match="field 'uri'"):
        ingest_core("dataset://latest", tmp_path / "y")
