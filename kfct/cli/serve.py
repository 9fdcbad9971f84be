"""`kfct serve`, `kfct deploy`, `kfct rollout`, `kfct score`: serving, canary and batch scoring."""

from __future__ import annotations

import argparse
from pathlib import Path

from kfct.cli.options import add_model_option


def _serve(args: argparse.Namespace) -> int:
    import logging

    from kfct.serving.server import options_from_args, serve

    opts = options_from_args(args)  # checks the canary arguments
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(opts)


def _deploy(args: argparse.Namespace) -> int:
    import json

    from kfct.components.deploy import deploy_version
    from kfct.config import load_config

    cfg = load_config()
    name = args.model_name or cfg.register_.model_name
    out = deploy_version(
        name, args.version, cfg, target=args.target, canary_percent=args.percent, shadow=args.shadow, namespace=args.namespace
    )
    where = out.get("state_path") or f"InferenceService {out.get('namespace')}/{out.get('isvc')} ({out.get('action')})"
    print(f"kfct: {name} v{out['version']} -> alias {out['alias']}, {out['mode']} {out['canary_percent']:g}% via {where}")
    if args.json:
        print(json.dumps(out, default=str))
    return 0


def _rollout(args: argparse.Namespace) -> int:
    import json

    from kfct.components.rollout import LocalRouterBackend, RolloutError, make_backend, rollout_version
    from kfct.config import load_config
    from kfct.runtime.settings import get_settings

    cfg = load_config()
    s = get_settings()
    name = args.model_name or cfg.register_.model_name
    backend = make_backend(
        name,
        args.target,
        s,
        cfg,
        server_url=args.url or [],
        prometheus_url=args.prometheus_url or "",
        isvc=args.isvc or "",
        namespace=args.namespace or "",
    )
    if isinstance(backend, LocalRouterBackend):
        from kfct.components.rollout import expire_deferred

        expired = expire_deferred(name, backend.state_path)  # a deferred canary whose deadline passed
        if expired:
            print(f"kfct rollout: {expired['reason']}: rolled back", flush=True)
    if isinstance(backend, LocalRouterBackend) and not backend.reachable():
        raise RolloutError(
            f"no kfct model server at {', '.join(backend.urls)}: start `kfct serve` first (the rollout judges live traffic)"
        )
    if args.retry:
        from kfct.components.rollout import retry_rejected

        retried = retry_rejected(name, args.retry)
        print(f"kfct rollout: retrying rejected v{args.retry} (was: {retried['previous_reason'][:200]})", flush=True)
    res = rollout_version(
        name,
        cfg,
        backend,
        steps=args.steps,
        bake_seconds=args.bake_seconds,
        canary_version=args.retry or args.version,
        poll_seconds=args.poll_seconds,
        log=lambda m: print(f"kfct rollout: {m}", flush=True),
    )
    verb = {
        "promoted": "PROMOTED",
        "rolled_back": "ROLLED BACK",
        "aborted": "ABORTED (infrastructure; not rejected, still challenger)",
    }.get(res.outcome, res.outcome)
    print(f"kfct: {name} v{res.canary_version} {verb} in {res.seconds:g} s: {'; '.join(res.reasons)}")
    if args.json:
        with Path(args.json).open("w") as fh:
            json.dump(res.to_json(), fh, indent=2)
    return 0 if res.outcome == "promoted" else 1


def _score(args: argparse.Namespace) -> int:
    from kfct.components.score import score_registered
    from kfct.config import load_config

    cfg = load_config()
    name = args.model_name or cfg.register_.model_name
    s = score_registered(
        args.input,
        args.output,
        name,
        alias=args.alias,
        version=args.version,
        id_column=cfg.dataset.id_column,
        chunk_rows=args.chunk_rows,
    )
    print(
        f"kfct: scored {s.rows:,} rows with {name} v{s.model_version} in {s.seconds:.2f} s "
        f"({s.rows_per_second:,.0f} rows/s; read {s.read_seconds:.2f} s, score {s.score_seconds:.2f} s, "
        f"write {s.write_seconds:.2f} s); {s.positives:,} predicted positive -> {s.output}"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    srv = sub.add_parser("serve", help="serve the champion (and a canary/shadow) with KServe on 127.0.0.1:8080")
    from kfct.serving.server import add_server_arguments

    add_server_arguments(srv)
    srv.set_defaults(func=_serve)

    dep = sub.add_parser("deploy", help="deploy a registered version as canary (alias challenger)")
    add_model_option(dep)
    dep.add_argument("--version", required=True)
    dep.add_argument("--percent", type=float, default=None, help="first canary share (default: first rollout step)")
    dep.add_argument("--shadow", action="store_true", help="shadow instead of canary (local server only)")
    dep.add_argument("--target", choices=["local", "cluster"], default="local")
    dep.add_argument("--namespace", default=None)
    dep.add_argument("--json", action="store_true", help="also print the result as JSON")
    dep.set_defaults(func=_deploy)

    ro = sub.add_parser("rollout", help="progressive canary rollout: promote or roll back by itself")
    add_model_option(ro)
    ro.add_argument("--version", default=None, help="canary version (default: alias challenger)")
    ro.add_argument(
        "--retry",
        default=None,
        metavar="VERSION",
        help="roll out again a version an earlier rollout rejected (lifts its rejected tag, audited)",
    )
    ro.add_argument("--steps", default=None, help="percent steps, e.g. 10,50,100 (default: config rollout.steps)")
    ro.add_argument("--bake-seconds", type=float, default=None, help="bake time per step (default: config)")
    ro.add_argument("--poll-seconds", type=float, default=None)
    ro.add_argument(
        "--url",
        action="append",
        default=None,
        help="a local model server; repeat for every replica (default: every live `kfct serve` "
        "registered under the home, else http://127.0.0.1:8080)",
    )
    ro.add_argument("--target", choices=["local", "cluster"], default="local")
    ro.add_argument("--prometheus-url", default=None, help="cluster: Prometheus HTTP API base URL (default: KFCT_PROMETHEUS_URL)")
    ro.add_argument("--isvc", default=None, help="cluster: InferenceService name (default: model name)")
    ro.add_argument("--namespace", default=None)
    ro.add_argument("--json", default=None, help="write the step-by-step result to this file")
    ro.set_defaults(func=_rollout)

    sc = sub.add_parser("score", help="batch-score a parquet of customers with the champion")
    sc.add_argument("--input", required=True)
    sc.add_argument("--output", required=True)
    add_model_option(sc)
    sc.add_argument("--alias", default="champion")
    sc.add_argument("--version", default=None)
    sc.add_argument("--chunk-rows", type=int, default=262_144)
    sc.set_defaults(func=_score)
