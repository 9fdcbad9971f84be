"""`kfct compile|submit|schedule|images|manifests`: the cluster side of kfct.

- `compile`: pipelines -> build/*.yaml (type checked), what the Kubeflow UI uploads.
- `submit`: compile, upload (a new version unless one holds the same package), start a run, print its URL.
- `schedule`: compile, upload, create a recurring run (`--pipeline ct|monitoring|batch`, each with
  its own default cadence); unique by name (`--replace` swaps one); `--list`, `--delete ID`.
- `images`: build (and with `--push`, push) the component, GPU-training and serving images;
  `--set-kustomize DIR` points a kustomization's `images:` at the same names and tag, so
  settings (KFCT_IMAGE_REGISTRY / KFCT_IMAGE_TAG) are the one source of image names for the
  compiled IR, the overlays, the ServingRuntime and CD.
- `manifests check FILE...`: rendered manifests against the Kubernetes / KServe schemas.
- `cluster check`: what the live cluster lacks for kfct (KServe, Gateway API, KFP, Profile, storage
  initializer, NetworkPolicy, GPU nodes, Trainer), one row per prerequisite; exit 0 only when all pass.

Parsers only here; kfp, the compiler and docker are touched inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfct.runtime.settings import Settings

DEFAULT_OUT = "build"


def _compile(args: argparse.Namespace) -> int:
    from kfct.pipelines.compile import compile_all

    paths = compile_all(out_dir=args.out, gpu=args.gpu)
    for p in paths:
        print(f"compiled {p}")
    return 0


PIPELINES = ("ct", "monitoring", "batch")


def _package(args: argparse.Namespace) -> str:
    """The package to send: --package as given, else a fresh compile of the chosen pipeline."""
    if getattr(args, "package", None):
        return args.package
    from kfct.pipelines import compile as comp

    which = getattr(args, "pipeline", "ct") or "ct"
    if which == "monitoring":
        path = comp.compile_monitoring(out_dir=args.out)
    elif which == "batch":
        path = comp.compile_batch(out_dir=args.out)
    else:
        path = comp.compile_ct(out_dir=args.out, gpu=args.gpu)
    print(f"compiled {path}")
    return str(path)


def _default_cron(which: str) -> str:
    """Monthly CT and batch scoring (the case study), weekly monitoring."""
    if which == "monitoring":
        from kfct.pipelines.monitoring import DEFAULT_CRON
    elif which == "batch":
        from kfct.pipelines.batch_scoring import DEFAULT_CRON
    else:
        from kfct.pipelines.kfp_client import DEFAULT_CRON
    return DEFAULT_CRON


def _params(args: argparse.Namespace, package: str) -> dict:
    """--param k=v plus the named shortcuts; data URIs must be reachable from the cluster."""
    from urllib.parse import urlparse

    from kfct.errors import DataSourceError
    from kfct.pipelines.kfp_client import parse_param_args, read_package

    params: dict = parse_param_args(args.param)
    declared = ((read_package(package).get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    if getattr(args, "data_uri", None):
        scheme = urlparse(args.data_uri).scheme
        if scheme not in ("s3", "generate", "dataset"):
            raise DataSourceError(
                f"data URI {args.data_uri!r} is a local path the cluster cannot read: "
                f"upload it first with `kfct data push {args.data_uri}` and pass the s3:// URI it prints"
            )
        key = next((k for k in ("data_uri", "current_uri") if k in declared), None)
        if key is None:
            raise DataSourceError(f"--data-uri: this pipeline takes no dataset URI (parameters: {', '.join(sorted(declared))})")
        params[key] = args.data_uri
    if "code_version" in declared and "code_version" not in params:
        from kfct.governance.lineage import code_version

        params["code_version"] = code_version()
    if "run_reason" in declared and "run_reason" not in params and getattr(args, "reason", None):
        params["run_reason"] = args.reason
    return params


def _submit(args: argparse.Namespace) -> int:
    from kfct.pipelines import kfp_client

    package = _package(args)
    info = kfp_client.submit(
        package,
        params=_params(args, package),
        run_name=args.run_name,
        experiment=args.experiment,
        service_account=args.service_account,
    )
    print(f"run {info.run_id} ({info.run_name}) in experiment {info.experiment_id}")
    print(f"pipeline {info.pipeline_id} version {info.pipeline_version_id}")
    print(info.url)
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from kfct.errors import KfctError
    from kfct.pipelines import kfp_client

    if args.list and args.delete:
        raise KfctError("use either --list or --delete, not both")
    if args.list:
        rows = kfp_client.list_schedules(experiment=args.experiment)
        if not rows:
            print("no recurring runs")
        for r in rows:
            print(
                f"{r.recurring_run_id}  {r.status or '-':9}  cron={r.cron!r}  max_concurrency={r.max_concurrency}  "
                f"no_catchup={r.no_catchup}  {r.name}"
            )
        return 0
    if args.delete:
        kfp_client.delete_schedule(args.delete)
        print(f"deleted recurring run {args.delete}")
        return 0
    package = _package(args)
    cron = args.cron or _default_cron(getattr(args, "pipeline", "ct") or "ct")
    info = kfp_client.schedule(
        package,
        cron=cron,
        params=_params(args, package),
        name=args.name,
        experiment=args.experiment,
        max_concurrency=args.max_concurrency,
        no_catchup=not args.catchup,
        service_account=args.service_account,
        replace=args.replace,
    )
    print(
        f"recurring run {info.recurring_run_id} ({info.name}) {info.action}: cron {info.cron!r}, "
        f"max concurrency {info.max_concurrency}, catch-up {'off' if info.no_catchup else 'on'}"
    )
    print(info.url)
    return 0


# --------------------------------------------------------------------------- images
def image_builds(settings: Settings | None = None, code_version: str | None = None) -> list[dict]:
    """The three images: name, Dockerfile, target and the `docker build` argv for each."""
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    version = code_version or "unknown"
    specs: list[dict[str, Any]] = [
        {"name": "component", "image": s.component_image, "file": "Dockerfile", "target": "component"},
        {"name": "serving", "image": s.serving_image, "file": "Dockerfile", "target": "serving"},
        {"name": "train-gpu", "image": s.gpu_image, "file": "Dockerfile.gpu", "target": None},
    ]
    for spec in specs:
        argv = ["docker", "build", "-f", spec["file"]]
        if spec["target"]:
            argv += ["--target", spec["target"]]
        argv += ["--build-arg", f"KFCT_CODE_VERSION={version}", "-t", spec["image"], "."]
        spec["build"] = argv
        spec["push"] = ["docker", "push", spec["image"]]
    return specs


def kustomize_images(settings: Settings | None = None) -> list[dict]:
    """`images:` entries mapping the names the manifests carry (settings' defaults) to the configured ones.

    The component image (MLflow Deployment) and the serving image (ServingRuntime); the GPU
    training image is named only by the compiled IR."""
    from kfct.runtime.settings import Settings, get_settings

    s = settings or get_settings()
    default_registry = Settings.model_fields["image_registry"].default
    out = []
    for name in (s.component_image_name, s.serving_image_name):
        out.append({"name": f"{default_registry}/{name}", "newName": f"{s.image_registry}/{name}", "newTag": s.image_tag})
    return out


def set_kustomize_images(directory: str | Path, settings: Settings | None = None) -> list[dict]:
    """What `kustomize edit set image` does for the kfct images, without kustomize: the
    kustomization's `images:` entries for them are replaced, every other entry kept."""
    import yaml

    from kfct.errors import KfctError

    path = Path(directory) / "kustomization.yaml"
    if not path.is_file():
        raise KfctError(f"--set-kustomize: {path} not found (give a kustomization directory, e.g. manifests/overlays/prod)")
    data = yaml.safe_load(path.read_text()) or {}
    if data.get("kind") not in ("Kustomization", "Component"):
        raise KfctError(f"--set-kustomize: {path} is not a Kustomization")
    ours = kustomize_images(settings)
    names = {e["name"] for e in ours}
    data["images"] = [e for e in (data.get("images") or []) if e.get("name") not in names] + ours
    head = "".join(ln + "\n" for ln in path.read_text().splitlines() if ln.startswith("#"))  # keep the header comment
    path.write_text(head + yaml.safe_dump(data, sort_keys=False))
    return ours


def _batch(args: argparse.Namespace) -> int:
    """The batch-scoring pipeline on this machine (kfp.local, shards in parallel subprocesses)."""
    import json

    from kfct.pipelines.batch_scoring import run_batch_local

    out = run_batch_local(args.data_uri, n_shards=args.shards, alias=args.alias, output_uri=args.output_uri or "")
    out.pop("log", None)
    print(json.dumps(out, indent=2))
    return 0


def _manifests(args: argparse.Namespace) -> int:
    import yaml

    from kfct.cli.manifest_check import check_objects
    from kfct.errors import KfctError

    bad = 0
    for f in args.files:
        try:
            with Path(f).open() as fh:
                objs = [d for d in yaml.safe_load_all(fh) if d]
        except (OSError, yaml.YAMLError) as exc:
            raise KfctError(f"cannot read rendered manifests {f}: {exc}") from exc
        errors, unchecked = check_objects(objs)
        for e in errors:
            print(f"{f}: {e}")
        print(
            f"{f}: {len(objs)} objects, {len(errors)} schema errors"
            + (f"; no schema here for {', '.join(unchecked)}" if unchecked else "")
        )
        bad += len(errors)
    return 1 if bad else 0


def _cluster_check(args: argparse.Namespace) -> int:
    """The live cluster's prerequisites (kfct.cluster.cluster_check), read with the kubeconfig or in-cluster."""
    from kfct.cluster.cluster_check import ClusterReadError, check_cluster, format_table, kube_reader
    from kfct.runtime.settings import get_settings

    s = get_settings()
    read = kube_reader(args.kubeconfig, args.context, in_cluster=True if args.in_cluster else None)
    healthz = None
    if s.kfp_host or s.kf_pipelines_endpoint:  # the KFP API as `kfct submit` reaches it

        def healthz() -> dict:
            from kfct.pipelines import kfp_client

            try:
                host, token, _ = kfp_client._resolve_auth(s)
                return kfp_client._probe(host, token)
            except kfp_client.KfpError as exc:
                raise ClusterReadError(str(exc)) from exc

    workers = args.workers
    if workers is None:
        from kfct.config import load_config

        workers = load_config().train.workers
    rows = check_cluster(
        read, args.namespace or s.kfp_namespace, mode=s.kserve_deployment_mode, gpu=args.gpu, workers=workers, healthz=healthz
    )
    print(format_table(rows))
    return 0 if all(r.passed for r in rows) else 1


def _docker_ready() -> None:
    import shutil
    import subprocess

    from kfct.errors import KfctError

    if shutil.which("docker") is None:
        raise KfctError("docker not found on PATH: install Docker (or run `kfct images --dry-run` to see the commands)")
    try:
        probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KfctError(f"Docker engine unavailable: {exc}") from exc
    if probe.returncode != 0:
        first = (probe.stderr or probe.stdout).strip().splitlines()
        raise KfctError(f"Docker engine unavailable: {first[0] if first else 'docker info failed'}")


def _images(args: argparse.Namespace) -> int:
    import shlex
    import subprocess

    from kfct.errors import KfctError
    from kfct.governance.lineage import code_version

    if args.set_kustomize:
        for entry in set_kustomize_images(args.set_kustomize):
            print(f"{args.set_kustomize}: {entry['name']} -> {entry['newName']}:{entry['newTag']}")
        return 0
    wanted = set(args.only or [])
    specs = [s for s in image_builds(code_version=code_version()) if not wanted or s["name"] in wanted]
    if args.dry_run:
        for s in specs:
            print(shlex.join(s["build"]))
            if args.push:
                print(shlex.join(s["push"]))
        return 0
    _docker_ready()
    for s in specs:
        for argv in [s["build"]] + ([s["push"]] if args.push else []):
            print(f"$ {shlex.join(argv)}", flush=True)
            rc = subprocess.run(argv).returncode
            if rc != 0:
                raise KfctError(f"`{shlex.join(argv[:3])} ...` for the {s['name']} image failed with exit code {rc}")
    return 0


# --------------------------------------------------------------------------- parsers
def _common_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=DEFAULT_OUT, help="where the compiled YAML goes (default: build)")
    p.add_argument("--gpu", action="store_true", help="train on the CUDA image with an nvidia.com/gpu")
    p.add_argument("--package", help="send this compiled YAML instead of compiling")
    p.add_argument(
        "--data-uri",
        help="dataset://latest (default on the cluster: the pointer `kfct data push --tag` moves), s3://... or generate://N",
    )
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="pipeline parameter (repeatable)")
    p.add_argument("--experiment", help="KFP experiment (default: settings kfp_experiment)")
    p.add_argument("--service-account", help="Kubernetes SA the run uses (default: settings kfp_service_account)")
    p.add_argument(
        "--pipeline",
        choices=PIPELINES,
        default="ct",
        help="which pipeline: ct (default), monitoring (drift check) or batch (batch scoring)",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compile", help="compile the pipelines to build/*.yaml (type checking on)")
    c.add_argument("--out", default=DEFAULT_OUT)
    c.add_argument("--gpu", action="store_true", help="train on the CUDA image with an nvidia.com/gpu")
    c.set_defaults(func=_compile)

    s = sub.add_parser("submit", help="upload the CT pipeline to Kubeflow Pipelines and start a run")
    _common_run_args(s)
    s.add_argument("--run-name")
    s.add_argument("--reason", default="manual", help="run_reason parameter (lineage)")
    s.set_defaults(func=_submit)

    r = sub.add_parser("schedule", help="recurring CT runs on Kubeflow Pipelines: create, --list, --delete ID")
    _common_run_args(r)
    r.add_argument(
        "--cron",
        default=None,
        help="6-field KFP cron, seconds first; 5 fields accepted (default: ct 03:00 on the 1st of each "
        "month, batch 06:00 on the 1st, monitoring Mondays 04:00)",
    )
    r.add_argument(
        "--replace", action="store_true", help="replace a recurring run of the same name that differs (default: refuse)"
    )
    r.add_argument("--name", help="recurring run name")
    r.add_argument("--max-concurrency", type=int, default=1)
    r.add_argument("--catchup", action="store_true", help="backfill missed intervals (default: no catch-up)")
    r.add_argument("--reason", default="scheduled", help="run_reason parameter (lineage)")
    r.add_argument("--list", action="store_true", help="list recurring runs in the experiment")
    r.add_argument("--delete", metavar="ID", help="delete a recurring run")
    r.set_defaults(func=_schedule)

    i = sub.add_parser("images", help="docker build (and --push) the component, GPU-training and serving images")
    i.add_argument("--push", action="store_true", help="push after building")
    i.add_argument("--dry-run", action="store_true", help="print the docker commands only")
    i.add_argument("--only", action="append", choices=("component", "serving", "train-gpu"))
    i.add_argument(
        "--set-kustomize", metavar="DIR", help="write these image names and tag into DIR/kustomization.yaml `images:` (no docker)"
    )
    i.set_defaults(func=_images)

    b = sub.add_parser("batch", help="run the batch-scoring pipeline locally (kfp.local): shards scored in parallel")
    b.add_argument("--data-uri", required=True, help="any data URI ingest accepts (path, s3://, generate://N)")
    b.add_argument("--shards", type=int, default=2, help="number of shards (ParallelFor width)")
    b.add_argument("--alias", default="champion")
    b.add_argument("--output-uri", help="also copy the result under this s3:// prefix")
    b.set_defaults(func=_batch)

    m = sub.add_parser("manifests", help="check rendered manifests (kubectl kustomize output) against the API schemas")
    msub = m.add_subparsers(dest="manifests_cmd", required=True)
    mc = msub.add_parser("check", help="unknown fields and wrong types, per object, with their path")
    mc.add_argument("files", nargs="+", help="rendered YAML files")
    mc.set_defaults(func=_manifests)

    k = sub.add_parser("cluster", help="the live cluster: `cluster check` lists what kfct needs and what is missing")
    ksub = k.add_subparsers(dest="cluster_cmd", required=True)
    kc = ksub.add_parser("check", help="one line per prerequisite (ok / missing / wrong, and the fix); exit 0 only when all pass")
    kc.add_argument("--namespace", help="where kfct runs (default: settings kfp_namespace)")
    kc.add_argument("--gpu", action="store_true", help="also require schedulable GPU nodes (kfct compile --gpu)")
    kc.add_argument(
        "--workers", type=int, default=None, help="train.workers to check Kubeflow Trainer for (default: from the config)"
    )
    kc.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    kc.add_argument("--context", help="kubeconfig context (default: its current context)")
    kc.add_argument("--in-cluster", action="store_true", help="use the pod's service account (default inside a pod)")
    kc.set_defaults(func=_cluster_check)
