"""`kfct predict`: send records to a running model server (V1 protocol) and print the answer."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from kfct.cli.options import add_model_option

if TYPE_CHECKING:
    from kfct.config import RunConfig


def _records(args: argparse.Namespace, cfg: RunConfig) -> list[dict]:
    import math

    if not args.data:
        from kfct.data.sample_rows import sample_records

        return sample_records(cfg, args.rows)
    from kfct.data.datasource import read_dataset

    df = read_dataset(args.data).head(args.rows)
    df = df.drop(columns=[c for c in (cfg.dataset.label,) if c in df.columns])
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in df.to_dict("records")]


def _isvc_address(name: str, namespace: str | None) -> str:
    """The InferenceService's stable address (`status.url`, through the gateway: the canary split
    applies and the address survives promotions), never the predictor Service behind it."""
    import os

    from kfct.cluster.kserve_isvc import get_inference_service, kserve_client, stable_address
    from kfct.errors import KfctError
    from kfct.runtime.settings import get_settings

    ns = namespace or get_settings().kfp_namespace
    # $KUBECONFIG as read now (the kubernetes client reads it once, at its import), else its defaults
    isvc = get_inference_service(kserve_client(config_file=os.environ.get("KUBECONFIG") or None), name, ns)
    if isvc is None:
        raise KfctError(f"no InferenceService {ns}/{name}")
    url = stable_address(isvc)
    if not url:
        raise KfctError(
            f"InferenceService {ns}/{name} has no status.url yet: not ready, or KServe creates no "
            f"route for it (cluster-local, or Gateway API disabled: `kfct cluster check`)"
        )
    return url


def _predict(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    from kfct.config import load_config
    from kfct.errors import KfctError

    cfg = load_config()
    name = args.model_name or cfg.register_.model_name
    body = json.dumps({"instances": _records(args, cfg)}, default=str).encode()
    base = _isvc_address(args.isvc, args.namespace) if args.isvc else args.url
    url = f"{base.rstrip('/')}/v1/models/{name}:predict"
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise KfctError(f"{url}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise KfctError(
            f"{url}: cannot reach the model server ({getattr(exc, 'reason', exc)}); is `kfct serve` running?"
        ) from None
    from kfct.data.labels import label_value

    for pred in answer.get("predictions", []) if isinstance(answer, dict) else []:
        if isinstance(pred, dict) and "label" in pred:  # the user's own label value beside the 0/1
            pred[f"predicted_{cfg.dataset.label}"] = label_value(cfg, pred["label"])
    print(json.dumps(answer, indent=2, default=str))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="send sample rows of the current schema (or of --data) to a running server")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument(
        "--isvc",
        help="score through this InferenceService's stable address (status.url, via the "
        "gateway) instead of --url; kubeconfig or in-cluster",
    )
    p.add_argument("--namespace", help="the InferenceService's namespace (default: settings kfp_namespace)")
    add_model_option(p, help="model name (default from config)")
    p.add_argument("--data", help="take the records from this file (.csv/.parquet; the label is dropped)")
    p.add_argument("--rows", type=int, default=3)
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=_predict)
