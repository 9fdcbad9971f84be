"""MLflow tracking and registry: the store setup, the model registry and its aliases.

Every registry read and write (versions, aliases, tags, loading a version with its sha256
check) goes through here, and so does every alias move, audited. MLflow *tracking* calls
(runs, params, metrics, artifacts) stay in the stages that produce them: train, evaluate,
register, the drift check, and the predictor loading an InferenceService's model folder.

Local default: SQLite store and artifact folder under `.kfct/`; on a cluster the
tracking server URL comes from settings and artifacts live in MinIO. Every model
version carries lineage tags and the sha256 of its serialized model, which the
server verifies before it serves a version.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The distributed-locking part lives in kfct.governance.registry_lock; its names stay reachable from here.
from kfct.governance.registry_lock import LEASE_TAG, AliasConflict, RegistryLock, RegistryLockTimeout, champion_lock  # noqa: F401

if TYPE_CHECKING:
    from kfct.evidence.model import ChurnModel
    from kfct.runtime.settings import Settings

MODEL_FILE = "model.pkl"
# Version tags of the registration protocol (see `register_once` and kfct.governance.reconcile).
REG_TAG = "kfct.registration"  # pending -> complete | abandoned
GATED_TAG = "gate.champion_version"  # the champion the challenger was gated against ("" = none)


def _redact(uri: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.password or parts.username:
        # no host at all is legal: postgresql://user:pw@/mlflow?host=/run/postgresql (a unix socket)
        return uri.replace(parts.netloc, (parts.hostname or "") + (f":{parts.port}" if parts.port else ""))
    return uri


def configure_http(settings: Settings | None = None) -> None:
    """MLflow's HTTP client reads its timeout and retries from env: set them from Settings.

    MLflow's defaults are a 120 s timeout and 7 retries with backoff factor 2 (minutes per
    call against a hanging server). Settings is the one place these are configured.
    """
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    wanted = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(s.net_timeout_seconds))),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(s.mlflow_http_max_retries)),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(int(s.mlflow_http_backoff_factor)),
    }
    for key, value in wanted.items():
        current = os.environ.get(key)
        if current is None or current == _http_env_set.get(key):  # ours (or unset): follow Settings
            os.environ[key] = value
            _http_env_set[key] = value
        # else: set explicitly in the environment by the operator; that wins


_http_env_set: dict[str, str] = {}


def setup(settings: Settings | None = None, experiment: str | None = None, attempts: int | None = None) -> str:
    """Point MLflow at the configured store; create the experiment. Returns its id.

    `attempts=1` for callers that retry on their own cycle (the model server's loader)."""
    import mlflow

    from kfct.runtime.retry import retry_call
    from kfct.runtime.settings import get_settings

    s = settings or get_settings()
    if not s.mlflow_tracking_uri:
        s.home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    configure_http(s)
    mlflow.set_tracking_uri(s.tracking_uri)
    mlflow.set_registry_uri(s.tracking_uri)
    name = experiment or s.mlflow_experiment

    def get_or_create() -> str:
        with _store_init_lock(s.tracking_uri):
            # The first touch of each store creates its schema when the database is new; under the lock
            # a second process started at the same moment waits and then finds the tables in place.
            exp = mlflow.get_experiment_by_name(name)
            client().search_registered_models(max_results=1)
        if exp is not None:
            return exp.experiment_id
        try:
            return mlflow.create_experiment(name, artifact_location=s.artifact_root)
        except Exception:  # created concurrently by another stage
            exp = mlflow.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    exp_id = retry_call(get_or_create, f"MLflow at {_redact(s.tracking_uri)}: experiment {name}", s, attempts=attempts)
    # Runs go to this experiment (and its artifact root), never to "Default" in ./mlruns.
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@contextmanager
def _store_init_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive file lock beside a local SQLite store while this process first opens it.

    MLflow creates a new SQLite store's schema (alembic migrations) on first use; two
    processes doing that at once on a fresh home fail (`alembic_version ... 0 found`).
    Server stores (http://, postgres://) migrate on their own side: no lock.
    """
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    db = Path(tracking_uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(db.with_name(db.name + ".init.lock"), thread_local=False, fallback_to_soft=False):
        yield


def client() -> Any:
    """A fresh MlflowClient (typed Any: MLflow is imported only where it is used)."""
    from mlflow import MlflowClient

    return MlflowClient()


def log_model(model: ChurnModel, input_example: Any, name: str = "model") -> dict[str, str]:
    """Log a ChurnModel in the active run with signature and input example.

    Returns model_uri and the sha256 of the serialized model file.
    """
    import mlflow
    from mlflow.models import infer_signature

    from kfct.runtime.testhooks import pause_at

    example = input_example.head(5)
    signature = infer_signature(example, model.predict_proba(example)[:, 1])
    # The logged model is made PENDING first and finalized READY at the end, explicitly: a
    # crash in between leaves it PENDING, which kfct.governance.reconcile then marks FAILED.
    active = mlflow.active_run()
    pending = mlflow.initialize_logged_model(name=name, source_run_id=active.info.run_id if active else None)
    pause_at("during_training")
    info = mlflow.sklearn.log_model(
        model,
        model_id=pending.model_id,
        name=name,
        signature=signature,
        input_example=example,
        serialization_format="cloudpickle",
        pyfunc_predict_fn="predict_proba",
        # Stated, not inferred: inference runs the model in a subprocess and costs seconds.
        pip_requirements=_pip_requirements(),
    )
    client().finalize_logged_model(pending.model_id, "READY")
    digest = model_file_sha256(info.model_uri)
    mlflow.set_tag("model_sha256", digest)
    return {"model_uri": info.model_uri, "model_sha256": digest, "model_id": getattr(info, "model_id", "")}


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ("scikit-learn", "xgboost", "pandas", "numpy", "cloudpickle", "mlflow")
    return [f"{p}=={version(p)}" for p in pkgs] + [f"kfct=={version('kfct')}"]


def model_file_sha256(model_uri: str) -> str:
    import mlflow

    from kfct.governance.lineage import sha256_file

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return sha256_file(Path(local) / MODEL_FILE)


@dataclass
class LoadedModel:
    model: Any
    name: str
    version: str
    run_id: str
    sha256: str
    tags: dict


class ModelIntegrityError(RuntimeError):
    """The downloaded model file does not match the hash recorded at registration."""


def resolve_version(name: str, alias: str | None = None, version: str | None = None) -> Any:
    c = client()
    if version:
        return c.get_model_version(name, str(version))
    return c.get_model_version_by_alias(name, alias or "champion")


def load_version(name: str, alias: str | None = None, version: str | None = None, verify: bool = True) -> LoadedModel:
    """Download a registered version, check its sha256 tag, unpickle it."""
    import mlflow

    from kfct.governance.lineage import sha256_file

    mv = resolve_version(name, alias, version)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=tmp))
        digest = sha256_file(local / MODEL_FILE)
        expected = (mv.tags or {}).get("model_sha256")
        if verify and expected and digest != expected:
            raise ModelIntegrityError(f"model {name} v{mv.version}: file sha256 {digest} does not match registered {expected}")
        model = mlflow.sklearn.load_model(str(local))
    return LoadedModel(model, name, str(mv.version), mv.run_id or "", digest, dict(mv.tags or {}))


def alias_version(name: str, alias: str) -> str | None:
    """Version number an alias points to, or None when unset / model unknown."""
    from mlflow.exceptions import MlflowException

    from kfct.runtime.retry import is_transient, retry_call

    def read() -> str | None:
        try:
            return str(client().get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if is_transient(exc):
                raise
            return None

    return retry_call(read, f"read alias {alias!r} of {name}")


def aliases(name: str, attempts: int | None = None) -> dict[str, str]:
    """Alias -> version of `name` ({} when unknown). `attempts=1` for callers that retry on their own cycle."""
    from mlflow.exceptions import MlflowException

    from kfct.runtime.retry import is_transient, retry_call

    def read() -> dict[str, str]:
        try:
            rm = client().get_registered_model(name)
        except MlflowException as exc:
            if is_transient(exc):
                raise
            return {}
        return {k: str(v) for k, v in (rm.aliases or {}).items()}

    return retry_call(read, f"read aliases of {name}", attempts=attempts)


def register(model_uri: str, name: str, tags: dict[str, str], run_id: str | None = None) -> str:
    """Create a model version with tags; returns the version number (no idempotency: see register_once)."""
    import mlflow

    from kfct.governance import audit

    audit.ensure_writable()  # the registration is recorded next: no trail, no registration
    mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    return str(mv.version)


def versions_of_run(name: str, run_id: str) -> list:
    """Model versions of `name` made from MLflow run `run_id`, oldest first."""
    from mlflow.exceptions import MlflowException

    from kfct.runtime.retry import is_transient, retry_call

    def search() -> list:
        try:
            found = client().search_model_versions(f"name='{name}' and run_id='{run_id}'")
        except MlflowException as exc:
            if is_transient(exc):
                raise
            return []
        return sorted(found, key=lambda mv: int(mv.version))

    return retry_call(search, f"look up versions of {name} from run {run_id}")


def register_once(model_uri: str, name: str, tags: dict[str, str], run_id: str) -> tuple[str, bool]:
    """Idempotent registration: (version, created_now).

    A retried or re-run register step finds the version its run already made (by MLflow run
    id) instead of making another. Creating a version is not idempotent over HTTP (MLflow's
    client repeats a POST whose answer was lost): so every try looks up first, and versions
    of the same run made by such a repeat are removed again (nobody saw them: the caller
    holds the registry lock), keeping the oldest.
    """
    from kfct.governance import audit
    from kfct.runtime.retry import retry_call

    def attempt() -> tuple[str, bool]:
        found = versions_of_run(name, run_id)
        if found:
            return str(found[0].version), False
        return register(model_uri, name, tags), True

    version, created = retry_call(attempt, f"register {name} from run {run_id}")
    held = set(aliases(name).values())
    for extra in versions_of_run(name, run_id):
        if str(extra.version) != version and str(extra.version) not in held:
            retry_call(functools.partial(_delete_version, name, str(extra.version)), f"remove duplicate {name} v{extra.version}")
            audit.record(
                "duplicate_version_removed",
                model_name=name,
                version=str(extra.version),
                kept=version,
                mlflow_run_id=run_id,
                reason="a repeated create request made a second version of one run",
            )
    return version, created


def _delete_version(name: str, version: str) -> None:
    """A fresh client per try, as every retried MLflow call here gets."""
    client().delete_model_version(name, version)


def describe(name: str, version: str, version_text: str, model_text: str) -> None:
    """Descriptions the MLflow UI shows on the registered model and on this version."""
    c = client()
    c.update_registered_model(name, description=model_text)
    c.update_model_version(name, str(version), description=version_text)


def set_alias(name: str, alias: str, version: str, reason: str = "", **audit_fields: Any) -> str | None:
    """Move an alias; records the move (with the previous version) in the audit trail."""
    from kfct.governance import audit
    from kfct.runtime.retry import retry_call

    audit.ensure_writable()  # fail closed: a move the trail cannot record is not made
    previous = alias_version(name, alias)
    retry_call(
        lambda: client().set_registered_model_alias(name, alias, str(version)), f"set alias {alias!r} of {name} to v{version}"
    )
    audit.record(
        "alias_moved", model_name=name, alias=alias, version=str(version), previous=previous, reason=reason, **audit_fields
    )
    return previous


def delete_alias(name: str, alias: str, reason: str = "") -> None:
    from kfct.governance import audit
    from kfct.runtime.retry import retry_call

    previous = alias_version(name, alias)
    if previous is None:
        return
    audit.ensure_writable()
    retry_call(lambda: client().delete_registered_model_alias(name, alias), f"delete alias {alias!r} of {name}")
    audit.record("alias_deleted", model_name=name, alias=alias, previous=previous, reason=reason)


def set_version_tag(name: str, version: str, key: str, value: str) -> None:
    from kfct.runtime.retry import retry_call

    retry_call(lambda: client().set_model_version_tag(name, str(version), key, str(value)), f"tag {name} v{version} {key}")


# -- compare-and-set of the champion -------------------------------------------------------------


def compare_and_set_alias(
    lock: RegistryLock, name: str, alias: str, expected: str | None, version: str, reason: str = "", **audit_fields: Any
) -> str | None:
    """Move `alias` to `version` only if it still points to `expected` (None = unset).

    Must run under `champion_lock` (passed as `lock`). The alias is read, compared, the lock
    re-verified, written, and read back: a mismatch at either end raises `AliasConflict` and,
    before the write, changes nothing.
    """
    current = alias_version(name, alias)
    if current != (None if expected in (None, "") else str(expected)):
        raise AliasConflict(
            f"alias {alias!r} of {name} is v{current} now, not v{expected} as gated; nothing was moved", expected, current
        )
    lock.verify()
    previous = set_alias(name, alias, version, reason=reason, expected=expected, **audit_fields)
    after = alias_version(name, alias)
    if after != str(version):
        raise AliasConflict(
            f"alias {alias!r} of {name} read back as v{after} right after setting v{version}: another writer moved it",
            str(version),
            after,
        )
    return previous
