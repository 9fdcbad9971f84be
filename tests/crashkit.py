"""One CT run's stages in one process, for crash and race tests.

`python -m tests.crashkit <workdir> <data.parquet>` calls the same component functions the
kfp tasks call (ingest, featurize, train, evaluate, register, deploy), with local artifacts
under <workdir> — the pipeline's code path without kfp's per-stage interpreter start-up, so a
test can afford several runs and kill one with SIGKILL at a `KFCT_TEST_PAUSE_AT` point.
Prints the run's outcome as one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def art(cls, path: Path, **meta):
    a = cls(uri=str(path))
    a.metadata.update(meta)
    return a


def run(workdir: str, data: str, name: str = "churn-classifier") -> dict:
    import os

    from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model

    from kfct.components import deploy, evaluate, featurize, ingest, register, train
    from kfct.config import config_to_json, load_config

    w = Path(workdir)
    w.mkdir(parents=True, exist_ok=True)
    cfg_json = config_to_json(load_config())
    ds = art(Dataset, w / "dataset.parquet")
    sha = ingest.ingest_data(data, ds)
    tr, va, te, pre = (
        art(Dataset, w / "train.parquet"),
        art(Dataset, w / "val.parquet"),
        art(Dataset, w / "test.parquet"),
        art(Model, w / "pre.joblib"),
    )
    featurize.featurize_split(ds, cfg_json, tr, va, te, pre)
    model = art(Model, w / "model.joblib")
    run_name = f"crashkit-{os.getpid()}"
    run_id = train.train_model(tr, va, pre, cfg_json, "cpu", 0, sha, data, "test", run_name, "test", model)
    decision, evidence = art(Artifact, w / "decision.json"), art(Artifact, w / "evidence.json")
    ok = evaluate.evaluate_model(
        te,
        model,
        cfg_json,
        name,
        run_id,
        art(Metrics, w / "m.json"),
        art(ClassificationMetrics, w / "c.json"),
        art(Markdown, w / "e.md"),
        decision,
        evidence,
    )
    out = {
        "run_id": run_id,
        "deploy": ok,
        "gated_against": json.loads(decision.path and Path(decision.path).read_text()).get("champion_version"),
    }
    if ok:
        card = art(Markdown, w / "card.md")
        out["version"] = register.register_model(
            model, decision, evidence, ds, te, cfg_json, name, data, sha, run_name, "test", card
        )
        out["blocked"] = card.metadata.get("blocked")
        out["deploy_result"] = json.loads(deploy.deploy_model(cfg_json, name, out["version"], "local"))
    return out


if __name__ == "__main__":
    print("CRASHKIT " + json.dumps(run(sys.argv[1], sys.argv[2])), flush=True)
