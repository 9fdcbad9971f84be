"""Kubeflow Trainer on loopback: the TrainJob API and the controller's work, each worker a process with pod boundaries.

Upstream followed (github:kubeflow/trainer, tag v2.2.0; identical at v2.3.0 / commit 8c0f5059 in
what is used here):

- API: `trainer.kubeflow.org/v1alpha1` `trainjobs`, namespaced (pkg/apis/trainer/v1alpha1/
  trainjob_types.go). Served: POST (create), GET (one), DELETE; anything else 404/405.
- Admission: the runtime named by `spec.runtimeRef` must exist (here only the
  ClusterTrainingRuntime `xgboost-distributed`, manifests/base/runtimes/xgboost_distributed.yaml);
  the XGBoost plugin's `Validate` forbids the four DMLC_* names in `spec.trainer.env`
  (pkg/runtime/framework/plugins/xgboost/xgboost.go: "%s is reserved for the XGBoost runtime"),
  answered as the API server answers a webhook denial (422 Invalid).
- Pods: the runtime's one replicated job `node` runs `numNodes` pods (the TrainJob's
  `spec.trainer.numNodes`, else the runtime's `mlPolicy.numNodes: 1`); workers = nodes x the GPU
  limit per node (xgboost.go: one worker per GPU, one per CPU node). Each pod's container `node`
  runs `spec.trainer.command + args` with `spec.trainer.env` (value / secretKeyRef /
  configMapKeyRef resolved against the given Secrets and ConfigMaps; a missing non-optional key
  fails the pod, as kubelet's CreateContainerConfigError keeps it from starting) plus what the
  XGBoost plugin adds: DMLC_TRACKER_URI `<job>-node-0-0.<job>`, DMLC_TRACKER_PORT 29500,
  DMLC_TASK_ID from the completion index (fieldRef batch.kubernetes.io/job-completion-index),
  DMLC_NUM_WORKER. Substitutions, as cluster.py makes for Services: the tracker's DNS name ->
  127.0.0.1 and port 29500 -> a free loopback port (every pod here shares one network).
  `python` in the command is the image's interpreter (this virtualenv's). Each pod gets its own
  empty working directory, HOME and TMPDIR and no other environment than the above and the
  image's PATH; nothing of the test process's env leaks in. The `node` container's resources are
  the TrainJob's `resourcesPerNode` (pkg/runtime/framework/plugins/jobset/builder.go, v2.2.0): the
  `launch` a test passes gets them; the e2e's (tests/e2e/cluster.py `trainer_pod_launcher`) runs
  each pod as pod.py runs every pod, its memory limit a cgroup v1 group. Read again at v2.2.0,
  v2.3.0 and 8c0f5059 (2026-12-07): xgboost.go and the four DMLC_* constants
  (pkg/constants/constants.go; DMLC_TASK_ID from the completion-index annotation, port 29500) are
  the same in all three.
- Status (pkg/controller/trainjob_controller.go, plugins/jobset/jobset.go): the JobSet's
  `Completed` becomes condition `Complete` (reason AllJobsCompleted, "jobset completed
  successfully"); a failed Job fails the JobSet (jobset pkg/constants: FailedJobs, "jobset failed
  due to one or more job failures") which becomes `Failed`, and the other pods are terminated;
  past `activeDeadlineSeconds` from creation the TrainJob gets `Failed` / DeadlineExceeded
  ("TrainJob exceeded its active deadline") and its JobSet (the pods) is deleted.
- Not emulated: the Kubernetes Job's default backoffLimit (6 pod retries; the runtime sets
  none) — a deterministic failure ends the same way after them, only later; scheduling, GPUs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

TRAINJOBS = re.compile(r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/?]+))?$")
RUNTIMES = {"xgboost-distributed": {"numNodes": 1, "container": "node", "port": 29500}}
RESERVED = ("DMLC_TRACKER_URI", "DMLC_TRACKER_PORT", "DMLC_TASK_ID", "DMLC_NUM_WORKER")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeTrainer:
    """`with FakeTrainer(workdir, secrets={...}, config_maps={...}) as kube:` then point a client at `kube.url`."""

    def __init__(
        self,
        workdir: Path,
        secrets: dict[str, dict[str, str]] | None = None,
        config_maps: dict[str, dict[str, str]] | None = None,
        python: str | None = None,
        launch: Launch | None = None,
    ):
        self.workdir = Path(workdir)
        self.secrets, self.config_maps = secrets or {}, config_maps or {}
        self.python = python or sys.executable
        self.launch = launch or launch_process
        self.jobs: dict[tuple[str, str], dict] = {}
        self.pods: list[dict] = []  # every pod started: name, env, cwd, argv, exit code
        self.requests: list[dict] = []
        self.deleted: list[str] = []
        self.lock = threading.Lock()
        self.mounted = False  # True: served by another apiserver fake, which answers other paths itself
        self._procs: dict[str, list[subprocess.Popen]] = {}
        outer = self

        class H(_Handler):
            fake = outer

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def kubeconfig(self, namespace: str = "kfct") -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "runner", "user": {"token": "pipeline-runner-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "runner", "namespace": namespace}}],
        }

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        with self.lock:
            procs = [p for ps in self._procs.values() for p in ps]
        for p in procs:
            _kill(p)
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- admission --------------------------------------------------------------------------------
    def admit(self, ns: str, body: dict) -> tuple[int, dict] | None:
        """A denial (code, Status) or None; what the API server and Trainer's webhook check here."""
        name = (body.get("metadata") or {}).get("name", "")
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
            return 422, _status(422, "Invalid", f'TrainJob.trainer.kubeflow.org "{name}" is invalid: metadata.name')
        ref = (body.get("spec") or {}).get("runtimeRef") or {}
        if ref.get("kind", "ClusterTrainingRuntime") != "ClusterTrainingRuntime" or ref.get("name") not in RUNTIMES:
            return 422, _status(
                422,
                "Invalid",
                f'admission webhook denied the request: spec.runtimeRef: ClusterTrainingRuntime "{ref.get("name")}" not found',
            )
        for i, env in enumerate(((body["spec"].get("trainer") or {}).get("env")) or []):
            if env.get("name") in RESERVED:
                return 422, _status(
                    422,
                    "Invalid",
                    f"admission webhook denied the request: spec.trainer.env[{i}]: "
                    f"Forbidden: {env['name']} is reserved for the XGBoost runtime",
                )
        if (ns, name) in self.jobs:
            return 409, _status(409, "AlreadyExists", f'trainjobs.trainer.kubeflow.org "{name}" already exists')
        return None

    # -- the controller --------------------------------------------------------------------------
    def start(self, ns: str, job: dict) -> None:
        threading.Thread(target=self._run, args=(ns, job), daemon=True).start()

    def _resolve(self, env: list[dict], name: str) -> dict[str, str]:
        out = {}
        for e in env:
            if "value" in e:
                out[e["name"]] = str(e["value"])
                continue
            src = e.get("valueFrom") or {}
            ref, store = (
                (src.get("secretKeyRef"), self.secrets)
                if "secretKeyRef" in src
                else (src.get("configMapKeyRef"), self.config_maps)
            )
            if ref is None:
                raise RuntimeError(f"pod {name}: unsupported env source for {e['name']}: {src}")
            data = store.get(ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise RuntimeError(f"pod {name}: CreateContainerConfigError: couldn't find key {ref['key']} in {ref['name']}")
            out[e["name"]] = data[ref["key"]]
        return out

    def _run(self, ns: str, job: dict) -> None:  # noqa: C901 - the Trainer controller's reconcile of one TrainJob, in its order
        name = job["metadata"]["name"]
        spec, trainer = job["spec"], job["spec"].get("trainer") or {}
        rt = RUNTIMES[spec["runtimeRef"]["name"]]
        nodes = int(trainer.get("numNodes") or rt["numNodes"])
        gpus = int(((trainer.get("resourcesPerNode") or {}).get("limits") or {}).get("nvidia.com/gpu", 0) or 0)
        workers = nodes * max(gpus, 1)
        port = _free_port()  # stands for 29500 on rank 0's pod
        deadline = time.monotonic() + float(spec.get("activeDeadlineSeconds") or 1e9)
        procs, failed = [], None
        for index in range(workers):
            pod = f"{name}-node-0-{index}"
            root = self.workdir / ns / pod
            shutil.rmtree(root, ignore_errors=True)
            for sub in ("work", "home", "tmp"):
                (root / sub).mkdir(parents=True)
            try:
                env = self._resolve(trainer.get("env") or [], pod)
            except RuntimeError as exc:
                failed = str(exc)
                break
            env.update(
                {
                    "DMLC_TRACKER_URI": "127.0.0.1",  # f"{name}-node-0-0.{name}" through cluster DNS
                    "DMLC_TRACKER_PORT": str(port),  # 29500 (constants.ContainerTrainerPort)
                    "DMLC_TASK_ID": str(index),  # the Job completion index
                    "DMLC_NUM_WORKER": str(workers),
                    "HOME": str(root / "home"),
                    "TMPDIR": str(root / "tmp"),
                    "PATH": os.pathsep.join([str(Path(self.python).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
                }
            )
            argv = [self.python if a == "python" else a for a in (trainer.get("command") or []) + (trainer.get("args") or [])]
            p = self.launch(pod, root, argv, env, trainer.get("resourcesPerNode") or {})
            procs.append(p)
            with self.lock:
                self.pods.append(
                    {
                        "name": pod,
                        "job": name,
                        "env": env,
                        "cwd": str(root / "work"),
                        "argv": argv,
                        "log": str(root / "log.txt"),
                        "proc": p,
                    }
                )
        with self.lock:
            self._procs[name] = procs
        outcome = None
        while outcome is None:
            if (ns, name) not in self.jobs:  # deleted while running: its pods go with it
                break
            codes = [p.poll() for p in procs]
            if failed or any(c not in (None, 0) for c in codes):
                outcome = ("Failed", "FailedJobs", "jobset failed due to one or more job failures")
            elif codes and all(c == 0 for c in codes):
                outcome = ("Complete", "AllJobsCompleted", "jobset completed successfully")
            elif time.monotonic() > deadline:
                outcome = ("Failed", "DeadlineExceeded", "TrainJob exceeded its active deadline")
            else:
                time.sleep(0.05)
        for p in procs:
            _kill(p)
        if outcome:
            with self.lock:
                obj = self.jobs.get((ns, name))
                if obj is not None:
                    obj.setdefault("status", {}).setdefault("conditions", []).append(
                        {
                            "type": outcome[0],
                            "status": "True",
                            "reason": outcome[1],
                            "message": outcome[2],
                            "lastTransitionTime": _now(),
                        }
                    )

    # -- the API ----------------------------------------------------------------------------------
    def handle(self, method: str, path: str, body: dict | None, auth: str | None = None) -> tuple[int, dict] | None:
        """(status, body) for a trainjobs request, as the API server answers it; None for any other path
        (so an apiserver fake serving other groups too can hand these requests on: tests/e2e/cluster.py)."""
        m = TRAINJOBS.match(path)
        if not m:
            return None if self.mounted else (404, _status(404, "NotFound", f"no route {path}"))
        self.requests.append({"method": method, "path": path, "auth": auth, "body": body})
        ns, name = m.groups()
        if method == "POST" and name is None:
            denial = self.admit(ns, body or {})
            if denial:
                return denial
            obj = copy.deepcopy(body)
            obj["metadata"].update({"namespace": ns, "creationTimestamp": _now(), "uid": os.urandom(8).hex()})
            with self.lock:
                self.jobs[(ns, obj["metadata"]["name"])] = obj
            self.start(ns, obj)
            return 201, obj
        if name is None:
            return 405, _status(405, "MethodNotAllowed", method)
        if method == "GET":
            with self.lock:
                obj = copy.deepcopy(self.jobs.get((ns, name)))
            if obj is None:
                return 404, _status(404, "NotFound", f'trainjobs.trainer.kubeflow.org "{name}" not found')
            return 200, obj
        if method == "DELETE":
            if self.delete(ns, name) is None:
                return 404, _status(404, "NotFound", f'trainjobs.trainer.kubeflow.org "{name}" not found')
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 405, _status(405, "MethodNotAllowed", method)

    def delete(self, ns: str, name: str) -> dict | None:
        with self.lock:
            obj = self.jobs.pop((ns, name), None)
            procs = self._procs.pop(name, [])
            if obj is not None:
                self.deleted.append(name)
        for p in procs:
            _kill(p)
        return obj


# (pod name, pod directory with work/ home/ tmp/, argv, env, resourcesPerNode) -> the pod's process
Launch = Callable[[str, Path, list, dict, dict], subprocess.Popen]


def launch_process(pod: str, root: Path, argv: list, env: dict, resources: dict) -> subprocess.Popen:
    """A worker pod as a plain process in its own directory (resources not enforced); its log in root/log.txt.
    The e2e's cluster passes a launcher that runs it as its other pods run (tests/e2e/pod.py)."""
    with (root / "log.txt").open("wb") as log:
        return subprocess.Popen(argv, cwd=root / "work", env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _kill(p: subprocess.Popen) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeTrainer

    def _send(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self._send(*self.fake.handle(method, urlparse(self.path).path, body, self.headers.get("Authorization")))

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")
