"""Your own dataset through the CLI alone: init -> run -> serve -> predict -> score -> monitor.

The dataset ships with scikit-learn (breast cancer: 30 numeric features), with an id
column added and the label as it ships (0/1) or spelled as strings ("malignant"/"benign"),
so it shares nothing with the packaged churn example: not the columns, not the model
name. Every step is a `kfct` process, as a user would type it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pandas as pd
import pytest

from tests.servingkit import free_port, wait_for

pytestmark = pytest.mark.slow


def _kfct(*args, env, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "kfct", *args], env=env, capture_output=True, text=True, timeout=timeout)
    return proc


# label coding -> (`kfct init --positive`, the positive label as it is in the data)
LABELS = {"strings": ("malignant", "malignant"), "zero_one": (None, 1)}


@pytest.fixture(params=["strings"])
def user(tmp_path, request, seed_mlflow_store):
    from sklearn.datasets import load_breast_cancer

    df = load_breast_cancer(as_frame=True).frame
    df.columns = [c.replace(" ", "_") for c in df.columns]
    df.insert(0, "patient_id", [f"P{i:04d}" for i in range(len(df))])
    if request.param == "strings":
        df["target"] = df["target"].map({0: "malignant", 1: "benign"})  # else 0/1 as sklearn ships it (1 = benign)
    data = tmp_path / "tumours.csv"
    df.to_csv(data, index=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KFCT_", "MLFLOW_TRACKING"))}
    env.update(KFCT_HOME=str(seed_mlflow_store(tmp_path / "home")), GX_ANALYTICS_ENABLED="false")
    df.attrs["labels"] = request.param
    return df, data, env, tmp_path


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.parametrize("user", list(LABELS), indirect=True)
def test_own_dataset_from_init_to_monitoring(user):
    df, data, env, tmp = user
    flag, positive = LABELS[df.attrs["labels"]]
    cfg = tmp / "my.yaml"
    p = _kfct(
        "init",
        "--data",
        str(data),
        "--label",
        "target",
        "--id",
        "patient_id",
        *(["--positive", flag] if flag else []),
        "--out",
        str(cfg),
        env=env,
    )
    assert p.returncode == 0, p.stderr
    assert _kfct("config", "check", str(cfg), env=env).returncode == 0
    import yaml

    dataset = yaml.safe_load(cfg.read_text())["dataset"]
    assert dataset["positive_label"] == positive and sorted(map(str, dataset["columns"]["target"]["values"])) == sorted(
        map(str, df["target"].unique())
    )

    p = _kfct("--config", str(cfg), "run", "--data-uri", str(data), "--json", str(tmp / "run.json"), env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    summary = json.loads((tmp / "run.json").read_text())
    assert summary["validation"]["passed"] and summary["decision"]["deploy"]
    assert summary["registered"]["version"] == "1" and summary["model_name"] == "tumours-classifier"
    assert summary["validation"]["report_html"].endswith(".html")

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "kfct", "--config", str(cfg), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: _ready(f"{url}/v1/models/tumours-classifier") or server.poll() is not None,
            timeout=120,
            what="the model server",
        )
        assert server.poll() is None, server.stdout.read()[-2000:]
        p = _kfct("--config", str(cfg), "predict", "--url", url, "--rows", "2", env=env)
        assert p.returncode == 0, p.stderr
        answer = json.loads(p.stdout)
        assert len(answer["predictions"]) == 2 and answer["model_version"] == "1"
        p = _kfct("--config", str(cfg), "predict", "--url", url, "--data", str(data), "--rows", "4", env=env)
        assert p.returncode == 0 and len(json.loads(p.stdout)["predictions"]) == 4, p.stderr
        # V2: one input per feature of the user's schema, named and typed by it
        rows = df.drop(columns=["target"]).head(3)
        inputs = [
            {"name": c, "shape": [3], "datatype": "BYTES" if c == "patient_id" else "FP64", "data": rows[c].tolist()}
            for c in rows.columns
        ]
        req = urllib.request.Request(
            f"{url}/v2/models/tumours-classifier/infer",
            method="POST",
            data=json.dumps({"inputs": inputs}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            outputs = {o["name"]: o for o in json.loads(r.read())["outputs"]}
        assert outputs["probability"]["shape"] == [3] and outputs["label"]["datatype"] == "INT64"
    finally:
        server.terminate()
        server.wait(timeout=30)

    out = tmp / "scores.parquet"
    p = _kfct("--config", str(cfg), "score", "--input", str(data), "--output", str(out), env=env)
    assert p.returncode == 0, p.stderr
    scored = pd.read_parquet(out)
    assert scored["patient_id"].tolist() == df["patient_id"].tolist()
    auc_ok = scored.assign(y=df["target"].eq(positive).astype(int)).groupby("y")["probability"].mean()
    assert auc_ok[1] > auc_ok[0] + 0.5  # the positive label scores high

    p = _kfct("--config", str(cfg), "monitor", "--current", str(data), "--dry-run", "--json", str(tmp / "mon.json"), env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    mon = json.loads((tmp / "mon.json").read_text())
    assert mon["drift"]["has_labels"] is True and not mon["drift"]["retrain"]


def test_unreadable_data_is_one_line_and_on_the_audit_trail(user):
    df, data, env, tmp = user
    cfg = tmp / "my.yaml"
    assert (
        _kfct("init", "--data", str(data), "--label", "target", "--positive", "malignant", "--out", str(cfg), env=env).returncode
        == 0
    )
    truncated = tmp / "truncated.parquet"
    df.to_parquet(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    p = _kfct("--config", str(cfg), "run", "--data-uri", str(truncated), env=env)
    assert p.returncode in (2, 4)
    err = [line for line in p.stderr.splitlines() if line.startswith("kfct: error:")]
    assert len(err) == 1 and "truncated.parquet" in err[0], p.stderr[-2000:]
    from kfct.governance import audit

    trail = tmp / "home" / "audit" / "audit.jsonl"
    failed = [e for e in audit.read(trail) if e["event"] in ("run_failed", "stage_failed")]
    # the ingest stage recorded it itself; the CLI adds no second entry for the same failure
    assert [e["event"] for e in failed] == ["stage_failed"], failed
    assert failed[0]["stage"] == "ingest-data" and failed[0]["data_uri"] == str(truncated)
    assert failed[0]["run_id"].startswith("ct-") and failed[0]["error"]

    # a failure before any stage ran (no such file) is on the trail once, as run_failed
    p = _kfct("--config", str(cfg), "run", "--data-uri", str(tmp / "missing.parquet"), env=env)
    assert p.returncode == 2, p.stderr[-2000:]
    failed = [e for e in audit.read(trail) if e["event"] in ("run_failed", "stage_failed")]
    assert [e["event"] for e in failed] == ["stage_failed", "run_failed"] and "missing.parquet" in failed[1]["error"]
