"""The corpus (`tests/data/corpus.py`) through the CLI as a user would type it: `kfct init` on
the real table, then `kfct run` on each table in order, `kfct score` on the trained one,
and after every run the registry read back: what trains is registered, what stops (at
validation or at the gate) leaves every version and alias as it was (issue 23, "Prove it").
Slow: four pipeline runs (two stop early)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.data.corpus import CASES, CONFIGS

pytestmark = pytest.mark.slow

REGISTRY = """
import json, sys
from kfct.governance import registry
registry.setup()
out = {}
for name in sys.argv[1:]:
    try:
        versions = sorted(int(v.version) for v in registry.client().search_model_versions(f"name='{name}'"))
    except Exception:
        versions = []
    out[name] = {"versions": versions, "champion": registry.alias_version(name, "champion")}
print(json.dumps(out))
"""


def _kfct(*args, env, timeout=1500):
    return subprocess.run([sys.executable, "-m", "kfct", *args], env=env, capture_output=True, text=True, timeout=timeout)


def _registry(env) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", REGISTRY, "penguins-classifier", "iris-classifier"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_real_and_corrupted_tables_get_their_verdicts(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KFCT_", "MLFLOW_TRACKING"))}
    env.update(KFCT_HOME=str(tmp_path / "home"), GX_ANALYTICS_ENABLED="false")
    configs = {}
    for name, (table, label, positive) in CONFIGS.items():
        data = tmp_path / f"{name}.csv"
        table().to_csv(data, index=False)
        configs[name] = tmp_path / f"{name}.yaml"
        p = _kfct("init", "--data", str(data), "--label", label, "--positive", positive, "--out", str(configs[name]), env=env)
        assert p.returncode == 0, p.stderr
    assert (
        "note: Date Egg: date:"
        in _kfct(
            "init",
            "--data",
            str(tmp_path / "penguins.csv"),
            "--label",
            "Sex",
            "--positive",
            "FEMALE",
            "--out",
            str(tmp_path / "again.yaml"),
            env=env,
        ).stdout
    )

    expected = {"penguins-classifier": {"versions": [], "champion": None}, "iris-classifier": {"versions": [], "champion": None}}
    for case in CASES:
        data = tmp_path / f"{case.name}.csv"
        case.table().to_csv(data, index=False)
        p = _kfct("--config", str(configs[case.config]), "run", "--data-uri", str(data), env=env)
        said = p.stdout + p.stderr
        assert p.returncode == case.exit, (case.name, said[-3000:])
        for line in case.lines:
            assert line in said, (case.name, line, said[-3000:])
        if case.verdict == "trains":
            model = f"{case.config}-classifier"
            version = len(expected[model]["versions"]) + 1
            expected[model] = {"versions": expected[model]["versions"] + [version], "champion": str(version)}
        assert _registry(env) == expected, case.name  # a stopped run changed nothing
        if case.exit == 5:  # a verdict on the data is on the audit trail as one
            from kfct.governance import audit

            gates = [e for e in audit.read(tmp_path / "home" / "audit" / "audit.jsonl") if e["event"] == "gate_decision"]
            assert gates[-1]["verdict"] == "data" and gates[-1]["deploy"] is False

    # the champion scores the very file it was trained on (dates, free text, the label included)
    out = tmp_path / "scores.parquet"
    p = _kfct(
        "--config", str(configs["penguins"]), "score", "--input", str(tmp_path / "penguins.csv"), "--output", str(out), env=env
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(pd.read_parquet(out)) == len(CONFIGS["penguins"][0]())
