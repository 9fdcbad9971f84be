"""The versioned run configuration: schema, split, training, gate, rollout, drift.

The packaged `config/default.yaml` is the churn case study; a user file given by
`KFCT_CONFIG` (or `--config`) is deep-merged over it, so a user states only what
differs. The config travels into pipeline stages as a JSON string parameter, so
a compiled pipeline carries the exact config it ran with.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any


from kfct.errors import KfctError


class ConfigError(KfctError):
    """A configuration file is missing or malformed."""


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def default_config() -> dict[str, Any]:
    import yaml

    text = resources.files("kfct").joinpath("config/default.yaml").read_text()
    return yaml.safe_load(text)


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict[str, Any]:
    """Default config, merged with a user YAML file and then with explicit overrides."""
    import yaml

    cfg = default_config()
    if path is None:
        from kfct.settings import get_settings

        path = get_settings().config
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            user = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
        if not isinstance(user, dict):
            raise ConfigError(f"config file {p} must hold a mapping at top level")
        cfg = _deep_merge(cfg, user)
    if overrides:
        cfg = _deep_merge(cfg, overrides)
    return cfg


def config_to_json(cfg: dict) -> str:
    return json.dumps(cfg, sort_keys=True)


def config_from_json(text: str) -> dict:
    """Parse a config passed as a pipeline parameter; empty means the default."""
    if not text:
        return default_config()
    return json.loads(text)


def feature_columns(cfg: dict) -> list[str]:
    """Model inputs: every schema column except the id, the label and exclusions."""
    ds = cfg["dataset"]
    skip = {ds["id_column"], ds["label"], *ds.get("exclude_features", [])}
    return [c for c in ds["columns"] if c not in skip]


def categorical_columns(cfg: dict) -> list[str]:
    cols = cfg["dataset"]["columns"]
    return [c for c in feature_columns(cfg) if cols[c]["dtype"] == "category"]


def numeric_columns(cfg: dict) -> list[str]:
    cols = cfg["dataset"]["columns"]
    return [c for c in feature_columns(cfg) if cols[c]["dtype"] in ("float", "int")]
