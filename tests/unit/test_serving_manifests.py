"""manifests/base/serving, checked without a cluster: the objects reference each other and
the code consistently (runtime/format names, image, env keys, metric names)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVING = ROOT / "manifests" / "base" / "serving"


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def objects() -> dict[str, dict]:
    k = yaml.safe_load((SERVING / "kustomization.yaml").read_text())
    assert k["kind"] == "Kustomization"
    out = {}
    for res in k["resources"]:
        assert (SERVING / res).is_file(), res
        for d in docs(SERVING / res):
            out[d["kind"]] = d
    return out


def test_every_serving_object_is_listed_and_wired():
    from kfct.components import deploy
    from kfct.runtime.settings import Settings

    o = objects()
    assert set(o) >= {"ServingRuntime", "InferenceService", "ServiceAccount", "ServiceMonitor", "ConfigMap"}
    rt, isvc = o["ServingRuntime"], o["InferenceService"]
    assert rt["metadata"]["name"] == deploy.RUNTIME_NAME == isvc["spec"]["predictor"]["model"]["runtime"]
    formats = {f["name"] for f in rt["spec"]["supportedModelFormats"]}
    assert deploy.MODEL_FORMAT in formats and isvc["spec"]["predictor"]["model"]["modelFormat"]["name"] in formats
    assert set(rt["spec"]["protocolVersions"]) == {"v1", "v2"}
    container = rt["spec"]["containers"][0]
    assert container["image"] == Settings().serving_image
    assert container["command"][-2:] == ["-m", "kfct.serving"]
    assert o["ServiceAccount"]["metadata"]["name"] == deploy.SERVICE_ACCOUNT == isvc["spec"]["predictor"]["serviceAccountName"]
    # the mode is explicit; Standard (the base) has no canaryTrafficPercent, which it would ignore
    mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    assert mode in ("Standard", "Knative")  # the names KServe's webhook keeps (Serverless is rewritten)
    assert ("canaryTrafficPercent" in isvc["spec"]["predictor"]) == (mode == "Knative")
    from kfct.config import load_config

    assert isvc["metadata"]["name"] == load_config().register_.model_name  # {{.Name}} is the registered name


def test_runtime_arguments_parse_with_the_server_cli():
    from kfct.serving.server import parser

    rt = objects()["ServingRuntime"]
    args = [a.replace("{{.Name}}", "churn-classifier") for a in rt["spec"]["containers"][0]["args"]]
    isvc = objects()["InferenceService"]
    ns = parser().parse_args(args + isvc["spec"]["predictor"]["model"]["args"])
    assert ns.model_name == "churn-classifier" and ns.host == "0.0.0.0" and ns.port == 8080
    ns = parser().parse_args([*args, "--model-dir", "/mnt/models"])  # what the deploy stage adds
    assert ns.model_dir == "/mnt/models"


def test_env_references_exist_in_the_base_config_and_secret_templates():
    base = ROOT / "manifests" / "base"
    cm = next(d for d in docs(base / "config.yaml") if d["kind"] == "ConfigMap")
    secret_keys = {
        ln.split("=", 1)[0]
        for ln in (base / "secrets" / "s3-credentials.env.example").read_text().splitlines()
        if "=" in ln and not ln.startswith("#")
    }
    rt = objects()["ServingRuntime"]
    n = 0
    for e in rt["spec"]["containers"][0]["env"]:
        ref = e.get("valueFrom", {})
        if "configMapKeyRef" in ref:
            assert ref["configMapKeyRef"]["name"] == cm["metadata"]["name"]
            assert ref["configMapKeyRef"]["key"] in cm["data"], e
            n += 1
        if "secretKeyRef" in ref:
            assert ref["secretKeyRef"]["name"] == "kfct-s3-credentials"
            assert ref["secretKeyRef"]["key"] in secret_keys, e
            n += 1
    assert n >= 8


def test_dashboard_queries_only_metrics_the_server_exports():
    from prometheus_client import REGISTRY

    from kfct.serving.metrics import prometheus

    prometheus()
    exported = set()
    for metric in REGISTRY.collect():
        for s in metric.samples:
            exported.add(s.name)
        exported.add(metric.name)
        exported.update({metric.name + suffix for suffix in ("_total", "_bucket", "_count", "_sum")})
    cm = objects()["ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(next(iter(cm["data"].values())))
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 6
    used = {m for e in exprs for m in re.findall(r"\b(kfct_[a-z_]+)", e)}
    assert used and used <= exported, used - exported
    sm = objects()["ServiceMonitor"]
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
