"""`ChurnPredictor`: one registered model version as a KServe `Model`.

Loads a version from the MLflow registry (by alias or number, through
`kfct.governance.registry.load_version`, which verifies the artifact's sha256) or from a local
MLflow model folder (the InferenceService's storage initializer puts the MinIO
artifact in `/mnt/models`; the expected sha256 then comes from the deploy stage).
The fitted preprocessing travels inside the model, so serving applies exactly the
training transforms.

Scoring takes feature records (dicts) and never builds a DataFrame: the model's
encoder checks and encodes each record (`TabularEncoder.transform_records`, which
raises `FeatureError` naming the field), and a compiled numpy copy of the trees
(`kfct.serving.fasttrees`, verified against the model at load) scores small batches;
large batches and non-XGBoost estimators use the model's own `proba_from_matrix`.

A reload that fails (unknown version, hash mismatch, unpickling error) leaves the
previously loaded version serving and records the error.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kfct.cluster import kserve_sdk
from kfct.errors import FeatureError
from kfct.serving.inline_scoring import InlinePolicy
from kfct.serving.schemas import BadRequest, requested_outputs, v1_records, v2_records

kserve = kserve_sdk.LazyKServe()

if TYPE_CHECKING:  # for type checkers: the real bases (at run time they join in __getattr__ below), the executor
    from concurrent.futures import ThreadPoolExecutor

    from kserve import Model as _KServeModel
else:
    _KServeModel = object

log = logging.getLogger("kfct.serving")

SMALL_BATCH = 256  # up to this many rows the numpy tree walk beats the booster's per-call overhead


@dataclass
class Scores:
    probabilities: np.ndarray
    labels: np.ndarray
    threshold: float
    version: str


@dataclass
class LoadedVersion:
    """Everything the request path needs, swapped in as one object."""

    model: Any
    model_name: str
    version: str
    sha256: str
    run_id: str
    threshold: float
    feature_names: list[str]
    numeric: list[str]
    categorical: dict[str, list[str]]
    allowed: frozenset
    encoder: Any = None
    ensemble: Any = None
    schema: Any = None  # kfct.data.record_schema.RecordSchema: the config's ranges, integer-ness, id rules
    loaded_at: float = field(default_factory=time.time)
    tags: dict = field(default_factory=dict)
    # whether this version's small requests score on the event loop (kfct.serving.inline_scoring)
    inline: InlinePolicy = field(default_factory=InlinePolicy)

    def describe(self) -> dict:
        return {
            "model_name": self.model_name,
            "version": self.version,
            "sha256": self.sha256,
            "run_id": self.run_id,
            "threshold": self.threshold,
            "fast_path": "numpy-trees" if self.ensemble is not None else "model",
            "loaded_at": self.loaded_at,
        }


def _prepare(
    model: Any,
    model_name: str,
    version: str,
    sha256: str,
    run_id: str,
    id_column: str | None,
    tags: dict | None = None,
    fast: bool = True,
) -> LoadedVersion:
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "transform_records"):
        encoder = None
    if encoder is not None:
        numeric = list(encoder.numeric_)
        categorical = {c: list(v) for c, v in encoder.categorical_.items()}
        names = list(encoder.input_features)
    else:
        names = list(getattr(model, "feature_names", None) or getattr(model, "feature_names_in_", []))
        numeric, categorical = names, {}
    ensemble = None
    booster = model._booster() if hasattr(model, "_booster") else None
    if fast and encoder is not None and booster is not None:
        with contextlib.suppress(ValueError):  # pragma: no cover - read-only boosters (xgboost's XGBoostError is a ValueError)
            booster.set_param({"nthread": 1})  # one request, one core: no OpenMP start-up per call
        from kfct.serving.fasttrees import compile_booster

        ensemble = compile_booster(booster, encoder.width, reference=model.proba_from_matrix)
        if ensemble is None:
            log.warning("model %s v%s: numpy tree path unavailable, using the booster", model_name, version)
    threshold = float(getattr(model, "threshold", 0.5))
    from kfct.config import load_config
    from kfct.data.record_schema import RecordSchema

    schema = RecordSchema.from_config(load_config())
    if id_column != schema.id_column:
        schema.id_column = id_column
    # Online accepts what `kfct score` accepts: the schema's columns the model does not read
    # (dates, free text, the label of a training file) are ignored, not refused.
    allowed = frozenset(names) | ({id_column} if id_column else frozenset()) | schema.columns
    return LoadedVersion(
        model=model,
        model_name=model_name,
        version=str(version),
        sha256=sha256,
        run_id=run_id,
        threshold=threshold,
        feature_names=names,
        numeric=numeric,
        categorical=categorical,
        allowed=allowed,
        encoder=encoder,
        ensemble=ensemble,
        schema=schema,
        tags=dict(tags or {}),
    )


def fetch_version(
    model_name: str,
    alias: str | None = None,
    version: str | None = None,
    model_dir: str | Path | None = None,
    expected_sha256: str | None = None,
    id_column: str | None = "customer_id",
    fast: bool = True,
) -> LoadedVersion:
    """Load (and verify) one version; raises on any failure, never half-installs."""
    if model_dir is not None:
        return _fetch_dir(model_name, Path(model_dir), version, expected_sha256, id_column, fast)
    from kfct.governance import registry

    registry.setup(attempts=1)  # the watcher retries loads with its own backoff
    lm = registry.load_version(model_name, alias=None if version else (alias or "champion"), version=version)
    return _prepare(lm.model, model_name, lm.version, lm.sha256, lm.run_id, id_column, lm.tags, fast)


def _fetch_dir(
    model_name: str, path: Path, version: str | None, expected: str | None, id_column: str | None, fast: bool
) -> LoadedVersion:
    import mlflow

    from kfct.governance.lineage import sha256_file
    from kfct.governance.registry import MODEL_FILE, ModelIntegrityError

    candidates = [path] + [p.parent for p in path.rglob(MODEL_FILE)]
    root = next((p for p in candidates if (p / MODEL_FILE).is_file()), None)
    if root is None:
        raise FileNotFoundError(f"no {MODEL_FILE} under {path}")
    digest = sha256_file(root / MODEL_FILE)
    if not expected:
        raise ModelIntegrityError(f"model in {root}: no expected sha256 given (--model_sha256 / KFCT_MODEL_SHA256)")
    if digest != expected:
        raise ModelIntegrityError(f"model in {root}: file sha256 {digest} does not match expected {expected}")
    model = mlflow.sklearn.load_model(str(root))
    return _prepare(model, model_name, version or "local", digest, "", id_column, {}, fast)


class _ChurnPredictor(_KServeModel):
    """One model version behind KServe's V1/V2 endpoints (the router holds one or two of these)."""

    def __init__(
        self,
        name: str,
        model_name: str | None = None,
        alias: str | None = "champion",
        version: str | None = None,
        model_dir: str | Path | None = None,
        expected_sha256: str | None = None,
        id_column: str | None = "customer_id",
        fast: bool = True,
    ):
        super().__init__(name, return_response_headers=True)
        self.model_name = model_name or name
        self.alias = alias
        self.version = str(version) if version else None
        self.model_dir = model_dir
        self.expected_sha256 = expected_sha256
        self.id_column = id_column
        self.fast = fast
        self.current: LoadedVersion | None = None
        self.last_error: str | None = None
        self._load_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        """This version's own scoring thread (one: scoring holds the GIL anyway; a slow version
        then queues its own requests instead of everyone's)."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            with self._load_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"kfct-score-{self.model_name}")
        return self._executor

    def close(self) -> None:
        ex, self._executor = self._executor, None
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)

    # -- loading -------------------------------------------------------------------------
    def load(self) -> bool:
        """KServe's load hook: fetch the configured version; ready only on success."""
        return self.reload()

    def reload(self, alias: str | None = None, version: str | None = None) -> bool:
        """Fetch a version and swap it in; on failure keep serving the old one and return False."""
        with self._load_lock:
            try:
                lv = fetch_version(
                    self.model_name,
                    alias=alias or self.alias,
                    version=version or (None if alias else self.version),
                    model_dir=self.model_dir,
                    expected_sha256=self.expected_sha256,
                    id_column=self.id_column,
                    fast=self.fast,
                )
            except Exception as exc:  # noqa: BLE001 - a failed load keeps serving the loaded model
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "model %s: load of %s failed, keeping %s: %s",
                    self.model_name,
                    f"v{version}" if version else f"@{alias or self.alias}",
                    f"v{self.current.version}" if self.current else "nothing",
                    self.last_error,
                )
                return False
            self.install(lv)
            return True

    def install(self, lv: LoadedVersion) -> None:
        self.current = lv
        self.last_error = None
        self.ready = True

    @property
    def loaded_version(self) -> str | None:
        cur = self.current
        return cur.version if cur else None

    def start(self) -> None:  # KServe's default flips `ready` on; readiness means "a model is loaded"
        pass

    # -- scoring -------------------------------------------------------------------------
    def _loaded(self) -> LoadedVersion:
        lv = self.current
        if lv is None:
            raise kserve.errors.ModelNotReady(self.name, "no model version loaded yet")
        return lv

    def score(self, records: list[dict]) -> Scores:
        """Probabilities and labels for feature records; BadRequest names any bad field."""
        return score_loaded(self._loaded(), records)

    def scores_inline(self, rows: int) -> bool:
        """Whether a request of `rows` rows may score on the event loop (the version earned it)."""
        lv = self.current
        return lv is not None and lv.inline.inline(rows)

    def score_timed(self, records: list[dict], inline: bool = False) -> Scores:
        """`score`, its time recorded against the loaded version's inline policy."""
        lv = self._loaded()
        t0 = time.perf_counter()
        s: Scores = score_loaded(lv, records)
        lv.inline.observe(len(records), time.perf_counter() - t0, inline)
        return s

    # -- KServe handlers (used when this predictor is registered on its own) ---------------
    def preprocess(self, payload: Any, headers: Any = None) -> Any:
        if isinstance(payload, kserve.InferRequest):
            records, _ = v2_records(payload)
            return ("v2", records, payload)
        return ("v1", v1_records(payload), None)

    def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        protocol, records, request = payload
        s = self.score(records)
        if response_headers is not None:
            response_headers["x-kfct-model-version"] = s.version
        if protocol == "v2":
            return v2_response(
                self.name, request, [(np.arange(len(records)), s)], len(records), outputs=requested_outputs(request, OUTPUT_NAMES)
            )
        return v1_response(self.name, [(None, s)], len(records))

    def validate(self, payload: Any) -> Any:
        return payload

    def get_input_types(self) -> list[dict]:
        lv = self.current
        if lv is None:
            return []
        out = [{"name": c, "datatype": "FP64", "shape": [-1]} for c in lv.numeric]
        out += [{"name": c, "datatype": "BYTES", "shape": [-1]} for c in lv.categorical]
        if self.id_column:
            out.append({"name": self.id_column, "datatype": "BYTES", "shape": [-1]})
        return out

    def get_output_types(self) -> list[dict]:
        return [
            {"name": "probability", "datatype": "FP64", "shape": [-1]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "threshold", "datatype": "FP64", "shape": [-1]},
            {"name": "model_version", "datatype": "BYTES", "shape": [-1]},
        ]


def score_loaded(lv: LoadedVersion, records: list[dict]) -> Scores:
    allowed = lv.allowed
    for i, rec in enumerate(records):
        if not rec.keys() <= allowed:
            extra = sorted(k for k in rec if k not in allowed)[0]
            raise BadRequest(
                f"instance {i}: unknown feature {extra!r} (model v{lv.version} takes: {', '.join(lv.feature_names)})",
                field=str(extra),
                index=i,
            )
    if lv.schema is not None:
        try:
            lv.schema.check_records(records)
        except FeatureError as exc:
            raise BadRequest(str(exc), field=exc.field, index=exc.index) from None
    enc = lv.encoder
    if enc is not None:
        try:
            M = enc.transform_records(records)
        except FeatureError as exc:
            raise BadRequest(str(exc), field=exc.field, index=exc.index) from None
        except OverflowError as exc:  # an integer past float range in a column the schema does not know
            raise BadRequest(f"a number is out of range: {exc}") from None
        if lv.ensemble is not None and len(records) <= SMALL_BATCH:
            probs = lv.ensemble.predict_proba(M)
        else:
            probs = np.asarray(lv.model.proba_from_matrix(M), dtype=np.float64)
    else:
        probs = _generic_proba(lv, records)
    labels = (probs >= lv.threshold).astype(np.int64)
    return Scores(probs, labels, lv.threshold, lv.version)


def _generic_proba(lv: LoadedVersion, records: list[dict]) -> np.ndarray:
    model = lv.model
    if hasattr(model, "predict_proba_records"):
        try:
            return np.asarray(model.predict_proba_records(records), dtype=np.float64)
        except ValueError as exc:
            raise BadRequest(str(exc), field=getattr(exc, "field", None), index=getattr(exc, "index", None)) from None
    import pandas as pd

    for i, rec in enumerate(records):
        missing = [c for c in lv.feature_names if c not in rec]
        if missing:
            raise BadRequest(f"instance {i}: feature {missing[0]!r}: missing", field=missing[0], index=i)
    frame = pd.DataFrame.from_records(records, columns=lv.feature_names)
    try:
        return np.asarray(model.predict_proba(frame))[:, 1].astype(np.float64)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"input rejected by the model: {exc}") from None


# -- response building (shared with the router) -------------------------------------------


def v1_response(name: str, groups: list, n: int) -> dict:
    """groups: [(row indices or None for all rows, Scores)], in any order."""
    if len(groups) == 1 and groups[0][0] is None:
        s = groups[0][1]
        v, t = s.version, s.threshold
        whole = [
            {"probability": p, "label": lab, "threshold": t, "model_version": v}
            for p, lab in zip(s.probabilities.tolist(), s.labels.tolist())
        ]
        return {"model_name": name, "model_version": v, "predictions": whole}
    preds: list = [None] * n
    for idx, s in groups:
        v, t = s.version, s.threshold
        for i, p, lab in zip(idx.tolist(), s.probabilities.tolist(), s.labels.tolist()):
            preds[i] = {"probability": p, "label": lab, "threshold": t, "model_version": v}
    versions = {s.version for _, s in groups}
    return {"model_name": name, "model_version": versions.pop() if len(versions) == 1 else "mixed", "predictions": preds}


OUTPUT_NAMES = ("probability", "label", "threshold", "model_version")


def v2_response(name: str, request: Any, groups: list, n: int, outputs: list[str] | None = None) -> Any:
    probs = np.empty(n, dtype=np.float64)
    labels = np.empty(n, dtype=np.int64)
    thresholds = np.empty(n, dtype=np.float64)
    versions: list = [None] * n
    for idx, s in groups:
        if idx is None:
            idx = np.arange(n)
        probs[idx] = s.probabilities
        labels[idx] = s.labels
        thresholds[idx] = s.threshold
        for i in idx.tolist():
            versions[i] = s.version
    distinct = {s.version for _, s in groups}
    outputs_all = [
        kserve.InferOutput("probability", [n], "FP64", probs),
        kserve.InferOutput("label", [n], "INT64", labels),
        kserve.InferOutput("threshold", [n], "FP64", thresholds),
        kserve.InferOutput("model_version", [n], "BYTES", versions),
    ]
    if outputs is not None:  # the request's `outputs`, in the order asked for
        by_name = {o.name: o for o in outputs_all}
        outputs_all = [by_name[o] for o in outputs]
    return kserve.InferResponse(
        response_id=getattr(request, "id", None) or "",
        model_name=name,
        model_version=distinct.pop() if len(distinct) == 1 else "mixed",
        infer_outputs=outputs_all,
    )


_KSERVE_CLASSES = {"ChurnPredictor": ("_ChurnPredictor", "kserve:Model")}


def __getattr__(name: str) -> Any:
    """PEP 562: the kserve-derived `ChurnPredictor` is built on first use, so importing this
    module does not import kserve (seconds)."""
    if name in _KSERVE_CLASSES:
        body, base = _KSERVE_CLASSES[name]
        return kserve_sdk.subclass(globals(), name, globals()[body], base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
