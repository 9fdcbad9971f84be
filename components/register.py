"""Stage 6 — register: a model version with lineage tags, a model card, and an alias.

Runs only under the gate's `deploy`. Without a rollout configured the version
becomes `champion` at once; with one, it becomes `challenger` and the canary
rollout decides whether `champion` moves. Either way the move is a compare-and-set
under the registry lock against the champion the gate compared with (`register_version`).
"""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

if TYPE_CHECKING:
    from kfct.config import RunConfig


def lineage_tags(
    meta: dict, data_uri: str, dataset_sha256: str, pipeline_run: str, code_version: str, decision: dict
) -> dict[str, str]:
    m = decision.get("metrics", {})
    tags = {
        "dataset_sha256": dataset_sha256,
        "data_uri": data_uri,
        "pipeline_run": pipeline_run,
        "code_version": code_version,
        "mlflow_run_id": meta.get("mlflow_run_id", ""),
        "model_sha256": meta.get("model_sha256", ""),
        "model_kind": meta.get("model", ""),
        "threshold": f"{float(meta.get('threshold', 0.5)):.6f}",
        "gate.reason": "; ".join(decision.get("reasons", []))[:4000],
        "reference_uri": f"runs:/{meta.get('mlflow_run_id', '')}/data/train_snapshot.parquet",
    }
    for k in ("roc_auc", "recall", "precision", "f1"):
        if k in m:
            tags[f"test_{k}"] = f"{float(m[k]):.4f}"
    return tags


def register_version(
    meta: dict,
    decision: dict,
    cfg: "RunConfig",
    model_name: str,
    data_uri: str,
    dataset_sha256: str,
    pipeline_run: str,
    code_version: str,
    regate: "Callable[[str], dict] | None" = None,
) -> dict:
    """Register the version and move its alias by compare-and-set. Returns plain values.

    The whole hand-off runs under the registry lock (`registry.champion_lock`):

    1. leftovers of crashed runs are settled (`kfct.governance.reconcile`);
    2. the champion is compared with the one the gate saw (`decision["champion_version"]`).
       When it moved, the challenger is re-gated against the new champion with `regate(version)`
       (config `gate.on_champion_moved: regate`), or blocked (`block`): a blocked run registers
       nothing and returns `version: ""` with the reason;
    3. the version is found-or-made by MLflow run id (a retried step makes no second version);
    4. `champion` (or `challenger` with a rollout) moves only if it is still where step 2 saw it.
    """
    from kfct.governance import audit, registry
    from kfct.governance.reconcile import reconcile
    from kfct.runtime.testhooks import pause_at

    if not decision.get("deploy"):
        raise RuntimeError("register called for a model the gate did not approve")
    run_id = meta.get("mlflow_run_id") or ""
    rollout = cfg.rollout.enabled
    champion_alias = cfg.register_.alias
    alias = "challenger" if rollout else champion_alias
    on_moved = cfg.gate.on_champion_moved
    pause_at("after_gate")
    with registry.champion_lock(model_name) as lock:
        pause_at("registry_locked")
        reconciled = reconcile(model_name, own_run_id=run_id, lock=lock)
        gated = decision.get("champion_version") or None
        current = registry.alias_version(model_name, champion_alias)
        existing = registry.versions_of_run(model_name, run_id) if run_id else []
        if existing and str(existing[0].version) == current:  # a re-run of a step that already finished
            return {
                "version": current,
                "alias": champion_alias,
                "previous": gated,
                "tags": dict(existing[0].tags),
                "resumed": True,
                "reconciled": len(reconciled),
            }
        regated = None
        if current != gated:
            moved = f"champion moved from v{gated} to v{current} since the gate"
            if on_moved == "regate" and regate is not None and current is not None:
                decision = regate(current)
                decision["reasons"] = [f"{moved}: re-gated against v{current}", *list(decision.get("reasons", []))]
                regated = decision
                audit.record(
                    "gate_decision",
                    model_name=model_name,
                    mlflow_run_id=run_id,
                    deploy=bool(decision.get("deploy")),
                    reasons=decision["reasons"],
                    champion_version=current,
                    regate=True,
                    **({"verdict": "data", "stop": decision["stop"]} if decision.get("stop") else {}),
                )
                if not decision.get("deploy"):
                    return {
                        "version": "",
                        "alias": None,
                        "previous": current,
                        "tags": {},
                        "blocked": "; ".join(decision["reasons"]),
                        "decision": decision,
                    }
            else:
                reason = f"{moved}; blocked (gate.on_champion_moved={on_moved})"
                audit.record(
                    "registration_blocked",
                    model_name=model_name,
                    mlflow_run_id=run_id,
                    gated_against=gated,
                    champion_version=current,
                    reason=reason,
                )
                return {"version": "", "alias": None, "previous": current, "tags": {}, "blocked": reason}
        gated = current
        tags = lineage_tags(meta, data_uri, dataset_sha256, pipeline_run, code_version, decision)
        tags[registry.REG_TAG] = "pending"
        tags[registry.GATED_TAG] = gated or ""
        version, created = registry.register_once(meta["model_uri"], model_name, tags, run_id)
        audit.record(
            "model_registered" if created else "registration_resumed",
            model_name=model_name,
            version=version,
            mlflow_run_id=run_id,
            dataset_sha256=dataset_sha256,
            code_version=code_version,
            pipeline_run=pipeline_run,
            model_sha256=meta.get("model_sha256"),
            gated_against=gated,
        )
        pause_at("after_model_registered")
        reason = "gate passed" + ("; canary rollout decides promotion" if rollout else "")
        if alias == champion_alias:
            previous = registry.compare_and_set_alias(
                lock, model_name, alias, gated, version, reason=reason, pipeline_run=pipeline_run
            )
        else:  # the challenger alias: the champion stays; the rollout's promotion checks it again
            previous = registry.set_alias(
                model_name, alias, version, reason=reason, pipeline_run=pipeline_run, gated_against=gated
            )
        registry.set_version_tag(model_name, version, registry.REG_TAG, "complete")
    out = {"version": version, "alias": alias, "previous": previous, "tags": tags, "reconciled": len(reconciled)}
    if regated is not None:  # the gate that decided is the second one: its reasons, not the first's
        out["decision"] = regated
    return out


def card_info(
    meta: dict,
    out: dict,
    decision: dict,
    cfg: "RunConfig",
    evidence: dict,
    dataset_meta: dict,
    data_uri: str,
    dataset_sha256: str,
    model_name: str,
) -> dict:
    """Everything the model card says about the registered version, from plain values (see `kfct.evidence.modelcard`)."""
    return {
        "model_name": model_name,
        "version": out["version"],
        "alias": out["alias"],
        "run_id": meta.get("mlflow_run_id"),
        "model_kind": meta.get("model"),
        "threshold": meta.get("threshold"),
        "training": {"workers": meta.get("train_workers"), "engine": meta.get("train_engine"), "device": meta.get("device")},
        "dataset": {
            "uri": data_uri,
            "sha256": dataset_sha256,
            "rows": int(dataset_meta.get("rows", 0)),
            "columns": int(dataset_meta.get("columns", 0)),
            "rows_test": int(evidence.get("rows_test", 0)),
        },
        "metrics": decision.get("metrics", {}),
        "fairness": decision.get("fairness"),
        "comparison": decision.get("comparison"),
        "gate": {"deploy": decision.get("deploy"), "reasons": decision.get("reasons", []), "thresholds": cfg.gate.thresholds},
        "lineage": out["tags"],
        "top_features": evidence.get("top_features"),
        "slices": evidence.get("slices", {}),
        "charts": evidence.get("charts", {}),
    }


def _regate_with(model_path: str, test_path: str, cfg: "RunConfig", model_name: str) -> "Callable[[str], dict]":
    """The gate again, against the champion that is current now (same challenger, same test set).

    Only when the champion moved between gate and registration: the model and test set
    are loaded then, not on the common path."""

    def regate(champion_version: str) -> dict:
        import joblib
        import pandas as pd

        from kfct.components.evaluate import evaluate_core, registered_metrics
        from kfct.governance import registry

        loaded = registry.load_version(model_name, version=champion_version)
        res = evaluate_core(
            joblib.load(model_path),
            pd.read_parquet(test_path),
            cfg,
            loaded.model,
            champion_version,
            registered_metrics(loaded.tags),
        )
        res = {k: v for k, v in res.items() if k not in ("proba", "y")}
        res["champion_version"] = champion_version
        return res

    return regate


def _decision_summary(decision: dict) -> dict:
    """What a run's summary prints of a gate: the verdict, its reasons, the metrics (JSON-safe)."""
    import json

    keep = {k: decision.get(k) for k in ("deploy", "reasons", "metrics", "champion_version", "stop")}
    return json.loads(json.dumps(keep, default=float))


def _log_card(run_id: str, md: str, html: str, charts: dict[str, bytes]) -> None:
    """The card (Markdown links its charts by file name, so they sit beside it) on the training run."""
    import tempfile

    import mlflow

    files = [(f"{k}.png", png) for k, png in charts.items()]
    files += [("model_card.md", md.encode()), ("model_card.html", html.encode())]
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
        for name, data in files:
            Path(tmp, name).write_bytes(data)
            mlflow.log_artifact(f"{tmp}/{name}", artifact_path="model_card")


def register_model(
    model: Input[Model],
    decision: Input[Artifact],
    evidence: Input[Artifact],
    dataset: Input[Dataset],
    test: Input[Dataset],
    config_json: str,
    model_name: str,
    data_uri: str,
    dataset_sha256: str,
    pipeline_run: str,
    code_version: str,
    model_card: Output[Markdown],
) -> str:
    """Register the approved model in MLflow with lineage tags and a model card; set its alias. Returns the version.

    Registry work only: the card's evidence (slices, top features, charts) comes from evaluate."""
    from kfct.runtime.stage import stage

    with stage(
        "register-model",
        config_json,
        stamp=model_card.metadata,
        registry=True,
        model_name=model_name,
        pipeline_run=pipeline_run,
        data_uri=data_uri,
    ) as st:
        import json
        from pathlib import Path

        from kfct.components.evaluate import read_evidence
        from kfct.components.register import _decision_summary, _log_card, _regate_with, card_info, register_version
        from kfct.evidence.modelcard import build_model_card, description, model_description
        from kfct.governance import registry

        cfg = st.config
        with Path(decision.path).open() as fh:
            dec = json.load(fh)
        meta = dict(model.metadata)
        # A pointer (dataset://latest) moves: the version's lineage names the snapshot ingest resolved it to.
        data_uri = dataset.metadata.get("resolved_uri") or data_uri
        out = register_version(
            meta,
            dec,
            cfg,
            model_name,
            data_uri,
            dataset_sha256,
            pipeline_run,
            code_version,
            regate=_regate_with(model.path, test.path, cfg, model_name),
        )
        if not out["version"]:  # blocked at the hand-off: nothing registered, nothing moved
            Path(model_card.path).write_text(f"# Not registered\n\n{out['blocked']}\n")
            model_card.metadata.update({"version": "", "alias": "", "blocked": out["blocked"]})
            if out.get("decision"):
                model_card.metadata["regate"] = _decision_summary(out["decision"])
            return ""
        info = card_info(
            meta,
            out,
            out.get("decision") or dec,
            cfg,
            read_evidence(evidence.path),
            dict(dataset.metadata),
            data_uri,
            dataset_sha256,
            model_name,
        )
        md, html = build_model_card(info)
        Path(model_card.path).write_text(md)
        model_card.metadata.update({"version": out["version"], "alias": out["alias"]})
        if out.get("decision"):  # the run's summary shows the gate that decided, not the first one
            model_card.metadata["regate"] = _decision_summary(out["decision"])
        registry.describe(model_name, out["version"], description(info), model_description(cfg))
        st.log.info("registered %s v%s, alias %s", model_name, out["version"], out["alias"])
        _log_card(meta["mlflow_run_id"], md, html, info["charts"])
        return out["version"]
