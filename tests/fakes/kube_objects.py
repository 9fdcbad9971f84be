"""A loopback Kubernetes API that answers GETs from a dict of objects, for `kfct cluster check`.

`KubeObjects(objects)`: `objects` maps an API path (`/api/v1/namespaces/kfct/configmaps/x`) to the
object a GET returns. A collection path answers a `...List` of the objects under it when it is
served (it holds an object, or is named in `served`); a missing object of a served collection is
a 404 whose Status `details` name it, and a path of a resource the API does not serve is a 404
without details, as the apiserver answers (k8s.io/apimachinery/pkg/api/errors.NewNotFound vs. the
generic "the server could not find the requested resource"). `forbidden` paths answer 403.
Every request is recorded with its Authorization header.

`healthy_cluster(ns)` is a cluster where every prerequisite holds, each object shaped as its
upstream source ships it (named at each object).
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


class KubeObjects:
    def __init__(self, objects: dict[str, dict], served: set[str] | None = None, forbidden: set[str] | None = None):
        self.objects = copy.deepcopy(objects)
        self.served = set(served or ())
        self.forbidden = set(forbidden or ())
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = urlparse(self.path).path
                outer.requests.append({"path": path, "auth": self.headers.get("Authorization")})
                code, body = outer.answer(path)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def answer(self, path: str) -> tuple[int, dict]:
        if path in self.forbidden:
            return 403, {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": 403,
                "reason": "Forbidden",
                "message": f"forbidden: GET {path}",
            }
        if path in self.objects:
            return 200, self.objects[path]
        children = [o for p, o in self.objects.items() if p.rsplit("/", 1)[0] == path]
        if children or path in self.served:
            return 200, {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": children}
        parent, name = path.rsplit("/", 1)
        if parent in self.served or any(p.rsplit("/", 1)[0] == parent for p in self.objects):
            return 404, {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": 404,
                "reason": "NotFound",
                "details": {"name": name, "kind": parent.rsplit("/", 1)[-1]},
                "message": f'{parent.rsplit("/", 1)[-1]} "{name}" not found',
            }
        return 404, {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": 404,
            "reason": "NotFound",
            "details": {},
            "message": "the server could not find the requested resource",
        }

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def kubeconfig(self, path, namespace: str = "kfct"):
        import yaml

        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "check-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester", "namespace": namespace}}],
                }
            )
        )
        return path

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _crd(name: str, version: str, spec_props: dict | None = None) -> dict:
    schema = {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": spec_props or {}}}}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {"versions": [{"name": version, "served": True, "storage": True, "schema": schema}]},
    }


def _deployment(ns: str, name: str, container: str, image: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}},
    }


def healthy_cluster(ns: str = "kfct") -> dict[str, dict]:
    """Every object `kfct cluster check` reads, as a cluster where everything holds has it."""
    o: dict[str, dict] = {}
    # KServe 0.20 (kserve/kserve aaac4e294): config/manager/manager.yaml (Deployment
    # kserve-controller-manager, container `manager`), the v1beta1 CRD with spec.canary,
    # config/configmap/inferenceservice.yaml (`deploy` and `ingress` JSON entries) and
    # config/storagecontainers/default.yaml.
    o["/apis/apps/v1/namespaces/kserve/deployments/kserve-controller-manager"] = _deployment(
        "kserve", "kserve-controller-manager", "manager", "kserve/kserve-controller:v0.20.0"
    )
    o[f"{CRDS}/inferenceservices.serving.kserve.io"] = _crd(
        "inferenceservices.serving.kserve.io", "v1beta1", {"predictor": {"type": "object"}, "canary": {"type": "array"}}
    )
    o["/api/v1/namespaces/kserve/configmaps/inferenceservice-config"] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
        "data": {
            "deploy": json.dumps({"defaultDeploymentMode": "Standard"}),
            "ingress": json.dumps(
                {
                    "enableGatewayApi": True,
                    "kserveIngressGateway": "kserve/kserve-ingress-gateway",
                    "ingressDomain": "example.com",
                }
            ),
        },
    }
    o[f"{CRDS}/httproutes.gateway.networking.k8s.io"] = _crd("httproutes.gateway.networking.k8s.io", "v1")
    o[f"/apis/serving.kserve.io/v1alpha1/namespaces/{ns}/servingruntimes/kfct-predictor"] = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "kfct-predictor", "namespace": ns},
        "spec": {"supportedModelFormats": [{"name": "kfct-churn", "version": "1", "autoSelect": True}]},
    }
    o["/apis/serving.kserve.io/v1alpha1/clusterstoragecontainers/default"] = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterStorageContainer",
        "metadata": {"name": "default"},
        "spec": {
            "container": {"name": "storage-initializer"},
            "workloadType": "initContainer",
            "supportedUriFormats": [{"prefix": "gs://"}, {"prefix": "s3://"}, {"prefix": "hdfs://"}],
        },
    }
    # Kubeflow Pipelines 2.15 (kubeflow/pipelines backend/src/apiserver/main.go healthzResponse),
    # reached through the API server's service proxy.
    o["/api/v1/namespaces/kubeflow/services/ml-pipeline:8888/proxy/apis/v2beta1/healthz"] = {
        "commit_sha": "0123abc",
        "tag_name": "2.15.0",
        "multi_user": True,
        "pipeline_store": "database",
    }
    # The Profile (kubeflow profile_types.go) and what it provisions: the namespace label
    # (profile-controller config/base/namespace-labels.yaml), kfp-launcher and mlpipeline-minio-artifact
    # (kubeflow/pipelines manifests/.../pipelines-profile-controller/sync.py).
    o[f"/apis/kubeflow.org/v1/profiles/{ns}"] = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": ns},
        "spec": {"owner": {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "owner@example.com"}},
    }
    o[f"/api/v1/namespaces/{ns}"] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ns,
            "labels": {"pipelines.kubeflow.org/enabled": "true", "app.kubernetes.io/part-of": "kubeflow-profile"},
        },
    }
    o[f"/api/v1/namespaces/{ns}/configmaps/kfp-launcher"] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kfp-launcher", "namespace": ns},
        "data": {"defaultPipelineRoot": "minio://mlpipeline/v2/artifacts"},
    }
    o[f"/api/v1/namespaces/{ns}/secrets/mlpipeline-minio-artifact"] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "mlpipeline-minio-artifact", "namespace": ns},
        "data": {"accesskey": "eA==", "secretkey": "eA=="},
    }
    # What manifests/overlays/prod applies.
    o[f"/apis/kubeflow.org/v1alpha1/namespaces/{ns}/poddefaults/access-ml-pipeline"] = {
        "apiVersion": "kubeflow.org/v1alpha1",
        "kind": "PodDefault",
        "metadata": {"name": "access-ml-pipeline", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"access-ml-pipeline": "true"}}},
    }
    o[f"/api/v1/namespaces/{ns}/secrets/kfct-s3-credentials"] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "kfct-s3-credentials",
            "namespace": ns,
            "annotations": {"serving.kserve.io/s3-endpoint": "kfct-minio:9000", "serving.kserve.io/s3-usehttps": "0"},
        },
        "data": {"AWS_ACCESS_KEY_ID": "eA==", "AWS_SECRET_ACCESS_KEY": "eA==", "KFCT_S3_ACCESS_KEY": "eA=="},
    }
    o[f"/api/v1/namespaces/{ns}/serviceaccounts/kfct-serving"] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "kfct-serving", "namespace": ns},
        "secrets": [{"name": "kfct-s3-credentials"}],
    }
    for name in ("kfct-minio-ingress", "kfct-mlflow-ingress"):
        o[f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}"] = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
    # A GPU node tainted as the NVIDIA GPU operator does, and a CPU node.
    o["/api/v1/nodes/gpu-1"] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "gpu-1"},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "16", "nvidia.com/gpu": "1"}},
    }
    o["/api/v1/nodes/cpu-1"] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "cpu-1"},
        "status": {"allocatable": {"cpu": "8"}},
    }
    # Kubeflow Trainer 2.2 (kubeflow/trainer manifests/base/manager/manager.yaml in kubeflow-system,
    # crds/trainer.kubeflow.org_trainjobs.yaml, runtimes/xgboost_distributed.yaml).
    o[f"{CRDS}/trainjobs.trainer.kubeflow.org"] = _crd("trainjobs.trainer.kubeflow.org", "v1alpha1")
    o["/apis/apps/v1/namespaces/kubeflow-system/deployments/kubeflow-trainer-controller-manager"] = _deployment(
        "kubeflow-system",
        "kubeflow-trainer-controller-manager",
        "manager",
        "ghcr.io/kubeflow/trainer/trainer-controller-manager:v2.2.0",
    )
    o["/apis/trainer.kubeflow.org/v1alpha1/clustertrainingruntimes/xgboost-distributed"] = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "ClusterTrainingRuntime",
        "metadata": {"name": "xgboost-distributed", "labels": {"trainer.kubeflow.org/framework": "xgboost"}},
        "spec": {"mlPolicy": {"numNodes": 1, "xgboost": {}}},
    }
    return o
