"""The versioned run configuration, as a typed schema: dataset, split, train, gate, rollout, drift.

The packaged `config/default.yaml` is the churn case study and the one place the
defaults of every section are written. A user file (`--config` / `KFCT_CONFIG`) is
merged over it by three rules, then validated against the pydantic models below:

- a user file that defines `dataset.columns` replaces `dataset` wholesale (a new
  dataset shares nothing with the case study's columns, label or checks);
- lists replace (steps, categories, label values);
- mappings of settings merge (state `gate.thresholds.roc_auc` alone, keep the rest).

Unknown keys are an error naming the key path and the closest valid key. The result
is the `RunConfig` model itself, every key filled: stages read attributes
(`cfg.gate.min_improvement`), which mypy checks, without restating defaults. It becomes
JSON only at the pipeline parameter boundary, in one pair of helpers: `config_to_json`
(model -> the `config_json` parameter, so a compiled pipeline carries the exact config it
ran with) and `config_from_json` (parameter -> model, inside each stage).
"""

from __future__ import annotations

import copy
import difflib
import json
import types
import typing
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kfct.errors import KfctError


class ConfigError(KfctError):
    """A configuration file is missing or malformed."""


# -- schema -------------------------------------------------------------------------------------

Scalar = bool | int | float | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _field(model: type[BaseModel], key: object) -> Any:
    """The field of `model` spelled `key` in a config file (its alias, else its name)."""
    for name, f in model.model_fields.items():
        if key == (f.alias or name):
            return f
    return None


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


# Keys that moved: an old file gets the new place named.
_MOVED = {("fairness", "sensitive_features"): "dataset.sensitive_features"}


class ColumnSpec(_Strict):
    """One column of the raw dataset: what validation expects and how the encoder reads it."""

    dtype: Literal["string", "category", "float", "int", "bool", "datetime"]
    nullable: bool = False  # a null is a validation failure unless declared
    unique: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[Scalar] | None = None  # category: the allowed values, in encoder order
    values: list[Scalar] | None = None  # any dtype: the allowed set (used for labels)
    # datetime: a timestamp later than "now" by more than this many days fails validation
    max_future_days: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _coherent(self) -> ColumnSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {_num(self.min)} is greater than max {_num(self.max)}")
        if (self.min is not None or self.max is not None) and self.dtype not in ("int", "float"):
            raise ValueError(f"min/max need a numeric dtype, not {self.dtype}")
        for key in ("categories", "values"):
            if getattr(self, key) is not None and not getattr(self, key):
                raise ValueError(f"{key} must be a non-empty list")
        if self.max_future_days is not None and self.dtype != "datetime":
            raise ValueError(f"max_future_days needs dtype datetime, not {self.dtype}")
        return self


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


class DatasetConfig(_Strict):
    """The dataset's schema and its data-quality checks; neutral (off) where a check is optional."""

    name: str = "dataset"
    id_column: str | None = None
    label: str
    positive_label: Scalar = 1
    min_rows: int | None = Field(default=1, ge=0)
    max_rows: int | None = None
    max_duplicate_share: float | None = Field(default=None, ge=0, lt=1)
    label_balance: tuple[float, float] | None = None  # positive share must fall in this range
    allow_extra_columns: bool = False
    columns: dict[str, ColumnSpec]
    exclude_features: list[str] = Field(default_factory=list)
    sensitive_features: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _columns_named(self) -> DatasetConfig:
        if not self.columns:
            raise ValueError("dataset.columns must name at least one column")
        names = set(self.columns)
        for what, cols in (
            ("label", [self.label]),
            ("id_column", [self.id_column] if self.id_column else []),
            ("exclude_features", self.exclude_features),
            ("sensitive_features", self.sensitive_features),
        ):
            for c in cols:
                if c not in names:
                    raise ValueError(f"dataset.{what} {c!r} is not one of dataset.columns{_closest(c, names)}")
        if self.label_balance is not None and not 0 <= self.label_balance[0] <= self.label_balance[1] <= 1:
            raise ValueError(
                f"dataset.label_balance must be [low, high] with 0 <= low <= high <= 1, got {list(self.label_balance)}"
            )
        skip = {self.id_column, self.label, *self.exclude_features}
        for c, spec in self.columns.items():
            if c not in skip and spec.dtype == "category" and not spec.categories:
                raise ValueError(f"dataset.columns.{c}: a category feature needs its 'categories' list")
        return self


class SplitConfig(_Strict):
    test_size: float = Field(gt=0, lt=1)
    val_size: float = Field(gt=0, lt=1)
    seed: int


class TrainConfig(_Strict):
    model: Literal["xgboost", "logistic_regression", "random_forest", "hist_gradient_boosting"]
    device: Literal["cpu", "cuda"]
    seed: int
    imbalance: Literal["scale_pos_weight", "class_weight", "none"]
    early_stopping_rounds: int
    tune_trials: int = Field(ge=0)
    threshold_strategy: Literal["f1", "recall_target"]
    recall_target: float = Field(gt=0, le=1)
    # Estimator hyperparameters pass through to the library as given.
    xgboost: dict[str, Any]
    logistic_regression: dict[str, Any]
    random_forest: dict[str, Any]
    hist_gradient_boosting: dict[str, Any]
    # XGBoost workers (docs/distributed-training.md): 1 trains in the train step's own pod; N > 1 runs
    # N workers with XGBoost's collective: a Kubeflow Trainer TrainJob on a cluster, N processes here.
    workers: int = Field(default=1, ge=1, le=256)
    # The TrainJob's activeDeadlineSeconds (and the local workers' limit): past it the job fails.
    deadline_seconds: int = Field(default=6 * 3600, gt=0)

    @model_validator(mode="after")
    def _distributable(self) -> TrainConfig:
        if self.workers > 1 and self.model != "xgboost":
            raise ValueError(f"train.workers > 1 needs model xgboost (XGBoost's collective), not {self.model}")
        if self.workers > 1 and self.tune_trials > 0:
            raise ValueError("train.workers > 1 cannot tune: set train.tune_trials to 0 or train.workers to 1")
        return self


class LeakageConfig(_Strict):
    """A feature that alone predicts the label, or a perfect test metric, is usually leakage."""

    max_feature_auc: float = Field(default=0.99, gt=0.5, le=1)  # per-feature AUC (95% lower bound) at/above: leakage
    max_roc_auc: float = Field(default=0.9995, gt=0.5, le=1)  # model test AUC at/above: a note (suspicious)
    accept: list[str] = Field(default_factory=list)  # features accepted knowingly ("*": all, metric too)


class GateConfig(_Strict):
    thresholds: dict[str, float]
    compare_metric: str
    min_improvement: float
    bootstrap_rounds: int = Field(ge=1)
    confidence: float = Field(gt=0, lt=1)
    seed: int
    # Another run moved the champion between this run's gate and its registration.
    on_champion_moved: Literal["regate", "block"] = "regate"
    # The champion scored on the new test set: below chance (AUC < 0.5), or this far under the
    # compare metric it was registered with, says the data changed meaning (inverted labels,
    # a shifted column), not that the challenger is better: the run stops. null: no drop check.
    champion_max_drop: float | None = Field(default=0.2, gt=0)
    leakage: LeakageConfig = Field(default_factory=lambda: LeakageConfig())


class FairnessConfig(_Strict):
    """Limits of the fairness gate; the attributes it checks are `dataset.sensitive_features`."""

    enabled: bool
    max_demographic_parity_difference: float
    max_equalized_odds_difference: float
    min_group_size: int
    significance_level: float | None


class RegisterConfig(_Strict):
    model_name: str
    alias: str


class RolloutConfig(_Strict):
    enabled: bool
    steps: list[int]
    bake_seconds: float
    min_requests: int = Field(ge=1)
    max_error_rate_increase: float
    max_p99_latency_ratio: float
    max_churn_rate_shift: float
    min_p99_latency_delta_ms: float
    significance_z: float
    # customers whose canary requests the champion scored too (paired), before the shifts are judged
    min_customers: int = Field(default=20, ge=2)
    poll_seconds: float
    # a deferred canary (no server to judge it) gets no traffic after this, then is rolled back
    deferred_deadline_seconds: float = Field(default=3600.0, gt=0)


class DriftConfig(_Strict):
    drift_share_threshold: float
    prediction_shift_threshold: float
    stattest_threshold: float
    cooldown_hours: float
    window_rows: int
    window_days: float
    distance_threshold: float
    performance_drop_threshold: float
    num_method: str | None
    cat_method: str | None


class OutcomesConfig(_Strict):
    """Realized outcomes (`kfct outcomes push`): when a label is known and how long it takes to be."""

    observed_at_column: str
    label_horizon_days: float = Field(gt=0)
    # the most served predictions one report judges: past it, a sample by customer (kfct.contracts.prediction_log)
    max_predictions: int = Field(default=500_000, ge=1)


class AbConfig(_Strict):
    """A/B tests and shadow evaluation judged on realized outcomes."""

    percent: float = Field(gt=0, lt=100)
    alpha: float = Field(gt=0, lt=1)
    power: float = Field(gt=0, lt=1)
    min_effect: float = Field(gt=0)
    msprt_tau: float | None
    min_per_arm: int = Field(ge=1)
    max_duration_days: float = Field(gt=0)
    shadow_min_improvement: float


class RunConfig(_Strict):
    schema_version: Literal[1]
    dataset: DatasetConfig
    split: SplitConfig
    train: TrainConfig
    gate: GateConfig
    fairness: FairnessConfig
    register_: RegisterConfig = Field(alias="register")  # `register` is a BaseModel attribute
    rollout: RolloutConfig
    drift: DriftConfig
    outcomes: OutcomesConfig
    ab: AbConfig
    # Per-stage pod settings; their keys are checked by kfct.pipelines.task_config.
    resources: dict[str, dict[str, Any]]


# -- merge and validate ---------------------------------------------------------------------------


def merge_config(base: dict, user: dict) -> dict:
    """`user` over `base`: `dataset` replaced when the user defines its columns, lists replace, mappings merge."""
    out = copy.deepcopy(base)
    ds = user.get("dataset")
    if isinstance(ds, dict) and "columns" in ds:
        out.pop("dataset", None)
    return _deep_merge(out, user)


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _closest(key: str, valid: Iterable[object]) -> str:
    near = difflib.get_close_matches(str(key), sorted(map(str, valid)), n=1, cutoff=0.5)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _model_at(model: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    """The pydantic model that the mapping at `path` is validated by (None: free-form)."""
    cur: Any = model
    for part in path:
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            f = _field(cur, part)
            if f is None:
                return None
            cur = f.annotation
        elif typing.get_origin(cur) is dict:
            cur = typing.get_args(cur)[1]
        else:
            return None
        while typing.get_origin(cur) in (Union, types.UnionType):  # Optional[Model]
            cur = next((a for a in typing.get_args(cur) if a is not type(None)), cur)
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            parent = _model_at(RunConfig, loc[:-1])
            hint = _closest(str(loc[-1]), _keys(parent)) if parent else ""
            if loc in _MOVED:
                hint = f" (moved to {_MOVED[loc]})"
            lines.append(f"unknown key {path}{hint}")
        elif err["type"] == "missing":
            lines.append(f"missing key {path}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{path or 'config'}: {msg}" + (f" (got {err['input']!r})" if _short(err.get("input")) else ""))
    more = f" (and {len(lines) - 1} more: {'; '.join(lines[1:4])})" if len(lines) > 1 else ""
    return f"{source}: {lines[0]}{more}"


def _short(value: object) -> bool:
    return isinstance(value, (bool, int, float, str)) and len(repr(value)) <= 40


def validate_config(raw: dict | RunConfig, source: str = "config") -> RunConfig:
    """The raw mapping checked against the schema, every default filled; ConfigError names the key."""
    if isinstance(raw, RunConfig):
        return raw
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as the plain, JSON-able mapping a file would hold (keys as written: `register`)."""
    return cfg.model_dump(mode="json", by_alias=True)


def with_overrides(cfg: RunConfig, overrides: dict) -> RunConfig:
    """`cfg` with `overrides` merged over it (the rules of `merge_config`), validated again."""
    return validate_config(merge_config(config_dict(cfg), overrides), "config overrides")


def _read_yaml(p: Path) -> dict:
    import yaml

    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        user = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
    if not isinstance(user, dict):
        raise ConfigError(f"config file {p} must hold a mapping at top level")
    return user


def _default_raw() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(resources.files("kfct").joinpath("config/default.yaml").read_text())


def default_config() -> RunConfig:
    """The packaged case study, validated."""
    return validate_config(_default_raw(), "kfct/config/default.yaml")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Default config, merged with a user YAML file and then with explicit overrides, validated."""
    raw = _default_raw()
    source = "config"
    if path is None:
        from kfct.runtime.settings import get_settings

        path = get_settings().config
    if path is not None:
        raw = merge_config(raw, _read_yaml(Path(path)))
        source = f"config file {path}"
    if overrides:
        raw = merge_config(raw, overrides)
    return validate_config(raw, source)


def config_to_json(cfg: RunConfig) -> str:
    """The kfp parameter boundary, outward: the model as the `config_json` string parameter."""
    return json.dumps(config_dict(cfg), sort_keys=True)


def config_from_json(text: str) -> RunConfig:
    """Parse a config passed as a pipeline parameter; empty means the default. Validated like a file."""
    if not text:
        return default_config()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config_json is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError("config_json must hold a JSON object")
    return validate_config(merge_config(_default_raw(), raw), "config_json")


# -- derived views ------------------------------------------------------------------------------


def feature_columns(cfg: RunConfig) -> list[str]:
    """Model inputs: every schema column except the id, the label, exclusions and dates.

    A date is checked by validation but is no model input: its raw value never recurs (next
    month's dates are all new); features derived from it (a tenure, a weekday) are."""
    ds = cfg.dataset
    skip = {ds.id_column, ds.label, *ds.exclude_features}
    return [c for c, spec in ds.columns.items() if c not in skip and spec.dtype != "datetime"]


def categorical_columns(cfg: RunConfig) -> list[str]:
    cols = cfg.dataset.columns
    return [c for c in feature_columns(cfg) if cols[c].dtype == "category"]


def numeric_columns(cfg: RunConfig) -> list[str]:
    cols = cfg.dataset.columns
    return [c for c in feature_columns(cfg) if cols[c].dtype in ("float", "int")]
