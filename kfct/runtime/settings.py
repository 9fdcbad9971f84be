"""Process settings: where state lives and how to reach external services.

One pydantic-settings class read lazily from `KFCT_*` environment variables (and a
`.env` file). Secrets (S3 keys, KFP token) come only from the environment: on a
cluster from a Kubernetes Secret mounted as env by kfp-kubernetes, never from a
pipeline parameter.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KFCT_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path(".kfct"), description="Local state: pipeline root, MLflow store, logs.")
    config: Path | None = Field(default=None, description="YAML overriding the packaged default config.")

    # MLflow: local SQLite store by default; a server URL on a cluster.
    mlflow_tracking_uri: str | None = None
    mlflow_artifact_root: str | None = None
    mlflow_experiment: str = "kfct-ct"

    # S3 / MinIO.
    s3_endpoint: str | None = Field(default=None, description="host:port of MinIO or any S3 endpoint")
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_secure: bool = False
    s3_region: str | None = None
    s3_bucket: str = "kfct"

    # Images the compiled pipeline names.
    image_registry: str = "ghcr.io/kfct"
    image_tag: str = "0.1.0"
    component_image_name: str = "kfct-component"
    gpu_image_name: str = "kfct-train-gpu"
    serving_image_name: str = "kfct-serving"

    # Kubeflow Pipelines API.
    kfp_host: str | None = None
    kfp_namespace: str = "kubeflow"
    kfp_token: SecretStr | None = None
    kfp_experiment: str = "kfct"
    # Cluster wiring (manifests/base creates these objects in the namespace where runs execute).
    kfp_service_account: str | None = Field(default="kfct-pipeline-runner", description="SA runs execute as ('' = KFP default)")
    k8s_secret_name: str = Field(default="kfct-s3-credentials", description="Secret with S3/MLflow keys, mounted as env")
    k8s_config_map: str = Field(default="kfct-config", description="ConfigMap with endpoints (S3, MLflow), mounted as env")

    # KServe: the deployment mode of a new InferenceService (an existing one keeps its own:
    # components/deploy.py reads it). Standard (RawDeployment) is KServe's default; Serverless needs Knative.
    kserve_deployment_mode: str = "Standard"

    log_level: str = Field(default="INFO", description="level of kfct's loggers (stages, server)")

    # Where retraining runs: "module:Class" of a `kfct.contracts.launcher.RetrainLauncher` ('' = by environment).
    retrain_launcher: str = ""

    # Serving.
    serving_host: str = "127.0.0.1"
    serving_port: int = 8080
    max_request_bytes: int = 1_000_000
    model_repository_token: SecretStr | None = Field(
        default=None, description="Enables the model server's /v2/repository load endpoint behind this bearer token"
    )
    # Prediction log backlog while the store is away: 600k rows = 10 minutes at 1,000 req/s.
    prediction_log_spill_rows: int = Field(default=600_000, ge=0, description="rows kept for the store before the log drops any")
    prediction_log_spill_dir: Path | None = Field(default=None, description="default <home>/predictions-spill")
    model_version: str | None = Field(default=None, description="version a cluster predictor serves (set by deploy)")
    model_sha256: str | None = Field(default=None, description="its expected model file sha256 (set by deploy)")
    paired_reference_version: str | None = Field(
        default=None, description="the champion a canary predictor also scores its requests with (set by deploy)"
    )
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring:9090",
        description="Prometheus the cluster rollout reads canary metrics from",
    )

    # Lineage and governance.
    code_version: str | None = Field(default=None, description="git commit baked into an image")
    audit_s3_uri: str | None = Field(default=None, description="s3://bucket/key mirror of the audit trail")

    # Set by Kubernetes and Kubeflow, not by kfct: the variables keep their own names.
    kubernetes_service_host: str | None = Field(default=None, validation_alias="KUBERNETES_SERVICE_HOST")
    kf_pipelines_endpoint: str | None = Field(default=None, validation_alias="KF_PIPELINES_ENDPOINT")
    kf_pipelines_ui_endpoint: str | None = Field(default=None, validation_alias="KF_PIPELINES_UI_ENDPOINT")
    kf_pipelines_sa_token_path: str | None = Field(default=None, validation_alias="KF_PIPELINES_SA_TOKEN_PATH")
    ssl_cert_file: str | None = Field(default=None, validation_alias="SSL_CERT_FILE")

    @property
    def in_cluster(self) -> bool:
        """Inside a Kubernetes pod (the variable every pod gets): what `target: auto` resolves by."""
        return bool(self.kubernetes_service_host)

    def target(self, requested: str = "auto") -> str:
        """'auto' -> 'cluster' inside a pod, else 'local'; 'local' / 'cluster' pass through."""
        if requested not in ("auto", "local", "cluster"):
            raise ValueError(f"target must be auto, local or cluster, got {requested!r}")
        if requested == "auto":
            return "cluster" if self.in_cluster else "local"
        return requested

    # Timeouts and retries of every network call, configured here and nowhere else: the MLflow
    # client (through MLFLOW_HTTP_REQUEST_* set by `kfct.governance.registry.setup`), minio, the KFP client,
    # Kubernetes/KServe, Prometheus and httpx calls read these, so nothing waits forever.
    net_timeout_seconds: float = Field(default=30.0, gt=0, description="connect+read timeout of one request")
    net_connect_timeout_seconds: float = Field(default=5.0, gt=0, description="TCP connect timeout")
    mlflow_http_max_retries: int = Field(default=2, ge=0, description="MLflow client's own transport retries")
    mlflow_http_backoff_factor: int = Field(default=1, ge=0, description="MLflow client's backoff factor (s)")
    retry_attempts: int = Field(default=4, ge=1, description="tries of an idempotent step on transient errors")
    retry_backoff_seconds: float = Field(default=0.5, ge=0, description="first backoff; doubles per try")
    retry_max_backoff_seconds: float = Field(default=8.0, ge=0)
    # Registry compare-and-set (see kfct.governance.registry.champion_lock).
    registry_lock_timeout_seconds: float = Field(default=600.0, gt=0, description="wait for the registry lock")
    registry_lease_seconds: float = Field(default=900.0, gt=0, description="an MLflow-tag lease expires after")
    stale_run_seconds: float = Field(
        default=6 * 3600.0, gt=0, description="a RUNNING MLflow run this old, not provably alive, is marked KILLED"
    )

    @property
    def pipeline_root(self) -> Path:
        return self.home / "pipeline_root"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> str | None:
        """Where new experiments put artifacts: explicit, the local folder, or the server's choice.

        The local folder is only a default for the local SQLite store. With a tracking
        server (a cluster) a pod's own disk is the wrong place — no other pod, and not
        KServe's storage initializer, can read it — so then the root must be set
        (the kfct-config ConfigMap sets an s3:// root in MinIO) or it is left to the server.
        """
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        if self.mlflow_tracking_uri and not self.mlflow_tracking_uri.startswith(("sqlite:", "file:")):
            return None
        return (self.home / "mlartifacts").resolve().as_uri()

    def image(self, name: str) -> str:
        return f"{self.image_registry}/{name}:{self.image_tag}"

    @property
    def component_image(self) -> str:
        return self.image(self.component_image_name)

    @property
    def gpu_image(self) -> str:
        return self.image(self.gpu_image_name)

    @property
    def serving_image(self) -> str:
        return self.image(self.serving_image_name)


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings are read on first use, not at import."""
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests change the environment)."""
    get_settings.cache_clear()
