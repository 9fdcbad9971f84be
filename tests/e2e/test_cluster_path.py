"""The cluster path as a whole, with a cluster's boundaries (issue 14), `make e2e`.

Everything is configured from `kubectl kustomize manifests/overlays/dev` (see cluster.py):
MinIO = moto's S3 server with the setup Job's bucket and user, MLflow = `mlflow server`
with the Deployment's args, the CT / monitoring IR run task by task, each task a pod
(kfp_emulator.py + pod.py), the InferenceService written through a TLS loopback
Kubernetes API, its storageUri fetched by KServe's own storage code (kserve-storage in a
venv of its own: its pins clash with the lock) and served by the ServingRuntime's command.
Last, the batch-scoring IR scores 200k rows in 4 shard pods (ParallelFor) with the champion the
registry's alias names, and its gathered parquet + _summary.json in S3 are checked against each other.

What the emulated cluster does as upstream does it (issue 20; docs/conformance.md has the table):
KFP 2.17's cache (one cache table for every run here: no side-effecting task is ever served from
it), exit handlers, run placeholders, executor input and artifact URIs (kfp_emulator.py); pods
under the IR's memory limit (cgroup v1) as the image's uid 10001 (pod.py); the namespace as
Kubeflow's profile controller and KFP's profile sync hook leave it, the launcher's keys from the
provisioned `mlpipeline-minio-artifact`, the KFP token only in pods the PodDefault webhook
selects (kubeflow.py); the KFP API authorizes uploads as 2.17 does (tests/fakes/kfp_server.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.e2e import cluster as C
from tests.e2e import kubeflow as KF
from tests.e2e.kfp_emulator import Emulator, unshare_available
from tests.faultkit.servers import auth_on, free_port, moto_iam_s3

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = "dev"
ROWS = 8_000
BATCH_ROWS = 200_000
BATCH_SHARDS = 4
KFP_TOKEN = "e2e-projected-sa-token"
# Side-effecting CT tasks: never a cache hit (tests/unit/test_side_effect_caching.py holds the IR side).
SIDE_EFFECTS = (
    "ingest-data",
    "validate-data",
    "train-model",
    "evaluate-model",
    "register-model",
    "deploy-model",
    "rollout-model",
    "record-run-outcome",
)


def image_uid() -> int:
    """The component image's USER (Dockerfile): pods run as it."""
    users = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert users and len(set(users)) == 1, users
    return int(users[0])


def storage_python() -> str:
    """A venv with KServe's storage package (cached in .venv-e2e: kserve-storage==0.21.0 needs
    google-cloud-storage<3, which clashes with requirements.lock)."""
    venv = ROOT / ".venv-e2e"
    py = venv / "bin" / "python"
    ok = venv / ".kserve-storage-0.21.0"
    if not ok.exists():
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "kserve-storage==0.21.0", "boto3"], check=True, timeout=600)
        ok.touch()
    return str(py)


class Stack:
    """What the test's phases reach the running cluster parts through (set up by `stack`)."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory, seed_mlflow_store):
    """MinIO (moto), MLflow, the KFP API and a TLS Kubernetes API, each configured from the rendered
    dev overlay, and the pipelines compiled with default settings; stopped in reverse order after.

    MLflow's volume starts with an empty store whose migrations have run (a copy of the test run's
    template, tests/conftest.py): the state a new server leaves it in a moment after it first
    starts, without migrating it again for every stack."""
    why = unshare_available()
    if why:
        pytest.skip(f"e2e pods need private mount namespaces: {why}")
    st = Stack()
    st.work = tmp_path_factory.mktemp("e2e")
    st.cache = {}  # KFP's cache table: one for the whole cluster, every run consults it
    with moto_iam_s3() as (s3_url, iam), contextlib.ExitStack() as running:
        start_minio(st, s3_url, iam)
        mlflow, mlflow_port = start_mlflow(st, seed_mlflow_store)
        running.callback(C.stop, mlflow)
        start_apis(st, running)
        compiling = start_compile(st)  # while MLflow starts
        C.wait_http(f"http://127.0.0.1:{mlflow_port}/health", 300, mlflow)  # its migrations take minutes under load
        st.mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        out, _ = compiling.communicate(timeout=180)
        assert compiling.returncode == 0, out
        st.operator_env = st.services.rewrite_env(
            {**st.config, **st.objects.secret("kfct-s3-credentials"), "KFCT_KFP_TOKEN": KFP_TOKEN}
        )
        yield st


def start_minio(st: Stack, s3_url: str, iam) -> None:
    """The operator's step (the MinIO user's keys into the two credential files, then render), what the
    MinIO setup Job does (bucket, readwrite policy), then auth on: the Secret's keys are really checked."""
    keys = C.grant_readwrite(iam)
    objs = C.Objects(
        C.render(
            OVERLAY,
            st.work,
            {
                "AWS_ACCESS_KEY_ID": keys["access_key"],
                "AWS_SECRET_ACCESS_KEY": keys["secret_key"],
                "KFCT_S3_ACCESS_KEY": keys["access_key"],
                "KFCT_S3_SECRET_KEY": keys["secret_key"],
            },
        )
    )
    st.objects = objs
    setup = C.minio_setup(objs)
    assert setup["policy"] == ["readwrite"] and setup["access_key"] == keys["access_key"]
    C.create_buckets(s3_url, keys, setup["buckets"])
    auth_on(s3_url)
    st.namespace = objs.get("ConfigMap", "kfct-config")["metadata"]["namespace"]
    st.config = objs.config_map("kfct-config")
    st.services = C.Services(objs, st.namespace)
    st.services.bind("kfct-minio", 9000, int(s3_url.rsplit(":", 1)[1]))
    st.s3 = {"endpoint_url": s3_url, "access_key": keys["access_key"], "secret_key": keys["secret_key"]}


def start_mlflow(st: Stack, seed_store) -> tuple[subprocess.Popen, int]:
    """`mlflow server` as the rendered Deployment runs it (not waited for); the process and its port."""
    port = free_port()
    st.services.bind("kfct-mlflow", 5000, port)
    argv, env = C.mlflow_command(st.objects, st.services, port, st.work / "mlflow-pvc")
    seed_store(st.work / "mlflow-pvc")  # the PVC, its store migrated (see `stack`)
    home = st.work / "mlflow-home"
    home.mkdir()
    env.update(PATH=os.environ["PATH"], HOME=str(home), TMPDIR=str(home), MLFLOW_ENABLE_TELEMETRY="false", DO_NOT_TRACK="true")
    log = (st.work / "mlflow.log").open("w")  # the server writes it for its whole life
    proc = subprocess.Popen(argv, env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    st.mlflow_args = argv
    return proc, port


def start_apis(st: Stack, running: contextlib.ExitStack) -> None:
    """The KFP API (multi-user style: a bearer token required) and the Kubernetes API over TLS, and
    what a pod sees of the cluster (`st.cluster`: its env, the files the kubelet mounts)."""
    from tests.fakes.kfp_server import FakeKfpServer

    # Multi-user KFP: the token's identity may use pipelines in this namespace only.
    st.kfp = FakeKfpServer(users={KFP_TOKEN: {st.config["KFCT_KFP_NAMESPACE"]}}).start()
    running.callback(st.kfp.stop)
    kfp_host = st.config["KFCT_KFP_HOST"].split("://", 1)[1].rstrip("/")
    kfp_svc, _, kfp_rest = kfp_host.partition(".")
    st.services.bind(
        kfp_svc, int(kfp_host.rsplit(":", 1)[1]), int(st.kfp.url.rsplit(":", 1)[1]), namespace=kfp_rest.split(".")[0]
    )
    st.kube, ca = C.tls_kube_api(st.work)
    running.enter_context(st.kube)
    kube_port = st.kube.httpd.server_address[1]
    # The namespace as Kubeflow's profile controller leaves a Profile's namespace, and what KFP's profile
    # sync hook provisions there (the launcher's artifact keys): kubeflow.py names the upstream files.
    st.k8s_namespace = KF.profile_namespace(st.namespace, is_profile=True)
    st.provisioned = KF.kfp_profile_sync(st.k8s_namespace, st.config["KFCT_S3_BUCKET"], st.s3["access_key"], st.s3["secret_key"])
    launcher = {"endpoint_url": st.s3["endpoint_url"], **KF.launcher_credentials(st.provisioned, st.namespace)}
    # The PodDefault the prod overlay ships (manifests/overlays/prod/kfp-access.yaml), applied in this namespace.
    st.pod_defaults = [
        {**d, "metadata": {**d["metadata"], "namespace": st.namespace}}
        for d in yaml.safe_load_all((ROOT / "manifests/overlays/prod/kfp-access.yaml").read_text())
        if d and d["kind"] == "PodDefault"
    ]
    assert st.pod_defaults, "no PodDefault in manifests/overlays/prod/kfp-access.yaml"
    # What the kubelet mounts: the SA token/CA/namespace; the projected KFP token (audience
    # pipelines.kubeflow.org) only where the PodDefault webhook selected the pod.
    sa = "kubernetes.io/serviceaccount/"
    st.pod_files = {sa + "token": "e2e-k8s-sa-token", sa + "ca.crt": ca, sa + "namespace": st.namespace}
    st.token_pods = []
    objs, svc = st.objects, st.services

    class PodCluster:
        launcher_s3 = launcher
        service_account = st.pod_files

        @staticmethod
        def pod_files(labels: dict) -> dict:
            files = dict(st.pod_files)
            if KF.pod_defaults_for(st.k8s_namespace, st.pod_defaults, labels):
                files["kubeflow/pipelines/token"] = KFP_TOKEN
                st.token_pods.append(labels)
            return files

        @staticmethod
        def pod_env(spec: dict) -> dict:
            return dict(
                svc.rewrite_env(pod_env_from_platform(objs, spec)),
                KUBERNETES_SERVICE_HOST="127.0.0.1",
                KUBERNETES_SERVICE_PORT=str(kube_port),
            )

    st.cluster = PodCluster
    start_trainer(st, running)


def start_trainer(st: Stack, running: contextlib.ExitStack) -> None:
    """Kubeflow Trainer behind the same Kubernetes API (trainer_fake.py, kubeflow/trainer v2.2.0's XGBoost
    plugin): each worker its own pod (pod.py) under its TrainJob's memory limit; its env's Secret and
    ConfigMap keys resolved against the rendered objects, Service DNS mapped as for every pod."""
    from tests.e2e.kfp_emulator import _remove_cgroup
    from tests.e2e.trainer_fake import FakeTrainer

    secret = st.config.get("KFCT_K8S_SECRET_NAME", "kfct-s3-credentials")
    config_map = st.config.get("KFCT_K8S_CONFIG_MAP", "kfct-config")
    groups: list[str] = []
    running.callback(lambda: [_remove_cgroup(g) for g in groups])  # runs after the fake killed what still ran
    st.trainer = running.enter_context(
        FakeTrainer(
            st.work / "trainer-pods",
            secrets={secret: st.services.rewrite_env(st.objects.secret(secret))},
            config_maps={config_map: st.services.rewrite_env(st.objects.config_map(config_map))},
            launch=C.trainer_pod_launcher(sys.executable, image_uid(), st.pod_files, "kfct-e2e/trainer", groups),
        )
    )
    st.trainer.mounted = True
    st.kube.trainer = st.trainer


def start_compile(st: Stack) -> subprocess.Popen:
    """`make compile` with default settings, into st.build (not waited for)."""
    st.build = st.work / "build"
    env = {"PATH": os.environ["PATH"], "HOME": str(st.work), "KFCT_HOME": str(st.work / "compile-home")}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "kfct"), "compile", "--out", str(st.build)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def pod_env_from_platform(objs: C.Objects, spec: dict) -> dict:
    """The env a pod gets from kfp-kubernetes' platform spec, resolved against the rendered objects."""
    env = {}
    for cm in spec.get("configMapAsEnv", []):
        data = objs.config_map(cm["configMapName"])
        for kv in cm["keyToEnv"]:
            if kv["configMapKey"] not in data and not cm.get("optional"):
                raise AssertionError(f"ConfigMap {cm['configMapName']} lacks key {kv['configMapKey']}: pod cannot start")
            if kv["configMapKey"] in data:
                env[kv["envVar"]] = data[kv["configMapKey"]]
    for sec in spec.get("secretAsEnv", []):
        data = objs.secret(sec["secretName"])
        for kv in sec["keyToEnv"]:
            if kv["secretKey"] not in data and not sec.get("optional"):
                raise AssertionError(f"Secret {sec['secretName']} lacks key {kv['secretKey']}: pod cannot start")
            if kv["secretKey"] in data:
                env[kv["envVar"]] = data[kv["secretKey"]]
    return env


def operator(st, *args, check=True) -> subprocess.CompletedProcess:
    """`kfct ...` on an operator's machine with the ConfigMap's endpoints and the Secret's keys."""
    home = st.work / "operator"
    home.mkdir(exist_ok=True)
    env = dict(st.operator_env, PATH=os.environ["PATH"], HOME=str(home), KFCT_HOME=str(home / ".kfct"))
    p = subprocess.run(
        [str(Path(sys.executable).parent / "kfct"), *args], env=env, cwd=home, capture_output=True, text=True, timeout=240
    )
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def push(st, name: str, tag: str, rows: int = ROWS, **gen) -> dict:
    path = st.work / f"{name}.parquet"
    from kfct.data.datagen import generate, write_frame

    write_frame(generate(rows=rows, **gen), path)
    out = operator(st, "data", "push", str(path), "--tag", tag).stdout.split()
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=st.s3["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=st.s3["access_key"],
        aws_secret_access_key=st.s3["secret_key"],
    )
    manifest = json.loads(s3.get_object(Bucket=st.config["KFCT_S3_BUCKET"], Key=f"datasets/tags/{tag}.json")["Body"].read())
    assert manifest["uri"] == out[0] and manifest["rows"] == rows
    return manifest


def s3_client(st):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=st.s3["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=st.s3["access_key"],
        aws_secret_access_key=st.s3["secret_key"],
    )


def emulator(st, name: str, **kw) -> Emulator:
    """Every run shares the cluster's cache table; pods run as the image's uid."""
    return Emulator(
        st.build / name,
        st.cluster,
        f"s3://{st.config['KFCT_S3_BUCKET']}/kfp-pipeline-root",
        sys.executable,
        st.work / "pods",
        cache=st.cache,
        namespace=st.namespace,
        uid=image_uid(),
        **kw,
    )


def no_side_effect_cached(run) -> None:
    cached = [p for p, t in run.tasks.items() if t.state == "CACHED" and p.split("/")[-1] in SIDE_EFFECTS]
    assert not cached, f"side-effecting tasks served from KFP's cache: {cached}"


def serve_isvc(st, isvc: dict, runtime: dict, model_dir: Path):
    """Start the ServingRuntime's container command + args on `model_dir` (what KServe does)."""
    c = runtime["spec"]["containers"][0]
    pred = isvc["spec"]["predictor"]
    port = free_port()
    args = []
    for a in c.get("args", []) + pred["model"].get("args", []):
        a = a.replace("{{.Name}}", isvc["metadata"]["name"]).replace("/mnt/models", str(model_dir))
        args.append(a)
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    env = st.services.rewrite_env(st.objects.container_env(c))
    env.update({e["name"]: e["value"] for e in pred["model"].get("env", [])})
    home = st.work / f"serving-{port}"
    home.mkdir()
    env.update(PATH=os.environ["PATH"], HOME=str(home), TMPDIR=str(home))
    env["KFCT_HOME"] = str(home / env.get("KFCT_HOME", "kfct").lstrip("/"))
    assert c["command"][:1] == ["python"]
    argv = [sys.executable, *c["command"][1:], *args]
    log = (home / "log.txt").open("w")  # the server writes it for its whole life
    proc = subprocess.Popen(argv, env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    probe = runtime["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
    try:
        C.wait_http(f"http://127.0.0.1:{port}{probe}", 90, proc)
    except RuntimeError as exc:
        C.stop(proc)
        raise AssertionError((home / "log.txt").read_text()[-3000:]) from exc
    return proc, f"http://127.0.0.1:{port}"


def storage_initializer(st, isvc: dict, dest: Path) -> None:
    """kserve_storage.Storage.download of storageUri, with the env KServe's webhook derives from the
    predictor's ServiceAccount -> Secret (keys) and the Secret's s3 annotations (endpoint)."""
    sa = st.objects.get("ServiceAccount", isvc["spec"]["predictor"]["serviceAccountName"])
    secret_name = sa["secrets"][0]["name"]
    secret = st.objects.get("Secret", secret_name)
    ann = secret["metadata"].get("annotations", {})
    keys = st.objects.secret(secret_name)
    endpoint = st.services.rewrite(ann["serving.kserve.io/s3-endpoint"])
    https = ann.get("serving.kserve.io/s3-usehttps", "1") == "1"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(dest.parent),
        "AWS_ACCESS_KEY_ID": keys["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": keys["AWS_SECRET_ACCESS_KEY"],
        "S3_ENDPOINT": endpoint,
        "S3_USE_HTTPS": "1" if https else "0",
        "AWS_ENDPOINT_URL": f"{'https' if https else 'http'}://{endpoint}",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    code = "import sys; from kserve_storage import Storage; print(Storage.download(sys.argv[1], out_dir=sys.argv[2]))"
    dest.mkdir(parents=True)
    p = subprocess.run(
        [storage_python(), "-c", code, isvc["spec"]["predictor"]["model"]["storageUri"], str(dest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stderr[-3000:]


def isvc_now(st, name: str) -> dict:
    objs = [o for (ns, n), o in st.kube.objects.items() if n == name]
    assert len(objs) == 1, list(st.kube.objects)
    return objs[0]


@pytest.fixture(autouse=True)
def _settings_reread_after():
    """Set up before monkeypatch, torn down after it: later tests read their own environment."""
    yield
    from kfct.runtime.settings import reset_settings

    reset_settings()


class Laps:
    """Prints how long each phase took (and each pod of a run): where the e2e's minutes go."""

    def __init__(self):
        self.t0 = self.last = time.perf_counter()

    def __call__(self, what: str, run=None) -> None:
        now = time.perf_counter()
        pods = (": " + ", ".join(f"{t.name} {t.seconds}s" for t in run.tasks.values() if t.seconds)) if run else ""
        print(f"\n[e2e] {what} {now - self.last:.0f}s{pods}", flush=True)
        self.last = now


def test_cluster_path(stack, monkeypatch):
    st, lap = stack, Laps()
    # Finding 1 as deployed: models go to the ConfigMap's s3:// root, the server serves the same bucket.
    assert st.config["KFCT_MLFLOW_ARTIFACT_ROOT"].startswith("s3://")
    assert any(a.startswith("--artifacts-destination=s3://") for a in st.mlflow_args)
    schedule_ct(st)
    lap("setup + schedule")
    first, run1 = ct_run_on_the_pointer(st)
    lap("CT run 1", run1)
    model_name = json.loads(run1.task("deploy-model").parameters["Output"])["model_name"]
    version1 = run1.task("register-model").parameters["Output"]
    serve_what_deploy_wrote(st, monkeypatch, model_name, version1, first)
    lap("KServe storage initializer + ServingRuntime, V1 + V2")
    run2 = ct_run_against_the_champion(st, first, version1)
    lap("CT run 2", run2)
    runm = monitoring_triggers_a_retrain(st)
    lap("monitoring run", runm)
    runk = a_pod_killed_from_outside(st, monkeypatch)
    lap("CT run 3 (train pod SIGKILLed)", runk)
    batch_scoring_in_shard_pods(st, model_name, lap)
    print(f"\ne2e wall time {time.perf_counter() - lap.t0:.0f}s")


TRAINER_MEMORY = "1536Mi"


def test_ct_run_trains_on_kubeflow_trainer_worker_pods(stack):
    """A CT run with `train.workers: 2` (issue 21): the train pod creates a TrainJob through the cluster's
    Kubernetes API with its service account; Trainer (trainer_fake.py, kubeflow/trainer v2.2.0
    pkg/runtime/framework/plugins/xgboost/xgboost.go: DMLC_* env, completion index as rank, tracker
    port) runs each worker as its own pod (pod.py: private mounts, its own dirs, uid 10001) in a memory
    group at the TrainJob's `resourcesPerNode` limit; rank 0's model is then evaluated and registered by
    the normal steps."""
    from kfct.config import config_to_json, load_config
    from tests.e2e.kfp_emulator import quantity_bytes

    st = stack
    push(st, "customers-trainer", "trainer", seed=5)
    cfg = load_config(overrides={"train": {"workers": 2}, "resources": {"train": {"memory": TRAINER_MEMORY}}})
    run = emulator(st, "ct_pipeline.yaml").run(
        {"data_uri": "dataset://trainer", "config_json": config_to_json(cfg), "model_name": "churn-trainer"}
    )
    for t in ("train-model", "evaluate-model", "register-model"):
        assert run.task(t).state == "SUCCEEDED", (t, run.task(t).log[-3000:])
    meta = run.task("train-model").artifacts["model"][0]["metadata"]
    assert meta["train_engine"] == "kubeflow-trainer" and meta["train_workers"] == 2, meta
    assert run.task("register-model").parameters["Output"]  # the version rank 0's model became

    (create,) = [r for r in st.trainer.requests if r["method"] == "POST"]
    job = create["body"]
    assert create["path"] == f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{st.namespace}/trainjobs"
    assert job["spec"]["runtimeRef"]["name"] == "xgboost-distributed" and job["spec"]["trainer"]["numNodes"] == 2
    assert job["metadata"]["labels"]["kfct/pipeline-run-id"] == run.run_id
    assert job["spec"]["trainer"]["resourcesPerNode"]["limits"]["memory"] == TRAINER_MEMORY
    name = job["metadata"]["name"]
    assert st.trainer.deleted == [name] and not st.trainer.jobs  # the step deleted it when done
    pods = sorted((p for p in st.trainer.pods if p["job"] == name), key=lambda p: p["name"])
    assert [p["env"]["DMLC_TASK_ID"] for p in pods] == ["0", "1"]
    assert all(p["proc"].returncode == 0 for p in pods)
    for rank, p in enumerate(pods):
        spec = json.loads((Path(p["cwd"]).parent / "pod.json").read_text())
        assert spec["memory_limit_bytes"] == quantity_bytes(TRAINER_MEMORY) and spec["uid"] == image_uid()
        assert spec["env"]["HOME"] == "/run/pod/home" and "KFCT_S3_ENDPOINT" in spec["env"]
        assert f"worker {rank}/2:" in Path(p["log"]).read_text()


def schedule_ct(st: Stack) -> None:
    """The operator schedules the CT pipeline (uploading it); the recurring run's data is the pointer."""
    operator(st, "schedule", "--package", str(st.build / "ct_pipeline.yaml"))
    jobs = [r for r in st.kfp.requests if r.method == "POST" and r.path.endswith("/recurringruns")]
    assert len(jobs) == 1 and jobs[0].headers.get("authorization") == f"Bearer {KFP_TOKEN}"
    assert jobs[0].body.get("runtime_config", {}).get("parameters", {}).get("data_uri", "dataset://latest") == "dataset://latest"


def ct_run_on_the_pointer(st: Stack):
    """Run 1: data under the moving pointer, default parameters (data_uri = dataset://latest), every
    step a pod; the deploy step writes the InferenceService through the Kubernetes API with the SA token."""
    first = push(st, "customers-1", "latest", seed=1)
    run1 = emulator(st, "ct_pipeline.yaml").run({})
    st.run1_id = run1.run_id
    ing = run1.task("ingest-data")
    assert ing.parameters["Output"] == first["sha256"]
    assert ing.artifacts["dataset"][0]["metadata"]["resolved_uri"] == first["uri"]
    assert ing.artifacts["dataset"][0]["uri"].startswith("s3://")
    for t in ("validate-data", "featurize-split", "train-model", "evaluate-model", "register-model", "deploy-model"):
        assert run1.task(t).state == "SUCCEEDED", t
    assert run1.task("condition-4").state == "SKIPPED"  # rollout: disabled in the default config
    assert json.loads(run1.task("record-run-outcome").parameters["Output"])["recorded"] is False
    no_side_effect_cached(run1)
    model_name = json.loads(run1.task("deploy-model").parameters["Output"])["model_name"]
    storage_uri = isvc_now(st, model_name)["spec"]["predictor"]["model"]["storageUri"]
    assert re.fullmatch(re.escape(st.config["KFCT_MLFLOW_ARTIFACT_ROOT"]) + r"/models/m-[0-9a-f]{32}/artifacts", storage_uri), (
        storage_uri
    )
    assert st.kube.requests and all((r["auth"] or "").lower() == "bearer e2e-k8s-sa-token" for r in st.kube.requests)
    return first, run1


def serve_what_deploy_wrote(st: Stack, monkeypatch, model_name: str, version1: str, first: dict) -> None:
    """KServe's storage initializer and the ServingRuntime's own command on the downloaded dir; its V1
    and V2 answers agree with each other and with the registered model read from MLflow."""
    isvc = isvc_now(st, model_name)
    runtime = st.objects.get("ServingRuntime", isvc["spec"]["predictor"]["model"]["runtime"])
    model_dir = st.work / "mnt-models-1" / "models"
    storage_initializer(st, isvc, model_dir)
    proc, url = serve_isvc(st, isvc, runtime, model_dir)
    try:
        from kfct.data.datagen import generate

        rows = generate(rows=3, seed=99).drop(columns=["churned"])
        records = json.loads(rows.to_json(orient="records"))
        v1 = requests.post(f"{url}/v1/models/{model_name}:predict", json={"instances": records}, timeout=30)
        assert v1.status_code == 200, v1.text
        preds = v1.json()["predictions"]
        assert [p["model_version"] for p in preds] == [version1] * 3
        v2 = requests.post(f"{url}/v2/models/{model_name}/infer", json={"inputs": v2_inputs(rows)}, timeout=30)
        assert v2.status_code == 200, v2.text
        outs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
        v1_probs = [p["probability"] for p in preds]
        assert outs["probability"] == pytest.approx(v1_probs, abs=1e-6)
        assert outs["model_version"] == [version1] * 3
        # The same answer as the registered model itself, read from MLflow.
        registry = operator_registry(st, monkeypatch)
        loaded = registry.load_version(model_name, version=version1)
        assert loaded.tags["data_uri"] == first["uri"] and loaded.tags["dataset_sha256"] == first["sha256"]
        # lineage names the run by its uuid (the emulated driver resolves {{$.pipeline_job_name}} to the
        # display name, the same for every run started from the UI with the default name)
        assert loaded.tags["pipeline_run"] == st.run1_id
        assert loaded.model.predict_proba(rows)[:, 1] == pytest.approx(v1_probs, abs=1e-6)
    finally:
        C.stop(proc)


def v2_inputs(rows) -> list[dict]:
    """The Open Inference Protocol's columnar `inputs` for a frame: one tensor per column."""
    inputs = []
    for col in rows.columns:
        values = rows[col].tolist()
        if rows[col].dtype == object:
            inputs.append({"name": col, "shape": [len(rows)], "datatype": "BYTES", "data": values})
        elif str(rows[col].dtype).startswith("int"):
            inputs.append({"name": col, "shape": [len(rows)], "datatype": "INT64", "data": values})
        else:
            inputs.append({"name": col, "shape": [len(rows)], "datatype": "FP64", "data": values})
    return inputs


def operator_registry(st: Stack, monkeypatch):
    """kfct.governance.registry set up as an operator's machine reads it (the ConfigMap's endpoints, the Secret's keys).

    monkeypatch undoes the environment after the test, so no later test inherits this stack's
    (then dead) endpoints."""
    monkeypatch.setenv("KFCT_MLFLOW_TRACKING_URI", st.mlflow_url)
    from kfct.governance import registry
    from kfct.runtime.settings import reset_settings

    for k, v in st.operator_env.items():
        if k not in os.environ:
            monkeypatch.setenv(k, v)
    reset_settings()
    registry.setup()
    return registry


def ct_run_against_the_champion(st: Stack, first: dict, version1: str):
    """Run 2: new data under the same pointer; the gate compares the new model with the champion (run 1's)."""
    second = push(st, "customers-2", "latest", seed=2, drift=0.3)
    run2 = emulator(st, "ct_pipeline.yaml").run({})
    assert run2.task("ingest-data").parameters["Output"] == second["sha256"] != first["sha256"]
    ev = run2.task("evaluate-model")
    assert ev.state == "SUCCEEDED"
    decision_meta = ev.artifacts["decision"][0]["metadata"]
    assert str(decision_meta.get("champion_version")) == version1, decision_meta
    no_side_effect_cached(run2)
    return run2


def monitoring_triggers_a_retrain(st: Stack):
    """A drifted batch under its own pointer; the monitoring run's retrain reaches the KFP API with the
    projected token and asks for a CT run on the moving pointer."""
    push(st, "batch-drifted", "current-batch", seed=3, drift=1.0)
    before = len(st.kfp.requests)
    runm = emulator(st, "monitoring_pipeline.yaml").run({"current_uri": "dataset://current-batch"})
    decision = json.loads(runm.task("trigger-retrain").parameters["Output"])
    assert decision["action"] == "retrain" and decision["mode"] == "cluster", decision
    runs = [r for r in st.kfp.requests[before:] if r.method == "POST" and r.path.endswith("/runs")]
    assert runs and all(r.headers.get("authorization") == f"Bearer {KFP_TOKEN}" for r in st.kfp.requests[before:])
    params = runs[-1].body.get("runtime_config", {}).get("parameters", {})
    assert params.get("data_uri") == "dataset://latest", params
    # the retrain runs the version `kfct schedule` pinned, in the namespaced pipeline
    pinned = next(r for r in st.kfp.requests if r.method == "POST" and r.path.endswith("/recurringruns"))
    assert runs[-1].body["pipeline_version_reference"] == pinned.body["pipeline_version_reference"]
    assert all(p["namespace"] == st.config["KFCT_KFP_NAMESPACE"] for p in st.kfp.state.pipelines.values())
    # the KFP token reached only the pods the PodDefault selects (the steps that call the KFP API)
    assert st.token_pods and all(lbl.get("access-ml-pipeline") == "true" for lbl in st.token_pods)
    return runm


def a_pod_killed_from_outside(st: Stack, monkeypatch):
    """CT run 3: the train pod is SIGKILLed once its component runs (as an OOMKill or eviction ends it: 137).
    The stage cannot record anything; the exit handler puts `run_failed` for this run on the trail."""
    import signal

    from kfct.governance import audit

    runk = emulator(st, "ct_pipeline.yaml", kill={"train-model": signal.SIGKILL}).run({}, raise_on_failure=False)
    assert runk.state == "FAILED" and runk.task("train-model").exit_code == 137
    assert runk.task("evaluate-model").state == "SKIPPED"
    outcome = json.loads(runk.task("record-run-outcome").parameters["Output"])
    assert outcome["state"] == "FAILED" and outcome["recorded"] and outcome["pipeline_run"] == runk.run_id
    operator_registry(st, monkeypatch)  # the operator's env: the audit mirror in S3
    entries = [e for seg in audit.read_mirror().values() for e in seg]
    mine = [e for e in entries if e.get("pipeline_run") == runk.run_id]
    assert [e["event"] for e in mine if e["event"] in ("stage_failed", "run_failed")] == ["run_failed"], mine
    no_side_effect_cached(runk)
    return runk


def batch_scoring_in_shard_pods(st: Stack, model_name: str, lap: Laps) -> None:
    """200k rows under a tag, 4 shards, each shard its own pod, every shard scored by the version the
    registry's champion alias names (resolved once)."""
    from kfct.governance import registry  # set up by operator_registry

    scored = push(st, "customers-batch", "monthly", rows=BATCH_ROWS, seed=4)
    lap("push 200k rows")
    champion = registry.alias_version(model_name, "champion")
    assert champion, "no champion alias after the CT runs"
    out_prefix = f"batch-scores/{scored['sha256'][:12]}"
    runb = emulator(st, "batch_scoring_pipeline.yaml").run(
        {
            "data_uri": "dataset://monthly",
            "n_shards": BATCH_SHARDS,
            "output_uri": f"s3://{st.config['KFCT_S3_BUCKET']}/{out_prefix}",
        }
    )
    lap("batch-scoring run (200k rows, 4 shard pods)", runb)
    shards = [t for p, t in runb.tasks.items() if p.split("/")[-1] == "score-shard"]
    assert len(shards) == BATCH_SHARDS and len({t.path for t in shards}) == BATCH_SHARDS
    assert all(t.state == "SUCCEEDED" for t in shards)
    assert runb.task("resolve-champion").parameters["Output"] == str(champion)
    assert [t.artifacts["scores"][0]["metadata"]["model_version"] for t in shards] == [str(champion)] * BATCH_SHARDS
    assert sorted(t.artifacts["scores"][0]["metadata"]["shard"] for t in shards) == list(range(BATCH_SHARDS))
    assert sum(t.artifacts["scores"][0]["metadata"]["rows"] for t in shards) == BATCH_ROWS
    gathered_result_agrees(st, out_prefix, scored, str(champion))
    published = json.loads(runb.task("gather-scores").parameters["Output"])["published"]
    assert published == f"s3://{st.config['KFCT_S3_BUCKET']}/{out_prefix}"


def gathered_result_agrees(st: Stack, out_prefix: str, scored: dict, champion: str) -> None:
    """The gathered result in S3: partitioned parquet + _summary.json that agree with each other."""
    import io

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    bucket = st.config["KFCT_S3_BUCKET"]
    s3 = s3_client(st)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=out_prefix + "/")["Contents"])
    parts = [k for k in keys if k.endswith(".parquet")]
    assert parts == [f"{out_prefix}/shard={i:05d}/part-0.parquet" for i in range(BATCH_SHARDS)], keys
    table = pa.concat_tables(pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=k)["Body"].read())) for k in parts)
    summary = json.loads(s3.get_object(Bucket=bucket, Key=f"{out_prefix}/_summary.json")["Body"].read())
    assert table.num_rows == BATCH_ROWS == summary["rows"]
    assert pc.count_distinct(table.column("customer_id")).as_py() == BATCH_ROWS
    assert set(pc.unique(table.column("model_version").cast("string")).to_pylist()) == {champion}
    assert summary["model_version"] == champion and summary["shards"] == BATCH_SHARDS
    assert summary["dataset_sha256"] == scored["sha256"]
    positives = int(pc.sum(table.column("label")).as_py())
    assert summary["positives"] == positives
    assert summary["churn_rate"] == pytest.approx(positives / BATCH_ROWS, abs=1e-6)
