"""What every kfct pod gets as environment on a cluster, by name only (never a value).

Shared by the pipeline's tasks (`kfct.pipelines.task_config`, through kfp-kubernetes) and by
the pods a step creates itself (the train step's Kubeflow Trainer workers), so both read
the same Secret and ConfigMap keys.
"""

# Secret keys -> env vars in every pod. AWS_* for MLflow's boto3 (artifacts in MinIO),
# KFCT_S3_* for kfct's minio client (kfct.runtime.settings).
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KFCT_S3_ACCESS_KEY", "KFCT_S3_SECRET_KEY")
# ConfigMap keys -> env vars: endpoints and names, not secrets (manifests/base/config.yaml).
CONFIG_KEYS = (
    "KFCT_S3_ENDPOINT",
    "KFCT_S3_BUCKET",
    "KFCT_S3_SECURE",
    "MLFLOW_S3_ENDPOINT_URL",
    "KFCT_MLFLOW_TRACKING_URI",
    "KFCT_MLFLOW_ARTIFACT_ROOT",
    "KFCT_KFP_HOST",
    "KFCT_KFP_NAMESPACE",
    "KFCT_KFP_EXPERIMENT",
    "KFCT_AUDIT_S3_URI",
    "KFCT_KSERVE_DEPLOYMENT_MODE",
)
