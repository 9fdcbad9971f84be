"""Helpers for registry tests: tiny real models logged to a real MLflow store."""

from __future__ import annotations


def log_tiny_model(tag: str = "") -> tuple[str, str]:
    """Log a small fitted sklearn model in a new MLflow run; returns (model_uri, run_id)."""
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    with mlflow.start_run(run_name=f"tiny-{tag}") as run:
        info = mlflow.sklearn.log_model(LogisticRegression().fit(X, y), name="model", pip_requirements=["scikit-learn"])
    return info.model_uri, run.info.run_id


def versions(name: str) -> list[int]:
    from kfct.governance import registry

    return sorted(int(v.version) for v in registry.client().search_model_versions(f"name='{name}'"))
