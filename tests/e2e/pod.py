"""One pipeline task as a pod runs it: KFP's launcher around the component's own command.

Run by kfp_emulator.py as `unshare -m <python> pod.py SPEC.json` (a private mount
namespace, like a container's filesystem). Inside:

1. `/s3` is a fresh tmpfs (KFP's SDK maps `s3://b/k` to the local path `/s3/b/k`) and
   `/run/secrets/...` holds the pod's service-account token, CA and namespace (what the
   kubelet mounts) and the projected KFP token, nothing else of the host's /run;
2. input artifacts are downloaded from S3 by URI to their local paths (launcher);
3. the executor's command + args from the IR run with `{{$}}` replaced by the executor
   input JSON, in the task's empty working directory with the env the spec gives;
4. output artifacts are uploaded from their local paths to their URIs (launcher), and
   the executor output (parameters, artifact metadata) is left for the emulator.

The launcher's S3 keys come from the spec (KFP's own artifact credentials), never from
the task's env.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _mount_tmpfs(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", path], check=True)


def _local(uri: str) -> Path:
    assert uri.startswith("s3://"), uri
    return Path("/s3") / uri[len("s3://"):]


def _s3(spec):
    import boto3

    c = spec["launcher_s3"]
    return boto3.client("s3", endpoint_url=c["endpoint_url"], aws_access_key_id=c["access_key"],
                        aws_secret_access_key=c["secret_key"], region_name="us-east-1")


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
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
            target = dest / o["Key"][len(key.rstrip("/")) + 1:]
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


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    _mount_tmpfs("/s3")
    _mount_tmpfs("/run")
    for name, text in spec.get("service_account", {}).items():  # paths under /run/secrets
        f = Path("/run/secrets") / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    s3 = _s3(spec)
    ex = spec["executor_input"]
    for arts in ex["inputs"].get("artifacts", {}).values():
        for a in arts["artifacts"]:
            download(s3, a["uri"])
    argv = [json.dumps(ex) if a == "{{$}}" else a for a in spec["command"]]
    rc = subprocess.run(argv, cwd=spec["workdir"], env=spec["env"]).returncode
    if rc != 0:
        return rc
    for arts in ex["outputs"].get("artifacts", {}).values():
        for a in arts["artifacts"]:
            upload(s3, a["uri"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
