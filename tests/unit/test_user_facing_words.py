"""What the user reads says what happened, in the data's own words (issue 23 item 9): label
values not 0/1, the label's own rate not "churn rate", plain numbers, no traceback for a
closed pipe, no pandas FutureWarning for boolean labels, a re-gated run shows its second gate."""

import json
import os
import sys
import warnings
from pathlib import Path

import pandas as pd

from kfct.cli import main
from kfct.components.drift_inputs import with_binary_labels
from kfct.config import config_dict, load_config, validate_config
from kfct.data.labels import label_value, rate_name
from kfct.pipelines.local import format_summary, summarize
from kfct.pipelines.monitoring import format_monitor_summary
from kfct.pipelines.runner import PipelineRun, TaskResult


def _yes_no_cfg():
    raw = config_dict(load_config())
    raw["dataset"]["label"] = "churned"
    raw["dataset"]["positive_label"] = "Yes"
    raw["dataset"]["columns"]["churned"] = {"dtype": "category", "nullable": False, "values": ["No", "Yes"]}
    return validate_config(raw)


def test_predicted_labels_and_rates_in_the_users_words():
    cfg = _yes_no_cfg()
    assert (label_value(cfg, 1), label_value(cfg, 0)) == ("Yes", "No")
    assert rate_name(cfg) == "churned=Yes rate"
    summary = {
        "model_name": "m",
        "champion_version": "1",
        "current": "x.csv",
        "drift": {
            "drift_share": 0.1,
            "n_drifted_features": 1,
            "n_features": 10,
            "drifted_features": ["a"],
            "churn_rate": {"reference": 0.2, "current": 0.3},
            "churn_rate_shift": 0.5,
            "severity": "low",
            "retrain": False,
            "reason": "ok",
        },
        "decision": {"action": "none"},
    }
    text = format_monitor_summary(summary, rate_name(cfg))
    assert "churned=Yes rate  reference 0.2000" in text and "churn rate" not in text


def test_boolean_labels_are_coded_without_a_pandas_warning():
    raw = config_dict(load_config())
    raw["dataset"]["positive_label"] = True
    raw["dataset"]["columns"]["churned"] = {"dtype": "bool", "nullable": True, "values": [False, True]}
    cfg = validate_config(raw)
    for labels, expected in (([True, False, True], [1, 0, 1]), ([True, None, False], [1, 0])):
        frame = pd.DataFrame({"churned": pd.Series(labels, dtype=object if None in labels else bool)})
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = with_binary_labels(frame, cfg)
        assert out["churned"].dropna().astype(int).tolist() == expected


def test_a_closed_pipe_ends_quietly(capsys):
    r, w = os.pipe()
    os.close(r)
    saved = sys.stdout
    sys.stdout = os.fdopen(w, "w")
    try:
        rc = main(["config", "show"])
    finally:
        sys.stdout = saved
    assert rc == 141
    assert "Traceback" not in capsys.readouterr().err


def test_a_regated_runs_summary_shows_the_gate_that_decided(tmp_path):
    first = {
        "deploy": True,
        "reasons": ["roc_auc 0.9000 >= 0.8", "first gate reason"],
        "metrics": {k: 0.9 for k in ("roc_auc", "pr_auc", "recall", "precision", "f1")},
    }
    (tmp_path / "decision.json").write_text(json.dumps(first))
    second = {
        "deploy": False,
        "reasons": ["champion moved from v1 to v2 since the gate: re-gated against v2", "second gate reason"],
        "metrics": first["metrics"],
    }
    tasks = {
        "validate-data": TaskResult("validate-data", {"Output": True}),
        "evaluate-model": TaskResult("evaluate-model", artifacts={"decision": [{"uri": str(tmp_path / "decision.json")}]}),
        "register-model": TaskResult(
            "register-model",
            {"Output": ""},
            {
                "model_card": [
                    {"metadata": {"version": "", "alias": "", "blocked": "; ".join(second["reasons"]), "regate": second}}
                ]
            },
        ),
    }
    run = PipelineRun("r1", "ct-1", None, Path(tmp_path / "log"), tasks, 1.0)
    text = format_summary(summarize(run, "x.csv", "m"))
    assert "second gate reason" in text and "first gate reason" not in text
