"""What KServe's admission webhooks do to an InferenceService write, as KServe's code does it.

Source: kserve/kserve @ aaac4e29 (VERSION 0.20.0), pkg/apis/serving/v1beta1/:
- inference_service_defaults.go `DefaultInferenceService` (mutating, CREATE and UPDATE): the
  deprecated mode values are rewritten, `RawDeployment` -> `Standard`, `Serverless` -> `Knative`
  (pkg/constants/constants.go LegacyRawDeployment / LegacyServerless); without the annotation,
  a `defaultDeploymentMode` of `Standard` or `ModelMesh` in inferenceservice-config is written
  into it (a Knative default is left implicit).
- inference_service_validation.go (validating): `validateCanarySpecs` on every write (canary only
  in Standard mode, a stable predictor with a model, each canary named, names unique and not
  the stable predictor's, trafficPercent in [0, 100], no workerSpec, maxReplicas, scaleTarget,
  scaleMetric or autoScaling on a canary (lines 231-247), its minReplicas not above the stable
  predictor's (default 1, lines 249-257), the percents' sum <= 100); on UPDATE first
  `validateDeploymentMode` (the annotation may not differ from the mode in status, once the
  controller wrote one; legacy names parsed as ParseDeploymentMode does) and
  `validatePredictorNameChange` (renaming the stable predictor needs a model change).
A denial answers as the API server relays a controller-runtime `Denied`: HTTP 403 with the message.

The one emulation of KServe's admission in the tests: tests/servingkit/fakes.py (`kserve_default_mode`,
`kserve_validate`, the FakeKubeApi's webhook) calls this module.

Not emulated: the other defaults (runtimes, resources, local model cache), the remaining
validations (autoscaler, multi-node, env vars, names) and everything the controller does.
"""

from __future__ import annotations

import copy

ANNOTATION = "serving.kserve.io/deploymentMode"
LEGACY = {"RawDeployment": "Standard", "Serverless": "Knative"}


class Denied(Exception):
    """The validating webhook denied the request."""

    status = 403


def parse_mode(mode: str, default: str = "Standard") -> str:
    """constants.ParseDeploymentMode: "" -> DefaultDeployment (Standard), legacy names folded."""
    return default if not mode else LEGACY.get(mode, mode)


def default(isvc: dict, default_mode: str = "Knative") -> dict:
    """DefaultInferenceService's deployment-mode part; returns the mutated copy."""
    out = copy.deepcopy(isvc)
    ann = out.setdefault("metadata", {}).get("annotations")
    if ann and ANNOTATION in ann:
        ann[ANNOTATION] = LEGACY.get(ann[ANNOTATION], ann[ANNOTATION])
    elif default_mode in ("ModelMesh", "Standard"):
        out["metadata"].setdefault("annotations", {})[ANNOTATION] = default_mode
    return out


def _storage_uri(pred: dict) -> str:
    return ((pred or {}).get("model") or {}).get("storageUri") or ""


def validate(isvc: dict) -> None:
    """validateCanarySpecs (the part of validateInferenceService a canary write meets)."""
    spec = isvc.get("spec") or {}
    canaries = spec.get("canary") or []
    if not canaries:
        return
    if (isvc["metadata"].get("annotations") or {}).get(ANNOTATION) != "Standard":
        raise Denied("canary is only supported in Standard deployment mode")
    stable = spec.get("predictor") or {}
    if not _storage_uri(stable) and not stable.get("model"):
        raise Denied("canary requires a stable predictor with a model (multi-model serving is not supported with canary)")
    names: set[str] = set()
    total = 0
    for i, c in enumerate(canaries):
        name = (c.get("predictor") or {}).get("name") or ""
        if not name:
            raise Denied(f"canary[{i}] predictor.name is required")
        if name in names:
            raise Denied(f'canary predictor.name "{name}" is duplicated')
        names.add(name)
        if name == stable.get("name"):
            raise Denied(f'canary predictor.name "{name}" conflicts with stable predictor name')
        pct = int(c.get("trafficPercent") or 0)
        if not 0 <= pct <= 100:
            raise Denied(f'canary "{name}" trafficPercent must be between 0 and 100, got {pct}')
        total += pct
        _fixed_replicas(name, c.get("predictor") or {}, stable)
    if total > 100:
        raise Denied(f"sum of canary trafficPercent values ({total}) must be <= 100")


def _fixed_replicas(name: str, pred: dict, stable: dict) -> None:
    """validateCanarySpecs, lines 231-257: a canary runs fixed replicas, never more than the stable's minimum."""
    if pred.get("workerSpec") is not None:
        raise Denied(f'canary "{name}" must not set workerSpec (multi-node is not yet supported for canary)')
    if (pred.get("maxReplicas") or 0) > 0:
        raise Denied(f'canary "{name}" must not set maxReplicas (canary uses fixed replicas)')
    for field in ("scaleTarget", "scaleMetric", "autoScaling"):
        if pred.get(field) is not None:
            raise Denied(f'canary "{name}" must not set {field} (canary uses fixed replicas)')
    stable_min = stable.get("minReplicas")
    stable_min = 1 if stable_min is None else int(stable_min)
    if pred.get("minReplicas") is not None and int(pred["minReplicas"]) > stable_min:
        raise Denied(
            f'canary "{name}" minReplicas ({int(pred["minReplicas"])}) must not exceed stable predictor '
            f"minReplicas ({stable_min})"
        )


def validate_update(old: dict, new: dict) -> None:
    """ValidateUpdate: deployment mode against status, predictor renames, then the spec checks."""
    status_mode = (old.get("status") or {}).get("deploymentMode") or ""
    if status_mode:
        want = parse_mode(status_mode)
        ann = (new["metadata"].get("annotations") or {}).get(ANNOTATION)
        if ann is not None and ann != want:
            raise Denied(f"update rejected: deploymentMode cannot be changed from '{want}' to '{ann}'")
    old_pred, new_pred = (old.get("spec") or {}).get("predictor") or {}, (new.get("spec") or {}).get("predictor") or {}
    if old_pred.get("name") != new_pred.get("name") and _storage_uri(old_pred) == _storage_uri(new_pred):
        raise Denied("predictor.name change requires a model change (e.g. storageUri)")
    validate(new)


def admit(old: dict | None, new: dict, default_mode: str = "Knative") -> dict:
    """Mutating then validating admission of a CREATE (old None) or UPDATE; the object to store."""
    obj = default(new, default_mode)
    if old is None:
        validate(obj)
    else:
        validate_update(old, obj)
    return obj
