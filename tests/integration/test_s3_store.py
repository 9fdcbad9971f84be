"""Content-addressed datasets against a real S3-protocol server on loopback (moto server mode).

The same `minio` client code that talks to MinIO on the cluster talks to moto here.
IAM authentication is switched on in moto (after creating a user and an access key),
so wrong keys are really rejected by signature checking, not simulated.
"""

from __future__ import annotations

import hashlib
import io
import re

import pytest

from tests.faultkit.servers import auth_on, free_port, grant, moto_iam_s3

pytestmark = pytest.mark.slow

BUCKET = "kfct"


@pytest.fixture(scope="module")
def moto_s3():
    """A moto server on 127.0.0.1 with IAM auth on; yields endpoint and a valid key pair."""
    with moto_iam_s3() as (url, iam):
        keys = grant(iam, "kfct-s3", {"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
        auth_on(url)  # from now on every request must be signed with a known key
        yield {"endpoint": url.removeprefix("http://"), "url": url, **keys}


@pytest.fixture
def s3_env(moto_s3, monkeypatch, tmp_path):
    """Settings pointing at moto (through KFCT_* env, as on a cluster); bucket created fresh."""
    from kfct.data import s3
    from kfct.runtime.settings import get_settings, reset_settings

    monkeypatch.setenv("KFCT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KFCT_S3_ENDPOINT", moto_s3["endpoint"])
    monkeypatch.setenv("KFCT_S3_ACCESS_KEY", moto_s3["access_key"])
    monkeypatch.setenv("KFCT_S3_SECRET_KEY", moto_s3["secret_key"])
    monkeypatch.setenv("KFCT_S3_BUCKET", BUCKET)
    monkeypatch.delenv("KFCT_S3_SECURE", raising=False)
    reset_settings()
    settings = get_settings()
    s3.ensure_bucket(BUCKET, create=True)
    yield settings
    c = s3.client(settings)  # the test may have broken the env credentials
    for obj in c.list_objects(BUCKET, recursive=True):
        c.remove_object(BUCKET, obj.object_name)
    reset_settings()


@pytest.fixture(scope="module")
def frame():
    from kfct.data.datagen import generate

    return generate(rows=2000, seed=3)


def _object_bytes(uri: str) -> bytes:
    from kfct.data import s3

    bucket, key = s3.parse_uri(uri)
    resp = s3.client().get_object(bucket, key)
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()


def test_push_csv_is_content_addressed_and_reads_back(s3_env, frame, tmp_path):
    import pandas as pd

    from kfct.data.datasource import read_dataset
    from kfct.data.datastore import push_dataset

    csv = tmp_path / "customers.csv"
    frame.to_csv(csv, index=False)
    uri = push_dataset(csv)
    m = re.fullmatch(rf"s3://{BUCKET}/datasets/([0-9a-f]{{64}})\.parquet", uri)
    assert m, uri
    stored = _object_bytes(uri)
    assert hashlib.sha256(stored).hexdigest() == m.group(1)
    back = read_dataset(uri)
    expected = pd.read_csv(csv)
    pd.testing.assert_frame_equal(back.reset_index(drop=True), expected, check_dtype=True)


def test_parquet_is_stored_byte_for_byte(s3_env, frame, tmp_path):
    from kfct.data.datastore import push_dataset
    from kfct.governance.lineage import sha256_file

    pq = tmp_path / "customers.parquet"
    frame.to_parquet(pq, index=False)
    uri = push_dataset(pq)
    assert uri == f"s3://{BUCKET}/datasets/{sha256_file(pq)}.parquet"
    assert _object_bytes(uri) == pq.read_bytes()


def test_same_content_is_pushed_once_and_other_content_gets_another_key(s3_env, frame, tmp_path, monkeypatch):
    from kfct.data import s3
    from kfct.data.datastore import push_dataset

    uploads = []
    real_upload = s3.upload
    monkeypatch.setattr(s3, "upload", lambda *a, **k: uploads.append(a[1]) or real_upload(*a, **k))

    pq = tmp_path / "a.parquet"
    frame.to_parquet(pq, index=False)
    first = push_dataset(pq)
    again = push_dataset(pq)
    assert first == again
    assert uploads == [first]  # the second push found the object and skipped the upload

    other = tmp_path / "b.parquet"
    frame.iloc[:-1].to_parquet(other, index=False)
    second = push_dataset(other)
    assert second != first
    keys = sorted(o.object_name for o in s3.client().list_objects(BUCKET, prefix="datasets/", recursive=True))
    assert keys == sorted([first.split(f"{BUCKET}/", 1)[1], second.split(f"{BUCKET}/", 1)[1]])


def test_tampered_object_is_detected_and_a_new_push_repairs_it(s3_env, frame, tmp_path):
    from kfct.data import s3
    from kfct.data.datasource import read_dataset
    from kfct.data.datastore import push_dataset
    from kfct.errors import DataSourceError

    pq = tmp_path / "customers.parquet"
    frame.to_parquet(pq, index=False)
    uri = push_dataset(pq)
    # Someone overwrites the snapshot with different (still valid parquet) data.
    tampered = io.BytesIO()
    frame.assign(churned=1 - frame["churned"]).to_parquet(tampered, index=False)
    bucket, key = s3.parse_uri(uri)
    s3.client().put_object(bucket, key, io.BytesIO(tampered.getvalue()), len(tampered.getvalue()))

    with pytest.raises(DataSourceError, match="hash mismatch") as err:
        read_dataset(uri)
    assert uri in str(err.value)

    assert push_dataset(pq) == uri  # metadata no longer vouches for it: re-uploaded
    assert read_dataset(uri)["churned"].tolist() == frame["churned"].tolist()


def test_bad_credentials_give_one_clear_error(s3_env, frame, tmp_path, monkeypatch):
    from kfct.data.datasource import read_dataset
    from kfct.data.datastore import push_dataset
    from kfct.errors import DataSourceError
    from kfct.runtime.settings import reset_settings

    pq = tmp_path / "customers.parquet"
    frame.to_parquet(pq, index=False)
    uri = push_dataset(pq)

    monkeypatch.setenv("KFCT_S3_ACCESS_KEY", "AKIAUNKNOWNKEY000000")
    reset_settings()
    with pytest.raises(DataSourceError, match=r"credentials rejected .*InvalidAccessKeyId") as err:
        push_dataset(pq)
    assert "\n" not in str(err.value)
    with pytest.raises(DataSourceError, match="credentials rejected"):
        read_dataset(uri)

    monkeypatch.setenv("KFCT_S3_ACCESS_KEY", s3_env.s3_access_key.get_secret_value())
    monkeypatch.setenv("KFCT_S3_SECRET_KEY", "not-the-secret")
    reset_settings()
    with pytest.raises(DataSourceError, match=r"credentials rejected .*SignatureDoesNotMatch"):
        read_dataset(uri)
    # the secret itself never appears in the message
    try:
        read_dataset(uri)
    except DataSourceError as exc:
        assert "not-the-secret" not in str(exc)


def test_missing_bucket_is_a_clear_error_unless_asked_to_create(s3_env, frame, tmp_path, monkeypatch):
    from kfct.data import s3
    from kfct.data.datasource import read_dataset
    from kfct.data.datastore import push_dataset
    from kfct.errors import DataSourceError
    from kfct.runtime.settings import reset_settings

    pq = tmp_path / "customers.parquet"
    frame.to_parquet(pq, index=False)
    monkeypatch.setenv("KFCT_S3_BUCKET", "no-such-bucket")
    reset_settings()
    with pytest.raises(DataSourceError, match="bucket 'no-such-bucket' does not exist"):
        push_dataset(pq)
    with pytest.raises(DataSourceError, match="bucket 'no-such-bucket' does not exist"):
        read_dataset("s3://no-such-bucket/datasets/" + "0" * 64 + ".parquet")

    uri = push_dataset(pq, create_bucket=True)
    assert uri.startswith("s3://no-such-bucket/datasets/")
    c = s3.client()
    for obj in c.list_objects("no-such-bucket", recursive=True):
        c.remove_object("no-such-bucket", obj.object_name)
    c.remove_bucket("no-such-bucket")


def test_missing_object_and_unreadable_input(s3_env, tmp_path):
    from kfct.data.datasource import read_dataset
    from kfct.data.datastore import push_dataset
    from kfct.errors import DataSourceError

    with pytest.raises(DataSourceError, match="object not found"):
        read_dataset(f"s3://{BUCKET}/datasets/" + "a" * 64 + ".parquet")
    with pytest.raises(DataSourceError, match="dataset not found"):
        push_dataset(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(DataSourceError, match="cannot parse"):
        push_dataset(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b\n")
    with pytest.raises(DataSourceError, match="no rows"):
        push_dataset(empty)
    txt = tmp_path / "data.txt"
    txt.write_text("x")
    with pytest.raises(DataSourceError, match="unsupported dataset format"):
        push_dataset(txt)


def test_unreachable_or_unconfigured_endpoint(monkeypatch, tmp_path, frame):
    from kfct.data.datasource import read_dataset
    from kfct.data.datastore import push_dataset
    from kfct.errors import DataSourceError
    from kfct.runtime.settings import reset_settings

    pq = tmp_path / "customers.parquet"
    frame.to_parquet(pq, index=False)
    monkeypatch.setenv("KFCT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KFCT_S3_ENDPOINT", raising=False)
    reset_settings()
    with pytest.raises(DataSourceError, match="S3 endpoint not configured"):
        push_dataset(pq)

    dead = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("KFCT_S3_ENDPOINT", dead)
    monkeypatch.setenv("KFCT_S3_ACCESS_KEY", "k")
    monkeypatch.setenv("KFCT_S3_SECRET_KEY", "s")
    reset_settings()
    with pytest.raises(DataSourceError, match=rf"S3 endpoint {re.escape(dead)} unreachable") as err:
        push_dataset(pq)
    assert "\n" not in str(err.value)
    with pytest.raises(DataSourceError, match="unreachable"):
        read_dataset(f"s3://{BUCKET}/datasets/" + "b" * 64 + ".parquet")
    reset_settings()


def test_kfct_data_push_prints_the_uri(s3_env, frame, tmp_path, capsys, monkeypatch):
    """The command users run: `kfct data push PATH` prints the content-addressed URI; errors are one line."""
    from kfct.cli import main
    from kfct.governance.lineage import sha256_file
    from kfct.runtime.settings import reset_settings

    pq = tmp_path / "customers.parquet"
    frame.to_parquet(pq, index=False)
    assert main(["data", "push", str(pq)]) == 0
    assert capsys.readouterr().out.strip() == f"s3://{BUCKET}/datasets/{sha256_file(pq)}.parquet"

    monkeypatch.setenv("KFCT_S3_SECRET_KEY", "wrong-secret")
    reset_settings()
    assert main(["data", "push", str(pq)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kfct: error: ") and "credentials rejected" in err and len(err.strip().splitlines()) == 1
