"""Datasets in parts against a real S3-protocol server on loopback (moto server mode, IAM auth on).

`kfct data push --part-rows` splits a file into content-addressed parts under
`datasets/<manifest sha256>/`; a tag can name it; ingest resolves the manifest and hands on
the parts' S3 URIs without downloading them; a manifest that is not its prefix's version is refused.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from tests.faultkit.servers import auth_on, grant, moto_iam_s3

pytestmark = pytest.mark.slow

BUCKET = "kfct"


@pytest.fixture(scope="module")
def moto_s3():
    with moto_iam_s3() as (url, iam):
        keys = grant(iam, "kfct-s3", {"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
        auth_on(url)
        yield {"endpoint": url.removeprefix("http://"), **keys}


@pytest.fixture
def s3_env(moto_s3, monkeypatch, tmp_path):
    from kfct.data import s3
    from kfct.runtime.settings import get_settings, reset_settings

    monkeypatch.setenv("KFCT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KFCT_S3_ENDPOINT", moto_s3["endpoint"])
    monkeypatch.setenv("KFCT_S3_ACCESS_KEY", moto_s3["access_key"])
    monkeypatch.setenv("KFCT_S3_SECRET_KEY", moto_s3["secret_key"])
    monkeypatch.setenv("KFCT_S3_BUCKET", BUCKET)
    monkeypatch.delenv("KFCT_S3_SECURE", raising=False)
    reset_settings()
    s3.ensure_bucket(BUCKET, create=True)
    yield get_settings()
    c = s3.client(get_settings())
    for obj in c.list_objects(BUCKET, recursive=True):
        c.remove_object(BUCKET, obj.object_name)
    reset_settings()


def test_push_in_parts_tag_and_ingest_by_reference(s3_env, tmp_path):
    from kfct.components.ingest_parts import ingest_parts_core
    from kfct.data import parts, s3
    from kfct.data.datagen import generate, write_frame
    from kfct.data.datasource import read_dataset_bounded
    from kfct.data.datastore import push_dataset

    df = generate(2_500, seed=6)
    path = write_frame(df, tmp_path / "customers.parquet")
    uri = push_dataset(path, tag="latest", part_rows=1_000)
    names = sorted(s3.list_names(BUCKET, "datasets/"))
    version = uri.rstrip("/").rsplit("/", 1)[-1]
    assert uri == f"s3://{BUCKET}/datasets/{version}/"
    manifest_key = f"datasets/{version}/_manifest.json"
    assert manifest_key in names and len([n for n in names if n.startswith(f"datasets/{version}/")]) == 4
    body = s3.client(s3_env).get_object(BUCKET, manifest_key).read()
    assert hashlib.sha256(body).hexdigest() == version  # the manifest's sha256 is the data version
    assert push_dataset(path, part_rows=1_000) == uri  # same content: same version

    manifest = ingest_parts_core("dataset://latest", tmp_path / "ingest", str(tmp_path / "ingest"), 250_000)
    assert manifest["version"] == version and manifest["rows"] == 2_500
    assert [p["rows"] for p in manifest["parts"]] == [1_000, 1_000, 500]
    assert all(p["uri"].startswith(uri) for p in manifest["parts"])
    assert not list((tmp_path / "ingest").glob("*.parquet"))  # nothing downloaded: references only
    got = pd.concat(
        [parts.read_part(p["uri"], verify_sha256=p["sha256"]).to_pandas() for p in manifest["parts"]], ignore_index=True
    )
    pd.testing.assert_frame_equal(got, df)
    tail, total = read_dataset_bounded(uri, 600, mode="tail")
    assert total == 2_500
    pd.testing.assert_frame_equal(tail, df.tail(600).reset_index(drop=True))


def test_a_manifest_that_is_not_its_version_is_refused(s3_env, tmp_path):
    from kfct.data import parts, s3
    from kfct.data.datagen import generate, write_frame
    from kfct.data.datastore import push_dataset
    from kfct.errors import DataSourceError

    path = write_frame(generate(2_000, seed=1), tmp_path / "c.parquet")
    uri = push_dataset(path, part_rows=1_000)
    m = parts.load_manifest(uri)
    m["parts"] = m["parts"][:1]
    m["rows"] = m["parts"][0]["rows"]
    s3.put_bytes(parts.canonical_bytes(m), f"{uri}{parts.MANIFEST}")  # someone rewrote it in place
    with pytest.raises(DataSourceError, match="its location says"):
        parts.load_manifest(uri)
