"""`kfct cluster check` against a loopback Kubernetes API (tests/fakes/kube_objects.py) set up healthy,
then broken one prerequisite at a time: one test per line of the table, plus the all-ok case
(issue 20, "A preflight users can run", and item 10's minimum versions).

The command runs in-process (`kfct.cli.main`) with a kubeconfig naming the loopback API, as a user
runs it; the objects follow the upstream sources named in tests/fakes/kube_objects.py.
"""

from __future__ import annotations

import json

import pytest

from tests.fakes.kube_objects import CRDS, KubeObjects, healthy_cluster

NS = "kfct"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    from kfct.runtime.settings import reset_settings

    for var in ("KFCT_KFP_HOST", "KF_PIPELINES_ENDPOINT", "KUBERNETES_SERVICE_HOST", "KFCT_KSERVE_DEPLOYMENT_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KFCT_KFP_NAMESPACE", NS)
    reset_settings()
    yield
    reset_settings()


def run_check(tmp_path, capsys, objects, *flags, served=(), forbidden=()):
    """(exit code, {item prefix: (status, line)}, printed table, API)."""
    from kfct.cli import main

    with KubeObjects(objects, served=set(served), forbidden=set(forbidden)) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        rc = main(["cluster", "check", "--kubeconfig", str(kubeconfig), "--workers", "1", *flags])
    out = capsys.readouterr().out
    rows = parse_rows(out)
    return rc, rows, out, api


def parse_rows(out: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in out.splitlines()[1:-1]:
        for status in ("ok", "missing", "wrong", "info"):
            marker = f"  {status:<7}  "
            if marker in line:
                rows[line.split(marker)[0].strip()] = (status, line)
                break
    return rows


def row(rows, prefix):
    (hit,) = [v for k, v in rows.items() if k.startswith(prefix)]
    return hit


def broken(mutate):
    objs = healthy_cluster(NS)
    mutate(objs)
    return objs


def test_a_healthy_cluster_passes_every_line(tmp_path, capsys):
    rc, rows, out, api = run_check(tmp_path, capsys, healthy_cluster(NS), "--gpu")
    assert rc == 0, out
    assert {s for s, _ in rows.values()} == {"ok"}, out
    assert len(rows) == 16, out  # 13 + GPU + the two Trainer lines
    assert out.splitlines()[-1] == "16 of 16 prerequisites pass"
    assert all(r["auth"] == "Bearer check-token" for r in api.requests)  # the kubeconfig's credentials


@pytest.mark.parametrize(
    "mutate, prefix, status, words",
    [
        # KServe
        (
            lambda o: o.pop("/apis/apps/v1/namespaces/kserve/deployments/kserve-controller-manager"),
            "KServe >= 0.20",
            "missing",
            "install KServe >= 0.20",
        ),
        (
            lambda o: o["/apis/apps/v1/namespaces/kserve/deployments/kserve-controller-manager"]["spec"]["template"]["spec"][
                "containers"
            ][0].update(image="kserve/kserve-controller:v0.19.2"),
            "KServe >= 0.20",
            "wrong",
            "KServe 0.19.2",
        ),
        (
            lambda o: o[f"{CRDS}/inferenceservices.serving.kserve.io"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
                "properties"
            ]["spec"]["properties"].pop("canary"),
            "InferenceService CRD",
            "wrong",
            "no spec.canary",
        ),
        (
            lambda o: o["/api/v1/namespaces/kserve/configmaps/inferenceservice-config"]["data"].update(deploy="{mode: x"),
            "KServe deployment mode",
            "wrong",
            "not JSON",
        ),
        (
            lambda o: o["/api/v1/namespaces/kserve/configmaps/inferenceservice-config"]["data"].update(
                ingress=json.dumps({"enableGatewayApi": False})
            ),
            "Gateway API",
            "wrong",
            '"enableGatewayApi": true',
        ),
        (lambda o: o.pop(f"{CRDS}/httproutes.gateway.networking.k8s.io"), "Gateway API", "missing", "Gateway API CRDs"),
        (
            lambda o: o.pop(f"/apis/serving.kserve.io/v1alpha1/namespaces/{NS}/servingruntimes/kfct-predictor"),
            "ServingRuntime kfct-predictor",
            "missing",
            "kubectl apply -k",
        ),
        (
            lambda o: o["/apis/serving.kserve.io/v1alpha1/clusterstoragecontainers/default"]["spec"].update(
                supportedUriFormats=[{"prefix": "gs://"}]
            ),
            "ClusterStorageContainer",
            "missing",
            "s3://",
        ),
        # Kubeflow Pipelines
        (
            lambda o: o.pop("/api/v1/namespaces/kubeflow/services/ml-pipeline:8888/proxy/apis/v2beta1/healthz"),
            "Kubeflow Pipelines backend",
            "missing",
            "install Kubeflow Pipelines >= 2.14",
        ),
        (
            lambda o: o["/api/v1/namespaces/kubeflow/services/ml-pipeline:8888/proxy/apis/v2beta1/healthz"].update(
                tag_name="2.5.0"
            ),
            "Kubeflow Pipelines backend",
            "wrong",
            "dsl.Collected",
        ),
        # the namespace
        (
            lambda o: o.pop(f"/apis/kubeflow.org/v1/profiles/{NS}"),
            "namespace kfct is a Kubeflow Profile",
            "missing",
            "profile.yaml",
        ),
        (
            lambda o: o.pop(f"/api/v1/namespaces/{NS}/configmaps/kfp-launcher"),
            "ConfigMap kfp-launcher",
            "missing",
            "pipelines.kubeflow.org/enabled",
        ),
        (
            lambda o: o.pop(f"/api/v1/namespaces/{NS}/secrets/mlpipeline-minio-artifact"),
            "Secret mlpipeline-minio-artifact",
            "missing",
            "upload",
        ),
        (
            lambda o: o.pop(f"/apis/kubeflow.org/v1alpha1/namespaces/{NS}/poddefaults/access-ml-pipeline"),
            "PodDefault access-ml-pipeline",
            "missing",
            "KFP token",
        ),
        (
            lambda o: o[f"/api/v1/namespaces/{NS}/secrets/kfct-s3-credentials"]["metadata"]["annotations"].clear(),
            "storage-initializer Secret",
            "wrong",
            "serving.kserve.io/s3-endpoint",
        ),
        (
            lambda o: o[f"/api/v1/namespaces/{NS}/serviceaccounts/kfct-serving"].update(secrets=[]),
            "storage-initializer Secret",
            "wrong",
            "does not list it",
        ),
        (lambda o: [o.pop(k) for k in list(o) if "/networkpolicies/" in k], "NetworkPolicy", "missing", "kfct-minio-ingress"),
    ],
)
def test_each_broken_prerequisite_is_its_own_line_with_the_fix(tmp_path, capsys, mutate, prefix, status, words):
    rc, rows, out, _ = run_check(
        tmp_path,
        capsys,
        broken(mutate),
        "--gpu",
        served={
            f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies",
            "/apis/serving.kserve.io/v1alpha1/clusterstoragecontainers",
        },
    )
    got, line = row(rows, prefix)
    assert (got, rc) == (status, 1), out
    assert words in line, line
    assert [k for k, (s, _) in rows.items() if s != "ok"] == [k for k in rows if k.startswith(prefix)], out


def test_no_inferenceservice_config_fails_the_mode_and_gateway_lines(tmp_path, capsys):
    objs = broken(lambda o: o.pop("/api/v1/namespaces/kserve/configmaps/inferenceservice-config"))
    rc, rows, out, _ = run_check(tmp_path, capsys, objs)
    assert rc == 1 and row(rows, "KServe deployment mode")[0] == row(rows, "Gateway API")[0] == "missing", out


@pytest.mark.parametrize("label", ["pipelines.kubeflow.org/enabled", "app.kubernetes.io/part-of"])
def test_unreconciled_profile_namespace_is_wrong(tmp_path, capsys, label):
    """Without `pipelines.kubeflow.org/enabled` KFP's profile controller provisions nothing; without
    `app.kubernetes.io/part-of: kubeflow-profile` the PodDefault webhook skips the namespace."""
    objs = broken(lambda o: o[f"/api/v1/namespaces/{NS}"]["metadata"]["labels"].pop(label))
    rc, rows, _out, _ = run_check(tmp_path, capsys, objs)
    status, line = row(rows, "namespace kfct")
    assert rc == 1 and status == "wrong" and label in line


def test_knative_mode_without_knative_serving_is_wrong(tmp_path, capsys, monkeypatch):
    from kfct.runtime.settings import reset_settings

    monkeypatch.setenv("KFCT_KSERVE_DEPLOYMENT_MODE", "Serverless")
    reset_settings()
    rc, rows, out, _ = run_check(tmp_path, capsys, healthy_cluster(NS))
    assert rc == 1 and row(rows, "KServe deployment mode")[0] == "wrong" and "Knative Serving" in out
    assert row(rows, "Gateway API")[0] == "ok"


def test_gateway_api_off_is_only_info_in_knative_mode(tmp_path, capsys, monkeypatch):
    from kfct.runtime.settings import reset_settings

    monkeypatch.setenv("KFCT_KSERVE_DEPLOYMENT_MODE", "Knative")
    reset_settings()
    objs = broken(
        lambda o: o["/api/v1/namespaces/kserve/configmaps/inferenceservice-config"]["data"].update(
            ingress=json.dumps({"enableGatewayApi": False})
        )
    )
    objs[f"{CRDS}/services.serving.knative.dev"] = {
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "services.serving.knative.dev"},
    }
    rc, rows, out, _ = run_check(tmp_path, capsys, objs)
    assert rc == 0 and row(rows, "Gateway API")[0] == "info", out


def test_gpu_nodes_missing_or_tainted(tmp_path, capsys):
    objs = broken(lambda o: o.pop("/api/v1/nodes/gpu-1"))
    rc, rows, _, _ = run_check(tmp_path, capsys, objs, "--gpu")
    assert rc == 1 and row(rows, "GPU nodes")[0] == "missing"
    objs = broken(
        lambda o: o["/api/v1/nodes/gpu-1"]["spec"]["taints"].append({"key": "dedicated", "value": "ml", "effect": "NoSchedule"})
    )
    rc, rows, _, _ = run_check(tmp_path, capsys, objs, "--gpu")
    assert rc == 1 and row(rows, "GPU nodes")[0] == "wrong" and "dedicated=ml:NoSchedule" in row(rows, "GPU nodes")[1]
    rc, rows, _, _ = run_check(tmp_path, capsys, objs)  # without --gpu the line is not there
    assert rc == 0 and not [k for k in rows if k.startswith("GPU")]


def test_trainer_is_required_only_for_more_than_one_worker(tmp_path, capsys):
    from kfct.cli import main

    objs = broken(
        lambda o: [
            o.pop(f"{CRDS}/trainjobs.trainer.kubeflow.org"),
            o.pop("/apis/trainer.kubeflow.org/v1alpha1/clustertrainingruntimes/xgboost-distributed"),
        ]
    )
    rc, rows, out, _ = run_check(tmp_path, capsys, objs)
    assert rc == 0 and row(rows, "Kubeflow Trainer")[0] == "info" and row(rows, "ClusterTrainingRuntime")[0] == "info"
    with KubeObjects(objs) as api:
        rc = main(["cluster", "check", "--kubeconfig", str(api.kubeconfig(tmp_path / "kc")), "--workers", "4"])
    out = capsys.readouterr().out
    assert rc == 1 and "train.workers=4 needs it" in out and "xgboost_distributed.yaml" in out
    old = broken(
        lambda o: o["/apis/apps/v1/namespaces/kubeflow-system/deployments/kubeflow-trainer-controller-manager"]["spec"][
            "template"
        ]["spec"]["containers"][0].update(image="ghcr.io/kubeflow/trainer:v2.1.0")
    )
    with KubeObjects(old) as api:
        rc = main(["cluster", "check", "--kubeconfig", str(api.kubeconfig(tmp_path / "kc2")), "--workers", "2"])
    out = capsys.readouterr().out
    assert rc == 1 and "Trainer 2.1.0" in out and "upgrade Kubeflow Trainer to >= 2.2.0" in out


def test_a_forbidden_read_is_a_wrong_line_and_the_rest_still_runs(tmp_path, capsys):
    path = f"/api/v1/namespaces/{NS}/secrets/mlpipeline-minio-artifact"
    rc, rows, _out, _ = run_check(tmp_path, capsys, healthy_cluster(NS), forbidden={path})
    status, line = row(rows, "Secret mlpipeline-minio-artifact")
    assert rc == 1 and status == "wrong" and "HTTP 403" in line
    assert sum(s == "ok" for s, _ in rows.values()) == len(rows) - 1


def test_an_unreachable_api_makes_every_line_wrong(tmp_path, capsys):
    from kfct.cli import main

    with KubeObjects({}) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    rc = main(["cluster", "check", "--kubeconfig", str(kubeconfig), "--workers", "1"])  # the API is gone now
    rows = parse_rows(capsys.readouterr().out)
    assert rc == 1 and len(rows) >= 14 and {s for s, _ in rows.values()} == {"wrong"}
    assert all("cannot read: GET " in line for _, line in rows.values())
