"""Kustomize manifests, checked without a cluster (and without the kustomize binary).

Every kustomization parses and lists files that exist; overlays patch objects the base
really has; Secrets exist only as generators fed by gitignored env files whose committed
templates hold no values; the pipeline runner's RBAC covers what a CT run does to
InferenceServices; and the names the compiled pipeline relies on (Secret, ConfigMap and
their keys, service account) are the ones the manifests create.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
BASE = MANIFESTS / "base"
OVERLAYS = ("dev", "prod")


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization(dir_: Path) -> dict:
    path = dir_ / "kustomization.yaml"
    assert path.is_file(), f"{dir_} has no kustomization.yaml"
    data = yaml.safe_load(path.read_text())
    assert data.get("kind") in ("Kustomization", "Component")
    assert data.get("apiVersion", "").startswith("kustomize.config.k8s.io/")
    return data


def render(dir_: Path) -> tuple[list[dict], list[dict]]:
    """(objects, secretGenerators) of a kustomization, resources resolved recursively (no patches)."""
    k = kustomization(dir_)
    objs, gens = [], list(k.get("secretGenerator") or [])
    for gen in gens:
        gen["_dir"] = dir_
    for res in k.get("resources") or []:
        path = (dir_ / res).resolve()
        assert path.exists(), f"{dir_}/kustomization.yaml lists missing resource {res}"
        if path.is_dir():
            sub_objs, sub_gens = render(path)
            objs += sub_objs
            gens += sub_gens
        else:
            objs += load_docs(path)
    return objs, gens


def find(objs, kind, name=None):
    return [o for o in objs if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]


def env_keys(path: Path) -> dict[str, str]:
    out = {}
    for ln in path.read_text().splitlines():
        ln = ln.strip()
        if ln and not ln.startswith("#"):
            k, sep, v = ln.partition("=")
            assert sep, f"{path}: bad line {ln!r}"
            out[k.strip()] = v
    return out


def gitignored(path: Path) -> bool:
    """Whether a .gitignore between the repo root and the file ignores it (simple patterns)."""
    rel_parts = path.relative_to(ROOT).parts
    verdict = False
    for depth in range(len(rel_parts)):
        gi = ROOT.joinpath(*rel_parts[:depth]) / ".gitignore"
        if not gi.is_file():
            continue
        rel = "/".join(rel_parts[depth:])
        for pat in gi.read_text().splitlines():
            pat = pat.strip()
            if not pat or pat.startswith("#"):
                continue
            neg = pat.startswith("!")
            p = pat[1:] if neg else pat
            if fnmatch.fnmatch(rel, p.lstrip("/")) or fnmatch.fnmatch(path.name, p):
                verdict = not neg
    return verdict


@pytest.fixture(scope="module")
def base():
    return render(BASE)


def test_every_kustomization_parses_and_lists_existing_files():
    kdirs = [p.parent for p in MANIFESTS.rglob("kustomization.yaml")]
    assert {BASE, *(MANIFESTS / "overlays" / o for o in OVERLAYS)} <= set(kdirs)
    for d in kdirs:
        k = kustomization(d)
        for res in k.get("resources") or []:
            assert (d / res).exists(), f"{d}: missing resource {res}"
        for patch in k.get("patches") or []:
            if "path" in patch:
                assert (d / patch["path"]).is_file(), f"{d}: missing patch {patch['path']}"
        for path in d.rglob("*.yaml"):
            load_docs(path)  # every YAML parses


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_patch_objects_the_base_has(overlay, base):
    objs, _ = base
    d = MANIFESTS / "overlays" / overlay
    k = kustomization(d)
    assert k.get("namespace"), "an overlay picks the namespace"
    assert "../../base" in k["resources"]
    index = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for patch in k.get("patches") or []:
        for doc in load_docs(d / patch["path"]):
            kind, name = doc["kind"], doc["metadata"]["name"]
            assert (kind, name) in index, f"{overlay} patches unknown {kind}/{name}"
    for img in k.get("images") or []:
        used = {
            c["image"].rsplit(":", 1)[0]
            for o in objs
            if o["kind"] in ("Deployment", "Job")
            for c in o["spec"]["template"]["spec"]["containers"]
        }
        used |= {c["image"].rsplit(":", 1)[0] for o in objs if o["kind"] == "ServingRuntime" for c in o["spec"]["containers"]}
        assert img["name"] in used, f"{overlay} retags image {img['name']} nobody uses"


def test_namespaces_come_from_overlays_and_kubeflows_is_never_owned():
    base_objs, _ = render(BASE)
    assert not find(base_objs, "Namespace"), "the base must not create a namespace"
    for overlay in OVERLAYS:
        d = MANIFESTS / "overlays" / overlay
        objs, _ = render(d)
        ns = kustomization(d)["namespace"]
        owned = [o["metadata"]["name"] for o in find(objs, "Namespace")]
        assert owned in ([], [ns]), f"{overlay} creates namespaces {owned} but deploys into {ns}"
        if ns == "kubeflow":
            assert owned == [], "`kubectl delete -k` would delete KFP's namespace"
        (cm,) = find(objs, "ConfigMap", "kfct-config")
        patched = {}
        for patch in kustomization(d).get("patches") or []:
            for doc in load_docs(d / patch["path"]):
                if doc["kind"] == "ConfigMap":
                    patched.update(doc.get("data") or {})
        assert {**cm["data"], **patched}["KFCT_KFP_NAMESPACE"] == ns, f"{overlay}: experiments must go to {ns}"


def test_base_has_minio_mlflow_and_rbac(base):
    objs, _ = base
    for name in ("kfct-minio", "kfct-mlflow"):
        assert find(objs, "Deployment", name) and find(objs, "Service", name)
    assert find(objs, "PersistentVolumeClaim", "kfct-minio-data")
    assert find(objs, "Job", "kfct-minio-setup")
    if (BASE / "serving" / "kustomization.yaml").is_file():
        assert "serving" in kustomization(BASE)["resources"], "base/serving exists but the base does not include it"


def test_no_secret_values_anywhere(base):
    _objs, gens = base
    for path in MANIFESTS.rglob("*.yaml"):
        for doc in load_docs(path):
            if doc.get("kind") == "Secret":
                assert not any((doc.get("data") or {}).values()) and not any((doc.get("stringData") or {}).values()), (
                    f"{path} holds secret values"
                )
    assert gens, "secrets come from secretGenerator"
    for gen in gens:
        assert not gen.get("literals"), f"{gen['name']}: literals would put values in git"
        for env in gen.get("envs") or []:
            path = gen["_dir"] / env
            assert gitignored(path), f"{path} must be gitignored"
            example = path.with_name(path.name + ".example")
            assert example.is_file(), f"{example} (the committed template) is missing"
            values = env_keys(example)
            assert values and all(v == "" for v in values.values()), f"{example} must not hold values"


def test_names_and_keys_the_pipeline_relies_on_exist(base):
    """Compiled tasks mount Secret + ConfigMap keys as env: all must exist or pods do not start."""
    from kfct.pipelines.task_config import CONFIG_KEYS, SECRET_KEYS
    from kfct.runtime.settings import Settings

    objs, gens = base
    s = Settings()
    gen = next(g for g in gens if g["name"] == s.k8s_secret_name)
    assert set(SECRET_KEYS) <= set(env_keys(gen["_dir"] / (gen["envs"][0] + ".example")))
    (cm,) = find(objs, "ConfigMap", s.k8s_config_map)
    assert set(CONFIG_KEYS) <= set(cm["data"])
    assert all(isinstance(v, str) for v in cm["data"].values()), "ConfigMap values must be strings"
    assert find(objs, "ServiceAccount", s.kfp_service_account)


def test_key_references_resolve(base):
    objs, gens = base
    secrets = {g["name"]: set(env_keys(g["_dir"] / (g["envs"][0] + ".example"))) for g in gens}
    maps = {o["metadata"]["name"]: set(o["data"]) for o in find(objs, "ConfigMap")}
    n = 0
    for o in objs:
        if o["kind"] not in ("Deployment", "Job"):
            continue
        for c in o["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env") or []:
                ref = e.get("valueFrom") or {}
                if "secretKeyRef" in ref:
                    r = ref["secretKeyRef"]
                    assert r["key"] in secrets.get(r["name"], set()), f"{o['metadata']['name']}: {r}"
                    n += 1
                if "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    assert r["key"] in maps.get(r["name"], set()), f"{o['metadata']['name']}: {r}"
                    n += 1
    assert n >= 8


def test_workloads_are_wired_and_non_root(base):
    objs, _ = base
    pvcs = {o["metadata"]["name"] for o in find(objs, "PersistentVolumeClaim")}
    for dep in find(objs, "Deployment"):
        pod = dep["spec"]["template"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        for v in pod["spec"].get("volumes") or []:
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in pvcs
        svc = find(objs, "Service", dep["metadata"]["name"])
        assert svc and svc[0]["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        for c in pod["spec"]["containers"]:
            assert c.get("resources", {}).get("requests"), f"{dep['metadata']['name']}: no resource requests"
            assert ":" in c["image"] and not c["image"].endswith(":latest"), "pinned images"


def test_mlflow_artifacts_go_to_minio(base):
    objs, _ = base
    (cm,) = find(objs, "ConfigMap", "kfct-config")
    (dep,) = find(objs, "Deployment", "kfct-mlflow")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    args = c["command"] + c["args"]
    dest = next(a.split("=", 1)[1] for a in args if a.startswith("--artifacts-destination="))
    assert dest.startswith(f"s3://{cm['data']['KFCT_S3_BUCKET']}/")
    assert "--serve-artifacts" in args and "--host=0.0.0.0" in args
    env = {e["name"] for e in c["env"]}
    assert {"MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env
    # the Host header the pipeline pods send must pass MLflow's host check
    allowed = next(a.split("=", 1)[1] for a in args if a.startswith("--allowed-hosts=")).split(",")
    tracking_host = cm["data"]["KFCT_MLFLOW_TRACKING_URI"].split("://", 1)[1]
    assert any(fnmatch.fnmatch(tracking_host, p) for p in allowed)
    assert cm["data"]["MLFLOW_S3_ENDPOINT_URL"].endswith(cm["data"]["KFCT_S3_ENDPOINT"])


def test_rbac_lets_the_runner_patch_inferenceservices(base):
    objs, _ = base
    from kfct.runtime.settings import Settings

    sa = Settings().kfp_service_account
    bindings = [
        b for b in find(objs, "RoleBinding") if any(s["kind"] == "ServiceAccount" and s["name"] == sa for s in b["subjects"])
    ]
    assert bindings, f"no RoleBinding for {sa}"
    verbs = set()
    for b in bindings:
        (role,) = find(objs, b["roleRef"]["kind"], b["roleRef"]["name"])
        for rule in role["rules"]:
            if "serving.kserve.io" in rule["apiGroups"] and "inferenceservices" in rule["resources"]:
                verbs |= set(rule["verbs"])
    assert {"get", "list", "create", "patch", "update"} <= verbs
    assert "*" not in verbs and "delete" not in verbs, "least privilege: no wildcard, no delete"
