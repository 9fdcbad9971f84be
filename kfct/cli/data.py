"""`kfct data generate|push`: synthetic datasets and content-addressed uploads."""

from __future__ import annotations

import argparse

from kfct.cli.options import command_group


def _generate(args: argparse.Namespace) -> int:
    from kfct.data.datagen import corrupt, generate, write_frame
    from kfct.errors import KfctError

    if args.part_rows is not None:
        return _generate_parts(args)
    try:
        df = generate(rows=args.rows, seed=args.seed, drift=args.drift, bias=args.bias)
        if args.corrupt:
            df = corrupt(df, args.corrupt, seed=args.seed)
        path = write_frame(df, args.out)
    except ValueError as exc:
        raise KfctError(str(exc)) from exc
    label = "churned"
    share = f", churn share {df[label].mean():.3f}" if label in df and df[label].notna().all() else ""
    print(f"wrote {path} ({len(df):,} rows x {df.shape[1]} cols{share})")
    return 0


def _generate_parts(args: argparse.Namespace) -> int:
    """Write a dataset in parts (kfct.data.parts), generated chunk by chunk: one part in memory at a time."""
    from kfct.data import parts
    from kfct.data.datagen import generate_chunks
    from kfct.errors import KfctError

    if args.corrupt:
        raise KfctError("--corrupt applies to one file, not to --part-rows")
    try:
        parts.check_part_rows(args.part_rows)
        manifest = parts.write_parts(
            generate_chunks(args.rows, seed=args.seed, drift=args.drift, bias=args.bias, chunk_rows=args.part_rows),
            args.out,
            args.part_rows,
        )
    except ValueError as exc:
        raise KfctError(str(exc)) from exc
    print(f"wrote {args.out} ({manifest['rows']:,} rows in {len(manifest['parts'])} parts; version {manifest['version']})")
    return 0


def _push(args: argparse.Namespace) -> int:
    from kfct.data.datastore import push_dataset

    uri = push_dataset(args.path, tag=args.tag, part_rows=args.part_rows)
    print(uri)
    if args.tag:
        print(f"dataset://{args.tag} -> {uri}")
    return 0


def _outcomes(args: argparse.Namespace) -> int:
    from kfct.contracts.prediction_log import read_prediction_log
    from kfct.data.datagen import realized_outcomes, write_frame
    from kfct.errors import KfctError

    preds = read_prediction_log(since=args.since)
    try:
        df = realized_outcomes(preds, seed=args.seed, drift=args.drift, max_delay_days=args.max_delay_days)
    except ValueError as exc:
        raise KfctError(str(exc)) from exc
    path = write_frame(df, args.out)
    print(f"wrote {path} ({len(df):,} customers' outcomes, churn share {df['churned'].mean():.3f})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from kfct.data.corruptions import CORRUPTIONS

    dsub = command_group(sub, "data", "generate or push datasets", "data_command")
    g = dsub.add_parser("generate", help="synthetic telecom customers (parquet or csv by extension)")
    g.add_argument("--rows", type=int, default=100_000)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--drift", type=float, default=0.0, help="shift features and concept (0 = none, 1 = strong)")
    g.add_argument("--bias", type=float, default=0.0, help="make churn depend on age group (fairness tests)")
    g.add_argument("--corrupt", choices=CORRUPTIONS, help="break the data in one named way (validation tests)")
    g.add_argument("--out", required=True, help="output .parquet or .csv (a directory with --part-rows)")
    g.add_argument(
        "--part-rows",
        type=int,
        help="write a dataset in parts of this many rows into the directory --out, generated chunk by chunk (for large --rows)",
    )
    g.set_defaults(func=_generate)
    p = dsub.add_parser("push", help="upload a dataset content-addressed to s3://<bucket>/datasets/<sha256>.parquet")
    p.add_argument("path", help="a .parquet/.csv file or a parts directory (_manifest.json + parts)")
    p.add_argument(
        "--part-rows",
        type=int,
        help="push in parts of this many rows (content-addressed parts + "
        "manifest under datasets/<manifest sha256>/); a parquet file of "
        "more than 1,000,000 rows is split with 250,000 by default",
    )
    p.add_argument(
        "--tag",
        help="also move the pointer dataset://TAG (e.g. latest) to this snapshot: "
        "scheduled and drift-triggered runs ingest what it names at run time",
    )
    p.set_defaults(func=_push)
    o = dsub.add_parser(
        "outcomes",
        help="realized churn for the customers in the prediction log, from the "
        "generator's ground truth (the outcome loop on the embedded default)",
    )
    o.add_argument("--out", required=True, help="output .parquet or .csv")
    o.add_argument("--since", help="only customers served since (ISO time)")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--drift", type=float, default=0.0, help="the concept drift the world has moved by")
    o.add_argument("--max-delay-days", type=float, default=28.0, help="outcomes observed 1..N days after the prediction")
    o.set_defaults(func=_outcomes)
