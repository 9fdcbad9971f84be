"""The typed run config: merge rules, unknown keys named, defaults once, `kfct config show|check`."""

from __future__ import annotations

import json

import pytest

from kfct.config import ConfigError, config_from_json, config_to_json, load_config

OWN_DATASET = """
dataset:
  name: tumours
  label: diagnosis
  positive_label: malignant
  columns:
    radius: {dtype: float, min: 0, max: 50}
    diagnosis: {dtype: category, values: [benign, malignant]}
"""


def _write(tmp_path, text, name="my.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_own_dataset_replaces_the_default_dataset_wholesale(tmp_path):
    cfg = load_config(_write(tmp_path, OWN_DATASET))
    ds = cfg.dataset
    assert list(ds.columns) == ["radius", "diagnosis"]  # no telecom column merged in
    assert ds.columns["diagnosis"].values == ["benign", "malignant"]
    assert ds.id_column is None and ds.sensitive_features == [] and ds.label_balance is None
    assert ds.columns["radius"].nullable is False  # the model's default, filled


def test_settings_merge_and_lists_replace(tmp_path):
    cfg = load_config(
        _write(tmp_path, "dataset:\n  min_rows: 10\nrollout:\n  steps: [25]\ngate:\n  thresholds: {roc_auc: 0.9}\n")
    )
    assert cfg.dataset.min_rows == 10 and "frustration_index" in cfg.dataset.columns
    assert cfg.rollout.steps == [25]
    assert cfg.gate.thresholds == {"roc_auc": 0.9, "recall": 0.65}


@pytest.mark.parametrize(
    "text, message",
    [
        ("gate:\n  min_improvment: 0.1\n", "unknown key gate.min_improvment (did you mean 'min_improvement'?)"),
        ("drfit: {}\n", "unknown key drfit (did you mean 'drift'?)"),
        (
            "dataset:\n  columns:\n    x: {dtype: float, nulable: true}\n  label: x\n",
            "unknown key dataset.columns.x.nulable (did you mean 'nullable'?)",
        ),
        ("fairness:\n  sensitive_features: [region]\n", "fairness.sensitive_features (moved to dataset.sensitive_features)"),
        ("train:\n  model: xgbost\n", "train.model"),
        ("dataset:\n  sensitive_features: [regoin]\n", "'regoin' is not one of dataset.columns (did you mean 'region'?)"),
        (
            "dataset:\n  label: target\n  columns:\n    a: {dtype: float}\n",
            "dataset.label 'target' is not one of dataset.columns",
        ),
    ],
)
def test_bad_keys_are_one_line_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, text))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_defaults_are_filled_once_and_agree(cfg):
    # every stage reads the validated model; the value is the file's, not a code literal
    assert cfg.gate.min_improvement == 0.002
    assert cfg.drift.num_method is None and cfg.dataset.allow_extra_columns is False
    assert cfg.dataset.sensitive_features == ["age_group", "region"]
    assert "sensitive_features" not in type(cfg.fairness).model_fields


def test_config_json_is_validated_and_round_trips(cfg):
    from kfct.config import RunConfig, config_dict

    back = config_from_json(config_to_json(cfg))
    assert isinstance(back, RunConfig) and back == cfg
    raw = config_dict(cfg)
    assert json.loads(json.dumps(raw)) == raw and "register" in raw  # plain JSON values, keys as in a file
    with pytest.raises(ConfigError, match=r"unknown key gate\.bogus"):
        config_from_json(json.dumps({**raw, "gate": {**raw["gate"], "bogus": 1}}))


def test_unquoted_yes_no_in_yaml_still_match_string_labels(tmp_path):
    import pandas as pd

    from kfct.data.labels import binary_labels

    cfg = load_config(
        _write(tmp_path, "dataset:\n  label: y\n  positive_label: yes\n  columns:\n    y: {dtype: category, values: [yes, no]}\n")
    )
    ds = cfg.dataset
    assert ds.positive_label is True  # YAML 1.1 made it a boolean
    y = binary_labels(pd.Series(["yes", "no", "Yes"], name="y"), ds.positive_label, ds.columns["y"].values)
    assert y.tolist() == [1, 0, 1]


def test_cli_config_show_and_check(tmp_path, capsys):
    from kfct.cli import main

    good = _write(tmp_path, OWN_DATASET)
    assert main(["config", "check", str(good)]) == 0
    assert "ok:" in capsys.readouterr().out
    assert main(["config", "show", str(good)]) == 0
    shown = _write(tmp_path, capsys.readouterr().out, "shown.yaml")
    assert load_config(shown) == load_config(good)  # show prints a config that loads back the same
    bad = _write(tmp_path, "gate:\n  treshold: {}\n", "bad.yaml")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kfct: error: config file") and "did you mean 'thresholds'" in err and "\n" not in err


def test_fairness_checks_the_datasets_sensitive_features(trained, cfg):
    import copy

    from kfct.components.evaluate import evaluate_core

    model, _, _, test = trained
    c = copy.deepcopy(cfg)
    c.dataset.sensitive_features = ["region"]
    assert set(evaluate_core(model, test, c)["fairness"]) == {"region"}
    c.dataset.sensitive_features = []
    none = evaluate_core(model, test, c)
    assert none["fairness"] is None and none["fairness_passed"] is None
