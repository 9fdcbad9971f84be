"""`kfct monitor` (drift check, retrain when due) and `kfct audit verify|show`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kfct.cli.options import command_group


def _monitor(args: argparse.Namespace) -> int:
    import json

    from kfct.config import load_config
    from kfct.pipelines.monitoring import format_monitor_summary, run_monitor

    cfg = load_config(args.config_file)
    source = args.current or "the serving prediction log"
    print(f"kfct: drift check of {source} against the champion's training snapshot ...", flush=True)
    summary = run_monitor(
        current_uri=args.current,
        dry_run=args.dry_run,
        force=args.force,
        since=args.since,
        ct_data_uri=args.retrain_data,
        cfg=cfg,
        model_name=args.model_name,
        mode=args.mode,
        via_kfp=args.kfp_local,
    )
    from kfct.data.labels import rate_name

    print(format_monitor_summary(summary, rate_name(cfg)))
    if args.json:
        with Path(args.json).open("w") as fh:
            json.dump(summary, fh, indent=2, default=str)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from kfct.governance import audit

    path = args.path or audit.default_path()
    res = audit.verify(path)
    if not res.ok:
        print(
            f"audit trail BROKEN at line {res.line}: {res.problem} ({res.entries} entries verified before it; {path})",
            file=sys.stderr,
        )
        return 1
    print(f"audit trail OK: {res.entries} entries, hash chain intact ({path})")
    mirror = args.mirror or (None if args.path else audit._mirror_uri())
    if mirror:
        from kfct.errors import KfctError

        try:
            m = audit.verify_mirror(mirror)
        except KfctError as exc:
            print(f"audit mirror not verified: {exc}", file=sys.stderr)
            return 2
        if not m.ok:
            print(f"audit mirror BROKEN: {m.problem} (entry {m.line}; {mirror})", file=sys.stderr)
            return 1
        print(f"audit mirror OK: {m.entries} entries from {m.writers} writers, every chain intact ({mirror})")
    return 0


def _fmt_entry(e: dict) -> str:
    skip = {"seq", "ts", "event", "prev", "hash", "model_name", "version"}
    who = e.get("model_name") or ""
    if e.get("version") not in (None, ""):
        who += f" v{e['version']}"
    rest = ", ".join(f"{k}={_short(v)}" for k, v in e.items() if k not in skip and v not in (None, "", [], {}))
    return f"{e.get('seq'):>5}  {e.get('ts')}  {e.get('event'):<20} {who:<24} {rest}"


def _short(v: object) -> str:
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


def _show(args: argparse.Namespace) -> int:
    import json

    from kfct.governance import audit

    entries = audit.history(args.model, args.version, path=args.path)
    if args.event:
        entries = [e for e in entries if e.get("event") == args.event]
    if args.json:
        print(json.dumps(entries, indent=2, default=str))
        return 0
    if not entries:
        what = (
            " for " + " ".join(x for x in (args.model, f"v{args.version}" if args.version else None) if x)
            if (args.model or args.version)
            else ""
        )
        print(f"no audit entries{what} ({args.path or audit.default_path()})")
        return 0
    for e in entries:
        print(_fmt_entry(e))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("monitor", help="drift check against the champion's training data; retrain when due")
    m.add_argument("--current", help="batch to check (path, s3://, generate://); default: the serving prediction log")
    m.add_argument("--since", help="prediction log rows since (ISO time); default: the last drift.window_days")
    m.add_argument(
        "--retrain-data",
        dest="retrain_data",
        help="dataset for the CT run a retrain starts (default: the --current batch when labelled)",
    )
    m.add_argument("--dry-run", action="store_true", help="report and decide, but start no CT run")
    m.add_argument("--force", action="store_true", help="start a CT run even without drift or within the cooldown")
    m.add_argument(
        "--mode",
        choices=["local", "cluster", "auto"],
        default="local",
        help="where a retrain runs: local kfp.local (default), the cluster's KFP API, or auto",
    )
    m.add_argument(
        "--kfp-local",
        dest="kfp_local",
        action="store_true",
        help="run the monitoring pipeline itself under kfp.local instead of in-process",
    )
    m.add_argument("--model-name", help="registered model name (default from config)")
    m.add_argument("--config-file", dest="config_file", help="YAML merged over the default config")
    m.add_argument("--json", help="also write the summary as JSON to this path")
    m.set_defaults(func=_monitor)

    asub = command_group(
        sub, "audit", "the hash-chained audit trail: verify it, show a model's history", "audit_command", metavar="ACTION"
    )
    v = asub.add_parser("verify", help="check the hash chain; non-zero exit naming the first broken line")
    v.add_argument("--path", help="audit file (default: <KFCT_HOME>/audit/audit.jsonl)")
    v.add_argument("--mirror", help="also verify the S3 mirror's segments (default: KFCT_AUDIT_S3_URI when set)")
    v.set_defaults(func=_verify)
    s = asub.add_parser("show", help="print the history (all, or of one model / version)")
    s.add_argument("--model", help="model name")
    s.add_argument("--version", help="model version")
    s.add_argument("--event", help="only this event type (e.g. alias_moved, retrain_triggered)")
    s.add_argument("--path", help="audit file (default: <KFCT_HOME>/audit/audit.jsonl)")
    s.add_argument("--json", action="store_true", help="print entries as JSON")
    s.set_defaults(func=_show)
