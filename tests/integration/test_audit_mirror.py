"""The audit trail mirrored to S3 (moto server on loopback, same minio client as with MinIO).

Every writer (a pod; processes sharing one local trail) mirrors each entry as its own
object under `segments/<writer>/`, so writers never overwrite each other; an unreachable
store never stops a decision from being recorded locally, and the next record uploads
what the mirror missed. `verify_mirror` checks every writer's chain.
"""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from kfct.governance import audit
from tests.faultkit.proxy import FaultProxy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def moto_endpoint():
    from tests.faultkit.servers import moto_s3

    with moto_s3() as (host, port):
        yield host, port


@pytest.fixture
def mirrored(kfct_home, moto_endpoint, monkeypatch):
    """Mirror through a fault proxy in front of moto; a fresh bucket per test (moto's state is shared)."""
    import uuid

    from kfct.data import s3
    from kfct.runtime.settings import reset_settings

    bucket = f"kfct-audit-{uuid.uuid4().hex[:8]}"
    with FaultProxy(*moto_endpoint) as proxy:
        monkeypatch.setenv("KFCT_S3_ENDPOINT", proxy.address)
        monkeypatch.setenv("KFCT_S3_ACCESS_KEY", "testing")
        monkeypatch.setenv("KFCT_S3_SECRET_KEY", "testing")
        monkeypatch.setenv("KFCT_S3_BUCKET", bucket)
        monkeypatch.setenv(audit.MIRROR_ENV, f"s3://{bucket}/audit/audit.jsonl")
        reset_settings()
        s3.ensure_bucket(bucket, create=True)
        yield proxy
        reset_settings()


def _events(segments):
    return sorted(e["event"] for entries in segments.values() for e in entries)


def test_each_record_is_mirrored_and_a_fresh_pod_writes_its_own_segment(mirrored):
    audit.record("gate_decision", model_name="m", deploy=True)
    audit.record("model_registered", model_name="m", version="1")
    local = audit.default_path()
    segs = audit.read_mirror()
    assert len(segs) == 1 and [e["event"] for e in next(iter(segs.values()))] == ["gate_decision", "model_registered"]
    assert next(iter(segs.values())) == list(audit.read())  # byte-for-byte the local entries

    local.unlink()  # a new pod: no local trail, a new writer
    audit.record("alias_moved", model_name="m", alias="champion", version="1")
    assert audit.verify().ok and audit.verify().entries == 1
    res = audit.verify_mirror()
    assert res.ok and res.entries == 3 and res.writers == 2
    assert _events(audit.read_mirror()) == ["alias_moved", "gate_decision", "model_registered"]


def test_unreachable_mirror_does_not_stop_local_recording_and_catches_up(mirrored, caplog):
    mirrored.mode = "refuse"
    entry = audit.record("drift_checked", model_name="m", severity="low")
    audit.record("retrain_held", model_name="m")
    assert entry["seq"] == 0 and audit.verify().ok and audit.verify().entries == 2
    assert "audit mirror" in caplog.text and "2 entries waiting" in caplog.text
    mirrored.mode = "pass"
    audit.record("drift_checked", model_name="m", severity="high")  # the next record uploads what was missed
    res = audit.verify_mirror()
    assert res.ok and res.entries == 3, res


def test_hanging_mirror_costs_a_record_at_most_one_timeout(mirrored, monkeypatch, caplog):
    """MinIO accepts and never answers: each record waits one Settings timeout, not minio's retries."""
    from kfct.runtime.settings import reset_settings

    monkeypatch.setenv("KFCT_NET_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("KFCT_NET_CONNECT_TIMEOUT_SECONDS", "1")
    reset_settings()
    mirrored.mode = "hang"
    t0 = time.monotonic()
    audit.record("gate_decision", model_name="m", deploy=False)
    took = time.monotonic() - t0
    assert took < 2.0, f"a record took {took:.1f} s against a hanging mirror with a 1 s timeout"
    assert audit.verify().ok and audit.verify().entries == 1  # recorded locally all the same
    assert "audit mirror" in caplog.text and "1 entries waiting" in caplog.text
    mirrored.mode = "pass"
    audit.record("retrain_held", model_name="m")  # catches up
    res = audit.verify_mirror()
    assert res.ok and res.entries == 2, res


_POD = textwrap.dedent("""
    import sys, time
    from kfct.governance import audit
    start, n, name = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    time.sleep(max(0.0, start - time.time()))
    for i in range(n):
        audit.record("rollout_step", model_name="m", pod=name, step=i)
""")


def test_two_pods_mirroring_at_the_same_moment_lose_nothing(mirrored, tmp_path):
    """Before: both uploaded the whole trail to one key and the later upload won."""
    n = 12
    start = time.time() + 3.0  # both processes import kfct first, then write at the same moment
    procs = []
    for name in ("pod-a", "pod-b"):
        env = dict(os.environ, KFCT_HOME=str(tmp_path / name))
        procs.append(subprocess.Popen([sys.executable, "-c", _POD, str(start), str(n), name], env=env, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    segs = audit.read_mirror()
    assert len(segs) == 2
    pods = sorted((e["pod"], e["step"]) for entries in segs.values() for e in entries)
    assert pods == sorted((p, i) for p in ("pod-a", "pod-b") for i in range(n))  # every entry of both
    res = audit.verify_mirror()
    assert res.ok and res.entries == 2 * n and res.writers == 2


def test_a_fresh_pod_reads_every_writers_history(mirrored):
    """The retrain cooldown and `kfct audit show` read the trail: on a fresh pod that is the mirror."""
    from kfct.components.retrain_policy import TRIGGER_EVENT, last_trigger

    audit.record(TRIGGER_EVENT, model_name="m", mode="cluster", reason="drift")
    audit.default_path().unlink()  # another pod
    audit.record("drift_checked", model_name="m", severity="high")
    events = sorted(e["event"] for e in audit.read())  # same-second entries of two writers: any order
    assert events == sorted([TRIGGER_EVENT, "drift_checked"])
    assert sorted(e["event"] for e in audit.history("m")) == events
    assert last_trigger(audit.read()) is not None  # the cooldown sees the other pod's trigger
    mirrored.mode = "refuse"  # store away: the local trail still answers
    assert [e["event"] for e in audit.read()] == ["drift_checked"]


def test_verify_names_the_writer_of_an_edited_mirrored_entry(mirrored, tmp_path):
    import json

    from kfct.data import s3
    from kfct.runtime.settings import get_settings

    for i in range(3):
        audit.record("rollout_step", model_name="m", step=i)
    writer, entries = next(iter(audit.read_mirror().items()))
    edited = dict(entries[1], step=99)
    bucket = get_settings().s3_bucket
    s3.put_bytes(json.dumps(edited).encode(), f"s3://{bucket}/audit/segments/{writer}/{1:010d}.json")
    res = audit.verify_mirror()
    assert not res.ok and writer in res.problem and "edited" in res.problem


def test_cli_verify_checks_the_mirror(mirrored, capsys):
    from kfct.cli import main

    audit.record("gate_decision", model_name="m", deploy=False)
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert "audit mirror OK: 1 entries from 1 writers" in out
