"""Check rendered Kubernetes objects against the API's own schemas, offline.

`kubectl kustomize` renders whatever YAML it is given: a misspelt field (`resource:` for
`resources:`, `canaryTrafficPercentt`) or a string where the API wants a list reaches
the cluster and is dropped or rejected there. The Kubernetes and KServe Python SDKs
carry each kind's OpenAPI schema as model classes (`openapi_types`, `attribute_map`);
this walks every field of an object through them and reports unknown fields and wrong
JSON types with their path. Kinds without an SDK model are listed as unchecked, except
Kubeflow's PodDefault and Profile, whose specs are made of core types and are checked through them.
Used by `kfct manifests check` (and CI).
"""

from __future__ import annotations

import re
from typing import Any

PRIMITIVES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "datetime": (str,),
    "date": (str,),
}

# kind -> (SDK, model class) by apiVersion
MODELS = {
    ("v1", "ConfigMap"): ("kubernetes", "V1ConfigMap"),
    ("v1", "Secret"): ("kubernetes", "V1Secret"),
    ("v1", "Service"): ("kubernetes", "V1Service"),
    ("v1", "ServiceAccount"): ("kubernetes", "V1ServiceAccount"),
    ("v1", "PersistentVolumeClaim"): ("kubernetes", "V1PersistentVolumeClaim"),
    ("v1", "Namespace"): ("kubernetes", "V1Namespace"),
    ("apps/v1", "Deployment"): ("kubernetes", "V1Deployment"),
    ("batch/v1", "Job"): ("kubernetes", "V1Job"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("kubernetes", "V1NetworkPolicy"),
    ("rbac.authorization.k8s.io/v1", "Role"): ("kubernetes", "V1Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("kubernetes", "V1RoleBinding"),
    ("serving.kserve.io/v1beta1", "InferenceService"): ("kserve", "V1beta1InferenceService"),
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): ("kserve", "V1alpha1ServingRuntime"),
}
# Kubeflow's PodDefault (kubeflow.org/v1alpha1) has no SDK model; its spec fields are core types.
PODDEFAULT_SPEC = {
    "desc": "str",
    "selector": "V1LabelSelector",
    "env": "list[V1EnvVar]",
    "envFrom": "list[V1EnvFromSource]",
    "volumes": "list[V1Volume]",
    "volumeMounts": "list[V1VolumeMount]",
    "serviceAccountName": "str",
    "automountServiceAccountToken": "bool",
    "annotations": "dict(str, str)",
    "labels": "dict(str, str)",
    "tolerations": "list[V1Toleration]",
}

# Kubeflow's Profile (kubeflow.org/v1): kubeflow/kubeflow components/profile-controller/api/v1/profile_types.go
# `ProfileSpec` (owner rbacv1.Subject, plugins []Plugin with a free-form spec, resourceQuotaSpec).
PROFILE_SPEC = {"owner": "RbacV1Subject", "plugins": "list[object]", "resourceQuotaSpec": "V1ResourceQuotaSpec"}
# Kinds whose spec is made of core types: (apiVersion, kind) -> (spec fields, required fields).
CORE_TYPED = {
    ("kubeflow.org/v1alpha1", "PodDefault"): (PODDEFAULT_SPEC, ("selector",)),
    ("kubeflow.org/v1", "Profile"): (PROFILE_SPEC, ("owner",)),
}


def _model(name: str) -> Any:
    """The SDK model class `name` (Kubernetes first, then KServe), or None."""
    import kubernetes.client.models as k8s

    if hasattr(k8s, name):
        return getattr(k8s, name)
    from kfct.cluster import kserve_sdk

    kserve = kserve_sdk.load()
    return getattr(kserve, name, None) or getattr(kserve.models, name, None)


def _walk(value: Any, type_name: str, path: str, errors: list[str]) -> None:
    if value is None:
        return
    if _walk_container(value, type_name, path, errors):
        return
    if type_name in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[type_name]) and not (type_name in ("int", "float") and isinstance(value, bool))
        if not ok:
            errors.append(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}"[:200])
        return
    cls = _model(type_name)
    if cls is None:
        errors.append(f"{path}: no schema for type {type_name}")
        return
    _walk_fields(value, cls.openapi_types, cls.attribute_map, path, errors, type_name)


def _walk_container(value: Any, type_name: str, path: str, errors: list[str]) -> bool:
    """Walk a `list[T]` or `dict(str, T)` value item by item; False when `type_name` names neither."""
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return True
        for i, item in enumerate(value):
            _walk(item, m.group(1), f"{path}[{i}]", errors)
        return True
    m = re.fullmatch(r"dict\((\w+), (.+)\)", type_name)
    if m:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, got {type(value).__name__}")
            return True
        for k, v in value.items():
            _walk(v, m.group(2), f"{path}.{k}", errors)
        return True
    return False


def _walk_fields(value: Any, types: dict, attr_map: dict, path: str, errors: list[str], what: str) -> None:
    if not isinstance(value, dict):
        errors.append(f"{path}: expected an object ({what}), got {type(value).__name__}")
        return
    by_json = {json_name: types[py] for py, json_name in attr_map.items()}
    for key, v in value.items():
        if key not in by_json:
            errors.append(f"{path}.{key}: unknown field for {what}")
            continue
        _walk(v, by_json[key], f"{path}.{key}", errors)


def check_object(obj: dict) -> tuple[bool, list[str]]:
    """(checked, errors) for one rendered object; checked is False for kinds without a schema here."""
    api, kind = obj.get("apiVersion"), obj.get("kind")
    name = f"{kind}/{(obj.get('metadata') or {}).get('name')}"
    errors: list[str] = []
    if isinstance(api, str) and isinstance(kind, str) and (api, kind) in CORE_TYPED:
        fields, required = CORE_TYPED[(api, kind)]
        extra = set(obj) - {"apiVersion", "kind", "metadata", "spec"}
        errors += [f"{name}.{k}: unknown field for {kind}" for k in sorted(extra)]
        _walk(obj.get("metadata"), "V1ObjectMeta", f"{name}.metadata", errors)
        spec = obj.get("spec") or {}
        errors += [f"{name}.spec.{r}: required" for r in required if r not in spec]
        _walk_fields(spec, fields, {k: k for k in fields}, f"{name}.spec", errors, f"{kind} spec")
        return True, errors
    # A non-string apiVersion/kind (`kind: [Service]`) is no kind we know: unchecked, not a TypeError.
    entry = MODELS.get((api, kind)) if isinstance(api, str) and isinstance(kind, str) else None
    if entry is None:
        return False, []
    cls = _model(entry[1])
    _walk_fields(obj, cls.openapi_types, cls.attribute_map, name, errors, entry[1])
    return True, errors


def check_objects(objs: list[dict]) -> tuple[list[str], list[str]]:
    """(errors, unchecked kinds) over all objects."""
    errors, unchecked = [], []
    for obj in objs:
        checked, errs = check_object(obj)
        errors += errs
        if not checked:
            unchecked.append(f"{obj.get('apiVersion')} {obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}")
    return errors, unchecked
