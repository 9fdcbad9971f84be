"""`kfct compile|submit|schedule|images`: the cluster side of kfct.

- `compile`: pipelines -> build/*.yaml (type checked), what the Kubeflow UI uploads.
- `submit`: compile, upload (new version if the pipeline exists), start a run, print its URL.
- `schedule`: compile, upload, create a recurring run (default monthly); `--list`, `--delete ID`.
- `images`: build (and with `--push`, push) the component, GPU-training and serving images.

Parsers only here; kfp, the compiler and docker are touched inside the handlers.
"""

from __future__ import annotations

DEFAULT_OUT = "build"


def _compile(args) -> int:
    from kfct.pipelines.compile import compile_all

    paths = compile_all(out_dir=args.out, gpu=args.gpu)
    for p in paths:
        print(f"compiled {p}")
    return 0


def _package(args) -> str:
    """The package to send: --package as given, else a fresh compile of the CT pipeline."""
    if getattr(args, "package", None):
        return args.package
    from kfct.pipelines.compile import compile_ct

    path = compile_ct(out_dir=args.out, gpu=args.gpu)
    print(f"compiled {path}")
    return str(path)


def _params(args, package: str) -> dict:
    """--param k=v plus the named shortcuts; data URIs must be reachable from the cluster."""
    from urllib.parse import urlparse

    from kfct.errors import DataSourceError
    from kfct.pipelines.kfp_client import parse_param_args, read_package

    params: dict = parse_param_args(args.param)
    if getattr(args, "data_uri", None):
        scheme = urlparse(args.data_uri).scheme
        if scheme not in ("s3", "generate", "dataset"):
            raise DataSourceError(
                f"data URI {args.data_uri!r} is a local path the cluster cannot read: "
                f"upload it first with `kfct data push {args.data_uri}` and pass the s3:// URI it prints")
        params["data_uri"] = args.data_uri
    declared = ((read_package(package).get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    if "code_version" in declared and "code_version" not in params:
        from kfct.lineage import code_version

        params["code_version"] = code_version()
    if "run_reason" in declared and "run_reason" not in params and getattr(args, "reason", None):
        params["run_reason"] = args.reason
    return params


def _submit(args) -> int:
    from kfct.pipelines import kfp_client

    package = _package(args)
    info = kfp_client.submit(package, params=_params(args, package), run_name=args.run_name,
                             experiment=args.experiment, service_account=args.service_account)
    print(f"run {info.run_id} ({info.run_name}) in experiment {info.experiment_id}")
    print(f"pipeline {info.pipeline_id} version {info.pipeline_version_id}")
    print(info.url)
    return 0


def _schedule(args) -> int:
    from kfct.errors import KfctError
    from kfct.pipelines import kfp_client

    if args.list and args.delete:
        raise KfctError("use either --list or --delete, not both")
    if args.list:
        rows = kfp_client.list_schedules(experiment=args.experiment)
        if not rows:
            print("no recurring runs")
        for r in rows:
            print(f"{r.recurring_run_id}  {r.status or '-':9}  cron={r.cron!r}  max_concurrency={r.max_concurrency}  "
                  f"no_catchup={r.no_catchup}  {r.name}")
        return 0
    if args.delete:
        kfp_client.delete_schedule(args.delete)
        print(f"deleted recurring run {args.delete}")
        return 0
    package = _package(args)
    info = kfp_client.schedule(package, cron=args.cron, params=_params(args, package), name=args.name,
                               experiment=args.experiment, max_concurrency=args.max_concurrency,
                               no_catchup=not args.catchup, service_account=args.service_account)
    print(f"recurring run {info.recurring_run_id} ({info.name}): cron {info.cron!r}, "
          f"max concurrency {info.max_concurrency}, catch-up {'off' if info.no_catchup else 'on'}")
    print(info.url)
    return 0


# --------------------------------------------------------------------------- images
def image_builds(settings=None, code_version: str | None = None) -> list[dict]:
    """The three images: name, Dockerfile, target and the `docker build` argv for each."""
    from kfct.settings import get_settings

    s = settings or get_settings()
    version = code_version or "unknown"
    specs = [
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


def _docker_ready() -> None:
    import shutil
    import subprocess

    from kfct.errors import KfctError

    if shutil.which("docker") is None:
        raise KfctError("docker not found on PATH: install Docker (or run `kfct images --dry-run` to see the commands)")
    try:
        probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                               text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KfctError(f"Docker engine unavailable: {exc}") from exc
    if probe.returncode != 0:
        first = (probe.stderr or probe.stdout).strip().splitlines()
        raise KfctError(f"Docker engine unavailable: {first[0] if first else 'docker info failed'}")


def _images(args) -> int:
    import shlex
    import subprocess

    from kfct.errors import KfctError
    from kfct.lineage import code_version

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
def _common_run_args(p) -> None:
    p.add_argument("--out", default=DEFAULT_OUT, help="where the compiled YAML goes (default: build)")
    p.add_argument("--gpu", action="store_true", help="train on the CUDA image with an nvidia.com/gpu")
    p.add_argument("--package", help="send this compiled YAML instead of compiling")
    p.add_argument("--data-uri", help="dataset://latest (default on the cluster: the pointer `kfct data push --tag` "
                                      "moves), s3://... or generate://N")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="pipeline parameter (repeatable)")
    p.add_argument("--experiment", help="KFP experiment (default: settings kfp_experiment)")
    p.add_argument("--service-account", help="Kubernetes SA the run uses (default: settings kfp_service_account)")


def add_commands(sub) -> None:
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
    r.add_argument("--cron", default="0 0 3 1 * *",
                   help="6-field KFP cron, seconds first (default: 03:00 on the 1st of each month); 5 fields accepted")
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
    i.set_defaults(func=_images)
