"""The audit trail mirrored to S3 (moto server on loopback, same minio client as with MinIO).

A fresh process without a local trail (a pipeline pod) continues the mirrored chain; an
unreachable store never stops a decision from being recorded locally.
"""

import pytest

from kfct import audit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def mirrored(kfct_home, moto_endpoint, monkeypatch):
    from kfct import s3
    from kfct.settings import reset_settings

    monkeypatch.setenv("KFCT_S3_ENDPOINT", moto_endpoint)
    monkeypatch.setenv("KFCT_S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("KFCT_S3_SECRET_KEY", "testing")
    monkeypatch.setenv("KFCT_S3_BUCKET", "kfct-audit")
    monkeypatch.setenv(audit.MIRROR_ENV, "s3://kfct-audit/audit/audit.jsonl")
    reset_settings()
    s3.ensure_bucket("kfct-audit", create=True)
    yield kfct_home
    reset_settings()


def _mirror_text(tmp_path):
    from kfct import s3

    return s3.download("s3://kfct-audit/audit/audit.jsonl", tmp_path / "mirror.jsonl").read_text()


def test_each_record_is_mirrored_and_a_fresh_pod_continues_the_chain(mirrored, tmp_path):
    audit.record("gate_decision", model_name="m", deploy=True)
    audit.record("model_registered", model_name="m", version="1")
    local = audit.default_path()
    assert _mirror_text(tmp_path) == local.read_text()

    local.unlink()  # a new pod: no local trail
    audit.record("alias_moved", model_name="m", alias="champion", version="1")
    entries = list(audit.read())
    assert [e["event"] for e in entries] == ["gate_decision", "model_registered", "alias_moved"]
    assert audit.verify().ok and audit.verify().entries == 3
    assert _mirror_text(tmp_path) == local.read_text()


def test_unreachable_mirror_does_not_stop_local_recording(kfct_home, monkeypatch, caplog):
    import socket

    from kfct.settings import reset_settings

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KFCT_S3_ENDPOINT", f"127.0.0.1:{port}")
    monkeypatch.setenv(audit.MIRROR_ENV, "s3://kfct-audit/audit/audit.jsonl")
    reset_settings()
    entry = audit.record("drift_checked", model_name="m", severity="low")
    assert entry["seq"] == 0 and audit.verify().ok
    assert "audit mirror" in caplog.text
