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

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_FILE = "model.pkl"


def setup(settings=None, experiment: str | None = None) -> str:
    """Point MLflow at the configured store; create the experiment. Returns its id."""
    import mlflow

    from kfct.settings import get_settings

    s = settings or get_settings()
    if not s.mlflow_tracking_uri:
        s.home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(s.tracking_uri)
    mlflow.set_registry_uri(s.tracking_uri)
    name = experiment or s.mlflow_experiment
    with _store_init_lock(s.tracking_uri):
        # The first touch of each store creates its schema when the database is new; under the lock
        # a second process started at the same moment waits and then finds the tables in place.
        exp = mlflow.get_experiment_by_name(name)
        client().search_registered_models(max_results=1)
    if exp is None:
        try:
            exp_id = mlflow.create_experiment(name, artifact_location=s.artifact_root)
        except Exception:  # created concurrently by another stage
            exp = mlflow.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    # Runs go to this experiment (and its artifact root), never to "Default" in ./mlruns.
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@contextmanager
def _store_init_lock(tracking_uri: str):
    """An exclusive file lock beside a local SQLite store while this process first opens it.

    MLflow creates a new SQLite store's schema (alembic migrations) on first use; two
    processes doing that at once on a fresh home fail (`alembic_version ... 0 found`).
    Server stores (http://, postgres://) migrate on their own side: no lock.
    """
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(tracking_uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".init.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def client():
    from mlflow import MlflowClient

    return MlflowClient()


def log_model(model, input_example, name: str = "model") -> dict[str, str]:
    """Log a ChurnModel in the active run with signature and input example.

    Returns model_uri and the sha256 of the serialized model file.
    """
    import mlflow
    from mlflow.models import infer_signature

    example = input_example.head(5)
    signature = infer_signature(example, model.predict_proba(example)[:, 1])
    info = mlflow.sklearn.log_model(
        model,
        name=name,
        signature=signature,
        input_example=example,
        serialization_format="cloudpickle",
        pyfunc_predict_fn="predict_proba",
        # Stated, not inferred: inference runs the model in a subprocess and costs seconds.
        pip_requirements=_pip_requirements(),
    )
    digest = model_file_sha256(info.model_uri)
    mlflow.set_tag("model_sha256", digest)
    return {"model_uri": info.model_uri, "model_sha256": digest, "model_id": getattr(info, "model_id", "")}


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ("scikit-learn", "xgboost", "pandas", "numpy", "cloudpickle", "mlflow")
    return [f"{p}=={version(p)}" for p in pkgs] + [f"kfct=={version('kfct')}"]


def model_file_sha256(model_uri: str) -> str:
    import mlflow

    from kfct.lineage import sha256_file

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


def resolve_version(name: str, alias: str | None = None, version: str | None = None):
    c = client()
    if version:
        return c.get_model_version(name, str(version))
    return c.get_model_version_by_alias(name, alias or "champion")


def load_version(name: str, alias: str | None = None, version: str | None = None, verify: bool = True) -> LoadedModel:
    """Download a registered version, check its sha256 tag, unpickle it."""
    import mlflow

    from kfct.lineage import sha256_file

    mv = resolve_version(name, alias, version)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=tmp))
        digest = sha256_file(local / MODEL_FILE)
        expected = (mv.tags or {}).get("model_sha256")
        if verify and expected and digest != expected:
            raise ModelIntegrityError(
                f"model {name} v{mv.version}: file sha256 {digest} does not match registered {expected}"
            )
        model = mlflow.sklearn.load_model(str(local))
    return LoadedModel(model, name, str(mv.version), mv.run_id or "", digest, dict(mv.tags or {}))


def alias_version(name: str, alias: str) -> str | None:
    """Version number an alias points to, or None when unset / model unknown."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def aliases(name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        rm = client().get_registered_model(name)
    except MlflowException:
        return {}
    return {k: str(v) for k, v in (rm.aliases or {}).items()}


def register(model_uri: str, name: str, tags: dict[str, str], run_id: str | None = None) -> str:
    """Create a model version with tags; returns the version number."""
    import mlflow

    from kfct import audit

    audit.ensure_writable()  # the registration is recorded next: no trail, no registration
    mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    return str(mv.version)


def describe(name: str, version: str, version_text: str, model_text: str) -> None:
    """Descriptions the MLflow UI shows on the registered model and on this version."""
    c = client()
    c.update_registered_model(name, description=model_text)
    c.update_model_version(name, str(version), description=version_text)


def set_alias(name: str, alias: str, version: str, reason: str = "", **audit_fields: Any) -> str | None:
    """Move an alias; records the move (with the previous version) in the audit trail."""
    from kfct import audit

    audit.ensure_writable()  # fail closed: a move the trail cannot record is not made
    previous = alias_version(name, alias)
    client().set_registered_model_alias(name, alias, str(version))
    audit.record("alias_moved", model_name=name, alias=alias, version=str(version),
                 previous=previous, reason=reason, **audit_fields)
    return previous


def delete_alias(name: str, alias: str, reason: str = "") -> None:
    from kfct import audit

    previous = alias_version(name, alias)
    if previous is None:
        return
    audit.ensure_writable()
    client().delete_registered_model_alias(name, alias)
    audit.record("alias_deleted", model_name=name, alias=alias, previous=previous, reason=reason)


def set_version_tag(name: str, version: str, key: str, value: str) -> None:
    client().set_model_version_tag(name, str(version), key, str(value))
