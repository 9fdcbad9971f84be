"""`kfct outcomes`, `kfct ab`, `kfct shadow`, `kfct rollback`: judging served models on what really happened."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from kfct.cli.options import command_group

if TYPE_CHECKING:
    from kfct.config import RunConfig


def _cfg_name(args: argparse.Namespace) -> tuple[RunConfig, str]:
    from kfct.config import load_config

    cfg = load_config()
    return cfg, (getattr(args, "model_name", None) or cfg.register_.model_name)


def _print_json(obj: object) -> None:
    import json

    print(json.dumps(obj, indent=1, default=str))


def _outcomes_push(args: argparse.Namespace) -> int:
    from kfct.components.validate import validate_frame
    from kfct.evidence.outcomes import load_outcomes, store_outcomes
    from kfct.governance import audit

    cfg, name = _cfg_name(args)
    try:
        frame = load_outcomes(args.path, cfg, validate_frame=validate_frame)
    except Exception as exc:
        audit.record("outcomes_rejected", model_name=name, source=str(args.path)[:300], error=str(exc)[:500])
        raise
    info = store_outcomes(frame)
    audit.record("outcomes_pushed", model_name=name, source=str(args.path)[:300], **info, positives=int(frame["outcome"].sum()))
    print(f"kfct: {info['rows']} outcomes ({int(frame['outcome'].sum())} positive) stored as {info['uri']}")
    if args.json:
        _print_json(info)
    return 0


def _outcomes_report(args: argparse.Namespace) -> int:
    from kfct.components.outcomes_report import outcomes_report
    from kfct.runtime.settings import get_settings

    cfg, name = _cfg_name(args)
    out = args.out or str(get_settings().home / "reports" / "realized")
    rep = outcomes_report(name, cfg, out, since=args.since, retrain=args.retrain, window=args.window)
    if args.json:
        _print_json(rep)
        return 0
    for r in rep["by_version"]:
        auc = "n/a" if r["roc_auc"] is None else f"{r['roc_auc']:.3f}"
        print(
            f"v{r['model_version']} ({r['role']}): n={r['n']} auc={auc} accuracy={r['accuracy']:.3f} "
            f"observed={r['observed_rate']:.3f} predicted={r['mean_probability']:.3f}"
        )
    print(f"judged on {rep['sample']['text']}")
    print(f"champion decay: {rep['decay']['reason']}")
    if rep.get("retrain"):
        print(f"retrain: {rep['retrain'].get('action')}: {rep['retrain'].get('reason')}")
    print(f"report: {rep['files']['html']}")
    return 0


def _ab_start(args: argparse.Namespace) -> int:
    from kfct.components.ab_test import ab_start

    cfg, name = _cfg_name(args)
    st = ab_start(name, args.version, cfg, percent=args.percent, target=args.target)
    print(
        f"kfct: A/B test started: A = v{st['arm_a']} (champion), B = v{st['arm_b']} at {st['percent']:g}% "
        f"(sticky by id), {st['target']}"
    )
    return 0


def _ab_report(args: argparse.Namespace) -> int:
    from kfct.components.ab_test import ab_report, format_report

    cfg, name = _cfg_name(args)
    rep = ab_report(name, cfg, record_look=not args.no_record)
    _print_json(rep) if args.json else print(format_report(rep))
    return 0


def _ab_stop(args: argparse.Namespace) -> int:
    from kfct.components.ab_test import ab_stop

    cfg, name = _cfg_name(args)
    out = ab_stop(name, args.promote, cfg, reason=args.reason or "")
    print(f"kfct: A/B test ended: champion is v{out['champion']} ({'B promoted' if args.promote == 'B' else 'A kept'})")
    return 0


def _ab_decide(args: argparse.Namespace) -> int:
    from kfct.components.ab_test import ab_decide, format_report

    cfg, name = _cfg_name(args)
    out = ab_decide(name, cfg)
    if args.json:
        _print_json(out)
    else:
        print(format_report(out["report"]))
        if out["stop"]:
            print(f"kfct: A/B test ended: champion is v{out['stop']['champion']}")
    return 0


def _shadow_report(args: argparse.Namespace) -> int:
    from kfct.components.ab_test import shadow_report

    cfg, name = _cfg_name(args)
    rep = shadow_report(name, cfg, promote=args.promote, since=args.since)
    if args.json:
        _print_json(rep)
        return 0
    print(f"shadow v{rep['shadow']} vs champion v{rep['champion']}: {rep['pairs']} paired customers with outcomes")
    print(f"  judged on {rep['sample']['text']}")
    if "accuracy" in rep:
        a = rep["accuracy"]
        print(
            f"  accuracy champion {a['champion']:.4f}, shadow {a['shadow']:.4f} ({a['diff']:+.4f}); "
            f"McNemar p={rep['mcnemar']['p_value']:.4g}"
        )
    print(
        f"  decision: {rep['decision']['action']}: {rep['decision']['reason']}" + (" (promoted)" if rep.get("promoted") else "")
    )
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from kfct.components.ab_test import roll_back_traffic

    _, name = _cfg_name(args)
    out = roll_back_traffic(name, target=args.target, namespace=args.namespace)
    print(
        f"kfct: all traffic back on champion v{out['champion']}"
        + (f" (v{out['rolled_back']} rolled back)" if out["rolled_back"] else "")
        + f" in {out['seconds']:.3f} s"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    osub = command_group(sub, "outcomes", "realized outcomes: push them, report realized performance", "outcomes_command")
    p = osub.add_parser("push", help="validate and store realized labels (id, label, observed_at); parquet/CSV/s3://")
    p.add_argument("path")
    p.add_argument("--model-name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_outcomes_push)
    r = osub.add_parser("report", help="realized performance per served version (Markdown, HTML, gauges)")
    r.add_argument("--model-name")
    r.add_argument("--since", help="only predictions served since (ISO time)")
    r.add_argument("--window", default="1D", help="time window for the per-window table (pandas freq, e.g. 1D, 7D)")
    r.add_argument("--out", help="report folder (default <KFCT_HOME>/reports/realized)")
    r.add_argument("--retrain", action="store_true", help="start a CT run when the champion's realized AUC decayed")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_outcomes_report)

    asub = command_group(sub, "ab", "A/B test: champion (A) vs a registered version (B) on realized outcomes", "ab_command")
    s = asub.add_parser("start", help="give version N a sticky share of customers as arm B")
    s.add_argument("--version", required=True)
    s.add_argument("--percent", type=float, help="share of customers on B (default ab.percent)")
    s.add_argument("--target", choices=("auto", "local", "cluster"), default="auto")
    s.add_argument("--model-name")
    s.set_defaults(func=_ab_start)
    rp = asub.add_parser("report", help="per-arm realized metrics, tests, effect size, sample size, decision")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--no-record", action="store_true", help="do not count this as a look of the sequential test")
    rp.add_argument("--model-name")
    rp.set_defaults(func=_ab_report)
    st = asub.add_parser("stop", help="end the test: --promote B (compare-and-set) or --promote A (keep champion)")
    st.add_argument("--promote", required=True, choices=("A", "B"))
    st.add_argument("--reason")
    st.add_argument("--model-name")
    st.set_defaults(func=_ab_stop)
    d = asub.add_parser("decide", help="report and act when conclusive (promote B / stop B / continue)")
    d.add_argument("--json", action="store_true")
    d.add_argument("--model-name")
    d.set_defaults(func=_ab_decide)

    shsub = command_group(sub, "shadow", "shadow version judged on realized outcomes", "shadow_command")
    srp = shsub.add_parser("report", help="shadow vs champion on the same customers (paired)")
    srp.add_argument("--promote", action="store_true", help="promote (compare-and-set) when the rule holds")
    srp.add_argument("--since")
    srp.add_argument("--json", action="store_true")
    srp.add_argument("--model-name")
    srp.set_defaults(func=_shadow_report)

    rb = sub.add_parser("rollback", help="all traffic back to the champion in one step (blue-green / canary)")
    rb.add_argument("--target", choices=("auto", "local", "cluster"), default="auto")
    rb.add_argument("--namespace")
    rb.add_argument("--model-name")
    rb.set_defaults(func=_rollback)
