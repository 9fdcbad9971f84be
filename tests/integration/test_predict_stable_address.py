"""`kfct predict --isvc NAME` scores through the InferenceService's stable address, `status.url`
(KServe v0.20 httproute_reconciler.go `createRawURL`: the top-level HTTPRoute's host, behind the
gateway), not `status.address.url` (the predictor Service, which bypasses the canary split and is
renamed `<isvc>-v<N>-predictor` at each promotion). Issue 20, item 2.

The loopback Kubernetes API (tests/servingkit/fakes.py) holds the InferenceService; a loopback
HTTP server stands for the gateway at status.url and one for the predictor Service at
status.address.url, each recording what reaches it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.servingkit.fakes import FakeKubeApi, restore_kube_default_config  # noqa: F401

pytestmark = pytest.mark.usefixtures("restore_kube_default_config")


class Recorder:
    def __init__(self):
        self.paths: list[str] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.paths.append(self.path)
                body = json.dumps({"predictions": [0]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    from kfct.runtime.settings import reset_settings

    gateway, predictor = Recorder(), Recorder()
    with FakeKubeApi() as kube:
        kube.objects[("kfct", "churn")] = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "churn", "namespace": "kfct", "annotations": {"serving.kserve.io/deploymentMode": "Standard"}},
            "spec": {"predictor": {"name": "v3", "model": {"storageUri": "s3://kfct/m/3"}}},
            "status": {"url": gateway.url, "address": {"url": predictor.url}, "deploymentMode": "Standard"},
        }
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(kube.kubeconfig()))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("KFCT_KFP_NAMESPACE", "kfct")
        reset_settings()
        yield kube, gateway, predictor
    gateway.close()
    predictor.close()
    reset_settings()


def test_predict_isvc_goes_through_the_stable_address(cluster, capsys):
    from kfct.cli import main

    _kube, gateway, predictor = cluster
    assert main(["predict", "--isvc", "churn", "--model", "churn", "--rows", "2"]) == 0
    assert gateway.paths == ["/v1/models/churn:predict"] and predictor.paths == []
    assert json.loads(capsys.readouterr().out) == {"predictions": [0]}


def test_predict_isvc_without_status_url_says_why(cluster, capsys):
    from kfct.cli import main

    kube, _gateway, predictor = cluster
    del kube.objects[("kfct", "churn")]["status"]["url"]
    assert main(["predict", "--isvc", "churn", "--model", "churn"]) != 0
    err = capsys.readouterr().err
    assert "has no status.url yet" in err and "Gateway API disabled" in err and predictor.paths == []
