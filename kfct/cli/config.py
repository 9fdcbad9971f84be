"""`kfct config show|check` (the effective run config) and `kfct init` (a config from your data)."""

from __future__ import annotations

import argparse

from kfct.cli.options import command_group


def _show(args: argparse.Namespace) -> int:
    import yaml

    from kfct.config import config_dict, load_config

    print(yaml.safe_dump(config_dict(load_config(args.file)), sort_keys=False, default_flow_style=None, width=120), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    from kfct.config import feature_columns, load_config

    cfg = load_config(args.file)
    ds = cfg.dataset
    fair = ", ".join(ds.sensitive_features) or "none"
    print(
        f"ok: {args.file}: dataset {ds.name!r}, {len(ds.columns)} columns, {len(feature_columns(cfg))} "
        f"features, label {ds.label!r} (positive {ds.positive_label!r}), sensitive features: {fair}, "
        f"model {cfg.register_.model_name!r}"
    )
    return 0


def _init(args: argparse.Namespace) -> int:
    from kfct.data.schema_infer import init_config

    inferred = init_config(args.data, args.label, args.out, id_column=args.id, positive=args.positive)
    ds = inferred["dataset"]
    skip = {ds["label"], ds["id_column"], *ds["exclude_features"]}
    feats = sum(1 for c, spec in ds["columns"].items() if c not in skip and spec["dtype"] != "datetime")
    print(
        f"wrote {args.out}: {len(ds['columns'])} columns ({feats} features), label {ds['label']!r} "
        f"positive {ds['positive_label']!r}, "
        f"model {inferred['register']['model_name']!r}"
    )
    if inferred["_sensitive_candidates"]:
        print(f"review: sensitive-feature candidates {inferred['_sensitive_candidates']} are commented out in {args.out}")
    for col, note in inferred["_notes"].items():
        print(f"note: {col}: {note}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    csub = command_group(sub, "config", "show the effective run config or check a config file", "config_command")
    s = csub.add_parser("show", help="print the effective config (default merged with --config / FILE)")
    s.add_argument("file", nargs="?", help="config file (default: --config / KFCT_CONFIG, else the packaged default)")
    s.set_defaults(func=_show)
    k = csub.add_parser("check", help="validate a config file: unknown keys, types, columns named")
    k.add_argument("file")
    k.set_defaults(func=_check)
    i = sub.add_parser("init", help="infer a schema config from your data and write it as commented YAML")
    i.add_argument("--data", required=True, help="path (.parquet/.csv) or s3:// URI of your table")
    i.add_argument("--label", required=True, help="the column to predict (two values)")
    i.add_argument("--id", help="the id column (kept out of the model; sticky canary routing)")
    i.add_argument("--positive", help="the label value that is the positive class (default: 1 / true / yes)")
    i.add_argument("--out", required=True, help="where to write the YAML")
    i.set_defaults(func=_init)
