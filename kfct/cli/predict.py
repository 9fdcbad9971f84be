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
        from kfct.sample_rows import sample_records

        return sample_records(cfg, args.rows)
    from kfct.datasource import read_dataset

    df = read_dataset(args.data).head(args.rows)
    df = df.drop(columns=[c for c in (cfg.dataset.label,) if c in df.columns])
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]


def _predict(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    from kfct.config import load_config
    from kfct.errors import KfctError

    cfg = load_config()
    name = args.model_name or cfg.register_.model_name
    body = json.dumps({"instances": _records(args, cfg)}, default=str).encode()
    url = f"{args.url.rstrip('/')}/v1/models/{name}:predict"
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise KfctError(f"{url}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise KfctError(f"{url}: cannot reach the model server ({getattr(exc, 'reason', exc)}); "
                        f"is `kfct serve` running?") from None
    print(json.dumps(answer, indent=2))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="send sample rows of the current schema (or of --data) to a running server")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    add_model_option(p, help="model name (default from config)")
    p.add_argument("--data", help="take the records from this file (.csv/.parquet; the label is dropped)")
    p.add_argument("--rows", type=int, default=3)
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=_predict)
