"""Real servers on loopback for fault tests: moto's S3 server (with IAM when keys must really be
checked), a real `mlflow server`, a tiny disk."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


@contextlib.contextmanager
def moto_s3():
    """(host, port) of moto's S3 server in this process (threaded)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server.get_host_and_port()
    finally:
        server.stop()


@contextlib.contextmanager
def moto_iam_s3():
    """moto's S3 + IAM server with the IAM user `kfct` created and auth still off; yields (url, iam client).

    moto's backends live in the process, so the state is reset first, whatever an earlier server
    (the e2e's, another module's) left behind, and auth is switched off again on the way out."""
    import boto3
    import requests

    with moto_s3() as (host, port):
        url = f"http://{host}:{port}"
        requests.post(f"{url}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()
        requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
        iam = boto3.client(
            "iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap"
        )
        iam.create_user(UserName="kfct")
        try:
            yield url, iam
        finally:
            requests.post(f"{url}/moto-api/reset-auth", data=b"inf", timeout=10)


def grant(iam, policy_name: str, statement: dict) -> dict:
    """Attach a policy of one statement to the `kfct` user; its new key pair {access_key, secret_key}."""
    policy = iam.create_policy(
        PolicyName=policy_name, PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    )
    iam.attach_user_policy(UserName="kfct", PolicyArn=policy["Policy"]["Arn"])
    key = iam.create_access_key(UserName="kfct")["AccessKey"]
    return {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}


def auth_on(url: str) -> None:
    """From now on moto checks every request's signature against the IAM keys."""
    import requests

    requests.post(f"{url}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifact_root: str, log_path: Path, timeout: float = 90.0):
    """A real `mlflow server` process (one worker) on a free port; yields its port."""
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(exe),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_uri,
        "--default-artifact-root",
        artifact_root,
    ]
    # No GenAI job runner or huey consumers: what kfct's MLflow Deployment sets (manifests/base/mlflow).
    env = dict(os.environ, MLFLOW_ENABLE_TELEMETRY="false", DO_NOT_TRACK="true", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with Path(log_path).open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not up in {timeout}s: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield port
    finally:
        stop_process(proc, grace=10)


def stop_process(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tmpfs_available() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and sys.platform.startswith("linux")


@contextlib.contextmanager
def tiny_disk(path: Path, size: str = "256k"):
    """A real small filesystem (tmpfs) at `path`; writes past `size` fail with ENOSPC.

    Needs root (mount); callers skip when `tmpfs_available()` is False or the mount fails."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        raise OSError(errno.EPERM, f"needs root allowed to mount: cannot mount tmpfs at {path}: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> None:
    """Fill the filesystem holding `path` until it refuses more (ENOSPC)."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        chunk = b"\0" * 4096
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
