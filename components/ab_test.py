"""A/B tests and shadow evaluation judged on realized outcomes.

Arm A is the champion, arm B a registered version given a sticky share of customers
(the router hashes the id; on a cluster the InferenceService split). Once outcomes
arrive (`kfct outcomes push`), each arm's customers are judged on what really
happened: per-customer correctness (the articles' metric) with a two-proportion
z-test and Welch's t-test, AUC with DeLong, effect sizes (Cohen's h, d), and the
labelled customers still needed for the configured minimum effect and power.

Peeking: `kfct ab report` may be run after every batch of outcomes, so the decision
never uses the fixed-horizon p-value; it uses the always-valid mSPRT confidence
sequence, whose running intersection, and the verdict recorded at the look that
concluded it, are stored with the test (a registered-model tag, shared by every pod).

Pure cores (`ab_report_core`, `shadow_report_core`, `decide_core`) take frames and
plain values; the thin functions below them read the registry and the logs, move
aliases (compare-and-set) and write the audit trail.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from kfct.errors import KfctError

if TYPE_CHECKING:
    import datetime as dt

    import pandas as pd
    from kserve import KServeClient  # kserve ships no types: Any to mypy, named for the reader

    from kfct.config import RunConfig
    from kfct.evidence.abstats import SequentialTest
    from kfct.runtime.settings import Settings

    Since = str | float | dt.datetime | None  # a time the prediction log reads from (a pd.Timestamp is a datetime)

log = logging.getLogger("kfct.components.ab_test")
STATE_TAG = "kfct.ab_test"


class ABTestError(KfctError):
    """An A/B test that cannot be started, reported or stopped as asked."""


def ab_settings(cfg: RunConfig) -> dict[str, Any]:
    ab = cfg.ab
    min_effect = float(ab.min_effect)
    return {
        "alpha": float(ab.alpha),
        "power": float(ab.power),
        "min_effect": min_effect,
        "tau": float(ab.msprt_tau or min_effect),
        "max_duration_days": float(ab.max_duration_days),
        "min_per_arm": int(ab.min_per_arm),
        "percent": float(ab.percent),
        "shadow_min_improvement": float(ab.shadow_min_improvement),
    }


# --------------------------------------------------------------------------- pure cores


def per_customer(joined: pd.DataFrame, role: str, version: str, since: Since = None) -> pd.DataFrame:
    """One row per customer for an arm: its latest judged prediction (independent observations)."""
    import pandas as pd

    f = joined[(joined["role"] == role) & (joined["model_version"].astype(str) == str(version))]
    if since is not None:
        f = f[f["ts"] >= pd.Timestamp(since)]
    return f.sort_values("ts", kind="stable").drop_duplicates("customer_id", keep="last")


def ab_report_core(
    joined: pd.DataFrame, state: dict[str, Any], cfg: RunConfig, now: float | None = None, record_look: bool = True
) -> dict[str, Any]:
    """Per-arm realized metrics, the tests, effect sizes, sample size and the sequential decision."""

    from kfct.evidence import abstats

    st = ab_settings(cfg)
    now = time.time() if now is None else now
    a = per_customer(joined, "champion", state["arm_a"], state.get("started_at_iso"))
    b = per_customer(joined, "canary", state["arm_b"], state.get("started_at_iso"))
    ca, cb = (a["label"].to_numpy(int) == a["outcome"].to_numpy(int)), (b["label"].to_numpy(int) == b["outcome"].to_numpy(int))
    out: dict[str, Any] = {
        "model_name": state["model_name"],
        "arm_a": state["arm_a"],
        "arm_b": state["arm_b"],
        "percent_b": state["percent"],
        "started_at": state["started_at_iso"],
        "metric": "accuracy (per-customer correctness)",
        "alpha": st["alpha"],
        "arms": {"A": _arm(a, ca), "B": _arm(b, cb)},
        "sequential_method": (
            "mSPRT always-valid p-value (normal mixture, tau="
            f"{st['tau']:g}); the running intersection of its confidence sequences over "
            "{looks} look(s) decides, at the look that excludes 0; "
            "fixed-horizon tests shown for reference only"
        ),
    }
    n_a, n_b = len(a), len(b)
    seq = abstats.SequentialTest.from_json(state.get("sequential"), st["alpha"], st["tau"])
    if n_a >= 2 and n_b >= 2:
        out["z_test"] = abstats.two_proportion_ztest(int(ca.sum()), n_a, int(cb.sum()), n_b, st["alpha"]).to_json()
        out["welch"] = abstats.welch_ttest(ca.astype(float), cb.astype(float), st["alpha"]).to_json()
        out["cohens_h"] = out["z_test"]["extra"]["cohens_h"]
        out["cohens_d"] = out["welch"]["extra"]["cohens_d"]
        try:
            out["auc"] = abstats.delong_unpaired(
                a["probability"], a["outcome"], b["probability"], b["outcome"], st["alpha"]
            ).to_json()
        except ValueError as exc:
            out["auc"] = {"skipped": str(exc)}
        p_a = float(ca.mean())
        need = abstats.n_per_arm(p_a, st["min_effect"], st["alpha"], st["power"])
        out["sample_size"] = {
            "per_arm_needed": need,
            "min_effect": st["min_effect"],
            "power": st["power"],
            "more_needed": max(0, need - n_a) + max(0, need - n_b),
        }
    if not record_look:  # what this look would conclude, without recording it
        import dataclasses

        seq = dataclasses.replace(seq)
    if n_a >= st["min_per_arm"] and n_b >= st["min_per_arm"]:
        diff, var = abstats.mean_diff_variance(ca.astype(float), cb.astype(float))
        out["sequential"] = {**seq.look(diff, var), "diff": diff}
    else:
        out["sequential"] = {
            "skipped": f"fewer than {st['min_per_arm']} labelled customers in an arm (A {n_a}, B {n_b})",
            "running_p_value": seq.min_p,
        }
    out["sequential_method"] = out["sequential_method"].format(looks=seq.looks)
    out["sequential_state"] = seq.to_json()
    out["decision"] = decide_core(seq, out, state, st, now)
    if seq.verdict is not None and "sample_size" in out:
        out["sample_size"]["more_needed"] = 0  # concluded: no more customers are needed
        out["sample_size"]["concluded"] = True
    return out


def _arm(frame: pd.DataFrame, correct: pd.Series) -> dict[str, Any]:
    import numpy as np

    from kfct.evidence.outcomes import _metrics

    if len(frame) == 0:
        return {"n": 0}
    m = _metrics(frame["outcome"], frame["probability"], frame["label"])
    m["correct"] = int(np.asarray(correct).sum())
    return m


def decide_core(
    seq: SequentialTest, report: dict[str, Any], state: dict[str, Any], st: dict[str, Any], now: float
) -> dict[str, Any]:
    """promote_b / stop_b (keep A) / continue, from the always-valid confidence sequence and the max duration.

    The decision, its direction and its interval are the sequential test's verdict as recorded at
    the look that concluded it (`SequentialTest`), never the difference seen at a later look."""
    elapsed_days = (now - float(state["started_at"])) / 86400.0
    if seq.verdict is not None:
        lo, hi = seq.concluded_ci or [seq.ci_low, seq.ci_high]
        at = (
            f"concluded at look {seq.concluded_at_look}: accuracy B-A {seq.concluded_diff:+.4f}, "
            f"confidence sequence {lo:+.4f}..{hi:+.4f} (alpha {st['alpha']:g})"
        )
        if seq.verdict == "b_better":
            return {"action": "promote_b", "reason": f"B better, {at}", "concluded": True}
        if seq.verdict == "b_worse":
            return {"action": "stop_b", "reason": f"B worse, {at}; keep A", "concluded": True}
        return {
            "action": "stop_b",
            "reason": f"the confidence sequences disagree ({at}): the difference is not stable; keep A",
            "concluded": True,
        }
    if elapsed_days >= st["max_duration_days"]:
        return {
            "action": "stop_b",
            "reason": f"undecided after {elapsed_days:.1f} days (max {st['max_duration_days']:g}); keep A",
        }
    more = (report.get("sample_size") or {}).get("more_needed")
    return {
        "action": "continue",
        "reason": "not conclusive yet (always-valid p="
        f"{seq.min_p:.4g})" + (f"; about {more} more labelled customers for the minimum effect at the set power" if more else ""),
    }


def shadow_report_core(joined: pd.DataFrame, champion: str, shadow: str, cfg: RunConfig) -> dict[str, Any]:
    """Shadow vs production on the SAME requests (paired): realized accuracy, McNemar, paired DeLong.

    The articles' rule: promote when the shadow's realized accuracy beats production by at
    least `ab.shadow_min_improvement`; kfct also asks the paired test to be significant.
    """
    import numpy as np

    from kfct.evidence import abstats

    st = ab_settings(cfg)
    prod = joined[(joined["role"] == "champion") & (joined["model_version"].astype(str) == str(champion))]
    sh = joined[(joined["role"] == "shadow") & (joined["model_version"].astype(str) == str(shadow))]
    pairs = prod.merge(sh, on=["request_id", "customer_id"], suffixes=("_a", "_b"))
    pairs = pairs.sort_values("ts_a", kind="stable").drop_duplicates("customer_id", keep="last")
    out: dict[str, Any] = {
        "champion": str(champion),
        "shadow": str(shadow),
        "pairs": len(pairs),
        "min_improvement": st["shadow_min_improvement"],
        "alpha": st["alpha"],
    }
    if len(pairs) < 2:
        out.update(decision={"action": "continue", "reason": f"only {len(pairs)} paired outcome(s)"})
        return out
    y = pairs["outcome_a"].to_numpy(int)
    ca = pairs["label_a"].to_numpy(int) == y
    cb = pairs["label_b"].to_numpy(int) == y
    out["accuracy"] = {"champion": float(ca.mean()), "shadow": float(cb.mean()), "diff": float(cb.mean() - ca.mean())}
    out["mcnemar"] = abstats.mcnemar_paired(ca, cb)
    try:
        out["auc"] = abstats.delong_paired(y, pairs["probability_a"], pairs["probability_b"], st["alpha"]).to_json()
    except ValueError as exc:
        out["auc"] = {"skipped": str(exc)}
    diff, p = out["accuracy"]["diff"], out["mcnemar"]["p_value"]
    if diff >= st["shadow_min_improvement"] and p <= st["alpha"]:
        out["decision"] = {
            "action": "promote_shadow",
            "reason": f"shadow accuracy +{diff:.4f} >= {st['shadow_min_improvement']:g}, McNemar p={p:.3g}",
        }
    else:
        why = (
            f"improvement {diff:+.4f} < {st['shadow_min_improvement']:g}"
            if diff < st["shadow_min_improvement"]
            else f"McNemar p={p:.3g} > {st['alpha']:g}"
        )
        out["decision"] = {"action": "keep_champion", "reason": why}
    out["n_pairs_correct"] = {"champion": int(np.sum(ca)), "shadow": int(np.sum(cb))}
    return out


def format_report(r: dict[str, Any]) -> str:
    """The human summary `kfct ab report` prints."""
    lines = [
        f"A/B test {r['model_name']}: A = v{r['arm_a']} (champion), B = v{r['arm_b']} ({r['percent_b']:g}% of "
        f"customers), since {r['started_at']}"
    ]
    for arm in ("A", "B"):
        m = r["arms"][arm]
        if not m.get("n"):
            lines.append(f"  {arm}: no labelled customers yet")
            continue
        auc = "n/a" if m.get("roc_auc") is None else f"{m['roc_auc']:.3f}"
        rec = "n/a" if m.get("recall") is None else f"{m['recall']:.3f}"
        lines.append(
            f"  {arm}: n={m['n']} accuracy={m['accuracy']:.4f} recall={rec} auc={auc} "
            f"observed churn={m['observed_rate']:.3f} predicted={m['predicted_positive_rate']:.3f}"
        )
    if "z_test" in r:
        z = r["z_test"]
        lines.append(
            f"  accuracy B-A = {z['diff']:+.4f} (95% CI {z['ci_low']:+.4f}..{z['ci_high']:+.4f}); "
            f"z-test p={z['p_value']:.4g}, Welch p={r['welch']['p_value']:.4g}; Cohen's h={r['cohens_h']:+.3f}, "
            f"d={r['cohens_d']:+.3f}"
        )
        if "diff" in (r.get("auc") or {}):
            a = r["auc"]
            lines.append(f"  AUC B-A = {a['diff']:+.4f} (DeLong p={a['p_value']:.4g})")
        ss = r["sample_size"]
        lines.append(
            f"  sample size: {ss['per_arm_needed']} per arm for +{ss['min_effect']:g} at power "
            f"{ss['power']:g}; "
            + (
                "the test is concluded: no more customers needed"
                if ss.get("concluded")
                else f"{ss['more_needed']} more labelled customers needed"
            )
        )
    seq = r["sequential"]
    if "skipped" in seq:
        lines.append(f"  sequential test: {seq['skipped']}")
    else:
        lo, hi = seq["running_ci"]
        lines.append(
            f"  sequential test: always-valid p={seq['running_p_value']:.4g} (look {seq['looks']}), "
            f"confidence sequence {lo:+.4f}..{hi:+.4f}"
            + (f"; concluded at look {seq['concluded_at_look']}" if seq.get("verdict") else "")
        )
    lines.append(f"  method: {r['sequential_method']}")
    if r.get("sample"):
        lines.append(f"  judged on: {r['sample']['text']}")
    lines.append(f"  decision: {r['decision']['action']}: {r['decision']['reason']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- adapters: registry, traffic, audit


def read_state(model_name: str) -> dict[str, Any] | None:
    from mlflow.exceptions import MlflowException

    from kfct.governance import registry

    registry.setup()
    try:
        rm = registry.client().get_registered_model(model_name)
    except MlflowException as exc:
        raise ABTestError(f"model {model_name} is not registered: {exc}") from None
    raw = (rm.tags or {}).get(STATE_TAG)
    return json.loads(raw) if raw else None


def write_state(model_name: str, state: dict[str, Any] | None) -> None:
    from kfct.governance import registry

    c = registry.client()
    if state is None:
        c.delete_registered_model_tag(model_name, STATE_TAG)
    else:
        c.set_registered_model_tag(model_name, STATE_TAG, json.dumps(state, sort_keys=True))


def _open_arm(
    model_name: str,
    champion: str,
    version: str,
    percent: float,
    target: str,
    cfg: RunConfig,
    settings: Settings | None = None,
    reason: str = "",
    namespace: str | None = None,
    client: KServeClient | None = None,
) -> dict[str, Any]:
    """Give `version` a sticky share of traffic beside the champion.

    Local: the split file a running server follows. Cluster: the deploy stage's own code
    (canary in the InferenceService's deployment mode: `spec.canary` or `canaryTrafficPercent`).
    """
    if target == "local":
        from kfct.contracts.split_state import update_state

        st = update_state(
            model_name,
            champion_version=str(champion),
            canary_version=str(version),
            canary_percent=float(percent),
            mode="canary",
            reason=reason,
        )
        return {"generation": st.generation}
    from kfct.components.deploy import deploy_version

    out = deploy_version(
        model_name, version, cfg, target="cluster", canary_percent=percent, client=client, namespace=namespace, settings=settings
    )
    return {"isvc": out.get("isvc", model_name), "action": out.get("action")}


def _close_arm(
    model_name: str,
    keep: str,
    drop: str | None,
    promoted: bool,
    target: str,
    settings: Settings | None = None,
    reason: str = "",
    namespace: str | None = None,
    client: KServeClient | None = None,
) -> dict[str, Any]:
    """All traffic to `keep` in one step. Cluster: promote the canary, or roll back to the previous
    ready predictor, through the rollout's backend (which knows both deployment modes)."""
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    if target == "local":
        from kfct.contracts.split_state import update_state

        st = update_state(
            model_name, champion_version=str(keep), canary_version=None, canary_percent=0.0, mode="canary", reason=reason
        )
        return {"generation": st.generation}
    from kfct.components.rollout import ClusterBackend

    backend = ClusterBackend(
        model_name,
        isvc_name=model_name,
        namespace=namespace or s.kfp_namespace,
        prometheus_url=s.prometheus_url or "",
        kserve_client=client,
        settings=s,
    )
    if promoted:
        backend.promote(str(keep))
    else:
        backend.rollback(str(keep), str(drop) if drop else "")
    return {"isvc": model_name, "mode": backend.mode()}


def _target(target: str) -> str:
    from kfct.runtime.settings import get_settings

    return get_settings().target(target)


def promote_cas(model_name: str, expected_champion: str, new_version: str, reason: str) -> None:
    """Move `champion` to `new_version` only if it still points at `expected_champion`."""
    from kfct.governance import registry

    # Under the registry lock every champion mover shares (register, rollout, A/B): compare,
    # re-verify the lock, write, read back (kfct.governance.registry.compare_and_set_alias).
    with registry.champion_lock(model_name) as lock:
        current = registry.alias_version(model_name, "champion")
        if str(current) != str(expected_champion):
            raise ABTestError(
                f"champion moved to v{current} since the test started against v{expected_champion}; "
                "not promoting (start a new test against the current champion)"
            )
        try:
            registry.compare_and_set_alias(lock, model_name, "champion", str(expected_champion), str(new_version), reason=reason)
        except registry.AliasConflict as exc:
            raise ABTestError(f"champion alias did not move to v{new_version}: {exc}") from exc


def ab_start(
    model_name: str,
    version: str,
    cfg: RunConfig,
    percent: float | None = None,
    target: str = "auto",
    settings: Settings | None = None,
    now: float | None = None,
    namespace: str | None = None,
    client: KServeClient | None = None,
) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    from kfct.governance import audit, registry

    version, target = str(version), _target(target)
    pct = float(ab_settings(cfg)["percent"] if percent is None else percent)
    if not 0 < pct < 100:
        raise ABTestError(f"--percent must be between 0 and 100 (exclusive) for an A/B test, got {pct:g}")
    registry.setup(settings)
    champion = registry.alias_version(model_name, "champion")
    if champion is None:
        raise ABTestError(f"{model_name} has no champion: arm A must be a serving champion")
    if champion == version:
        raise ABTestError(f"v{version} is already the champion; choose another version for arm B")
    try:
        mv = registry.client().get_model_version(model_name, version)
    except MlflowException:
        raise ABTestError(f"{model_name} v{version} is not registered") from None
    if (mv.tags or {}).get("rejected") == "true":
        raise ABTestError(f"{model_name} v{version} was rejected earlier; register a new version")
    existing = read_state(model_name)
    if existing and existing.get("status") == "running":
        raise ABTestError(f"an A/B test is already running (B = v{existing['arm_b']}); stop it first")
    now = time.time() if now is None else now
    state = {
        "model_name": model_name,
        "arm_a": champion,
        "arm_b": version,
        "percent": pct,
        "status": "running",
        "started_at": now,
        "started_at_iso": _iso(now),
        "target": target,
        "sequential": None,
    }
    traffic = _open_arm(
        model_name,
        champion,
        version,
        pct,
        target,
        cfg,
        settings,
        reason=f"A/B test: B=v{version} {pct:g}%",
        namespace=namespace,
        client=client,
    )
    if target == "local":  # on a cluster the deploy stage's code set it with the canary
        registry.set_alias(model_name, "challenger", version, reason=f"A/B test arm B at {pct:g}%")
    write_state(model_name, state)
    audit.record("ab_started", model_name=model_name, version=version, champion=champion, percent=pct, target=target, **traffic)
    return state


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def gather_joined(
    cfg: RunConfig, model_name: str, since: Since = None, settings: Settings | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Served predictions joined with their outcomes, and what they are a sample of.

    At most `outcomes.max_predictions` predictions (a sample by customer past it,
    `kfct.contracts.prediction_log.sample_prediction_log`) and only those customers' outcomes are read,
    so memory is bounded however long the log and however many outcomes are stored."""
    from kfct.contracts.prediction_log import sample_prediction_log
    from kfct.evidence.outcomes import join_predictions, stored_outcomes

    bound = int(cfg.outcomes.max_predictions)
    preds, total = sample_prediction_log(bound, since=since, settings=settings, model_name=model_name)
    outcomes = stored_outcomes(settings, ids=preds["customer_id"])
    joined = join_predictions(preds, outcomes, cfg.outcomes.label_horizon_days)
    return joined, sample_statement(len(preds), total, bound)


def sample_statement(sampled: int, total: int, bound: int) -> dict[str, Any]:
    """What a realized-performance report judged: all served predictions, or a bounded sample of them."""
    whole = sampled >= total
    text = (
        f"all {total:,} served predictions"
        if whole
        else f"a sample of {sampled:,} of {total:,} served predictions (by customer; outcomes.max_predictions {bound:,})"
    )
    return {
        "predictions_total": int(total),
        "predictions_read": int(sampled),
        "max_predictions": int(bound),
        "sampled": not whole,
        "text": text,
    }


def ab_report(
    model_name: str, cfg: RunConfig, settings: Settings | None = None, now: float | None = None, record_look: bool = True
) -> dict[str, Any]:
    from kfct.governance import audit

    state = read_state(model_name)
    if not state or state.get("status") != "running":
        raise ABTestError(f"no A/B test is running for {model_name}: start one with `kfct ab start --version N`")
    joined, sample = gather_joined(cfg, model_name, since=state["started_at"], settings=settings)
    report = ab_report_core(joined, state, cfg, now=now, record_look=record_look)
    report["sample"] = sample
    if record_look:
        state["sequential"] = report["sequential_state"]
        write_state(model_name, state)
        audit.record(
            "ab_reported",
            model_name=model_name,
            version=state["arm_b"],
            champion=state["arm_a"],
            n_a=report["arms"]["A"].get("n", 0),
            n_b=report["arms"]["B"].get("n", 0),
            running_p_value=report["sequential_state"]["min_p"],
            decision=report["decision"]["action"],
        )
    return report


def ab_stop(
    model_name: str,
    promote: str,
    cfg: RunConfig,
    settings: Settings | None = None,
    reason: str = "",
    stats: dict[str, Any] | None = None,
    namespace: str | None = None,
    client: KServeClient | None = None,
) -> dict[str, Any]:
    """End the test: `B` promotes arm B (compare-and-set against arm A), `A` keeps the champion."""
    from kfct.governance import audit, registry

    if promote not in ("A", "B"):
        raise ABTestError(f"--promote must be A or B, got {promote!r}")
    state = read_state(model_name)
    if not state or state.get("status") != "running":
        raise ABTestError(f"no A/B test is running for {model_name}")
    a, b = state["arm_a"], state["arm_b"]
    if promote == "B":
        promote_cas(model_name, a, b, reason=f"A/B test: {reason or 'operator promoted B'}")
        traffic = _close_arm(
            model_name,
            b,
            a,
            True,
            state["target"],
            settings,
            reason=f"A/B test promoted v{b}",
            namespace=namespace,
            client=client,
        )
        registry.set_version_tag(model_name, b, "ab_status", "promoted")
    else:
        traffic = _close_arm(
            model_name,
            a,
            b,
            False,
            state["target"],
            settings,
            reason=f"A/B test stopped v{b}",
            namespace=namespace,
            client=client,
        )
        registry.set_version_tag(model_name, b, "ab_status", "stopped")
    if registry.alias_version(model_name, "challenger") == b:
        registry.delete_alias(model_name, "challenger", reason="A/B test ended")
    state.update(status="promoted" if promote == "B" else "stopped", ended_at_iso=_iso(time.time()))
    write_state(model_name, state)
    audit.record(
        "ab_stopped",
        model_name=model_name,
        version=b,
        champion=a,
        promoted=promote,
        reason=reason or "operator",
        stats=stats or {},
        **traffic,
    )
    return {
        "model_name": model_name,
        "promoted": promote,
        "arm_a": a,
        "arm_b": b,
        "champion": b if promote == "B" else a,
        "reason": reason or "operator",
    }


def ab_decide(model_name: str, cfg: RunConfig, settings: Settings | None = None, now: float | None = None) -> dict[str, Any]:
    """Report once (a recorded look) and act on it: promote B, stop B, or continue."""
    report = ab_report(model_name, cfg, settings=settings, now=now)
    action = report["decision"]["action"]
    stats = {
        "running_p_value": report["sequential_state"]["min_p"],
        "looks": report["sequential_state"]["looks"],
        "n_a": report["arms"]["A"].get("n", 0),
        "n_b": report["arms"]["B"].get("n", 0),
        "diff": (report.get("sequential") or {}).get("diff"),
    }
    if action == "promote_b":
        return {"report": report, "stop": ab_stop(model_name, "B", cfg, settings, report["decision"]["reason"], stats)}
    if action == "stop_b":
        return {"report": report, "stop": ab_stop(model_name, "A", cfg, settings, report["decision"]["reason"], stats)}
    return {"report": report, "stop": None}


def shadow_report(
    model_name: str, cfg: RunConfig, settings: Settings | None = None, promote: bool = False, since: Since = None
) -> dict[str, Any]:
    """Shadow vs champion on realized outcomes; with `promote`, act on the articles' rule (CAS)."""
    from kfct.contracts.split_state import read_state as read_split
    from kfct.contracts.split_state import state_path
    from kfct.governance import audit, registry

    registry.setup(settings)
    champion = registry.alias_version(model_name, "champion")
    split = read_split(state_path(model_name))
    shadow = split.canary_version if split and split.mode == "shadow" else registry.alias_version(model_name, "challenger")
    if champion is None or shadow is None:
        raise ABTestError(f"{model_name}: need a champion and a shadow version (deploy one with `kfct deploy --shadow`)")
    joined, sample = gather_joined(cfg, model_name, since=since, settings=settings)
    rep = shadow_report_core(joined, champion, shadow, cfg)
    rep["sample"] = sample
    audit.record(
        "shadow_reported",
        model_name=model_name,
        version=shadow,
        champion=champion,
        pairs=rep["pairs"],
        decision=rep["decision"]["action"],
        accuracy=rep.get("accuracy"),
    )
    if promote and rep["decision"]["action"] == "promote_shadow":
        promote_cas(model_name, champion, shadow, reason=f"shadow: {rep['decision']['reason']}")
        _close_arm(model_name, shadow, champion, True, _target("auto"), settings, reason=f"shadow v{shadow} promoted")
        if registry.alias_version(model_name, "challenger") == shadow:
            registry.delete_alias(model_name, "challenger", reason="shadow promoted")
        audit.record(
            "shadow_promoted", model_name=model_name, version=shadow, champion=champion, reason=rep["decision"]["reason"]
        )
        rep["promoted"] = True
    return rep


def roll_back_traffic(
    model_name: str,
    target: str = "auto",
    settings: Settings | None = None,
    namespace: str | None = None,
    client: KServeClient | None = None,
) -> dict[str, Any]:
    """Blue-green / canary rollback in one step: all traffic back to the champion, which stayed loaded."""
    from kfct.governance import audit, registry

    registry.setup(settings)
    target = _target(target)
    champion = registry.alias_version(model_name, "champion")
    challenger = registry.alias_version(model_name, "challenger")
    if champion is None:
        raise ABTestError(f"{model_name} has no champion to roll back to")
    t0 = time.perf_counter()
    traffic = _close_arm(
        model_name,
        champion,
        challenger,
        False,
        target,
        settings,
        reason="rollback to champion",
        namespace=namespace,
        client=client,
    )
    if challenger and challenger != champion:
        registry.set_version_tag(model_name, challenger, "rollout_status", "rolled_back")
        registry.delete_alias(model_name, "challenger", reason="rollback")
    out = {
        "model_name": model_name,
        "champion": champion,
        "rolled_back": challenger,
        "target": target,
        "seconds": round(time.perf_counter() - t0, 4),
        **traffic,
    }
    audit.record("rollback", **{k: v for k, v in out.items() if k != "model_name"}, model_name=model_name, version=challenger)
    return out
