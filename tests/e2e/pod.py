"""One pipeline task as a pod runs it: KFP's launcher around the component's own command.

Run by kfp_emulator.py as `unshare -m <python> pod.py SPEC.json` (a private mount
namespace, like a container's filesystem). Inside:

1. `/s3` is a fresh tmpfs (KFP's SDK maps `s3://b/k` to the local path `/s3/b/k`) and
   `/run/secrets/...` holds the pod's service-account token, CA and namespace (what the
   kubelet mounts) and the projected KFP token only when the PodDefault webhook gave this
   pod one, nothing else of the host's /run; the pod's own directory (work, home, tmp,
   outputs: its emptyDirs) is mounted at /run/pod, the only paths the component is given;
2. input artifacts are downloaded from S3 by URI to their local paths (launcher);
3. the executor's command + args from the IR run with `{{$}}` replaced by the executor
   input JSON, in the task's empty working directory with the env the spec gives, in a
   cgroup v1 memory group limited to the IR's `resourceMemoryLimit` (a process over it is
   killed by the kernel's OOM killer: status 137, as a kubelet reports an OOMKilled
   container) and as the image's non-root uid (Dockerfile `USER 10001:10001`; the files it
   needs are readable, its empty dirs and /s3 owned by that uid, as the launcher that runs
   in the same container leaves them);
4. output artifacts are uploaded from their local paths to their URIs (launcher), and
   the executor output (parameters, artifact metadata) is left for the emulator.

A spec without `executor_input` is a pod with no KFP launcher (a Kubeflow Trainer worker,
tests/e2e/cluster.py `trainer_pod_launcher`): steps 2 and 4 are skipped, the rest is the same.

The launcher's S3 keys come from the spec (KFP's own artifact credentials), never from
the task's env.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path


def _mount_tmpfs(path: str) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", path], check=True)


def _local(uri: str) -> Path:
    assert uri.startswith("s3://"), uri
    return Path("/s3") / uri[len("s3://") :]


def _s3(spec):
    import boto3

    c = spec["launcher_s3"]
    return boto3.client(
        "s3",
        endpoint_url=c["endpoint_url"],
        aws_access_key_id=c["access_key"],
        aws_secret_access_key=c["secret_key"],
        region_name="us-east-1",
    )


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def download(s3, uri: str) -> None:
    bucket, key = _split(uri)
    dest = _local(uri)
    objs = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    exact = [o for o in objs if o["Key"] == key]
    if exact:
        dest.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(dest))
        return
    for o in objs:  # a directory artifact
        if o["Key"].startswith(key.rstrip("/") + "/"):
            target = dest / o["Key"][len(key.rstrip("/")) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, o["Key"], str(target))
    if not objs:
        raise SystemExit(f"launcher: input artifact {uri} not found in S3")


def upload(s3, uri: str) -> None:
    bucket, key = _split(uri)
    src = _local(uri)
    if src.is_file():
        s3.upload_file(str(src), bucket, key)
    elif src.is_dir():
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            s3.upload_file(str(f), bucket, f"{key.rstrip('/')}/{f.relative_to(src).as_posix()}")


POD_ROOT = "/run/pod"
CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")


def memory_cgroup(name: str, limit: int) -> Path:
    """A cgroup v1 memory group with `limit` bytes (swap included where the kernel accounts it)."""
    group = CGROUP_V1_MEMORY / name
    group.mkdir(parents=True, exist_ok=True)
    (group / "memory.limit_in_bytes").write_text(str(limit))
    memsw = group / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        memsw.write_text(str(limit))
    return group


def _chown_tree(path: str, uid: int) -> None:
    for root, _dirs, files in os.walk(path):
        os.chown(root, uid, uid)
        for f in files:
            os.chown(Path(root) / f, uid, uid)


def _enter(group: Path | None, uid: int | None):
    """In the child, before exec: join the memory group, then drop root for the image's uid."""

    def run():
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return run


def main(spec_path: str) -> int:  # noqa: C901 - a pod's set-up in the order the kubelet performs it, read top to bottom
    spec = json.loads(Path(spec_path).read_text())
    _mount_tmpfs("/s3")
    _mount_tmpfs("/run")
    Path(POD_ROOT).mkdir(parents=True)
    subprocess.run(["mount", "--bind", spec["pod_dir"], POD_ROOT], check=True)
    for name, text in spec.get("service_account", {}).items():  # paths under /run/secrets
        f = Path("/run/secrets") / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    ex = spec.get("executor_input")  # None: a container with no KFP launcher around it (a Trainer worker pod)
    s3 = _s3(spec) if ex is not None else None
    for arts in (ex or {}).get("inputs", {}).get("artifacts", {}).values():
        for a in arts["artifacts"]:
            download(s3, a["uri"])
    uid = spec.get("uid")
    if uid is not None:
        _chown_tree("/s3", uid)
        _chown_tree(POD_ROOT, uid)
    group = None
    if spec.get("memory_limit_bytes"):
        if not CGROUP_V1_MEMORY.is_dir():
            raise SystemExit("pod: no cgroup v1 memory controller at /sys/fs/cgroup/memory: cannot apply the limit")
        group = memory_cgroup(spec["cgroup"], int(spec["memory_limit_bytes"]))
    argv = [json.dumps(ex) if a == "{{$}}" else a for a in spec["command"]]
    try:
        proc = subprocess.Popen(argv, cwd=f"{POD_ROOT}/work", env=spec["env"], preexec_fn=_enter(group, uid))
        Path(POD_ROOT, "started").write_text(str(proc.pid))
        rc = proc.wait()
    finally:
        if group is not None:
            oom = (group / "memory.oom_control").read_text() if (group / "memory.oom_control").exists() else ""
            if "oom_kill 0" not in oom and "oom_kill " in oom:
                print(f"pod: OOMKilled (memory limit {spec['memory_limit_bytes']} bytes)", flush=True)
            with contextlib.suppress(OSError):
                group.rmdir()
    if rc < 0:  # killed by a signal: the container runtime reports 128 + signal (137 for SIGKILL)
        rc = 128 - rc
    if rc != 0 or ex is None:
        return rc
    for arts in ex["outputs"].get("artifacts", {}).values():
        for a in arts["artifacts"]:
            upload(s3, a["uri"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
