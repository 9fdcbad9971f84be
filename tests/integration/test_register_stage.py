"""The register stage registers: it loads no model and no plotting or ML library.

Its card evidence (slices, top features, charts) comes from evaluate, which already
holds the model and the test predictions. In a pod of its own the stage then imports
MLflow and the registry, and nothing that only evaluation needs: this test runs
evaluate and register in separate interpreters (as two pods are) and looks at what
register's interpreter loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

UP_TO_EVALUATE = r"""
import json, sys
from pathlib import Path
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model
from kfct.components import evaluate, featurize, ingest, train
from kfct.config import config_to_json, load_config
from tests.crashkit import art

w = Path(sys.argv[1]); cfg_json = config_to_json(load_config())
ds = art(Dataset, w / "dataset.parquet")
sha = ingest.ingest_data("generate://3000?seed=5", ds)
tr, va, te, pre = (art(Dataset, w / f"{n}.parquet") for n in ("train", "val", "test", "pre"))
featurize.featurize_split(ds, cfg_json, tr, va, te, pre)
model = art(Model, w / "model.joblib")
run_id = train.train_model(tr, va, pre, cfg_json, "cpu", 0, sha, "generate://3000?seed=5", "test", "reg-stage", "test",
                           model)
decision, evidence = art(Artifact, w / "decision.json"), art(Artifact, w / "evidence.json")
ok = evaluate.evaluate_model(te, model, cfg_json, "churn-classifier", run_id, art(Metrics, w / "m.json"),
                             art(ClassificationMetrics, w / "c.json"), art(Markdown, w / "e.md"), decision, evidence)
json.dump({"ok": ok, "sha": sha, "model": dict(model.metadata), "dataset": dict(ds.metadata)}, open(w / "state.json", "w"))
"""

REGISTER = r"""
import json, sys
from pathlib import Path
from kfp.dsl import Artifact, Dataset, Markdown, Model
from kfct.components import register
from tests.crashkit import art
from kfct.config import config_to_json, load_config

w = Path(sys.argv[1]); st = json.load(open(w / "state.json"))
card = art(Markdown, w / "card.md")
version = register.register_model(art(Model, w / "model.joblib", **st["model"]), art(Artifact, w / "decision.json"),
                                  art(Artifact, w / "evidence.json"), art(Dataset, w / "dataset.parquet", **st["dataset"]),
                                  art(Dataset, w / "test.parquet"), config_to_json(load_config()), "churn-classifier",
                                  "generate://3000?seed=5", st["sha"], "reg-stage", "test", card)
heavy = ("matplotlib", "sklearn", "xgboost", "great_expectations", "evidently")  # (scipy: mlflow loads it)
print("REGISTERED " + json.dumps({"version": version, "loaded": sorted(m for m in heavy if m in sys.modules)}))
"""


def _run(code: str, work: Path, env: dict) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code, str(work)],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_register_stage_loads_no_model_and_no_plotting_library(tmp_path, seed_mlflow_store):
    env = {**os.environ, "KFCT_HOME": str(seed_mlflow_store(tmp_path / "home")), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    work = tmp_path / "work"
    work.mkdir()
    _run(UP_TO_EVALUATE, work, env)
    assert json.loads((work / "state.json").read_text())["ok"], "the first model should pass the gate"
    line = [ln for ln in _run(REGISTER, work, env).splitlines() if ln.startswith("REGISTERED ")][-1]
    out = json.loads(line.removeprefix("REGISTERED "))
    assert out["version"] == "1"
    assert out["loaded"] == [], f"register imported {out['loaded']}"
    card = (work / "card.md").read_text()
    assert "Top features" in card and "roc_curve.png" in card  # the evidence reached the card
