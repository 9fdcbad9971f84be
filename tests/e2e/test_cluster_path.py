"""The cluster path as a whole, with a cluster's boundaries (issue 14), `make e2e`.

Everything is configured from `kubectl kustomize manifests/overlays/dev` (see cluster.py):
MinIO = moto's S3 server with the setup Job's bucket and user, MLflow = `mlflow server`
with the Deployment's args, the CT / monitoring IR run task by task, each task a pod
(kfp_emulator.py + pod.py), the InferenceService written through a TLS loopback
Kubernetes API, its storageUri fetched by KServe's own storage code (kserve-storage in a
venv of its own: its pins clash with the lock) and served by the ServingRuntime's command.
Last, the batch-scoring IR scores 200k rows in 4 shard pods (ParallelFor) with the champion the
registry's alias names, and its gathered parquet + _summary.json in S3 are checked against each other.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.e2e import cluster as C
from tests.e2e.kfp_emulator import Emulator, unshare_available

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = "dev"
ROWS = 8_000
BATCH_ROWS = 200_000
BATCH_SHARDS = 4
KFP_TOKEN = "e2e-projected-sa-token"


def storage_python() -> str:
    """A venv with KServe's storage package (cached in .venv-e2e: kserve-storage==0.21.0 needs
    google-cloud-storage<3, which clashes with requirements.lock)."""
    venv = ROOT / ".venv-e2e"
    py = venv / "bin" / "python"
    ok = venv / ".kserve-storage-0.21.0"
    if not ok.exists():
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "kserve-storage==0.21.0", "boto3"], check=True,
                       timeout=600)
        ok.touch()
    return str(py)


class Stack:
    pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    why = unshare_available()
    if why:
        pytest.skip(f"e2e pods need private mount namespaces: {why}")
    work = tmp_path_factory.mktemp("e2e")
    st = Stack()
    st.work = work
    procs = []
    s3_server, s3_url, iam = C.start_s3()
    keys = C.grant_readwrite(iam, s3_url)
    try:
        # The operator's step: the MinIO user's keys into the two credential files.
        objs = C.Objects(C.render(OVERLAY, work, {
            "AWS_ACCESS_KEY_ID": keys["access_key"], "AWS_SECRET_ACCESS_KEY": keys["secret_key"],
            "KFCT_S3_ACCESS_KEY": keys["access_key"], "KFCT_S3_SECRET_KEY": keys["secret_key"]}))
        st.objects = objs
        setup = C.minio_setup(objs)
        assert setup["policy"] == ["readwrite"] and setup["access_key"] == keys["access_key"]
        C.create_buckets(s3_url, keys, setup["buckets"])
        C.auth_on(s3_url)
        cm = objs.get("ConfigMap", "kfct-config")
        st.namespace = cm["metadata"]["namespace"]
        st.config = objs.config_map("kfct-config")
        st.services = svc = C.Services(objs, st.namespace)
        s3_port = int(s3_url.rsplit(":", 1)[1])
        svc.bind("kfct-minio", 9000, s3_port)

        # MLflow as the Deployment runs it.
        mlflow_port = C.free_port()
        svc.bind("kfct-mlflow", 5000, mlflow_port)
        argv, env = C.mlflow_command(objs, svc, mlflow_port, work / "mlflow-pvc")
        (work / "mlflow-pvc").mkdir()
        home = work / "mlflow-home"
        home.mkdir()
        env.update(PATH=os.environ["PATH"], HOME=str(home), TMPDIR=str(home), MLFLOW_ENABLE_TELEMETRY="false",
                   DO_NOT_TRACK="true")
        log = open(work / "mlflow.log", "w")
        mlflow = subprocess.Popen(argv, env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        procs.append(mlflow)
        st.mlflow_args = argv

        # KFP API (multi-user style: bearer token required) and the Kubernetes API over TLS.
        from tests.fakes.kfp_server import FakeKfpServer

        st.kfp = FakeKfpServer(token=KFP_TOKEN).start()
        kfp_host = st.config["KFCT_KFP_HOST"].split("://", 1)[1].rstrip("/")
        kfp_svc, _, kfp_rest = kfp_host.partition(".")
        svc.bind(kfp_svc, int(kfp_host.rsplit(":", 1)[1]), int(st.kfp.url.rsplit(":", 1)[1]),
                 namespace=kfp_rest.split(".")[0])
        st.kube, ca = C.tls_kube_api(work)
        st.kube.__enter__()
        kube_port = st.kube.httpd.server_address[1]

        st.s3 = {"endpoint_url": s3_url, "access_key": keys["access_key"], "secret_key": keys["secret_key"]}
        # What the kubelet mounts: the SA token/CA/namespace, and the projected KFP token
        # (audience pipelines.kubeflow.org) multi-user Kubeflow's PodDefault adds.
        sa = "kubernetes.io/serviceaccount/"
        st.pod_files = {sa + "token": "e2e-k8s-sa-token", sa + "ca.crt": ca, sa + "namespace": st.namespace,
                        "kubeflow/pipelines/token": KFP_TOKEN}

        class PodCluster:
            launcher_s3 = st.s3
            service_account = st.pod_files

            @staticmethod
            def pod_env(spec: dict) -> dict:
                return dict(svc.rewrite_env(pod_env_from_platform(objs, spec)),
                            KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=str(kube_port))

        st.cluster = PodCluster
        # `make compile` with default settings (while MLflow starts).
        st.build = work / "build"
        compile_env = {"PATH": os.environ["PATH"], "HOME": str(work), "KFCT_HOME": str(work / "compile-home")}
        compiling = subprocess.Popen([str(Path(sys.executable).parent / "kfct"), "compile", "--out", str(st.build)],
                                     env=compile_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        C.wait_http(f"http://127.0.0.1:{mlflow_port}/health", 120, mlflow)
        st.mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        out, _ = compiling.communicate(timeout=180)
        assert compiling.returncode == 0, out
        st.operator_env = svc.rewrite_env({**st.config, **objs.secret("kfct-s3-credentials"),
                                           "KFCT_KFP_TOKEN": KFP_TOKEN})
        yield st
    finally:
        for p in procs:
            C.stop(p)
        for obj in ("kfp", "kube"):
            if hasattr(st, obj):
                getattr(st, obj).__exit__(None, None, None) if obj == "kube" else st.kfp.stop()
        requests.post(f"{s3_url}/moto-api/reset-auth", data=b"inf", timeout=10)
        s3_server.stop()


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
    p = subprocess.run([str(Path(sys.executable).parent / "kfct"), *args], env=env, cwd=home,
                       capture_output=True, text=True, timeout=240)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def push(st, name: str, tag: str, rows: int = ROWS, **gen) -> dict:
    path = st.work / f"{name}.parquet"
    from kfct.datagen import generate, write_frame

    write_frame(generate(rows=rows, **gen), path)
    out = operator(st, "data", "push", str(path), "--tag", tag).stdout.split()
    import boto3

    s3 = boto3.client("s3", endpoint_url=st.s3["endpoint_url"], region_name="us-east-1",
                      aws_access_key_id=st.s3["access_key"], aws_secret_access_key=st.s3["secret_key"])
    manifest = json.loads(s3.get_object(Bucket=st.config["KFCT_S3_BUCKET"],
                                        Key=f"datasets/tags/{tag}.json")["Body"].read())
    assert manifest["uri"] == out[0] and manifest["rows"] == rows
    return manifest


def s3_client(st):
    import boto3

    return boto3.client("s3", endpoint_url=st.s3["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id=st.s3["access_key"], aws_secret_access_key=st.s3["secret_key"])


def emulator(st, name: str) -> Emulator:
    return Emulator(st.build / name, st.cluster, f"s3://{st.config['KFCT_S3_BUCKET']}/kfp-pipeline-root",
                    sys.executable, st.work / "pods")


def serve_isvc(st, isvc: dict, runtime: dict, model_dir: Path):
    """Start the ServingRuntime's container command + args on `model_dir` (what KServe does)."""
    c = runtime["spec"]["containers"][0]
    pred = isvc["spec"]["predictor"]
    port = C.free_port()
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
    argv = [sys.executable] + c["command"][1:] + args
    proc = subprocess.Popen(argv, env=env, cwd=home, stdout=open(home / "log.txt", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
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
    env = {"PATH": os.environ["PATH"], "HOME": str(dest.parent), "AWS_ACCESS_KEY_ID": keys["AWS_ACCESS_KEY_ID"],
           "AWS_SECRET_ACCESS_KEY": keys["AWS_SECRET_ACCESS_KEY"], "S3_ENDPOINT": endpoint,
           "S3_USE_HTTPS": "1" if https else "0",
           "AWS_ENDPOINT_URL": f"{'https' if https else 'http'}://{endpoint}", "AWS_DEFAULT_REGION": "us-east-1"}
    code = ("import sys; from kserve_storage import Storage; "
            "print(Storage.download(sys.argv[1], out_dir=sys.argv[2]))")
    dest.mkdir(parents=True)
    p = subprocess.run([storage_python(), "-c", code, isvc["spec"]["predictor"]["model"]["storageUri"], str(dest)],
                       env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]


def isvc_now(st, name: str) -> dict:
    objs = [o for (ns, n), o in st.kube.objects.items() if n == name]
    assert len(objs) == 1, list(st.kube.objects)
    return objs[0]


def test_cluster_path(stack):
    st = stack
    t0 = time.perf_counter()
    last = [t0]

    def lap(what, run=None):
        now = time.perf_counter()
        pods = (": " + ", ".join(f"{t.name} {t.seconds}s" for t in run.tasks.values() if t.seconds)) if run else ""
        print(f"\n[e2e] {what} {now - last[0]:.0f}s{pods}", flush=True)
        last[0] = now

    cfg_env = st.config
    # Finding 1 as deployed: models go to the ConfigMap's s3:// root, the server serves the same bucket.
    assert cfg_env["KFCT_MLFLOW_ARTIFACT_ROOT"].startswith("s3://")
    assert any(a.startswith("--artifacts-destination=s3://") for a in st.mlflow_args)

    # --- the operator schedules the CT pipeline (uploading it); the recurring run's data is the pointer
    operator(st, "schedule", "--package", str(st.build / "ct_pipeline.yaml"))
    jobs = [r for r in st.kfp.requests if r.method == "POST" and r.path.endswith("/recurringruns")]
    assert len(jobs) == 1 and jobs[0].headers.get("authorization") == f"Bearer {KFP_TOKEN}"
    assert jobs[0].body.get("runtime_config", {}).get("parameters", {}).get("data_uri", "dataset://latest") \
        == "dataset://latest"
    lap("setup + schedule")

    # --- run 1: data under the moving pointer, default parameters (data_uri = dataset://latest)
    first = push(st, "customers-1", "latest", seed=1)
    ct = emulator(st, "ct_pipeline.yaml")
    run1 = ct.run({})
    ing = run1.task("ingest-data")
    assert ing.parameters["Output"] == first["sha256"]
    assert ing.artifacts["dataset"][0]["metadata"]["resolved_uri"] == first["uri"]
    assert ing.artifacts["dataset"][0]["uri"].startswith("s3://")
    for t in ("validate-data", "featurize-split", "train-model", "evaluate-model", "register-model", "deploy-model"):
        assert run1.task(t).state == "SUCCEEDED", t
    assert run1.task("condition-3").state == "SKIPPED"  # rollout: disabled in the default config
    lap("CT run 1", run1)
    version1 = run1.task("register-model").parameters["Output"]

    # --- the InferenceService the deploy step wrote, through the Kubernetes API
    model_name = json.loads(run1.task("deploy-model").parameters["Output"])["model_name"]
    isvc = isvc_now(st, model_name)
    storage_uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert re.fullmatch(re.escape(cfg_env["KFCT_MLFLOW_ARTIFACT_ROOT"]) + r"/models/m-[0-9a-f]{32}/artifacts",
                        storage_uri), storage_uri
    assert st.kube.requests and all((r["auth"] or "").lower() == "bearer e2e-k8s-sa-token" for r in st.kube.requests)

    # --- KServe: storage initializer + the ServingRuntime's own command on the downloaded dir
    runtime = st.objects.get("ServingRuntime", isvc["spec"]["predictor"]["model"]["runtime"])
    model_dir = st.work / "mnt-models-1" / "models"
    storage_initializer(st, isvc, model_dir)
    proc, url = serve_isvc(st, isvc, runtime, model_dir)
    try:
        from kfct.datagen import generate

        rows = generate(rows=3, seed=99).drop(columns=["churned"])
        records = json.loads(rows.to_json(orient="records"))
        v1 = requests.post(f"{url}/v1/models/{model_name}:predict", json={"instances": records}, timeout=30)
        assert v1.status_code == 200, v1.text
        preds = v1.json()["predictions"]
        assert [p["model_version"] for p in preds] == [version1] * 3
        inputs = []
        for col in rows.columns:
            values = rows[col].tolist()
            if rows[col].dtype == object:
                inputs.append({"name": col, "shape": [3], "datatype": "BYTES", "data": values})
            elif str(rows[col].dtype).startswith("int"):
                inputs.append({"name": col, "shape": [3], "datatype": "INT64", "data": values})
            else:
                inputs.append({"name": col, "shape": [3], "datatype": "FP64", "data": values})
        v2 = requests.post(f"{url}/v2/models/{model_name}/infer", json={"inputs": inputs}, timeout=30)
        assert v2.status_code == 200, v2.text
        outs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
        v1_probs = [p["probability"] for p in preds]
        assert outs["probability"] == pytest.approx(v1_probs, abs=1e-6)
        assert outs["model_version"] == [version1] * 3
        # The same answer as the registered model itself, read from MLflow.
        os.environ["KFCT_MLFLOW_TRACKING_URI"] = st.mlflow_url
        from kfct import registry
        from kfct.settings import reset_settings

        for k, v in st.operator_env.items():
            os.environ.setdefault(k, v)
        reset_settings()
        registry.setup()
        loaded = registry.load_version(model_name, version=version1)
        assert loaded.tags["data_uri"] == first["uri"] and loaded.tags["dataset_sha256"] == first["sha256"]
        assert loaded.model.predict_proba(rows)[:, 1] == pytest.approx(v1_probs, abs=1e-6)
    finally:
        C.stop(proc)
    lap("KServe storage initializer + ServingRuntime, V1 + V2")

    # --- run 2: new data under the same pointer; the gate compares with the champion
    second = push(st, "customers-2", "latest", seed=2, drift=0.3)
    run2 = ct.run({})
    assert run2.task("ingest-data").parameters["Output"] == second["sha256"] != first["sha256"]
    ev = run2.task("evaluate-model")
    assert ev.state == "SUCCEEDED"
    lap("CT run 2", run2)
    decision_meta = ev.artifacts["decision"][0]["metadata"]
    assert str(decision_meta.get("champion_version")) == version1, decision_meta

    # --- monitoring: a drifted batch under its own pointer; the retrain reaches the KFP API
    push(st, "batch-drifted", "current-batch", seed=3, drift=1.0)
    mon = emulator(st, "monitoring_pipeline.yaml")
    before = len(st.kfp.requests)
    runm = mon.run({"current_uri": "dataset://current-batch"})
    lap("monitoring run", runm)
    decision = json.loads(runm.task("trigger-retrain").parameters["Output"])
    assert decision["action"] == "retrain" and decision["mode"] == "cluster", decision
    runs = [r for r in st.kfp.requests[before:] if r.method == "POST" and r.path.endswith("/runs")]
    assert runs and all(r.headers.get("authorization") == f"Bearer {KFP_TOKEN}" for r in st.kfp.requests[before:])
    params = runs[-1].body.get("runtime_config", {}).get("parameters", {})
    assert params.get("data_uri") == "dataset://latest", params

    # --- batch scoring: 200k rows under a tag, 4 shards, each shard its own pod
    scored = push(st, "customers-batch", "monthly", rows=BATCH_ROWS, seed=4)
    lap("push 200k rows")
    champion = registry.alias_version(model_name, "champion")
    assert champion, "no champion alias after the CT runs"
    bucket = st.config["KFCT_S3_BUCKET"]
    out_prefix = f"batch-scores/{scored['sha256'][:12]}"
    batch = emulator(st, "batch_scoring_pipeline.yaml")
    runb = batch.run({"data_uri": "dataset://monthly", "n_shards": BATCH_SHARDS,
                      "output_uri": f"s3://{bucket}/{out_prefix}"})
    lap("batch-scoring run (200k rows, 4 shard pods)", runb)
    shards = [t for p, t in runb.tasks.items() if p.split("/")[-1] == "score-shard"]
    assert len(shards) == BATCH_SHARDS and len({t.path for t in shards}) == BATCH_SHARDS
    assert all(t.state == "SUCCEEDED" for t in shards)
    # Every shard pod was scored by the version the registry's alias names (resolved once).
    assert runb.task("resolve-champion").parameters["Output"] == str(champion)
    assert [t.artifacts["scores"][0]["metadata"]["model_version"] for t in shards] == [str(champion)] * BATCH_SHARDS
    assert sorted(t.artifacts["scores"][0]["metadata"]["shard"] for t in shards) == list(range(BATCH_SHARDS))
    assert sum(t.artifacts["scores"][0]["metadata"]["rows"] for t in shards) == BATCH_ROWS
    # The gathered result in S3: partitioned parquet + _summary.json that agree with each other.
    import io

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    s3 = s3_client(st)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=out_prefix + "/")["Contents"])
    parts = [k for k in keys if k.endswith(".parquet")]
    assert parts == [f"{out_prefix}/shard={i:05d}/part-0.parquet" for i in range(BATCH_SHARDS)], keys
    table = pa.concat_tables(pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=k)["Body"].read()))
                             for k in parts)
    summary = json.loads(s3.get_object(Bucket=bucket, Key=f"{out_prefix}/_summary.json")["Body"].read())
    assert table.num_rows == BATCH_ROWS == summary["rows"]
    assert pc.count_distinct(table.column("customer_id")).as_py() == BATCH_ROWS
    assert set(pc.unique(table.column("model_version").cast("string")).to_pylist()) == {str(champion)}
    assert summary["model_version"] == str(champion) and summary["shards"] == BATCH_SHARDS
    assert summary["dataset_sha256"] == scored["sha256"]
    positives = int(pc.sum(table.column("label")).as_py())
    assert summary["positives"] == positives
    assert summary["churn_rate"] == pytest.approx(positives / BATCH_ROWS, abs=1e-6)
    assert json.loads(runb.task("gather-scores").parameters["Output"])["published"] == f"s3://{bucket}/{out_prefix}"
    print(f"\ne2e wall time {time.perf_counter() - t0:.0f}s")
